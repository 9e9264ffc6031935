"""Jailbreak / prompt-injection signal: the classifier's positive-class probability vs a threshold."""

from __future__ import annotations

from router.config.schema import JailbreakSignal as JailbreakSpec
from router.signals.base import SignalContext, SignalResult
from router.signals.ml import ModelSignal


class JailbreakSignal(ModelSignal):
    type = "jailbreak"

    def __init__(self, spec: JailbreakSpec, runtime):
        super().__init__(spec, runtime)
        self.spec: JailbreakSpec = spec
        self._positive = "jailbreak"

    async def prepare(self) -> None:
        meta = self.runtime.model(self.spec.model).metadata
        labels = list(meta.labels)
        extra = getattr(meta, "extra", None) or {}
        positive = getattr(meta, "positive_label", None) or extra.get("positive_label")
        if positive not in labels:
            positive = next((lab for lab in labels if lab.lower() in ("jailbreak", "injection", "unsafe", "malicious", "1")), labels[-1])
        self._positive = positive

    async def score(self, ctx: SignalContext) -> SignalResult:
        texts = [t for t in (ctx.user_texts if self.spec.scope == "all_user" else [ctx.last_user_text]) if t.strip()]
        results = await self.runtime.run_many(self.spec.model, texts[-8:])  # recent turns are where attacks land
        scores = [r.probs[self._positive] for r in results]
        score = max(scores)
        detail = {"score": round(score, 4), "threshold": self.spec.threshold, "messages_checked": len(scores)}
        if any(r.truncated for r in results):
            detail["truncated"] = True
        return SignalResult(self.type, self.name, score >= self.spec.threshold, score, detail=detail)

    def describe(self) -> str:
        return f"P({self._positive}) >= {self.spec.threshold}"
