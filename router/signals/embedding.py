"""Embedding signal: cosine similarity of the prompt to candidate phrases (max, mean or any) vs a threshold."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from router.config.signals import EmbeddingSignal as EmbeddingSpec
from router.signals.base import SignalContext, SignalResult
from router.signals.ml import ModelSignal

if TYPE_CHECKING:
    from router.signals.runtime import ClassifierRuntime


class EmbeddingSignal(ModelSignal):
    type = "embedding"

    def __init__(self, spec: EmbeddingSpec, runtime: ClassifierRuntime):
        super().__init__(spec, runtime)
        self.spec: EmbeddingSpec = spec
        self._candidates: np.ndarray | None = None

    async def prepare(self) -> None:
        self._candidates = await self.embed_texts(list(self.spec.candidates), self.spec.model)

    async def score(self, ctx: SignalContext) -> SignalResult:
        assert self._candidates is not None
        vec, truncated = await self.embed_prompt(ctx, self.spec.model)
        sims = self._candidates @ vec  # vectors are L2-normalised: dot = cosine
        # ``any`` (some candidate reaches the threshold) is ``max`` reaching it.
        score = float(sims.mean() if self.spec.aggregation_method == "mean" else sims.max())
        best = int(sims.argmax())
        detail = {"score": round(score, 4), "best_candidate": self.spec.candidates[best]}
        if truncated:
            detail["truncated"] = True
        return SignalResult(self.type, self.name, score >= self.spec.threshold, max(score, 0.0), detail=detail)

    def describe(self) -> str:
        return f"{self.spec.aggregation_method} similarity to {len(self.spec.candidates)} candidates >= {self.spec.threshold}"
