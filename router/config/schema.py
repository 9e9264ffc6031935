"""Pydantic schema for the router's one YAML file.

Field names follow vLLM Semantic Router (``global.router.auto_model_names``, ``routing.signals``,
``routing.decisions[].modelRefs`` ...) so its users can move their configs over. Every model forbids
unknown keys: a typo must be an error, not a silently ignored setting.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal, Union

from pydantic import (
    BaseModel,
    BeforeValidator,
    Discriminator,
    Field,
    Tag,
    create_model,
    field_validator,
    model_validator,
)

from router.config.base import NAME_PATTERN, AlgorithmBlock, Strict
from router.config.reference import UNSUPPORTED_ALGORITHMS
from router.decisions.selection.registry import SELECTIONS
from router.looper.registry import ALGORITHMS
from router.sessions.settings import SessionSettings
from router.stores.settings import RedisSettings
from router.tenants.settings import TenantSettings

# --------------------------------------------------------------------------- global


class RouterSettings(Strict):
    auto_model_names: list[str] = Field(default_factory=lambda: ["vllm-sr/auto", "auto", "MoM"])
    cluster_header: str = "x-vsr-cluster"
    debug_header: str = "x-vsr-debug"
    max_body_bytes: int = Field(default=16 * 1024 * 1024, gt=0)
    # Request headers larger than a backend's HTTP server takes are refused here with an OpenAI-shaped
    # 431, not forwarded to meet the backend's own plain-text error (aiohttp: 8,190 bytes per header
    # line; uvicorn/h11, vLLM's server: 16 KiB for the whole header block; Envoy alone allows 60 KiB).
    max_header_bytes: int = Field(default=8 * 1024, ge=1024)
    max_headers_total_bytes: int = Field(default=16 * 1024, ge=4096)
    # Deeper JSON is refused at parse with 400: nothing a chat request needs nests this deep, and
    # re-serialising a body nested hundreds deep fails (orjson stops at 255).
    max_json_depth: int = Field(default=64, ge=8, le=200)
    drain_timeout_seconds: float = Field(default=30.0, ge=0)
    log_prompts: bool = False
    # Where the Fusion trace goes: the body's top-level ``fusion`` object and/or x-vsr-fusion-* headers.
    trace_in_body: bool = True
    trace_in_headers: bool = True
    # Honour the debug header (matched signals echoed in x-vsr-matched-signals). Off by default: the
    # signals tell a client how the policy reads its prompt.
    allow_debug_header: bool = False
    # A shared secret Envoy sends with every ext_proc stream (gRPC metadata `authorization: Bearer ...`);
    # when one is named, the router refuses streams without it. Named here, never written here: the
    # environment variable or the file that holds it (read once at start; `serve` flags override).
    ext_proc_secret_env: str | None = Field(default=None, min_length=1)
    ext_proc_secret_file: str | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _one_secret_source(self) -> RouterSettings:
        if self.ext_proc_secret_env and self.ext_proc_secret_file:
            raise ValueError("set ext_proc_secret_env or ext_proc_secret_file, not both")
        return self


class AlgorithmSlugs(Strict):
    """Direct request model names for one looper algorithm (``global.integrations.looper.<name>``)."""

    model_names: list[str] = Field(default_factory=list)


class LooperIntegrationBase(Strict):
    # Looper sub-calls go back through Envoy when set (its clusters, retries and health checks apply);
    # left empty, they go straight to each model's backend endpoint.
    endpoint: str | None = None
    timeout_seconds: float = Field(default=120.0, ge=0.1, le=3600)
    connect_timeout_seconds: float = Field(default=5.0, ge=0.01, le=600)
    max_response_bytes: int = Field(default=8 * 1024 * 1024, gt=0)
    max_connections: int = Field(default=256, gt=0)

    @model_validator(mode="before")
    @classmethod
    def _megabytes(cls, data: Any) -> Any:
        # vLLM-SR's ``max_response_bytes_mb``: the same cap in MiB.
        if isinstance(data, dict) and "max_response_bytes_mb" in data:
            data = dict(data)
            mb = data.pop("max_response_bytes_mb")
            if "max_response_bytes" in data:
                raise ValueError("set max_response_bytes or max_response_bytes_mb, not both")
            if not isinstance(mb, (int, float)) or isinstance(mb, bool) or mb <= 0:
                raise ValueError(f"max_response_bytes_mb: expected a positive number of MiB (got {mb!r})")
            data["max_response_bytes"] = int(mb * 1024 * 1024)
        return data

    def slugs(self, algorithm: str) -> list[str]:
        return list(getattr(self, algorithm).model_names)


# One ``<algorithm>: {model_names: [...]}`` block per registered looper algorithm, with its default slugs.
# (Built from the registry at import; type checkers see the base, whose ``slugs()`` reads any of them.)
if TYPE_CHECKING:
    LooperIntegration = LooperIntegrationBase
else:
    LooperIntegration = create_model(
        "LooperIntegration",
        __base__=LooperIntegrationBase,
        **{
            name: (AlgorithmSlugs, Field(default_factory=lambda spec=spec: AlgorithmSlugs(model_names=list(spec.default_slugs))))
            for name, spec in ALGORITHMS.items()
        },
    )


class Integrations(Strict):
    looper: LooperIntegration = Field(default_factory=LooperIntegration)


class ClassifierSettings(Strict):
    models_dir: str | None = None  # default: $FUSION_ROUTER_MODELS_DIR or ./models
    device: Literal["auto", "cuda", "cpu"] = "auto"
    max_batch_size: int = Field(default=32, gt=0)
    max_wait_ms: float = Field(default=2.0, ge=0)
    max_queue: int = Field(default=1024, gt=0)
    # 0 = auto (classifiers.session.thread_plan): on 1-2 cores one thread per call and one call per
    # model at a time; on more cores two threads per call and several concurrent calls per model.
    intra_op_threads: int = Field(default=0, ge=0)
    workers: int = Field(default=0, ge=0)
    # Per-window results kept so a conversation's earlier turns, repeated system prompts and tool
    # definitions are not classified again on the next request; 0 turns the cache off.
    result_cache_mb: float = Field(default=64.0, ge=0)
    # Admission control in front of the models: at most this many requests are classified at once,
    # at most ``max_waiting_requests`` wait for a turn, and none waits or runs past the deadline. A
    # request that cannot be checked in time gets 503 ``overloaded`` / ``safety_check_unavailable``
    # with retry-after: never a false accusation, never a skipped guard.
    max_concurrent_requests: int = Field(default=32, gt=0)
    max_waiting_requests: int = Field(default=256, ge=0)
    request_deadline_ms: float = Field(default=10000.0, ge=50)
    retry_after_seconds: int = Field(default=1, ge=0)


class TracingSettings(Strict):
    """OpenTelemetry spans (optional dependency: ``pip install fusion-router[otel]``)."""

    enabled: bool = False
    exporter: Literal["console", "otlp"] = "otlp"
    endpoint: str | None = None  # OTLP/HTTP, e.g. http://otel-collector:4318/v1/traces
    service_name: str = "fusion-router"
    sample_ratio: float = Field(default=1.0, ge=0, le=1)


class ObservabilitySettings(Strict):
    tracing: TracingSettings = Field(default_factory=TracingSettings)


class Global(Strict):
    router: RouterSettings = Field(default_factory=RouterSettings)
    integrations: Integrations = Field(default_factory=Integrations)
    classifiers: ClassifierSettings = Field(default_factory=ClassifierSettings)
    observability: ObservabilitySettings = Field(default_factory=ObservabilitySettings)
    # Session continuity, tenants and the Redis replicas share (docs/policies.md).
    sessions: SessionSettings = Field(default_factory=SessionSettings)
    tenants: TenantSettings = Field(default_factory=TenantSettings)
    redis: RedisSettings | None = None


# --------------------------------------------------------------------------- backends and models


def parse_param_size(value: str | float) -> float | None:
    """``8b`` → 8.0, ``135m`` → 0.135, ``1.5B`` → 1.5, ``70`` → 70.0 (billions); None if unreadable."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value) if value > 0 else None
    text = str(value).strip().lower()
    scale = {"b": 1.0, "m": 1e-3, "k": 1e-6, "t": 1e3}.get(text[-1:])
    number = text[:-1] if scale is not None else text
    try:
        size = float(number) * (scale if scale is not None else 1.0)
    except ValueError:
        return None
    return size if size > 0 else None


