"""Shared plumbing for model-backed signals: model loading at start, bounded windowed scanning, and
one inference per (model, window set) per request, whatever the number of signals reading it."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from classifiers.windows import Window, WindowPlan, pack_short, plan_windows
from router.config.signals import ModelSignalCommon
from router.signals.base import Signal, SignalContext, SignalResult, TextTooLong

if TYPE_CHECKING:
    from router.signals.runtime import ClassifierRuntime

# Windows leave room for the [CLS]/[SEP] the model's tokenizer adds, and never exceed this many
# tokens: attention cost grows with the square of the row length, so 512-token rows cost ~4x more
# per token than 256-token ones for the same coverage.
MAX_WINDOW_TOKENS = 254
WINDOW_OVERLAP = 32  # an entity on a window boundary is still seen whole in one window
# Inputs above this many characters are planned in a worker thread, off the event loop.
_PLAN_INLINE_CHARS = 16 * 1024


class ModelSignal(Signal):
    cheap = False
    # Read short messages together with their neighbours (classifiers.windows.pack_short).
    pack_short: ClassVar[bool] = False
    spec: ModelSignalCommon

    def __init__(self, spec: ModelSignalCommon, runtime: ClassifierRuntime):
        super().__init__(spec)
        if runtime is None:
            raise RuntimeError(f"signal {spec.name!r} needs the classifier runtime")
        self.runtime = runtime
        self.unavailable: str | None = None

    def model_names(self) -> list[str]:
        return [str(getattr(self.spec, "model"))]  # noqa: B009 - every model-backed spec names its model

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

    @property
    def scope(self) -> str:
        """Which messages this signal reads (routing signals: the user's latest turn)."""
        return "last_user"

    async def evaluate(self, ctx: SignalContext) -> SignalResult:
        if self.unavailable:
            raise RuntimeError(f"model unavailable: {self.unavailable}")
        if not ctx.texts(self.scope):
            return SignalResult(self.type, self.name, False, 0.0, detail={"empty": True})
        return await self.score(ctx)

    async def score(self, ctx: SignalContext) -> SignalResult:
        raise NotImplementedError

    # -- scanning --------------------------------------------------------------------------------

    async def plan(self, ctx: SignalContext, scope: str, model: str) -> WindowPlan:
        """Windows over the scope's texts within this signal's token budget (shared per request by
        signals with the same model, scope and budget). Raises TextTooLong under ``refuse``."""
        spec = self.spec
        key = f"plan:{model}:{scope}:{spec.token_budget}:{spec.over_budget}:{spec.window_tokens}:{self.pack_short}"
        plan: WindowPlan | None = ctx.cache.get(key)
        if plan is None:
            texts = ctx.texts(scope)
            tok = self.runtime.model(model).tokenizer
            size = max(1, min(spec.window_tokens or MAX_WINDOW_TOKENS, tok.max_length - 2))
            kwargs = {
                "window_tokens": size,
                "overlap": min(WINDOW_OVERLAP, size // 4),
                "budget": spec.token_budget,
                "head_tail": spec.over_budget == "head_tail",
                "cuts": tok.cuts,
            }
            if sum(len(t) for t in texts) > _PLAN_INLINE_CHARS:
                plan = await asyncio.to_thread(plan_windows, tok.plain, texts, **kwargs)
            else:
                plan = plan_windows(tok.plain, texts, **kwargs)
            if self.pack_short:
                plan = replace(plan, windows=pack_short(plan.windows, size))
            ctx.cache[key] = plan
        if not plan.complete and spec.over_budget == "refuse":
            raise TextTooLong(self.key, plan.approx_total_tokens, spec.token_budget)
        return plan

    async def infer(self, ctx: SignalContext, scope: str, model: str) -> tuple[list[Window], list[Any], bool]:
        """The model's result for every window of the scope, computed once per request; and whether
        the input was cut (head and tail only)."""
        plan = await self.plan(ctx, scope, model)
        key = f"run:{model}:{scope}:{self.spec.token_budget}:{self.spec.over_budget}:{self.spec.window_tokens}:{self.pack_short}"
        task = ctx.cache.get(key)
        if task is None:
            texts = [w.text for w in plan.windows]
            task = ctx.cache[key] = asyncio.ensure_future(self.runtime.run_many(model, texts))
        results = await asyncio.shield(task)
        return plan.windows, results, not plan.complete

    async def embed_prompt(self, ctx: SignalContext, model: str) -> tuple[np.ndarray, bool]:
        """The last user message as one vector: the mean of its windows' embeddings."""
        _windows, embs, cut = await self.infer(ctx, "last_user", model)
        if not embs:
            raise ValueError("no text to embed")
        vec = np.mean(np.stack([e.vector for e in embs]), axis=0)
        norm = float(np.linalg.norm(vec))
        return (vec / norm if norm > 0 else vec), cut or any(e.truncated for e in embs)

    async def embed_texts(self, texts: list[str], model: str) -> np.ndarray:
        embs = await self.runtime.run_many(model, texts)
        return np.stack([e.vector for e in embs])


def scan_detail(windows: list[Window], cut: bool) -> dict[str, Any]:
    detail: dict[str, Any] = {"windows": len(windows)}
    if cut:
        detail["truncated"] = True  # head and tail scanned, the middle was not
    return detail
