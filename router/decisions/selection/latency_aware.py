"""``latency_aware``: the modelRef the router has seen answer fastest, from its own looper sub-calls
(router/decisions/selection/observed.py). Each metric (TTFT, time per output token) is scaled by the
best candidate's value and the scaled values averaged: lowest wins. ``ttft_percentile`` /
``tpot_percentile`` (the reference's names) compare that percentile of the recent window and use only
the metrics they name; without them the EWMAs of both are compared. A metric some candidate lacks (a
model never streamed has no TTFT) drops out; with none left, whole-call latency is compared. Models
with fewer than ``min_samples`` observations, or whose recent calls mostly failed (``max_error_rate``),
are passed over; with nobody known, the first modelRef."""

from __future__ import annotations

from pydantic import Field

from router.config.base import Strict
from router.decisions.selection.spec import (
    SelectContext,
    Selection,
    SelectionSpec,
    first,
    no_check,
)


class LatencyAwareSettings(Strict):
    ttft_percentile: int | None = Field(default=None, ge=1, le=100)
    tpot_percentile: int | None = Field(default=None, ge=1, le=100)
    min_samples: int = Field(default=3, ge=1, le=1000)
    max_error_rate: float = Field(default=0.5, gt=0, le=1)


def _value(ctx: SelectContext, model: str, metric: str, percentile: int | None) -> float | None:
    stats = ctx.observed.get(model)
    if stats is None:
        return None
    if percentile is not None:
        return stats.percentile(metric, percentile)
    return stats.ewma.get(metric)


def select(settings: LatencyAwareSettings, ctx: SelectContext) -> Selection:
    wanted = {m: p for m, p in (("ttft", settings.ttft_percentile), ("tpot", settings.tpot_percentile)) if p is not None}
    metrics: dict[str, int | None] = dict(wanted) if wanted else {"ttft": None, "tpot": None}
    known: list[str] = []
    unhealthy: list[str] = []
    for c in ctx.candidates:
        stats = ctx.observed.get(c.model)
        if stats is None or stats.samples["latency"] < settings.min_samples:
            continue
        (unhealthy if stats.error_rate > settings.max_error_rate else known).append(c.model)
    if not known:
        why = "every observed modelRef is failing" if unhealthy else "no latency observations yet"
        return first(ctx, "latency_aware", f"{why}; first modelRef")
    used = {m: p for m, p in metrics.items() if all(_value(ctx, k, m, p) is not None for k in known)}
    if not used:
        used = {"latency": None}
    scores: dict[str, float] = {}
    for model in known:
        parts = []
        for metric, p in used.items():
            best = min(_value(ctx, k, metric, p) or 0.0 for k in known)
            value = _value(ctx, model, metric, p) or 0.0
            parts.append(value / best if best > 0 else 1.0)
        scores[model] = sum(parts) / len(parts)
    chosen = min(known, key=lambda m: scores[m])  # ties: declared order
    label = ", ".join(f"{m} {f'p{p}' if p else 'ewma'}" for m, p in used.items())
    detail = ", ".join(f"{m}={(_value(ctx, chosen, m, p) or 0) * 1000:.1f}ms" for m, p in used.items())
    skipped = f"; {len(unhealthy)} failing passed over" if unhealthy else ""
    return Selection(chosen, "latency_aware", f"fastest by {label} ({detail}){skipped}", scores)


SPEC = SelectionSpec(
    name="latency_aware",
    summary="The modelRef the router saw answer fastest (its looper sub-calls' TTFT and time per token, EWMA or percentile).",
    settings=LatencyAwareSettings,
    select=select,
    check=no_check,
)
