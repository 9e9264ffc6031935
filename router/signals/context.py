"""Context signal: the conversation's approximate token length falls in ``[min_tokens, max_tokens]``."""

from __future__ import annotations

from router.config.signals import ContextSignal as ContextSpec
from router.signals.base import Signal, SignalContext, SignalResult


class ContextSignal(Signal):
    type = "context"

    def __init__(self, spec: ContextSpec):
        super().__init__(spec)
        self.spec: ContextSpec = spec

    def evaluate_now(self, ctx: SignalContext) -> SignalResult:
        n = ctx.approx_tokens
        hi = self.spec.max_tokens
        matched = n >= self.spec.min_tokens and (hi is None or n <= hi)
        return SignalResult(self.type, self.name, matched, detail={"tokens": n})

    def describe(self) -> str:
        return f"tokens in [{self.spec.min_tokens}, {self.spec.max_tokens or 'inf'}]"
