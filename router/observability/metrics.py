"""Prometheus metrics. Label sets are bounded: decision, model and reason names come from config or
from fixed vocabularies, never from prompts or request ids.

Every metric the router exports is defined here (docs/operations.md has the table; the chart's
dashboard and alert rules use these names).
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

_MS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 50, 100, 250, 500, 1000)
_S = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)

# Requests, errors, decisions.
REQUESTS = Counter("fusion_router_requests_total", "Requests handled", ["entry", "decision", "model", "response_path"])
ERRORS = Counter("fusion_router_errors_total", "Requests answered with an error", ["code"])
REQUEST_LATENCY = Histogram(
    "fusion_router_decision_latency_ms", "Router processing time until the action (ms)", ["response_path"], buckets=_MS
)
SIGNAL_LATENCY = Histogram("fusion_router_signal_latency_ms", "Per-signal evaluation latency (ms)", ["type", "name"], buckets=_MS)
SIGNAL_MATCHES = Counter("fusion_router_signal_matches_total", "Signal evaluations by outcome", ["type", "name", "matched"])
SIGNAL_ERRORS = Counter("fusion_router_signal_errors_total", "Signal failures handled by on_error", ["type", "name"])
SHED = Counter(
    "fusion_router_shed_total", "Requests refused with a retryable 503 because a check could not run in time", ["reason"]
)
DECISION_EVAL = Histogram(
    "fusion_router_signals_and_decision_ms", "Signals + rule evaluation per request (ms)", ["entry"], buckets=_MS
)

# Looper upstream calls.
UPSTREAM_TTFT = Histogram("fusion_router_upstream_ttft_seconds", "Looper upstream time to first token", ["model"], buckets=_S)
UPSTREAM_LATENCY = Histogram(
    "fusion_router_upstream_latency_seconds", "Looper upstream call latency", ["model", "outcome"], buckets=_S
)
TOKENS = Counter("fusion_router_tokens_total", "Tokens accounted per model", ["model", "direction"])

# Fusion.
FUSION_STAGE = Histogram("fusion_router_fusion_stage_seconds", "Fusion per-stage latency", ["stage"], buckets=_S)
FUSION_PANEL_FAILURES = Counter("fusion_router_fusion_panel_failures_total", "Fusion panel member failures", ["model", "reason"])
FUSION_ANALYSIS = Counter("fusion_router_fusion_analysis_total", "Judge analysis outcomes", ["status"])
FUSION_OUTCOMES = Counter("fusion_router_fusion_runs_total", "Fusion runs by outcome", ["decision", "outcome"])
FUSION_QUORUM = Counter("fusion_router_fusion_quorum_failures_total", "Fusion runs that missed the panel quorum", ["decision"])

# Every looper algorithm.
LOOPER_RUNS = Counter(
    "fusion_router_looper_runs_total", "Looper runs by algorithm and outcome", ["algorithm", "decision", "outcome"]
)
LOOPER_CALLS = Histogram(
    "fusion_router_looper_calls", "Model calls per looper run", ["algorithm"], buckets=(1, 2, 3, 4, 5, 6, 8, 10, 15, 20, 30)
)
LOOPER_STAGE = Histogram("fusion_router_looper_stage_seconds", "Looper per-stage latency", ["algorithm", "stage"], buckets=_S)
LOOPER_FAILURES = Counter(
    "fusion_router_looper_call_failures_total", "Looper sub-call failures", ["algorithm", "model", "reason"]
)
LOOPER_TOKENS = Counter(
    "fusion_router_looper_tokens_total", "Tokens spent by looper runs (all calls)", ["algorithm", "direction"]
)
FUSION_GATE = Counter(
    "fusion_router_fusion_gate_total", "Adaptive Fusion: requests answered by the gate vs fused", ["decision", "result"]
)
FUSION_GATE_SAVED_CALLS = Counter(
    "fusion_router_fusion_gate_saved_calls_total",
    "Adaptive Fusion: model calls not made because the gate was confident",
    ["decision"],
)
FUSION_GATE_SAVED_TOKENS = Counter(
    "fusion_router_fusion_gate_saved_tokens_total",
    "Adaptive Fusion: tokens not spent (vs the running mean of fused runs)",
    ["decision"],
)
GROUNDING = Counter(
    "fusion_router_grounding_total",
    "Grounding-aware Fusion runs by what the stage did (applied / skipped / failed) and why",
    ["decision", "status", "reason"],
)
GROUNDING_ANSWERS = Counter(
    "fusion_router_grounding_answers_total",
    "Panel answers scored by grounding, by the policy's action (result: weighted / annotated / kept / dropped) and kind: contradicted (a claim was) or clean",
    ["decision", "result", "kind"],
)

# Model selection, session continuity, tenants, token budgets (docs/policies.md).
SELECTIONS = Counter(
    "fusion_router_selections_total", "Models chosen among a routing decision's modelRefs", ["decision", "algorithm", "model"]
)
SESSIONS = Counter(
    "fusion_router_session_affinity_total",
    "Session lookups of affinity decisions by result (kept, assigned, overridden, reassigned, unavailable, no_key)",
    ["store", "result"],
)
STATE_STORE_ERRORS = Counter(
    "fusion_router_state_store_errors_total",
    "Shared-state store calls that failed (routing went on without them)",
    ["store", "op", "reason"],
)
STATE_STORE_UP = Gauge(
    "fusion_router_state_store_up",
    "1 while the shared-state store answers, 0 after a failure until it answers again",
    ["store"],
    multiprocess_mode="livemin",
)
TENANT_TOKENS = Counter(
    "fusion_router_tenant_tokens_total", "Tenant token-budget accounting: tokens admitted and charged", ["tenant", "kind"]
)
TENANT_REQUESTS = Counter(
    "fusion_router_tenant_budget_requests_total",
    "Tenant token-budget checks by result (admitted, refused, too_large, unavailable)",
    ["tenant", "result"],
)
LOOPER_BUDGET = Counter(
    "fusion_router_looper_budget_exhausted_total", "Looper runs cut short by max_total_tokens", ["algorithm", "decision"]
)

# Classifier runtime.
CLASSIFIER_BATCH = Histogram(
    "fusion_router_classifier_batch_size", "Micro-batch sizes", ["model"], buckets=(1, 2, 4, 8, 16, 32, 64)
)
CLASSIFIER_WAIT = Histogram(
    "fusion_router_classifier_queue_wait_ms", "Time a request waited for its batch (ms)", ["model"], buckets=_MS
)
CLASSIFIER_CACHE = Counter(
    "fusion_router_classifier_cache_total",
    "Per-window classifier results: served from the result "
    "cache (hit), computed (miss), or joined while another request computed them (shared)",
    ["model", "result"],
)
CLASSIFIER_CACHE_BYTES = Gauge(
    "fusion_router_classifier_cache_bytes", "Estimated bytes held by the classifier result cache", multiprocess_mode="livesum"
)

# Process state: streams, config, drain.
IN_FLIGHT = Gauge("fusion_router_in_flight_streams", "ext_proc streams in flight", multiprocess_mode="livesum")
CONFIG_RELOADS = Counter("fusion_router_config_reloads_total", "Config reload attempts", ["outcome"])
CONFIG_ERROR = Gauge(
    "fusion_router_config_last_reload_failed", "1 while the last config reload failed", multiprocess_mode="livemax"
)
CONFIG_VERSION = Gauge(
    "fusion_router_config_version",
    "Version (generation) of the active config; 1 at start, +1 per successful reload",
    multiprocess_mode="livemax",
)
CONFIG_LOADED = Gauge(
    "fusion_router_config_last_reload_success_timestamp_seconds",
    "Unix time the active config was loaded",
    multiprocess_mode="livemax",
)
DRAINING = Gauge("fusion_router_draining", "1 while the router drains after SIGTERM", multiprocess_mode="livemax")

# Process supervision and exposure.
WORKER_RESTARTS = Counter(
    "fusion_router_worker_restarts_total", "Worker processes (serve --workers N) started again after they died"
)
UNAUTHENTICATED_STREAMS = Counter(
    "fusion_router_unauthenticated_streams_total", "ext_proc streams refused for a missing or wrong shared secret"
)
