"""MicroBatcher: batching, equivalence with unbatched calls, overload, errors, event-loop liveness."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from classifiers import BatcherClosedError, BatchStats, EmbeddingModel, MicroBatcher, OverloadedError


def _echo(calls: list[list[str]]):
    def fn(items: list[str]) -> list[str]:
        calls.append(list(items))
        time.sleep(0.01)
        return [s.upper() for s in items]

    return fn


async def test_concurrent_requests_share_batches() -> None:
    calls: list[list[str]] = []
    stats: list[BatchStats] = []
    async with MicroBatcher(_echo(calls), max_batch_size=8, max_wait_ms=5, on_batch=stats.append) as mb:
        out = await asyncio.gather(*(mb.submit(f"x{i}") for i in range(32)))
    assert out == [f"X{i}" for i in range(32)]
    assert max(len(c) for c in calls) == 8 and len(calls) <= 8
    assert sum(s.size for s in stats) == 32 and all(s.ok for s in stats)
    assert all(s.queue_wait_ms_max >= s.queue_wait_ms_mean >= 0 and s.run_ms > 0 for s in stats)


async def test_batch_size_one_means_no_batching() -> None:
    calls: list[list[str]] = []
    async with MicroBatcher(_echo(calls), max_batch_size=1) as mb:
        await mb.submit_many(["a", "b", "c"])
    assert calls == [["a"], ["b"], ["c"]]


async def test_warmup_runs_at_start() -> None:
    calls: list[list[str]] = []
    mb = MicroBatcher(_echo(calls), max_batch_size=4, warmup_item="w")
    await mb.start()
    assert calls == [["w"], ["w"] * 4]
    await mb.close()


async def test_overload_raises() -> None:
    gate = threading.Event()

    def blocked(items: list[int]) -> list[int]:
        gate.wait(5)
        return items

    mb = MicroBatcher(blocked, max_batch_size=1, max_queue=2, max_wait_ms=0)
    await mb.start()
    first = asyncio.create_task(mb.submit(0))
    await asyncio.sleep(0.05)  # the worker has taken item 0 and is stuck in the model call
    queued = [asyncio.create_task(mb.submit(i)) for i in (1, 2)]
    await asyncio.sleep(0)
    with pytest.raises(OverloadedError, match="overloaded"):
        await mb.submit(3)
    gate.set()
    assert await first == 0 and await asyncio.gather(*queued) == [1, 2]
    await mb.close()


async def test_model_errors_reach_every_caller() -> None:
    def boom(items: list[str]) -> list[str]:
        raise RuntimeError("model exploded")

    async with MicroBatcher(boom, max_batch_size=4, max_wait_ms=5) as mb:
        res = await asyncio.gather(*(mb.submit("x") for _ in range(3)), return_exceptions=True)
        assert all(isinstance(r, RuntimeError) for r in res)
        # the worker survives a failed batch
        mb.fn = lambda items: items  # type: ignore[assignment]
        assert await mb.submit("ok") == "ok"


async def test_submit_requires_start_and_close_fails_pending() -> None:
    mb = MicroBatcher(lambda items: items)
    with pytest.raises(BatcherClosedError):
        await mb.submit("x")
    gate = threading.Event()
    mb = MicroBatcher(lambda items: (gate.wait(5), items)[1], max_batch_size=1, max_wait_ms=0)
    await mb.start()
    t1 = asyncio.create_task(mb.submit("a"))
    await asyncio.sleep(0.05)
    t2 = asyncio.create_task(mb.submit("b"))
    await asyncio.sleep(0)
    await mb.close()
    gate.set()
    for t in (t1, t2):
        with pytest.raises(BatcherClosedError):
            await t


async def test_cancelled_callers_cost_nothing() -> None:
    calls: list[list[str]] = []
    gate = threading.Event()

    def fn(items: list[str]) -> list[str]:
        gate.wait(5)
        calls.append(list(items))
        return items

    async with MicroBatcher(fn, max_batch_size=8, max_wait_ms=0) as mb:
        first = asyncio.create_task(mb.submit("first"))
        await asyncio.sleep(0.05)
        doomed = asyncio.create_task(mb.submit("doomed"))
        kept = asyncio.create_task(mb.submit("kept"))
        await asyncio.sleep(0)
        doomed.cancel()
        gate.set()
        assert await first == "first" and await kept == "kept"
    assert ["doomed"] not in calls and all("doomed" not in c for c in calls)


@pytest.mark.models
async def test_batched_results_equal_unbatched(embedder: EmbeddingModel) -> None:
    texts = [("word " * n).strip() + f" #{n}" for n in (1, 3, 40, 7, 120, 2, 15, 60)]
    stats: list[BatchStats] = []
    async with MicroBatcher.for_model(embedder, max_batch_size=8, max_wait_ms=20, on_batch=stats.append) as mb:
        got = await mb.submit_many(texts)
    assert max(s.size for s in stats) > 1  # really batched
    for text, res in zip(texts, got):
        np.testing.assert_allclose(res.vector, embedder.embed([text])[0], atol=1e-5)


@pytest.mark.models
async def test_event_loop_keeps_ticking_during_inference(embedder: EmbeddingModel) -> None:
    ticks: list[float] = []
    stop = asyncio.Event()

    async def ticker() -> None:
        while not stop.is_set():
            ticks.append(time.perf_counter())
            await asyncio.sleep(0.005)

    long_texts = ["the quick brown fox jumps over the lazy dog " * 25 + str(i) for i in range(64)]
    async with MicroBatcher.for_model(embedder, max_batch_size=16, max_wait_ms=2) as mb:
        t = asyncio.create_task(ticker())
        t0 = time.perf_counter()
        await mb.submit_many(long_texts)
        busy = time.perf_counter() - t0
        stop.set()
        await t
    gaps = np.diff(ticks)
    assert busy > 0.1, "inference too fast to prove anything"
    # A blocked loop would show one gap as long as the whole inference run.
    assert gaps.max() < max(0.1, busy / 3), (gaps.max(), busy)
    assert len(ticks) >= busy / 0.05


async def test_a_burst_is_shared_out_among_idle_workers() -> None:
    calls: list[list[str]] = []
    threads: set[int] = set()

    def fn(items: list[str]) -> list[str]:
        calls.append(list(items))
        threads.add(threading.get_ident())
        time.sleep(0.02)
        return [s.upper() for s in items]

    async with MicroBatcher(fn, max_batch_size=32, max_wait_ms=0, workers=4) as mb:
        out = await mb.submit_many([f"w{i}" for i in range(20)])
    assert out == [f"W{i}" for i in range(20)]
    assert sum(len(c) for c in calls) == 20 and len(calls) >= 4  # not one 20-item call on one worker
    assert max(len(c) for c in calls) <= 5 and len(threads) > 1


async def test_one_worker_takes_the_whole_burst() -> None:
    calls: list[list[str]] = []
    async with MicroBatcher(_echo(calls), max_batch_size=32, max_wait_ms=0, workers=1) as mb:
        await mb.submit_many([f"w{i}" for i in range(20)])
    assert [len(c) for c in calls] == [20]
