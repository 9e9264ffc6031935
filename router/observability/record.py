"""Turn what happened to a request into metric updates (and, where no other module logs the decision
point, one structured log event), in one place per decision point.

Nothing here takes prompt text or request ids as a metric label: labels come from the config
(decision, model, signal names) or from fixed vocabularies (entry, response path, reason, outcome).
"""

from __future__ import annotations

import functools
import time
from typing import TYPE_CHECKING, Any

import structlog
from prometheus_client import REGISTRY

from router.decisions.selection.observed import OBSERVED
from router.observability import metrics as M

if TYPE_CHECKING:
    from router.looper.trace import LooperTrace
    from router.signals.base import SignalResult
    from router.state import RequestState

log = structlog.get_logger("router.request")


@functools.lru_cache(maxsize=8192)
def _child(metric: Any, *labels: str) -> Any:
    # labels() takes a lock and builds a key on every call; label sets are bounded, so cache the children.
    return metric.labels(*labels)


def request_done(state: RequestState) -> None:
    """Called once per ext_proc stream when its action goes out (a streamed looper reply: when the
    stream starts). Routed and blocked requests are logged where they are decided (``request_routed``,
    ``request_blocked``); looper and error answers get their decision-point event here."""
    path = state.path_label
    model = state.model.name if state.model else "none"
    entry = state.entry_label
    _child(M.REQUESTS, entry, state.decision_name, model, path).inc()
    _child(M.REQUEST_LATENCY, path).observe(state.elapsed_ms)
    if state.error_code:
        _child(M.ERRORS, state.error_code).inc()
    if state.response_path == "looper":
        log.info(
            "request_looper",
            request_id=state.request_id,
            entry=entry,
            algorithm=state.algorithm,
            decision=state.decision_name,
            model=model,
            stream=bool(state.request and state.request.stream),
            error=state.error_code,
            signals=state.matched_signal_keys(),
            signal_ms=round(state.signal_ms, 3),
            latency_ms=round(state.elapsed_ms, 3),
        )
    elif state.response_path is None or state.response_path == "error":
        log.info(
            "request_error",
            request_id=state.request_id,
            entry=entry,
            decision=state.decision_name,
            error=state.error_code,
            path=state.path,
            latency_ms=round(state.elapsed_ms, 3),
        )


def shed(reason: str) -> None:
    """A request refused with a retryable 503: ``queue_full`` / ``deadline`` (no classifier turn),
    ``guard_unavailable`` / ``signal_unavailable`` (a check that must not be skipped failed)."""
    _child(M.SHED, reason).inc()


def stream_failed(code: str) -> None:
    """A streamed answer that started as 200 and ended with an error event."""
    _child(M.ERRORS, code).inc()


def signals_done(entry: str, results: dict[str, SignalResult], total_ms: float) -> None:
    _child(M.DECISION_EVAL, entry).observe(total_ms)
    for res in results.values():
        _child(M.SIGNAL_LATENCY, res.type, res.name).observe(res.latency_ms)
        _child(M.SIGNAL_MATCHES, res.type, res.name, "true" if res.matched else "false").inc()
        if res.error:
            _child(M.SIGNAL_ERRORS, res.type, res.name).inc()


def upstream_call(
    model: str, outcome: str, seconds: float, first_token_s: float | None, prompt_tokens: int = 0, completion_tokens: int = 0
) -> None:
    # The same observation feeds latency_aware selection (EWMA / percentiles per model).
    OBSERVED.observe(model, outcome, seconds, first_token_s, completion_tokens)
    _child(M.UPSTREAM_LATENCY, model, outcome).observe(seconds)
    if first_token_s is not None:
        _child(M.UPSTREAM_TTFT, model).observe(first_token_s)
    if prompt_tokens:
        _child(M.TOKENS, model, "in").inc(prompt_tokens)
    if completion_tokens:
        _child(M.TOKENS, model, "out").inc(completion_tokens)


def grounding_done(decision: str, grounding: Any) -> None:
    """Grounding-aware Fusion: what the stage did, and each scored answer's fate."""
    reason = str(grounding.reason).split(":", 1)[0] if grounding.reason else ""
    _child(M.GROUNDING, decision, grounding.status, reason).inc()
    for a in grounding.answers:
        _child(M.GROUNDING_ANSWERS, decision, a.action, "contradicted" if a.contradicted_claims else "clean").inc()


