"""Concurrent fan-out shared by the algorithms that ask several models at once (a Fusion panel, a
ReMoM round): bounded concurrency, a stage budget, an early start once enough members answered
(the stragglers cancelled, or awaited), ``on_error`` policy, and cancellation of everything in flight
when the client goes away."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from router.looper.base import CallResult, LooperRun
from router.looper.errors import StageFailure, UpstreamError


@dataclass(frozen=True, slots=True)
class Member:
    model: str
    body: dict[str, Any]


@dataclass(slots=True)
class FanOut:
    answers: list[tuple[Member, CallResult]] = field(default_factory=list)  # in member order
    failed: list[Member] = field(default_factory=list)
    cancelled: list[Member] = field(default_factory=list)  # not needed once enough had answered


async def fan_out(
    run: LooperRun,
    members: list[Member],
    *,
    stage: str,
    timeout: float,
    max_concurrent: int,
    enough: int | None = None,
    cancel_stragglers: bool = True,
    on_error: str = "skip",
    label: str = "",
) -> FanOut:
    """Call every member; return once all finished, the budget ran out, or ``enough`` answered (then
    the rest are cancelled unless ``cancel_stragglers`` is off)."""
    gate = asyncio.Semaphore(max(1, max_concurrent))
    out = FanOut()
    label = label or stage

    async def one(member: Member) -> CallResult:
        async with gate:
            return await run.call(member.model, member.body, timeout, stage=stage)

    tasks = {asyncio.create_task(one(m)): (i, m) for i, m in enumerate(members)}
    answered: dict[int, tuple[Member, CallResult]] = {}
    deadline = time.perf_counter() + timeout
    pending = set(tasks)
    try:
        while pending:
            done, pending = await asyncio.wait(
                pending, timeout=max(0.0, deadline - time.perf_counter()), return_when=asyncio.FIRST_COMPLETED
            )
            if not done:  # the stage budget ran out: whoever has not answered failed
                for task in pending:
                    _, m = tasks[task]
                    run.ledger.fail(m.model, stage, "timeout", f"no answer within the {label} budget of {timeout:g}s")
                    out.failed.append(m)
                break
            for task in done:
                i, m = tasks[task]
                exc = task.exception()
                if exc is None:
                    answered[i] = (m, task.result())
                    await run.say(f"{label}: {m.model} answered in {task.result().latency_ms:.0f} ms")
                    continue
                out.failed.append(m)
                if not isinstance(exc, UpstreamError):  # our own bug: record it, never hide it
                    run.ledger.fail(m.model, stage, "internal_error", f"{type(exc).__name__}: {exc}")
                reason = exc.reason if isinstance(exc, UpstreamError) else "internal_error"
                await run.say(f"{label}: {m.model} failed ({reason})")
                if on_error == "fail":
                    raise StageFailure(stage, 502, f"{stage}_model_failed", f"{label} model {m.model} failed ({reason}): {exc}")
            if enough is not None and len(answered) >= enough and pending and cancel_stragglers:
                out.cancelled = [tasks[t][1] for t in pending]
                await run.say(f"{label}: {len(answered)} answered; not waiting for {', '.join(m.model for m in out.cancelled)}")
                break
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    out.answers = [answered[i] for i in sorted(answered)]
    return out
