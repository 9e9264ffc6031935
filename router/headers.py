"""The one registry of ``x-vsr-*`` headers the router reads or writes (a leaf module: the transport,
the loopers and the docs all read it; it imports nothing of the router).

``docs/headers.md`` is generated from this table (``fusion-router headers --markdown``) and a test keeps
them in step. ``to_response`` headers are set on the request by the router and copied onto the client's
response by the Envoy route (``response_headers_to_add: %REQ(name)%``), which saves a second gRPC round
trip per request compared with processing the response headers.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class HeaderSpec:
    name: str
    direction: str  # "request" (client → router), "upstream" (router → backend), "response" (→ client)
    description: str
    to_response: bool = False  # copied from the request onto the client's response by Envoy


CLUSTER = "x-vsr-cluster"
SELECTED_DECISION = "x-vsr-selected-decision"
SELECTED_MODEL = "x-vsr-selected-model"
RESPONSE_PATH = "x-vsr-response-path"
ENTRY_PATH = "x-vsr-entry-path"
MATCHED_SIGNALS = "x-vsr-matched-signals"
DEBUG = "x-vsr-debug"
LOOPER_TOKEN = "x-vsr-looper-token"
REQUEST_ID = "x-request-id"
FUSION_PANEL = "x-vsr-fusion-panel"
FUSION_JUDGE = "x-vsr-fusion-judge"
FUSION_FAILED = "x-vsr-fusion-failed-models"
FUSION_ITERATIONS = "x-vsr-fusion-iterations"
FUSION_ANALYSIS = "x-vsr-fusion-analysis-status"
FUSION_LATENCY = "x-vsr-fusion-latency-ms"
LOOPER_ALGORITHM = "x-vsr-looper-algorithm"
LOOPER_DECISION = "x-vsr-looper-decision"
LOOPER_MODELS = "x-vsr-looper-models-used"
LOOPER_ITERATIONS = "x-vsr-looper-iterations"
LOOPER_LATENCY = "x-vsr-looper-latency-ms"
LOOPER_PROMPT_TOKENS = "x-vsr-looper-prompt-tokens"
LOOPER_COMPLETION_TOKENS = "x-vsr-looper-completion-tokens"
LOOPER_TOTAL_TOKENS = "x-vsr-looper-total-tokens"
LOOPER_OUTCOME = "x-vsr-looper-outcome"
LOOPER_BUDGET = "x-vsr-looper-budget"
SELECTION = "x-vsr-selection"
TENANT = "x-vsr-tenant"

REGISTRY: tuple[HeaderSpec, ...] = (
    HeaderSpec(CLUSTER, "upstream", "Envoy cluster the request is routed to (the route's `cluster_header`)."),
    HeaderSpec(SELECTED_DECISION, "response", "Name of the decision that won (`default` when none matched).", True),
    HeaderSpec(SELECTED_MODEL, "response", "Model name (from `models[].name`) that served or judged the request.", True),
    HeaderSpec(RESPONSE_PATH, "response", "`routed`, `fusion`, `blocked`, `error`, `models` or `internal`.", True),
    HeaderSpec(ENTRY_PATH, "response", "How the request entered: `auto`, `fusion`, `plugin`, `model` or `internal`.", True),
    HeaderSpec(MATCHED_SIGNALS, "response", "Matched signals as `type:name` list; only when the debug header is sent.", True),
    HeaderSpec(
        SELECTION,
        "response",
        "How the model was chosen and why: `<algorithm>: <reason>` with algorithm `static`, `weighted`, "
        "`cost_aware`, `latency_aware`, `session` (a conversation kept its model), `default` or `requested`; "
        "per-candidate scores appended when the debug header is honoured.",
        True,
    ),
    HeaderSpec(
        TENANT,
        "request",
        "The request's tenant, set by Envoy (e.g. its `jwt_authn` filter); a client's copy is stripped "
        "unless `global.tenants.trust_client_header` (the name is `global.tenants.header`).",
    ),
    HeaderSpec(
        DEBUG,
        "request",
        "Send `1` to get the matched signals back in `x-vsr-matched-signals`; honoured only when `global.router.allow_debug_header` is true.",
    ),
    HeaderSpec(LOOPER_TOKEN, "upstream", "Marks a looper sub-call; authenticated by a per-process secret, stripped when forged."),
    HeaderSpec(FUSION_PANEL, "response", "Fusion: panel models that answered (comma-separated)."),
    HeaderSpec(FUSION_JUDGE, "response", "Fusion: judge/synthesis model."),
    HeaderSpec(FUSION_FAILED, "response", "Fusion: panel models that failed, as `model=reason`."),
    HeaderSpec(FUSION_ITERATIONS, "response", "Fusion: model calls actually made."),
    HeaderSpec(FUSION_ANALYSIS, "response", "Fusion: `ok` or the typed judge failure (`judge_not_valid_json`, ...)."),
    HeaderSpec(FUSION_LATENCY, "response", "Fusion: per-stage latency `panel=..,judge=..,synthesis=..` in ms."),
    HeaderSpec(LOOPER_ALGORITHM, "response", "Looper answers: the algorithm that ran (`fusion`, `confidence`, `remom`, ...)."),
    HeaderSpec(
        LOOPER_DECISION, "response", "Looper answers: the decision it ran for (`<algorithm>_direct` for a request plugin)."
    ),
    HeaderSpec(LOOPER_MODELS, "response", "Looper answers: models that answered, in call order (comma-separated)."),
    HeaderSpec(LOOPER_ITERATIONS, "response", "Looper answers: model calls actually made."),
    HeaderSpec(LOOPER_LATENCY, "response", "Looper answers: wall time of the whole run in ms."),
    HeaderSpec(LOOPER_PROMPT_TOKENS, "response", "Looper answers: prompt tokens summed over every call."),
    HeaderSpec(LOOPER_COMPLETION_TOKENS, "response", "Looper answers: completion tokens summed over every call."),
    HeaderSpec(LOOPER_TOTAL_TOKENS, "response", "Looper answers: total tokens summed over every call."),
    HeaderSpec(
        LOOPER_BUDGET,
        "response",
        "Looper answers under `max_total_tokens`: `spent=<tokens>; max=<tokens>`, with "
        "`; exhausted` when the budget cut the run short (the trace's `budget` says where).",
    ),
    HeaderSpec(
        LOOPER_OUTCOME,
        "response",
        "Looper answers: how it ended, e.g. `gated` / `fused` (adaptive Fusion), "
        "`accepted` / `exhausted` (confidence), `synthesized` (ReMoM), or the error code.",
    ),
)

RESPONSE_COPIED: tuple[str, ...] = tuple(h.name for h in REGISTRY if h.to_response)
INTERNAL_PREFIX = "x-vsr-"


def markdown_table() -> str:
    rows = ["| header | direction | meaning |", "| --- | --- | --- |"]
    rows += [f"| `{h.name}` | {h.direction} | {h.description} |" for h in REGISTRY]
    return "\n".join(rows) + "\n"
