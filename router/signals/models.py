"""The classifier runtime the ML signals share.

* **One encoder pass per text.** Every model built on the same MiniLM encoder is served from one
  session: the embedding model's pooling and the jailbreak model's head (a model directory whose
  ``metadata.json`` names this encoder in ``shared_encoder``) read the same token states, so a window
  the routing signals and the guard both read is encoded once. A model directory without such a
  field (a user's own fine-tuned classifier) runs as a model of its own, as before.
* **Nothing classified twice.** Results are cached per window (``classifiers.result_cache``), keyed
  by the model build and the window's normalised text; a window already being computed for another
  request is joined, not computed again. A conversation's next turn pays for its new text only.
* **Batches that pay off.** Each model (or shared encoder) has one micro-batcher, so concurrent
  requests become one ONNX call, bucketed by length; threads per call and concurrent calls per model
  follow ``classifiers.session.thread_plan`` (models run side by side when cores are free).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import structlog

from classifiers import MicroBatcher, load_model
from classifiers.batcher import BatchStats
from classifiers.errors import ModelLoadError
from classifiers.heads import PoolingHead
from classifiers.metadata import MODEL_FILE, TOKENIZER_FILE, ModelMetadata
from classifiers.result_cache import ResultCache, window_key
from classifiers.session import ThreadPlan, thread_plan
from classifiers.shared import HeadModel, HeadSpec, SharedEncoder, file_sha256
from router.config.schema import ClassifierSettings
from router.observability import metrics

log = structlog.get_logger("router.models")

Batcher = MicroBatcher[Any, Any]


def _record(stats: BatchStats) -> None:
    metrics.CLASSIFIER_BATCH.labels(stats.name).observe(stats.size)
    metrics.CLASSIFIER_WAIT.labels(stats.name).observe(stats.queue_wait_ms_max)


@dataclass
class _View:
    """How one model name is served: the batcher that computes it, the cache namespace and key
    normalisation of its results, and how a computed value becomes this model's result."""

    name: str
    batcher: Batcher
    model: Any  # what ``ModelRuntime.model(name)`` returns (tokenizer, metadata, provider)
    namespace: Callable[[], str]
    normalize: Callable[[str], str]
    wrap: Callable[[Any], Any]


class _Pending:
    """A window being computed, and how many requests wait for it (the last to leave withdraws it)."""

    __slots__ = ("future", "waiters")

    def __init__(self, future: asyncio.Future[Any]):
        self.future = future
        self.waiters = 0


