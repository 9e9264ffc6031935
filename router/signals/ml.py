"""Shared plumbing for model-backed signals: model loading at start, one embedding pass per request."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np

from router.config.schema import SignalCommon
from router.signals.base import Signal, SignalContext, SignalResult


class ModelSignal(Signal):
    cheap = False

    def __init__(self, spec: SignalCommon, runtime: Any):
        super().__init__(spec)
        if runtime is None:
            raise RuntimeError(f"signal {spec.name!r} needs the classifier runtime")
        self.runtime = runtime
        self.unavailable: str | None = None

    def model_names(self) -> list[str]:
        return [self.spec.model]  # type: ignore[attr-defined]

    async def start(self) -> None:
        try:
            for name in self.model_names():
                await self.runtime.batcher(name)
            await self.prepare()
        except Exception as exc:
            if not self.spec.optional:
                raise RuntimeError(f"signal {self.key}: {exc}") from exc
            self.unavailable = str(exc)  # optional: fail per request, on_error decides

    async def prepare(self) -> None:
        """Precompute what every request reuses (candidate embeddings, centroids)."""

    async def evaluate(self, ctx: SignalContext) -> SignalResult:
        if self.unavailable:
            raise RuntimeError(f"model unavailable: {self.unavailable}")
        if not ctx.last_user_text.strip():
            return SignalResult(self.type, self.name, False, 0.0, detail={"empty": True})
        return await self.score(ctx)

    async def score(self, ctx: SignalContext) -> SignalResult:
        raise NotImplementedError

    async def embed_prompt(self, ctx: SignalContext, model: str) -> tuple[np.ndarray, bool]:
        """The last user message's embedding, computed once per request and shared by every signal."""
        key = f"embedding:{model}"
        task = ctx.cache.get(key)
        if task is None:
            task = ctx.cache[key] = asyncio.ensure_future(self.runtime.run(model, ctx.last_user_text))
        emb = await asyncio.shield(task)
        return emb.vector, emb.truncated

    async def embed_texts(self, texts: list[str], model: str) -> np.ndarray:
        embs = await self.runtime.run_many(model, texts)
        return np.stack([e.vector for e in embs])
