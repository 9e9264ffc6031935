"""The one typed per-request state object, filled in as the request moves through the phases."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from pydantic import BaseModel

from router import headers as H
from router.config.schema import Decision, ModelSpec
from router.decisions.policy import Entry, Policy
from router.decisions.selection.spec import Selection
from router.openai.types import ChatCompletionRequest
from router.signals.base import SignalResult
from router.tenants.access import NO_LIMITS, Access


class BodyMode(StrEnum):
    NONE = "none"
    BUFFERED = "buffered"
    STREAMED = "streamed"  # FULL_DUPLEX_STREAMED: chunks until end_of_stream; streamed replies allowed


class ResponsePath(StrEnum):
    ROUTED = "routed"
    LOOPER = "looper"  # a looper answered; the header and metrics name the algorithm
    BLOCKED = "blocked"
    ERROR = "error"
    MODELS = "models"
    INTERNAL = "internal"


@dataclass(frozen=True, slots=True)
class LooperOverride:
    """``plugins[{id: <algorithm>}]`` on a request: the knobs it set, and its own candidates if any."""

    algorithm: str
    settings: BaseModel
    candidates: list[str] | None


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
    looper_override: LooperOverride | None = None
    # The looper algorithm asked for (a slug) or that answered.
    algorithm: str | None = None
    # Set once a decision is taken.
    signals: dict[str, SignalResult] = field(default_factory=dict)
    decision: Decision | None = None
    mask: Decision | None = None  # a masking guard that matched (applied to the body, routing goes on)
    confidence: float = 0.0
    model: ModelSpec | None = None
    response_path: ResponsePath | None = None
    error_code: str | None = None
    signal_ms: float = 0.0
    # Tenant policy (global.tenants): who the request is for, and what it may use.
    tenant: str | None = None
    access: Access = NO_LIMITS
    # How the routed model was chosen among the decision's modelRefs (x-vsr-selection).
    selection: Selection | None = None
    # Called with a looper run's total tokens once it ends (a tenant's token window is charged the rest).
    on_looper_usage: Callable[[int], Awaitable[None]] | None = None

    @property
    def elapsed_ms(self) -> float:
        return (time.perf_counter() - self.started) * 1000

    @property
    def decision_name(self) -> str:
        return self.decision.name if self.decision else "default"

    @property
    def entry_label(self) -> str:
        """``auto``, ``plugin``, ``model``, ``internal``, or the looper slug's algorithm (``fusion`` ...)."""
        if self.entry is Entry.LOOPER and self.algorithm:
            return self.algorithm
        return str(self.entry) if self.entry is not None else "none"

    @property
    def path_label(self) -> str:
        """``routed``, ``blocked``, ``error``, ``models``, ``internal``, or the looper that answered."""
        if self.response_path is ResponsePath.LOOPER and self.algorithm:
            return self.algorithm
        return str(self.response_path or ResponsePath.ERROR)

    def matched_signal_keys(self) -> list[str]:
        keys = []
        for res in self.signals.values():
            if res.matched:
                keys.append(res.key)
            keys.extend(res.leaves)
        return keys

    def response_headers(self) -> dict[str, str]:
        """The x-vsr-* headers the client gets back, in one place for every response path."""
        out = {H.SELECTED_DECISION: self.decision_name, H.RESPONSE_PATH: self.path_label}
        if self.model is not None:
            out[H.SELECTED_MODEL] = self.model.name
        if self.entry is not None:
            out[H.ENTRY_PATH] = self.entry_label
        if self.selection is not None:
            out[H.SELECTION] = self.selection.header(self.debug)
        if self.debug:
            out[H.MATCHED_SIGNALS] = ",".join(self.matched_signal_keys()) or "none"
        return out
