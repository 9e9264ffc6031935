"""The classifier runtime the ML signals share: each model loaded once and served by a micro-batcher,
so concurrent requests become one ONNX call and inference never blocks the event loop."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import structlog

from classifiers import MicroBatcher, load_model
from classifiers.batcher import BatchStats
from router.config.schema import ClassifierSettings
from router.observability import metrics

log = structlog.get_logger("router.models")


def _record(stats: BatchStats) -> None:
    metrics.CLASSIFIER_BATCH.labels(stats.name).observe(stats.size)
    metrics.CLASSIFIER_WAIT.labels(stats.name).observe(stats.queue_wait_ms_max)


class ModelRuntime:
    def __init__(self, root: Path, settings: ClassifierSettings):
        self.root = root
        self.settings = settings
        self._models: dict[str, Any] = {}
        self._batchers: dict[str, MicroBatcher] = {}
        self._lock = asyncio.Lock()

    def path_of(self, name: str) -> Path:
        p = Path(name)
        return p if p.is_absolute() or "/" in name else self.root / name

    @property
    def provider(self) -> str | None:
        return next((m.provider for m in self._models.values()), None)

    async def batcher(self, name: str) -> MicroBatcher:
        """Load (once) and start the batcher for a model directory; raises ModelLoadError naming the path."""
        if name in self._batchers:
            return self._batchers[name]
        async with self._lock:
            if name not in self._batchers:
                s = self.settings
                model = await asyncio.to_thread(load_model, self.path_of(name), s.device, s.intra_op_threads or None)
                batcher = MicroBatcher(model.run, max_batch_size=s.max_batch_size, max_wait_ms=s.max_wait_ms,
                                       max_queue=s.max_queue, name=name, on_batch=_record, warmup_item="warm-up")
                await batcher.start()
                self._models[name] = model
                self._batchers[name] = batcher
                log.info("model_loaded", model=name, path=str(self.path_of(name)), provider=model.provider,
                         kind=model.metadata.kind)
        return self._batchers[name]

    def model(self, name: str) -> Any:
        return self._models[name]

    async def run(self, name: str, text: str) -> Any:
        return await (await self.batcher(name)).submit(text)

    async def run_many(self, name: str, texts: list[str]) -> list[Any]:
        return await (await self.batcher(name)).submit_many(texts)

    async def close(self) -> None:
        for b in self._batchers.values():
            await b.close()