class Backend(Strict):
    name: str = Field(pattern=NAME_PATTERN)
    endpoint: str | None = Field(default=None, pattern=r"^https?://[^/\s]+(/.*)?$")
    cluster: str | None = None  # an Envoy cluster that already exists (meshes); defaults to ``name``
    api_key_env: str | None = None
    type: Literal["openai-compatible"] = "openai-compatible"

    @model_validator(mode="after")
    def _needs_target(self) -> Backend:
        if self.endpoint is None and self.cluster is None:
            raise ValueError("a backend needs `endpoint` (http(s)://host:port) or `cluster` (an Envoy cluster)")
        return self

    @property
    def cluster_name(self) -> str:
        return self.cluster or self.name


class Pricing(Strict):
    """Per-million-token prices (vLLM-SR's ``pricing``), for cost-ordered escalation and selection."""

    currency: str = "USD"
    prompt_per_1m: float = Field(default=0.0, ge=0)
    completion_per_1m: float = Field(default=0.0, ge=0)


class ReasoningFamily(Strict):
    """How a model's backend is told to think (vLLM-SR's ``reasoning_families``): a chat-template kwarg
    (``chat_template_kwargs.<parameter>: true/false``, e.g. Qwen3's ``enable_thinking``) or an effort
    field (``<parameter>: <effort>``, e.g. ``reasoning_effort``; a dotted name nests)."""

    type: Literal["chat_template_kwargs", "reasoning_effort", "top_level_reasoning_effort"]
    parameter: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*$")