def looper_done(algorithm: str, decision: str, trace: LooperTrace) -> None:
    _child(M.LOOPER_RUNS, algorithm, decision, trace.outcome).inc()
    _child(M.LOOPER_CALLS, algorithm).observe(trace.iterations)
    for stage, ms in trace.latency_ms.items():
        if stage != "total":
            _child(M.LOOPER_STAGE, algorithm, stage).observe(ms / 1000)
    for failed in trace.failed_models:
        _child(M.LOOPER_FAILURES, algorithm, failed.model, failed.reason).inc()
    prompt = sum(u.prompt_tokens for u in trace.usage.values())
    completion = sum(u.completion_tokens for u in trace.usage.values())
    if prompt:
        _child(M.LOOPER_TOKENS, algorithm, "in").inc(prompt)
    if completion:
        _child(M.LOOPER_TOKENS, algorithm, "out").inc(completion)


# Running mean of the tokens a fused (not gated) run of each decision spends: what a confident gate saves.
_fused_tokens: dict[str, tuple[int, float]] = {}


def fusion_done(decision: str, trace: Any) -> int | None:
    """Fusion's own metrics (the chart's dashboard reads them). Returns the tokens a gated run saved
    against the running mean of fused runs of the same decision (None when unknown)."""
    for stage, ms in trace.latency_ms.items():
        if stage != "total":
            _child(M.FUSION_STAGE, stage).observe(ms / 1000)
    for failed in trace.failed_models:
        _child(M.FUSION_PANEL_FAILURES, failed.model, failed.reason).inc()
    if trace.analysis_status and trace.analysis_status != "not_run":
        _child(M.FUSION_ANALYSIS, trace.analysis_status).inc()
    _child(M.FUSION_OUTCOMES, decision, "ok" if trace.error is None else trace.outcome).inc()
    if trace.quorum is not None and trace.quorum.got < trace.quorum.wanted:
        _child(M.FUSION_QUORUM, decision).inc()
    tokens = sum(u.total_tokens for u in trace.usage.values())
    if trace.gate is None:
        return None
    if not trace.gate.passed:
        _child(M.FUSION_GATE, decision, "fused" if trace.error is None else "failed").inc()
        if trace.error is None:
            n, mean = _fused_tokens.get(decision, (0, 0.0))
            _fused_tokens[decision] = (n + 1, mean + (tokens - mean) / (n + 1))
        return None
    _child(M.FUSION_GATE, decision, "gated").inc()
    _child(M.FUSION_GATE_SAVED_CALLS, decision).inc(trace.gate.calls_saved)
    n, mean = _fused_tokens.get(decision, (0, 0.0))
    if not n:
        return None
    saved = max(0, int(mean - tokens))
    _child(M.FUSION_GATE_SAVED_TOKENS, decision).inc(saved)
    return saved


def selection(decision: str, algorithm: str, model: str) -> None:
    _child(M.SELECTIONS, decision, algorithm, model).inc()


def session(store: str, result: str) -> None:
    """A session lookup of an affinity decision: kept, assigned, overridden, reassigned, unavailable, no_key."""
    _child(M.SESSIONS, store, result).inc()


def state_store_error(store: str, op: str, reason: str) -> None:
    _child(M.STATE_STORE_ERRORS, store, op, reason).inc()


def state_store_up(store: str, up: bool) -> None:
    _child(M.STATE_STORE_UP, store).set(1 if up else 0)


def tenant_tokens(tenant: str, result: str, tokens: int = 0) -> None:
    """A tenant budget check (admitted / refused / too_large / unavailable) or a later charge (charged)."""
    if result in ("admitted", "charged"):
        _child(M.TENANT_TOKENS, tenant, result).inc(tokens)
    if result != "charged":
        _child(M.TENANT_REQUESTS, tenant, result).inc()


def looper_budget_exhausted(algorithm: str, decision: str) -> None:
    _child(M.LOOPER_BUDGET, algorithm, decision).inc()


def config_reloaded(ok: bool, version: int | None = None) -> None:
    """A reload attempt: ``ok`` swaps in ``version``; a failure keeps the old one and raises the flag."""
    _child(M.CONFIG_RELOADS, "ok" if ok else "error").inc()
    M.CONFIG_ERROR.set(0 if ok else 1)
    if ok and version is not None:
        config_active(version)


def config_active(version: int) -> None:
    M.CONFIG_VERSION.set(version)
    M.CONFIG_LOADED.set(time.time())


def draining(on: bool) -> None:
    M.DRAINING.set(1 if on else 0)


def in_flight() -> int:
    """ext_proc streams open right now (this process)."""
    return int(REGISTRY.get_sample_value("fusion_router_in_flight_streams") or 0)
