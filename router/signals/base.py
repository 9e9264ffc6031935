"""The signal interface and the per-request context every signal reads."""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

from router.config.schema import SignalCommon

_WORD = re.compile(r"\S+")


@dataclass(slots=True)
class SignalContext:
    """What signals see of a request: its texts, computed once; plus a per-request cache shared by
    the signals (one embedding pass serves every embedding-based signal)."""

    last_user_text: str
    user_texts: list[str]
    conversation_text: str
    cache: dict[str, Any] = field(default_factory=dict)
    _tokens: int | None = None

    @property
    def approx_tokens(self) -> int:
        # About 4 characters or 0.75 words per token for English BPE vocabularies; cheap and stable.
        if self._tokens is None:
            words = len(_WORD.findall(self.conversation_text))
            self._tokens = max(int(words * 4 / 3), len(self.conversation_text) // 4)
        return self._tokens


@dataclass(slots=True)
class SignalResult:
    type: str
    name: str
    matched: bool
    confidence: float = 1.0
    # Leaves this result satisfies beyond ``type:name`` (a domain's category, ``complexity:name:hard``).
    leaves: tuple[str, ...] = ()
    detail: dict[str, Any] | None = None
    latency_ms: float = 0.0
    error: str | None = None

    @property
    def key(self) -> str:
        return f"{self.type}:{self.name}"

    def as_dict(self) -> dict[str, Any]:
        out = {"type": self.type, "name": self.name, "matched": self.matched, "confidence": round(self.confidence, 4)}
        if self.leaves:
            out["leaves"] = list(self.leaves)
        if self.detail:
            out["detail"] = self.detail
        out["latency_ms"] = round(self.latency_ms, 3)
        if self.error:
            out["error"] = self.error
        return out


class Signal(ABC):
    """One configured signal. ``cheap`` signals run inline on the event loop (microseconds); the rest
    run concurrently, each under its own time budget and ``on_error`` policy."""

    type: ClassVar[str]
    cheap: ClassVar[bool] = True

    def __init__(self, spec: SignalCommon):
        self.spec = spec
        self.name = spec.name

    @property
    def key(self) -> str:
        return f"{self.type}:{self.name}"

    def evaluate_now(self, ctx: SignalContext) -> SignalResult:
        raise NotImplementedError

    async def evaluate(self, ctx: SignalContext) -> SignalResult:
        return self.evaluate_now(ctx)

    def leaf_keys(self) -> set[str]:
        """Every rule leaf (``type:name``) this signal can satisfy."""
        return {self.key}

    async def start(self) -> None:  # noqa: B027 - optional hook: load models, warm up
        """Prepare (load models, warm up) before serving."""

    @abstractmethod
    def describe(self) -> str: ...
