"""Jailbreak / prompt-injection signal: the classifier's positive-class probability vs a threshold,
over every window of every message a model will read (system, developer, user, tool results, tool
definitions by default): an attack hidden before or after filler, in an early turn or in a tool
result is still seen."""

from __future__ import annotations

from typing import TYPE_CHECKING

from router.config.signals import JailbreakSignal as JailbreakSpec
from router.signals.base import SignalContext, SignalResult
from router.signals.ml import ModelSignal, scan_detail

if TYPE_CHECKING:
    from router.signals.runtime import ClassifierRuntime

MIN_TOKENS = 2


class JailbreakSignal(ModelSignal):
    type = "jailbreak"
    # A one-word tool result or a "yes" is judged in its conversation's context, not alone.
    pack_short = True
    spec: JailbreakSpec

    def __init__(self, spec: JailbreakSpec, runtime: ClassifierRuntime):
        super().__init__(spec, runtime)
        self._positive = "jailbreak"

    async def prepare(self) -> None:
        meta = self.runtime.model(self.spec.model).metadata
        labels = list(meta.labels)
        extra = getattr(meta, "extra", None) or {}
        positive = getattr(meta, "positive_label", None) or extra.get("positive_label")
        if positive not in labels:
            positive = next(
                (lab for lab in labels if lab.lower() in ("jailbreak", "injection", "unsafe", "malicious", "1")), labels[-1]
            )
        self._positive = str(positive)

    @property
    def scope(self) -> str:
        return self.spec.scope

    async def score(self, ctx: SignalContext) -> SignalResult:
        windows, results, cut = await self.infer(ctx, self.scope, self.spec.model)
        if not results:
            return SignalResult(self.type, self.name, False, 0.0, detail={"windows": 0})
        # Two tokens cannot instruct a model; alone they are also where the classifier is least sure
        # of itself (a lone "sunny" scored 0.9999), so such a window never counts as an attack.
        scores = [r.probs[self._positive] if w.tokens == 0 or w.tokens > MIN_TOKENS else 0.0 for w, r in zip(windows, results)]
        score = max(scores)
        detail = {"score": round(score, 4), "threshold": self.spec.threshold, **scan_detail(windows, cut)}
        return SignalResult(self.type, self.name, score >= self.spec.threshold, score, detail=detail)

    def describe(self) -> str:
        return f"P({self._positive}) >= {self.spec.threshold} over {self.spec.scope} messages"