class ModelSpec(Strict):
    name: str = Field(min_length=1)
    backend: str
    served_model_id: str | None = None  # the id the backend knows; defaults to ``name``
    description: str = ""
    # Declared facts a looper may order by: ``param_size`` like "8b", "135m" or 0.5 (billions).
    param_size: str | float | None = None
    pricing: Pricing | None = None
    reasoning_family: ReasoningFamily | None = None
    # LoRA adapters the backend serves on top of this model (modelRefs[].lora_name picks one).
    loras: list[str] = Field(default_factory=list)

    @field_validator("param_size")
    @classmethod
    def _size(cls, value: str | float | None) -> str | float | None:
        if value is not None and parse_param_size(value) is None:
            raise ValueError("expected a parameter count like 8b, 135m, 1.5B or a number of billions")
        return value

    @property
    def param_billions(self) -> float | None:
        return parse_param_size(self.param_size) if self.param_size is not None else None

    @property
    def served_id(self) -> str:
        return self.served_model_id or self.name


# --------------------------------------------------------------------------- signals

# The specs and the one table of signal types live in router/config/signals.py; the names are
# re-exported here for the modules that import them from the schema.
from router.config.signals import (  # noqa: E402, F401 - re-exported for the modules that import them from here
    LEAF_TYPES,
    SIGNAL_SECTIONS,
    SIGNAL_TYPES,
    ComplexitySignal,
    ContextSignal,
    DomainCategory,
    DomainSignal,
    EmbeddingSignal,
    JailbreakSignal,
    KeywordSignal,
    LanguageSignal,
    ModelSignalCommon,
    PIISignal,
    Scope,
    SignalCommon,
)

# ``routing.signals``: one list per row of the signal-type table (type checkers see a plain model whose
# sections are read with ``getattr``).
if TYPE_CHECKING:
    Signals = Strict
else:
    Signals = create_model(
        "Signals",
        __base__=Strict,
        **{t.section: (list[t.spec], Field(default_factory=list)) for t in SIGNAL_TYPES},
    )


# --------------------------------------------------------------------------- rules


class RuleLeaf(Strict):
    type: Literal[LEAF_TYPES]  # type: ignore[valid-type]  # the leaf types of the signal-type table
    name: str = Field(min_length=1)


