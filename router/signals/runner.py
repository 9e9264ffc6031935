"""Run the signals a request needs: cheap ones inline, the rest concurrently under time budgets.

A failed signal never counts as a match: its result carries the error, and the caller decides what a
failure means (a guard that cannot answer refuses the request with a retryable 503; a routing signal
with ``on_error: skip`` simply did not match).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable

import structlog

from router.signals.base import Signal, SignalContext, SignalResult, TextTooLong

log = structlog.get_logger("router.signals")


def _failed(sig: Signal, error: str, started: float, reason: str) -> SignalResult:
    return SignalResult(
        sig.type, sig.name, False, 0.0, latency_ms=(time.perf_counter() - started) * 1000, error=error, error_reason=reason
    )


def _reason(exc: BaseException) -> str:
    # Overload and timeouts are capacity problems (retry later); anything else is a broken signal.
    name = type(exc).__name__
    return "overloaded" if name in ("OverloadedError", "BatcherClosedError") else "error"


async def _run_one(sig: Signal, ctx: SignalContext, budget_s: float | None) -> SignalResult:
    started = time.perf_counter()
    timeout = sig.spec.timeout_ms / 1000
    if budget_s is not None:
        timeout = min(timeout, max(budget_s, 0.0))
    try:
        result = await asyncio.wait_for(sig.evaluate(ctx), timeout)
    except TextTooLong:
        raise
    except TimeoutError:
        result = _failed(sig, f"timed out after {timeout * 1000:g} ms", started, "timeout")
    except Exception as exc:  # noqa: BLE001 - every failure is reported; the caller decides what it means
        result = _failed(sig, f"{type(exc).__name__}: {exc}", started, _reason(exc))
    else:
        result.latency_ms = (time.perf_counter() - started) * 1000
    if result.error:
        log.warning("signal_failed", signal=sig.key, error=result.error, reason=result.error_reason)
    return result


async def run_signals(signals: Iterable[Signal], ctx: SignalContext, budget_s: float | None = None) -> dict[str, SignalResult]:
    """Every signal's result. ``budget_s`` caps each slow signal's own timeout (the request's deadline).
    Raises TextTooLong when a signal refuses to check more text than its budget allows."""
    results: dict[str, SignalResult] = {}
    slow: list[Signal] = []
    for sig in signals:
        if not sig.cheap:
            slow.append(sig)
            continue
        started = time.perf_counter()
        try:
            res = sig.evaluate_now(ctx)
            res.latency_ms = (time.perf_counter() - started) * 1000
        except Exception as exc:  # noqa: BLE001
            res = _failed(sig, f"{type(exc).__name__}: {exc}", started, "error")
        results[sig.key] = res
    if len(slow) == 1:
        results[slow[0].key] = await _run_one(slow[0], ctx, budget_s)
    elif slow:
        tasks = [asyncio.ensure_future(_run_one(s, ctx, budget_s)) for s in slow]
        try:
            for res in await asyncio.gather(*tasks):
                results[res.key] = res
        finally:
            for t in tasks:  # a refusal ends the request: the other checks need not finish
                t.cancel()
    return results


def matched_leaves(results: dict[str, SignalResult]) -> dict[str, float]:
    """Rule leaf ``type:name`` → confidence, for every matched result and its extra leaves."""
    out: dict[str, float] = {}
    for res in results.values():
        if res.matched:
            out[res.key] = res.confidence
        for leaf in res.leaves:
            out[leaf] = max(out.get(leaf, 0.0), res.confidence)
    return out
