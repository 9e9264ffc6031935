"""The signal interface and the per-request context every signal reads."""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

from router.config.signals import SignalCommon

_WORD = re.compile(r"\S+")


# Roles that carry what a model reads as instructions or input; assistant turns are the model's own
# words (but a client can fabricate them, so PII checks read them too).
PROMPT_ROLES = frozenset({"system", "developer", "user", "tool", "function", "tools"})
# Above this many characters a token estimate counts characters only (word splitting would allocate
# millions of strings for a megabyte prompt).
_COUNT_WORDS_BELOW = 256 * 1024


@dataclass(frozen=True, slots=True)
class MessageText:
    role: str  # system, developer, user, assistant, tool, function, or "tools" (the tool definitions)
    text: str


@dataclass(slots=True)
class SignalContext:
    """What signals see of a request: the text of every message, by role, read once; plus a
    per-request cache shared by the signals (one embedding pass serves every embedding signal)."""

    messages: tuple[MessageText, ...]
    cache: dict[str, Any] = field(default_factory=dict)
    tenant: str | None = None  # who the request is for (global.tenants), for tenant signals
    _tokens: int | None = None

    @classmethod
    def of_prompt(cls, text: str) -> SignalContext:
        return cls((MessageText("user", text),))

    @classmethod
    def of_user_turns(cls, *texts: str) -> SignalContext:
        return cls(tuple(MessageText("user", t) for t in texts))

    @property
    def last_user_text(self) -> str:
        return next((m.text for m in reversed(self.messages) if m.role == "user"), "")

    @property
    def user_texts(self) -> list[str]:
        return [m.text for m in self.messages if m.role == "user"]

    def texts(self, scope: str) -> list[str]:
        """The non-blank texts a signal with this scope reads, in conversation order."""
        if scope == "last_user":
            out = [self.last_user_text]
        elif scope == "all_user":
            out = self.user_texts
        elif scope == "prompt":
            out = [m.text for m in self.messages if m.role in PROMPT_ROLES]
        else:
            out = [m.text for m in self.messages]
        return [t for t in out if t.strip()]

    @property
    def approx_tokens(self) -> int:
        # About 4 characters or 0.75 words per token for English BPE vocabularies; cheap and stable.
        if self._tokens is None:
            chars = sum(len(m.text) for m in self.messages)
            words = sum(len(_WORD.findall(m.text)) for m in self.messages) if chars < _COUNT_WORDS_BELOW else 0
            self._tokens = max(int(words * 4 / 3), chars // 4)
        return self._tokens


class TextTooLong(Exception):
    """A signal whose ``over_budget`` policy is ``refuse`` met more text than its token budget: the
    request is answered 413 instead of being passed on half-checked."""

    def __init__(self, signal: str, approx_tokens: int, budget: int):
        super().__init__(f"{signal}: about {approx_tokens} tokens, budget {budget}")
        self.signal, self.approx_tokens, self.budget = signal, approx_tokens, budget


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
    error_reason: str | None = None  # timeout | overloaded | error

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
        """Every rule leaf (``type:name``) this signal can satisfy: what its spec declares (the config
        loader checks rules against the same list)."""
        return {f"{self.type}:{name}" for name in self.spec.leaf_names()}

    async def start(self) -> None:  # noqa: B027 - optional hook: load models, warm up
        """Prepare (load models, warm up) before serving."""

    @abstractmethod
    def describe(self) -> str: ...