class RuleNode(Strict):
    operator: Literal["AND", "OR", "NOT"]
    conditions: list[Rule] = Field(min_length=1)

    @model_validator(mode="after")
    def _not_is_unary(self) -> RuleNode:
        if self.operator == "NOT" and len(self.conditions) != 1:
            raise ValueError("NOT takes exactly one condition")
        return self


def _catch_all(value: Any) -> Any:
    """A decision's rules that are omitted, ``{}`` or an AND/OR with no conditions (vLLM-SR's
    ``{operator: AND, conditions: []}``) always match: a catch-all. Only at the top: an empty
    condition list deeper in a tree is an error, never silently "true"."""
    if isinstance(value, dict) and (
        not value
        or (
            set(value) <= {"operator", "conditions"}
            and value.get("operator", "AND") in ("AND", "OR")
            and value.get("conditions") in ([], None)
        )
    ):
        return None
    return value


def _rule_kind(value: Any) -> str:
    if isinstance(value, dict):
        return "node" if "operator" in value or "conditions" in value else "leaf"
    return "node" if isinstance(value, RuleNode) else "leaf"


Rule = Annotated[
    Annotated[RuleNode, Tag("node")] | Annotated[RuleLeaf, Tag("leaf")],
    Discriminator(_rule_kind),
]
RuleNode.model_rebuild()


# --------------------------------------------------------------------------- algorithms and plugins


# A routing decision's selection algorithm (router/decisions/selection/registry.py) picks one model.
StaticAlgorithm = SELECTIONS["static"].config_model


def _known_algorithm(value: Any) -> Any:
    """Algorithms vLLM-SR has and this router does not are refused by name, not as a bad tag."""
    kind = value.get("type") if isinstance(value, dict) else None
    if isinstance(kind, str) and kind not in SELECTIONS and kind not in ALGORITHMS and kind in UNSUPPORTED_ALGORITHMS:
        raise ValueError(
            f"algorithm type {kind!r} is not supported by fusion-router ({UNSUPPORTED_ALGORITHMS[kind]}); "
            f"supported: {[*SELECTIONS, *ALGORITHMS]}"
        )
    return value


# Selection algorithms route to one model; every other type is a looper algorithm from its registry.
# (A union built at import; type checkers see the common base every member extends.)
if TYPE_CHECKING:
    Algorithm = AlgorithmBlock
else:
    Algorithm = Annotated[
        Union[(*(s.config_model for s in SELECTIONS.values()), *(spec.config_model for spec in ALGORITHMS.values()))],
        Field(discriminator="type"),
        BeforeValidator(_known_algorithm),
    ]


class SystemPromptConfig(Strict):
    enabled: bool = True  # a disabled plugin is kept in the file and does nothing
    system_prompt: str
    mode: Literal["insert", "replace"] = "insert"


class SystemPromptPlugin(Strict):
    type: Literal["system_prompt"]
    configuration: SystemPromptConfig


