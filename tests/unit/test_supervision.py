"""`serve --workers N` supervision, with fake processes: a dead worker is started again on its own port,
after a backoff that doubles with each quick death, counted in the restart metric; none after stop."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

import router.serve as serve_mod
from router.observability import metrics


class FakeProc:
    pids = iter(range(1000, 2000))

    def __init__(self, argv, env, **_kw):
        self.argv = argv
        self.pid = next(self.pids)
        self.returncode: int | None = None

    def poll(self) -> int | None:
        return self.returncode


@pytest.fixture()
def pool(monkeypatch):
    spawned: list[FakeProc] = []

    def popen(argv, env=None, **kw):
        proc = FakeProc(argv, env, **kw)
        spawned.append(proc)
        return proc

    monkeypatch.setattr(serve_mod.subprocess, "Popen", popen)
    monkeypatch.setattr(serve_mod.sys, "argv", ["fusion-router", "serve", "--config", "x.yaml", "--workers", "3"])
    workers = serve_mod.Workers(SimpleNamespace(workers=3, grpc_port=7000), "looper-secret")
    workers.backoff_min, workers.poll_s = 0.02, 0.005
    workers.start()
    return workers, spawned


def restarts() -> float:
    return metrics.WORKER_RESTARTS._value.get()  # the counter's own value


async def _until(cond, timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not cond():
        assert loop.time() < deadline
        await asyncio.sleep(0.005)


async def test_a_dead_worker_is_started_again_on_its_port(pool):
    workers, spawned = pool
    assert [p.argv[-1] for p in spawned] == ["7001", "7002"]
    before = restarts()
    stop = asyncio.Event()
    task = asyncio.ensure_future(workers.supervise(stop))
    spawned[1].returncode = -9  # the OOM killer
    await _until(lambda: len(spawned) == 3)
    assert spawned[2].argv[-2:] == ["--grpc-port", "7002"] and workers.procs[1] is spawned[2]
    assert workers.procs[0] is spawned[0]  # the healthy one is left alone
    assert restarts() == before + 1
    stop.set()
    await task


async def test_quick_deaths_back_off_and_stop_ends_restarts(pool):
    workers, spawned = pool
    stop = asyncio.Event()
    task = asyncio.ensure_future(workers.supervise(stop))
    loop = asyncio.get_running_loop()
    times = []
    for n in range(3):
        workers.procs[0].returncode = 1
        died = loop.time()
        await _until(lambda n=n: len(spawned) == 3 + n)
        times.append(loop.time() - died)
    # 0.02 s, then 0.04 s, then 0.08 s: each quick death doubles the wait.
    assert times[0] >= 0.02 and times[1] >= 0.04 and times[2] >= 0.08
    stop.set()
    await task
    workers.procs[0].returncode = 1
    await asyncio.sleep(0.1)
    assert len(spawned) == 5  # no restart once the router is stopping
