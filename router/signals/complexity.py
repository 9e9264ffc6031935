"""Complexity signal: is the prompt closer to the hard or to the easy exemplars? Leaves are
``{type: complexity, name: "<signal>:hard"}`` and ``"<signal>:easy"`` (and ``"<signal>:medium"`` when a
``threshold`` makes three levels: hard above +threshold, easy below -threshold, medium between)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from router.config.signals import ComplexitySignal as ComplexitySpec
from router.signals.base import SignalContext, SignalResult
from router.signals.ml import ModelSignal

if TYPE_CHECKING:
    from router.signals.runtime import ClassifierRuntime


class ComplexitySignal(ModelSignal):
    type = "complexity"

    def __init__(self, spec: ComplexitySpec, runtime: ClassifierRuntime):
        super().__init__(spec, runtime)
        self.spec: ComplexitySpec = spec
        self._hard: np.ndarray | None = None
        self._easy: np.ndarray | None = None

    async def prepare(self) -> None:
        self._hard = await self.embed_texts(list(self.spec.hard), self.spec.model)
        self._easy = await self.embed_texts(list(self.spec.easy), self.spec.model)

    async def score(self, ctx: SignalContext) -> SignalResult:
        assert self._hard is not None and self._easy is not None
        vec, truncated = await self.embed_prompt(ctx, self.spec.model)
        hard, easy = float((self._hard @ vec).max()), float((self._easy @ vec).max())
        margin = hard - easy
        level = self.level(margin)
        detail = {"level": level, "hard": round(hard, 4), "easy": round(easy, 4)}
        if truncated:
            detail["truncated"] = True
        # The signal itself "matches" when the prompt is hard; confidence grows with the margin.
        conf = min(1.0, 0.5 + abs(margin))
        return SignalResult(
            self.type, self.name, level == "hard", conf, leaves=(f"complexity:{self.name}:{level}",), detail=detail
        )

    def level(self, margin: float) -> str:
        """``margin`` is best hard similarity minus best easy similarity."""
        band = self.spec.threshold
        if band is None:
            return "hard" if margin > (self.spec.margin or 0.0) else "easy"
        return "hard" if margin > band else "easy" if margin < -band else "medium"

    def describe(self) -> str:
        return f"hard vs easy exemplars ({len(self.spec.hard)}/{len(self.spec.easy)})"