class HeaderPair(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")
    value: str


class HeaderMutationConfig(Strict):
    """Headers on the request to the model. ``add`` and ``update`` (vLLM-SR's name) both set the header,
    replacing a value the client sent; ``remove`` and ``delete`` (vLLM-SR's name) drop it."""

    enabled: bool = True
    add: list[HeaderPair] = Field(default_factory=list)
    update: list[HeaderPair] = Field(default_factory=list)
    remove: list[str] = Field(default_factory=list)
    delete: list[str] = Field(default_factory=list)

    @property
    def to_set(self) -> dict[str, str]:
        return {h.name.lower(): h.value for h in [*self.add, *self.update]}

    @property
    def to_remove(self) -> list[str]:
        return [h.lower() for h in [*self.remove, *self.delete]]


class HeaderMutationPlugin(Strict):
    type: Literal["header_mutation"]
    configuration: HeaderMutationConfig


class BlockConfig(Strict):
    enabled: bool = True
    status: int = Field(default=403, ge=400, le=599)
    message: str = "This request was blocked by the gateway's policy."
    code: str = "request_blocked"


class BlockPlugin(Strict):
    type: Literal["block"]
    configuration: BlockConfig = Field(default_factory=BlockConfig)


class PIIMaskConfig(Strict):
    enabled: bool = True
    replacement: str = "[{label}]"


class PIIMaskPlugin(Strict):
    type: Literal["pii_mask"]
    configuration: PIIMaskConfig = Field(default_factory=PIIMaskConfig)


Plugin = Annotated[SystemPromptPlugin | HeaderMutationPlugin | BlockPlugin | PIIMaskPlugin, Field(discriminator="type")]


class ModelRef(Strict):
    """A decision's candidate model. ``use_reasoning``, ``reasoning_effort`` and ``lora_name`` change the
    request the model gets when the decision routes to it (docs/migration.md#modelrefs):
    thinking on/off and the effort in the syntax of the model's ``reasoning_family``, and the LoRA
    adapter's name as the body's ``model`` (how vLLM serves an adapter)."""

    model: str
    # Share of ``weighted`` selection (and ReMoM's weighted distribution); 0 keeps the model listed but never drawn.
    weight: float = Field(default=1.0, ge=0)
    use_reasoning: bool | None = None  # None: the client's request decides
    reasoning_effort: str | None = Field(default=None, pattern=r"^[a-z_]+$")
    lora_name: str | None = Field(default=None, min_length=1)


# Decision names may hold inner spaces (vLLM-SR's "computer science"); they travel in header values.
DECISION_NAME_PATTERN = r"^[A-Za-z0-9](?:[A-Za-z0-9_.\- ]*[A-Za-z0-9_.\-])?$"


class Decision(Strict):
    name: str = Field(pattern=DECISION_NAME_PATTERN)
    description: str = ""
    priority: int = 0
    # None (or omitted, ``{}``, an AND/OR with no conditions): always matches, a catch-all route.
    rules: Annotated[Rule | None, BeforeValidator(_catch_all)] = None
    modelRefs: list[ModelRef] = Field(default_factory=list)
    algorithm: Algorithm = Field(default_factory=lambda: StaticAlgorithm(type="static"))  # type: ignore[assignment]  # a registry-built model; typed by its base
    plugins: list[Plugin] = Field(default_factory=list)
    # A conversation routed by this decision keeps the model of its earlier turns (global.sessions)
    # unless a decision of higher priority wins a later turn (docs/policies.md#session-continuity).
    session_affinity: bool = False

    @property
    def is_looper(self) -> bool:
        return self.algorithm.type in ALGORITHMS

    @property
    def selection_settings(self) -> BaseModel | None:
        """The selection settings block (``algorithm.<type>``), None for a looper decision."""
        return None if self.is_looper else getattr(self.algorithm, self.algorithm.type)

    @property
    def algorithm_settings(self) -> BaseModel | None:
        """The looper settings block (``algorithm.<type>``), None for a routing decision."""
        return getattr(self.algorithm, self.algorithm.type) if self.is_looper else None

    @property
    def active_plugins(self) -> list[Any]:
        """The plugins that act: ``configuration.enabled: false`` keeps one in the file, inert."""
        return [p for p in self.plugins if p.configuration.enabled]

    def plugin(self, kind: type[BaseModel]) -> Any:
        return next((p for p in self.active_plugins if isinstance(p, kind)), None)

    @property
    def plugin_block(self) -> BlockPlugin | None:
        block: BlockPlugin | None = self.plugin(BlockPlugin)
        return block

    @property
    def is_guard(self) -> bool:
        return any(isinstance(p, (BlockPlugin, PIIMaskPlugin)) for p in self.active_plugins)

    @property
    def is_mask(self) -> bool:
        """A masking guard modifies the request and lets routing go on; it never picks the model."""
        return self.plugin(PIIMaskPlugin) is not None and self.plugin_block is None


class Routing(Strict):
    signals: Signals = Field(default_factory=Signals)
    decisions: list[Decision] = Field(default_factory=list)


class Config(Strict):
    version: int = 1
    global_: Global = Field(default_factory=Global, alias="global")
    backends: list[Backend] = Field(min_length=1)
    models: list[ModelSpec] = Field(min_length=1)
    default_model: str | None = None
    routing: Routing = Field(default_factory=Routing)
