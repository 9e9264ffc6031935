"""Turn what happened to a request into metric updates, in one place per decision point."""

from __future__ import annotations

from typing import Any

from router.observability import metrics as M
from router.signals.base import SignalResult
from router.state import RequestState


def request_done(state: RequestState) -> None:
    path = str(state.response_path or "error")
    model = state.model.name if state.model else "none"
    M.REQUESTS.labels(str(state.entry or "none"), state.decision_name, model, path).inc()
    M.REQUEST_LATENCY.labels(path).observe(state.elapsed_ms)
    if state.error_code:
        M.ERRORS.labels(state.error_code).inc()


def signals_done(entry: str, results: dict[str, SignalResult], total_ms: float) -> None:
    M.DECISION_EVAL.labels(entry).observe(total_ms)
    for res in results.values():
        M.SIGNAL_LATENCY.labels(res.type, res.name).observe(res.latency_ms)
        M.SIGNAL_MATCHES.labels(res.type, res.name, "true" if res.matched else "false").inc()
        if res.error:
            M.SIGNAL_ERRORS.labels(res.type, res.name).inc()


def upstream_call(model: str, outcome: str, seconds: float, first_token_s: float | None,
                  prompt_tokens: int = 0, completion_tokens: int = 0) -> None:
    M.UPSTREAM_LATENCY.labels(model, outcome).observe(seconds)
    if first_token_s is not None:
        M.UPSTREAM_TTFT.labels(model).observe(first_token_s)
    if prompt_tokens:
        M.TOKENS.labels(model, "in").inc(prompt_tokens)
    if completion_tokens:
        M.TOKENS.labels(model, "out").inc(completion_tokens)


def fusion_done(decision: str, trace: dict[str, Any], outcome: str) -> None:
    for stage, ms in trace.get("latency_ms", {}).items():
        if stage != "total":
            M.FUSION_STAGE.labels(stage).observe(ms / 1000)
    for failed in trace.get("failed_models", []):
        M.FUSION_PANEL_FAILURES.labels(failed["model"], failed["reason"]).inc()
    status = trace.get("analysis_status")
    if status and status != "not_run":
        M.FUSION_ANALYSIS.labels(status).inc()
    M.FUSION_OUTCOMES.labels(decision, outcome).inc()
    if outcome == "quorum_not_met":
        M.FUSION_QUORUM.labels(decision).inc()
