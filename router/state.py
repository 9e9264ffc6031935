"""The one typed per-request state object, filled in as the request moves through the phases."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from router.config.schema import Decision, FusionSettings, ModelSpec
from router.decisions.policy import Policy
from router.openai.types import ChatCompletionRequest
from router.signals.base import SignalResult


class BodyMode(StrEnum):
    NONE = "none"
    BUFFERED = "buffered"
    STREAMED = "streamed"  # FULL_DUPLEX_STREAMED: chunks until end_of_stream; streamed replies allowed


class Entry(StrEnum):
    AUTO = "auto"  # an auto alias: every decision is eligible
    FUSION = "fusion"  # a Fusion slug: Fusion decisions (and guards) only
    PLUGIN = "plugin"  # a concrete model plus plugins[{id: fusion}]: request-scoped Fusion
    MODEL = "model"  # a concrete model: passthrough after the guards
    INTERNAL = "internal"  # an authenticated looper sub-call: no classification, never fused


class ResponsePath(StrEnum):
    ROUTED = "routed"
    FUSION = "fusion"
    BLOCKED = "blocked"
    ERROR = "error"
    MODELS = "models"
    INTERNAL = "internal"


@dataclass(slots=True)
class RequestState:
    policy: Policy
    started: float = field(default_factory=time.perf_counter)
    request_id: str = ""
    method: str = ""
    path: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    body_mode: BodyMode = BodyMode.BUFFERED
    body: bytearray = field(default_factory=bytearray)
    debug: bool = False
    internal: bool = False
    # Set once the body is parsed.
    raw: dict[str, Any] | None = None
    request: ChatCompletionRequest | None = None
    entry: Entry | None = None
    fusion_override: FusionSettings | None = None
    # Set once a decision is taken.
    signals: dict[str, SignalResult] = field(default_factory=dict)
    decision: Decision | None = None
    mask: Decision | None = None  # a masking guard that matched (applied to the body, routing goes on)
    confidence: float = 0.0
    model: ModelSpec | None = None
    response_path: ResponsePath | None = None
    error_code: str | None = None
    signal_ms: float = 0.0

    @property
    def elapsed_ms(self) -> float:
        return (time.perf_counter() - self.started) * 1000

    @property
    def decision_name(self) -> str:
        return self.decision.name if self.decision else "default"

    def matched_signal_keys(self) -> list[str]:
        keys = []
        for res in self.signals.values():
            if res.matched:
                keys.append(res.key)
            keys.extend(res.leaves)
        return keys