class ModelRuntime:
    def __init__(self, root: Path, settings: ClassifierSettings):
        self.root = root
        self.settings = settings
        self.plan: ThreadPlan = thread_plan(intra_op_threads=settings.intra_op_threads, workers=getattr(settings, "workers", 0))
        self.cache = ResultCache(int(getattr(settings, "result_cache_mb", 0) * 1024 * 1024))
        self._models: dict[str, Any] = {}
        self._batchers: dict[str, Batcher] = {}
        self._views: dict[str, _View] = {}
        self._encoders: dict[str, SharedEncoder] = {}  # encoder dir → its shared encoder
        self._inflight: dict[bytes, _Pending] = {}
        self._lock = asyncio.Lock()

    def path_of(self, name: str) -> Path:
        p = Path(name)
        return p if p.is_absolute() or "/" in name else self.root / name

    @property
    def provider(self) -> str | None:
        return next((m.provider for m in self._models.values()), None)

    # -- loading ---------------------------------------------------------------------------------

    def _new_batcher(self, fn: Callable[[list[Any]], Any], name: str) -> Batcher:
        s = self.settings
        return MicroBatcher(
            fn,
            max_batch_size=s.max_batch_size,
            max_wait_ms=s.max_wait_ms,
            max_queue=s.max_queue,
            workers=self.plan.workers,
            name=name,
            on_batch=_record,
            warmup_item="warm-up",
        )

    async def _shared_encoder(self, encoder_dir: Path) -> tuple[SharedEncoder, Batcher]:
        """The shared encoder of a directory (loaded and started once) and the batcher serving it."""
        key = _dir_key(encoder_dir)
        enc = self._encoders.get(key)
        if enc is None:
            enc = await asyncio.to_thread(
                SharedEncoder.load, encoder_dir, self.settings.device, self.plan.intra_op_threads, encoder_dir.name
            )
            batcher = self._new_batcher(enc.run, f"encoder:{encoder_dir.name}")
            await batcher.start()
            self._encoders[key] = enc
            self._batchers[f"encoder:{key}"] = batcher
            log.info(
                "shared_encoder_loaded",
                path=str(encoder_dir),
                provider=enc.provider,
                intra_op_threads=self.plan.intra_op_threads,
                workers=self.plan.workers,
            )
        return enc, self._batchers[f"encoder:{key}"]

    async def _load(self, name: str) -> _View:
        path = self.path_of(name)
        if not await asyncio.to_thread(path.is_dir):
            raise ModelLoadError(path, "model directory is missing (run `make models`?)")
        meta = await asyncio.to_thread(ModelMetadata.load, path)
        head = HeadSpec.of(path, meta)
        if meta.kind == "embedding" and meta.pooling in ("mean", "cls"):
            enc, batcher = await self._shared_encoder(path)
            head_name = enc.name
            if head_name != name:  # the same directory under another name (an absolute path, say)
                enc.add_head(PoolingHead(name, meta.pooling, meta.normalize))
                head_name = name
            return _View(
                name, batcher, enc.encoder, enc.namespace, enc.normalized, partial(SharedEncoder.as_embedding, head=head_name)
            )
        if head is not None:
            why = await self._attach_head(name, head)
            if why is None:
                enc, batcher = await self._shared_encoder(head.encoder_dir())
                return _View(
                    name,
                    batcher,
                    HeadModel(head, enc, name),
                    enc.namespace,
                    enc.normalized,
                    partial(SharedEncoder.as_classification, head=name, labels=meta.labels),
                )
            log.warning(
                "shared_encoder_unavailable",
                model=name,
                reason=why,
                consequence="the model runs its own full graph (one more encoder pass per text)",
            )
        s = self.settings
        model = await asyncio.to_thread(load_model, path, s.device, self.plan.intra_op_threads)
        batcher = self._new_batcher(model.run, name)
        await batcher.start()
        self._batchers[name] = batcher
        build = f"{name}:{file_sha256(path / MODEL_FILE)[:16]}:{file_sha256(path / TOKENIZER_FILE)[:16]}"
        return _View(name, batcher, model, build.__str__, _exact, _same)

    async def _attach_head(self, name: str, spec: HeadSpec) -> str | None:
        """Attach ``spec``'s head to its shared encoder; None on success, else why it cannot run as a head."""
        enc_dir = spec.encoder_dir()
        try:
            why = await asyncio.to_thread(spec.mismatch)  # before loading anything
            if why is not None:
                return why
            enc, _ = await self._shared_encoder(enc_dir)
            why = enc.accepts(spec)
            if why is not None:
                return why
            enc.add_head(await asyncio.to_thread(spec.load_head, name))
        except ModelLoadError as exc:
            return str(exc)
        return None

    async def batcher(self, name: str) -> Batcher:
        """Load (once) and start what serves model ``name``; raises ModelLoadError naming the path."""
        view = self._views.get(name)
        if view is None:
            async with self._lock:
                view = self._views.get(name)
                if view is None:
                    view = await self._load(name)
                    self._views[name] = view
                    self._models[name] = view.model
                    log.info(
                        "model_loaded",
                        model=name,
                        path=str(self.path_of(name)),
                        provider=view.model.provider,
                        kind=view.model.metadata.kind,
                        served_by=view.batcher.name,
                    )
        return view.batcher

    def model(self, name: str) -> Any:
        return self._models[name]

    def shared(self, name: str) -> bool:
        """True when model ``name`` is served from a shared encoder pass."""
        return self._views[name].batcher.name.startswith("encoder:")

    # -- inference -------------------------------------------------------------------------------

    async def run(self, name: str, text: str) -> Any:
        return (await self.run_many(name, [text]))[0]

    async def run_many(self, name: str, items: Sequence[Any]) -> list[Any]:
        """One result per item, in order. Text items go through the result cache; others (NLI pairs)
        straight to the model."""
        view = self._views.get(name)
        if view is None:
            await self.batcher(name)
            view = self._views[name]
        if not self.cache.enabled or not all(isinstance(t, str) for t in items):
            return [view.wrap(v) for v in await view.batcher.submit_many(items)]
        ns = view.namespace()
        values: list[Any] = [None] * len(items)
        joined: list[tuple[int, _Pending]] = []
        hits = shared = 0
        try:
            for i, text in enumerate(items):
                key = window_key(ns, view.normalize(text))
                v = self.cache.get(key)
                if v is not None:
                    values[i] = v
                    hits += 1
                    continue
                pending = self._inflight.get(key)
                if pending is None or pending.future.cancelled():
                    pending = self._start(view, key, text)
                else:
                    shared += 1  # another request is computing this window right now: wait for it
                pending.waiters += 1
                joined.append((i, pending))
            if joined:
                # shield: a caller that times out must not cancel a window other requests wait for.
                got = await asyncio.gather(*(asyncio.shield(p.future) for _, p in joined))
                for (i, _), v in zip(joined, got, strict=True):
                    values[i] = v
        finally:
            for _, p in joined:
                p.waiters -= 1
                if p.waiters == 0 and not p.future.done():
                    p.future.cancel()  # nobody waits any more: a queued window costs no model time
        if hits:
            metrics.CLASSIFIER_CACHE.labels(name, "hit").inc(hits)
        misses = len(joined) - shared
        if misses:
            metrics.CLASSIFIER_CACHE.labels(name, "miss").inc(misses)
        if shared:
            metrics.CLASSIFIER_CACHE.labels(name, "shared").inc(shared)
        return [view.wrap(v) for v in values]

    def _start(self, view: _View, key: bytes, text: str) -> _Pending:
        pending = _Pending(view.batcher.enqueue(text))
        self._inflight[key] = pending
        pending.future.add_done_callback(partial(self._settle, key, pending))
        return pending

    def _settle(self, key: bytes, pending: _Pending, fut: asyncio.Future[Any]) -> None:
        if self._inflight.get(key) is pending:
            del self._inflight[key]
        if not fut.cancelled() and fut.exception() is None:
            self.cache.put(key, fut.result())
            metrics.CLASSIFIER_CACHE_BYTES.set(self.cache.stats.bytes)

    def counters(self) -> dict[str, Any]:
        """Model calls and items per batcher, and the result cache's counters (for tests and /debug)."""
        return {
            "batchers": {b.name: {"calls": b.calls, "items": b.items_run} for b in self._batchers.values()},
            "cache": vars(self.cache.stats).copy(),
        }

    async def close(self) -> None:
        for b in self._batchers.values():
            await b.close()


def _dir_key(path: Path) -> str:
    """root/embedding however it was reached (root/jailbreak/../embedding): a string operation only."""
    return os.path.normpath(path)


def _exact(text: str) -> str:
    # Token models report character spans into the text: only the very same text may share a result.
    return text


def _same(value: Any) -> Any:
    return value
