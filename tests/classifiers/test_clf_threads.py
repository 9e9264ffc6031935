"""Threads for concurrent load: one thread per call on small boxes, concurrent calls on big ones."""

from __future__ import annotations

import pytest

from classifiers.session import thread_plan


@pytest.mark.parametrize("cores,intra,workers", [(1, 1, 1), (2, 1, 1), (4, 2, 1), (8, 2, 2), (16, 2, 4), (64, 2, 16)])
def test_thread_plan_by_cores(cores: int, intra: int, workers: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FUSION_ROUTER_ORT_THREADS", raising=False)
    plan = thread_plan(cores)
    assert (plan.intra_op_threads, plan.workers) == (intra, workers)
    assert plan.intra_op_threads * plan.workers * 2 <= max(cores, 2)  # two busy models never oversubscribe


def test_settings_and_environment_override_the_plan(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FUSION_ROUTER_ORT_THREADS", raising=False)
    p = thread_plan(16, intra_op_threads=8)
    assert (p.intra_op_threads, p.workers) == (8, 1)
    monkeypatch.setenv("FUSION_ROUTER_ORT_THREADS", "4")
    p = thread_plan(16)
    assert (p.intra_op_threads, p.workers) == (4, 2)
