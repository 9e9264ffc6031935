"""Summaries of a run: quality with bootstrap intervals, paired deltas against the best solo model,
cost per answer and latency percentiles; written as Markdown and JSON.

Per item a score is in [0, 1]: 1/0 for closed items, the rubric fraction for open ones. A failed call
(the endpoint answered an error or nothing) scores 0 - the user got no answer - and is counted in
``errors``; an answer the judge could not grade is left out of the quality mean (``unscored``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from datetime import UTC, datetime

from pydantic import BaseModel, Field

from router.eval.configs import EvalConfiguration, EvalSuite
from router.eval.dataset import Item
from router.eval.results import ResultRecord
from router.eval.stats import DEFAULT_RESAMPLES, DEFAULT_SEED, Interval, mean_ci, paired_bootstrap, percentile


class IntervalOut(BaseModel):
    n: int
    mean: float
    low: float
    high: float

    @classmethod
    def of(cls, interval: Interval | None) -> IntervalOut | None:
        return None if interval is None else cls(n=interval.n, mean=interval.mean, low=interval.low, high=interval.high)


class SliceScore(BaseModel):
    n: int
    mean: float


class ConfigurationSummary(BaseModel):
    name: str
    model: str
    solo: bool
    planned: int = Field(description="items in this run")
    scored: int
    unscored: int
    errors: int
    missing: int = Field(description="items with no result yet (an interrupted run)")
    quality: IntervalOut | None
    slices: dict[str, SliceScore]
    vs_baseline: IntervalOut | None = Field(None, description="mean paired difference against the baseline")
    calls: float | None = Field(None, description="model calls per answer")
    prompt_tokens: float | None = None
    completion_tokens: float | None = None
    latency_p50_ms: float | None = None
    latency_p95_ms: float | None = None
    graders: dict[str, int] = Field(default_factory=dict)
    problems: dict[str, int] = Field(default_factory=dict, description="error / unscored reasons and counts")
    judge_pattern_agreement: float | None = Field(
        None, description="share of rubric criteria where the judge and the criteria patterns agree"
    )
    pattern_open_score: float | None = Field(
        None, description="mean rubric score of the open items by the criteria patterns (a judge-free cross-check)"
    )

    @property
    def tokens(self) -> float | None:
        if self.prompt_tokens is None or self.completion_tokens is None:
            return None
        return self.prompt_tokens + self.completion_tokens


class Report(BaseModel):
    title: str
    generated_at: str = Field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    complete: bool
    items: int
    slices: dict[str, int]
    resamples: int
    seed: int
    baseline: str | None
    baseline_reason: str
    judge: str | None
    configurations: list[ConfigurationSummary]


def item_score(record: ResultRecord) -> float | None:
    """The score a record contributes: its score, 0 for a failed call, None when unscored."""
    if record.status == "error":
        return 0.0
    return record.score if record.status == "scored" else None


def _scores(records: dict[str, ResultRecord]) -> dict[str, float]:
    return {iid: score for iid, r in records.items() if (score := item_score(r)) is not None}


def _reason(record: ResultRecord) -> str:
    text = record.error or "unknown"
    # Group "HTTP 502: <long message>" by its head so the table stays readable.
    return text.split(":")[0] if text.startswith("HTTP ") else text[:80]


def _summary(
    config: EvalConfiguration, items: list[Item], records: dict[str, ResultRecord], resamples: int, seed: int
) -> ConfigurationSummary:
    scores: dict[str, float] = {}
    by_slice: dict[str, list[float]] = {}
    answered: list[ResultRecord] = []
    problems: Counter[str] = Counter()
    graders: Counter[str] = Counter()
    agree = total = 0
    for item in items:
        record = records.get(item.id)
        if record is None:
            continue
        value = item_score(record)
        if record.status != "scored":
            problems[f"{record.status}: {_reason(record)}"] += 1
        if record.status != "error":
            answered.append(record)
        if record.grader:
            graders[record.grader] += 1
        if value is not None:
            scores[item.id] = value
            by_slice.setdefault(item.slice, []).append(value)
        if record.judge is not None and record.judge.met is not None and record.pattern_score is not None:
            pattern = _pattern_met(item, record)
            for cid, met in record.judge.met.items():
                if cid in pattern:
                    total += 1
                    agree += int(pattern[cid] == met)

    def mean(values: Iterable[float]) -> float | None:
        vals = list(values)
        return sum(vals) / len(vals) if vals else None

    latencies = [r.latency_ms for r in answered]
    return ConfigurationSummary(
        name=config.name,
        model=config.model,
        solo=config.solo,
        planned=len(items),
        scored=sum(1 for r in records.values() if r.status == "scored"),
        unscored=sum(1 for r in records.values() if r.status == "unscored"),
        errors=sum(1 for r in records.values() if r.status == "error"),
        missing=sum(1 for i in items if i.id not in records),
        quality=IntervalOut.of(mean_ci(list(scores.values()), resamples=resamples, seed=seed)),
        slices={s: SliceScore(n=len(v), mean=sum(v) / len(v)) for s, v in sorted(by_slice.items())},
        calls=mean(r.calls for r in answered),
        prompt_tokens=mean(r.prompt_tokens for r in answered),
        completion_tokens=mean(r.completion_tokens for r in answered),
        latency_p50_ms=percentile(latencies, 50),
        latency_p95_ms=percentile(latencies, 95),
        graders=dict(graders),
        problems=dict(problems.most_common()),
        judge_pattern_agreement=agree / total if total else None,
        pattern_open_score=mean(r.pattern_score for r in answered if r.pattern_score is not None),
    )


def _pattern_met(item: Item, record: ResultRecord) -> dict[str, bool]:
    from router.eval.scoring import pattern_verdicts

    return pattern_verdicts(item.rubric, record.content or "") or {}


def build_report(
    suite: EvalSuite,
    items: list[Item],
    records: dict[tuple[str, str], ResultRecord],
    *,
    title: str = "fusion-router eval",
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
) -> Report:
    planned = {i.id for i in items}
    per_config = {
        c.name: {iid: r for (name, iid), r in records.items() if name == c.name and iid in planned} for c in suite.configurations
    }
    summaries = [_summary(c, items, per_config[c.name], resamples, seed) for c in suite.configurations]

    baseline, reason = suite.baseline, "set in the suite"
    if baseline is None:
        solos = [s for s in summaries if s.solo and s.quality is not None]
        if solos:
            best = max(solos, key=lambda s: s.quality.mean if s.quality else -1.0)
            baseline, reason = best.name, "the best solo configuration by mean quality"
        else:
            reason = "no solo configuration: no paired comparison"
    if baseline is not None:
        base_scores = _scores(per_config[baseline])
        for summary in summaries:
            if summary.name == baseline:
                continue
            mine = _scores(per_config[summary.name])
            # Paired: only items both have a score for, in the same order on both sides.
            common = [i.id for i in items if i.id in mine and i.id in base_scores]
            summary.vs_baseline = IntervalOut.of(
                paired_bootstrap([mine[i] for i in common], [base_scores[i] for i in common], resamples=resamples, seed=seed)
            )
    complete = all(s.missing == 0 for s in summaries)
    return Report(
        title=title,
        complete=complete,
        items=len(items),
        slices=dict(Counter(i.slice for i in items)),
        resamples=resamples,
        seed=seed,
        baseline=baseline,
        baseline_reason=reason,
        judge=suite.judge.model if suite.judge else None,
        configurations=summaries,
    )


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}"


def _ci(interval: IntervalOut | None, signed: bool = False) -> str:
    if interval is None:
        return "-"
    sign = "+" if signed else ""
    return f"{interval.mean * 100:{sign}.1f} [{interval.low * 100:{sign}.1f}, {interval.high * 100:{sign}.1f}] (n={interval.n})"


def _num(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def markdown(report: Report) -> str:
    slices = list(report.slices)
    head = [
        "configuration",
        "quality % [95% CI]",
        f"Δ vs {report.baseline or 'baseline'} (paired, pp)",
        *slices,
        "calls / answer",
        "tokens / answer (prompt + completion)",
        "latency p50 / p95 (s)",
        "errors",
        "unscored",
    ]
    lines = [
        f"# {report.title}",
        "",
        f"{report.items} items ({', '.join(f'{k}: {v}' for k, v in report.slices.items())}); "
        f"baseline: **{report.baseline or 'none'}** ({report.baseline_reason}); "
        f"bootstrap: {report.resamples} resamples, seed {report.seed}; judge: {report.judge or 'none'}."
        + ("" if report.complete else " **Incomplete run: some items have no result yet.**"),
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for s in report.configurations:
        cells = [
            s.name + (" (solo)" if s.solo else ""),
            _ci(s.quality),
            "baseline" if s.name == report.baseline else _ci(s.vs_baseline, signed=True),
        ]
        cells += [f"{_pct(s.slices[k].mean)} (n={s.slices[k].n})" if k in s.slices else "-" for k in slices]
        tokens = "-" if s.tokens is None else f"{s.tokens:.0f} ({_num(s.prompt_tokens, 0)} + {_num(s.completion_tokens, 0)})"
        lat = "-" if s.latency_p50_ms is None else f"{s.latency_p50_ms / 1000:.2f} / {(s.latency_p95_ms or 0) / 1000:.2f}"
        cells += [_num(s.calls, 2), tokens, lat, str(s.errors), str(s.unscored)]
        lines.append("| " + " | ".join(cells) + " |")
    problems = [(s.name, reason, n) for s in report.configurations for reason, n in s.problems.items()]
    if problems:
        lines += ["", "Problems recorded per item (the run went on):", ""]
        lines += [f"* {name}: {reason} x {n}" for name, reason, n in problems]
    agreement = [(s.name, s.judge_pattern_agreement) for s in report.configurations if s.judge_pattern_agreement is not None]
    if agreement:
        lines += [
            "",
            "Judge vs rubric patterns, share of criteria where they agree: "
            + ", ".join(f"{n} {a * 100:.0f}%" for n, a in agreement)
            + ".",
        ]
        by_pattern = [(s.name, s.pattern_open_score) for s in report.configurations if s.pattern_open_score is not None]
        lines += [
            "",
            "Open items scored by the rubric patterns instead of the judge (no CI): "
            + ", ".join(f"{n} {v * 100:.1f}%" for n, v in by_pattern)
            + ".",
        ]
    return "\n".join(lines) + "\n"
