"""Asyncio micro-batcher: concurrent requests → one model call in a worker thread.

On 2 CPU cores one ONNX call over 16 short prompts costs far less than 16 calls, and running the call
in a thread keeps the event loop (the ext_proc stream) responsive while the model works.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

import structlog

from .errors import BatcherClosedError, OverloadedError

T = TypeVar("T")
R = TypeVar("R")

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class BatchStats:
    """Handed to ``on_batch`` after every model call (hook for Prometheus histograms)."""

    name: str
    size: int
    queue_wait_ms_max: float  # oldest item's wait from submit to the start of the call
    queue_wait_ms_mean: float
    run_ms: float  # the model call itself
    queue_depth: int  # items still waiting when the call finished
    ok: bool


@dataclass
class _Item(Generic[T, R]):
    value: T
    future: asyncio.Future[R]
    enqueued: float


class MicroBatcher(Generic[T, R]):
    """Batch ``fn(list[T]) -> list[R]`` over concurrent :meth:`submit` calls.

    * ``max_batch_size``: most items per call (1 = no batching).
    * ``max_wait_ms``: how long the first item of a batch waits for company -- only once there is
      concurrency (the last batch had more than one item), so a lone caller never waits. Items that
      arrive while a call is running queue up and form the next batch anyway.
    * ``max_queue``: items allowed to wait; beyond it :meth:`submit` raises :class:`OverloadedError`.
    * ``workers``: concurrent model calls (threads). 1 suits small CPU hosts: ORT already uses the
      cores inside one call.
    """

    def __init__(
        self,
        fn: Callable[[list[T]], Sequence[R]],
        *,
        max_batch_size: int = 32,
        max_wait_ms: float = 2.0,
        max_queue: int = 1024,
        workers: int = 1,
        name: str = "model",
        on_batch: Callable[[BatchStats], None] | None = None,
        warmup_item: T | None = None,
    ) -> None:
        if max_batch_size < 1 or max_queue < 1 or workers < 1 or max_wait_ms < 0:
            raise ValueError("max_batch_size, max_queue, workers must be >= 1 and max_wait_ms >= 0")
        self.fn = fn
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_ms / 1000.0
        self.max_queue = max_queue
        self.workers = workers
        self.name = name
        self.on_batch = on_batch
        self.warmup_item = warmup_item
        self._queue: asyncio.Queue[_Item[T, R]] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._executor: ThreadPoolExecutor | None = None
        self._last_size = 0
        # Counters (never reset): model calls made and items they computed, warm-up excluded. Tests
        # assert on these ("was this text classified again?") rather than on timing.
        self.calls = 0
        self.items_run = 0
        self._idle = workers  # workers not inside a model call

    @classmethod
    def for_model(cls, model: Any, **kwargs: Any) -> MicroBatcher[str, Any]:
        """Batcher over a ``classifiers`` model's ``run(texts)``; warms up with a short text."""
        kwargs.setdefault("name", Path(getattr(model, "path", "model")).name)
        kwargs.setdefault("warmup_item", "warm-up")
        return cls(model.run, **kwargs)  # type: ignore[return-value]  # a model's run() is str -> result by contract

    @property
    def running(self) -> bool:
        return bool(self._tasks)

    @property
    def queue_depth(self) -> int:
        return self._queue.qsize() if self._queue else 0

    async def start(self) -> None:
        """Create the queue and worker tasks, then warm up (a single item and a full batch)."""
        if self._tasks:
            return
        self._queue = asyncio.Queue(maxsize=self.max_queue)
        self._executor = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix=f"mb-{self.name}")
        if self.warmup_item is not None:
            await self.warmup()
        self._tasks = [asyncio.create_task(self._worker(), name=f"mb-{self.name}-{i}") for i in range(self.workers)]
        log.info(
            "microbatcher_started",
            name=self.name,
            max_batch_size=self.max_batch_size,
            max_wait_ms=self.max_wait_s * 1000,
            max_queue=self.max_queue,
            workers=self.workers,
        )

    async def warmup(self) -> None:
        """Run the model once on one item and once on a full batch, so lazy allocations happen now."""
        assert self._executor is not None, "start() first"
        item = self.warmup_item
        assert item is not None, "no warmup_item"
        loop = asyncio.get_running_loop()
        t0 = time.perf_counter()
        for n in sorted({1, self.max_batch_size}):
            await loop.run_in_executor(self._executor, self.fn, [item] * n)
        log.info("microbatcher_warmed_up", name=self.name, ms=round((time.perf_counter() - t0) * 1000, 1))

    async def close(self) -> None:
        """Stop workers; requests still queued fail with :class:`BatcherClosedError`."""
        tasks, self._tasks = self._tasks, []
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._queue is not None:
            while not self._queue.empty():
                item = self._queue.get_nowait()
                if not item.future.done():
                    item.future.set_exception(BatcherClosedError(f"batcher {self.name!r} closed"))
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    async def __aenter__(self) -> MicroBatcher[T, R]:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def enqueue(self, value: T) -> asyncio.Future[R]:
        """Queue one item; its result arrives on the returned future (cancel it to withdraw the item
        while it still waits). Raises :class:`OverloadedError` when the queue is full."""
        if not self._tasks or self._queue is None:
            raise BatcherClosedError(f"batcher {self.name!r} is not running (call start())")
        fut: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        try:
            self._queue.put_nowait(_Item(value, fut, time.perf_counter()))
        except asyncio.QueueFull:
            raise OverloadedError(f"batcher {self.name!r} overloaded: {self.max_queue} requests already queued") from None
        return fut

    async def submit(self, value: T) -> R:
        """Queue one item and wait for its result. Raises :class:`OverloadedError` when the queue is full."""
        return await self.enqueue(value)

    async def submit_many(self, values: Sequence[T]) -> list[R]:
        return list(await asyncio.gather(*(self.submit(v) for v in values)))

    async def _collect(self) -> list[_Item[T, R]]:
        assert self._queue is not None
        batch = [await self._queue.get()]
        await asyncio.sleep(0)  # let submitters that are already runnable enqueue
        # Wait for company only when there is evidence of concurrency (this or the last batch had
        # more than one item): a lone caller at low load shouldn't pay max_wait_ms on every request.
        waiting = self._last_size > 1 or not self._queue.empty()
        deadline = time.perf_counter() + (self.max_wait_s if waiting else 0.0)
        limit = self.max_batch_size
        if self._idle > 1:
            # Several workers free: a burst (one request's windows) is shared out among them, so the
            # cores work on it side by side instead of one worker taking it all.
            limit = min(limit, max(1, -(-(self._queue.qsize() + 1) // self._idle)))
        while len(batch) < limit:
            try:
                batch.append(self._queue.get_nowait())
                continue
            except asyncio.QueueEmpty:
                pass
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), remaining))
            except TimeoutError:
                break
        self._last_size = len(batch)
        # Callers that gave up (cancelled / timed out) don't cost model time.
        return [it for it in batch if not it.future.done()]

    async def _worker(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._collect()
            if not batch:
                continue
            start = time.perf_counter()
            waits = [(start - it.enqueued) * 1000 for it in batch]
            ok = True
            self.calls += 1
            self.items_run += len(batch)
            self._idle -= 1
            try:
                results = await loop.run_in_executor(self._executor, self.fn, [it.value for it in batch])
                if len(results) != len(batch):
                    raise RuntimeError(f"model returned {len(results)} results for {len(batch)} inputs")
            except asyncio.CancelledError:
                for it in batch:
                    if not it.future.done():
                        it.future.set_exception(BatcherClosedError(f"batcher {self.name!r} closed"))
                raise
            except Exception as exc:  # noqa: BLE001 - the model failed: every caller in the batch gets the error
                ok = False
                for it in batch:
                    if not it.future.done():
                        it.future.set_exception(exc)
            else:
                for it, res in zip(batch, results, strict=True):
                    if not it.future.done():
                        it.future.set_result(res)
            finally:
                self._idle += 1
            if self.on_batch is not None:
                stats = BatchStats(
                    name=self.name,
                    size=len(batch),
                    queue_wait_ms_max=max(waits),
                    queue_wait_ms_mean=sum(waits) / len(waits),
                    run_ms=(time.perf_counter() - start) * 1000,
                    queue_depth=self.queue_depth,
                    ok=ok,
                )
                try:
                    self.on_batch(stats)
                except Exception:  # a broken metrics hook must not stop inference
                    log.exception("microbatcher_on_batch_failed", name=self.name)
