"""The runtime's per-window sharing without real models: a window several requests wait for is
computed once; a window nobody waits for any more is withdrawn before it costs model time; a caller
that gives up never cancels a window another request still waits for; errors reach every waiter."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from classifiers import MicroBatcher
from router.config.schema import ClassifierSettings
from router.signals.models import ModelRuntime, _View


async def fake_runtime(fn, cache_mb: float = 1.0) -> tuple[ModelRuntime, MicroBatcher]:
    rt = ModelRuntime(Path("/nonexistent"), ClassifierSettings(result_cache_mb=cache_mb))
    batcher = MicroBatcher(fn, max_batch_size=8, max_wait_ms=0, name="fake")
    await batcher.start()
    rt._views["fake"] = _View("fake", batcher, object(), lambda: "ns", str.lower, lambda v: v)
    rt._batchers["fake"] = batcher
    return rt, batcher


async def until(cond) -> None:
    for _ in range(500):
        if cond():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition never became true")


async def test_waiters_share_one_computation_and_leavers_withdraw_theirs() -> None:
    gate = threading.Event()
    calls: list[list[str]] = []

    def fn(items: list[str]) -> list[str]:
        calls.append(list(items))
        gate.wait(10)
        return [s.upper() for s in items]

    rt, batcher = await fake_runtime(fn)
    try:
        first = asyncio.create_task(rt.run_many("fake", ["a"]))
        await until(lambda: calls)  # the worker is busy with "a"; what comes next waits in the queue
        gone = asyncio.create_task(rt.run_many("fake", ["b"]))
        leaver = asyncio.create_task(rt.run_many("fake", ["c"]))
        stayer = asyncio.create_task(rt.run_many("fake", ["C", "c"]))  # the same window as "c", twice
        await until(lambda: len(rt._inflight) == 3)
        gone.cancel()
        leaver.cancel()
        await asyncio.sleep(0)
        gate.set()
        assert await first == ["A"] and await stayer == ["C", "C"]
        for t in (gone, leaver):
            with pytest.raises(asyncio.CancelledError):
                await t
        # "b" was withdrawn before it ran; "c" ran once although three callers asked for it.
        assert [x for c in calls for x in c] == ["a", "c"] and batcher.items_run == 2
        assert await rt.run_many("fake", ["c", "a"]) == ["C", "A"] and batcher.items_run == 2  # cached
        assert rt.cache.stats.entries == 2 and not rt._inflight
    finally:
        gate.set()
        await rt.close()


async def test_a_model_error_reaches_every_waiter_and_is_not_cached() -> None:
    fail = True

    def fn(items: list[str]) -> list[str]:
        if fail:
            raise RuntimeError("model broke")
        return [s.upper() for s in items]

    rt, batcher = await fake_runtime(fn)
    try:
        results = await asyncio.gather(rt.run_many("fake", ["x"]), rt.run_many("fake", ["x"]), return_exceptions=True)
        assert all(isinstance(r, RuntimeError) for r in results) and batcher.items_run == 1
        fail = False
        assert await rt.run_many("fake", ["x"]) == ["X"] and batcher.items_run == 2
    finally:
        await rt.close()


async def test_cache_off_still_computes_each_request() -> None:
    rt, batcher = await fake_runtime(lambda items: [s.upper() for s in items], cache_mb=0)
    try:
        assert await rt.run_many("fake", ["q", "q"]) == ["Q", "Q"]
        assert await rt.run_many("fake", ["q"]) == ["Q"] and batcher.items_run == 3
    finally:
        await rt.close()
