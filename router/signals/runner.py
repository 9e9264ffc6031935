"""Run the signals a request needs: cheap ones inline, the rest concurrently under time budgets."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable

import structlog

from router.signals.base import Signal, SignalContext, SignalResult

log = structlog.get_logger("router.signals")


def _failed(sig: Signal, error: str, started: float) -> SignalResult:
    # fail_closed treats an unknown as a match: a broken jailbreak detector must not wave traffic through.
    matched = sig.spec.on_error == "fail_closed"
    return SignalResult(
        sig.type, sig.name, matched, 1.0 if matched else 0.0, latency_ms=(time.perf_counter() - started) * 1000, error=error
    )


async def _run_one(sig: Signal, ctx: SignalContext) -> SignalResult:
    started = time.perf_counter()
    try:
        result = await asyncio.wait_for(sig.evaluate(ctx), sig.spec.timeout_ms / 1000)
    except TimeoutError:
        result = _failed(sig, f"timed out after {sig.spec.timeout_ms:g} ms", started)
    except Exception as exc:  # noqa: BLE001 - any failure is handled by the signal's on_error policy
        result = _failed(sig, f"{type(exc).__name__}: {exc}", started)
    else:
        result.latency_ms = (time.perf_counter() - started) * 1000
    if result.error:
        log.warning("signal_failed", signal=sig.key, error=result.error, on_error=sig.spec.on_error)
    return result


async def run_signals(signals: Iterable[Signal], ctx: SignalContext) -> dict[str, SignalResult]:
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
            res = _failed(sig, f"{type(exc).__name__}: {exc}", started)
        results[sig.key] = res
    if len(slow) == 1:
        results[slow[0].key] = await _run_one(slow[0], ctx)
    elif slow:
        for res in await asyncio.gather(*(_run_one(s, ctx) for s in slow)):
            results[res.key] = res
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
