"""Pydantic schema for the router's one YAML file.

Field names follow vLLM Semantic Router (``global.router.auto_model_names``, ``routing.signals``,
``routing.decisions[].modelRefs`` ...) so its users can move their configs over. Every model forbids
unknown keys: a typo must be an error, not a silently ignored setting.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, Discriminator, Field, Tag, create_model, field_validator, model_validator

from router.config.base import NAME_PATTERN, NonBlank, Strict
from router.looper.registry import ALGORITHMS


# --------------------------------------------------------------------------- global


class RouterSettings(Strict):
    auto_model_names: list[str] = Field(default_factory=lambda: ["vllm-sr/auto", "auto", "MoM"])
    cluster_header: str = "x-vsr-cluster"
    debug_header: str = "x-vsr-debug"
    max_body_bytes: int = Field(default=16 * 1024 * 1024, gt=0)
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

    def slugs(self, algorithm: str) -> list[str]:
        return list(getattr(self, algorithm).model_names)


# One ``<algorithm>: {model_names: [...]}`` block per registered looper algorithm, with its default slugs.
LooperIntegration = create_model(
    "LooperIntegration",
    __base__=LooperIntegrationBase,
    **{name: (AlgorithmSlugs, Field(default_factory=lambda spec=spec: AlgorithmSlugs(model_names=list(spec.default_slugs))))
       for name, spec in ALGORITHMS.items()},
)


class Integrations(Strict):
    looper: LooperIntegration = Field(default_factory=LooperIntegration)  # type: ignore[valid-type] - built from the registry


class ClassifierSettings(Strict):
    models_dir: str | None = None  # default: $FUSION_ROUTER_MODELS_DIR or ./models
    device: Literal["auto", "cuda", "cpu"] = "auto"
    max_batch_size: int = Field(default=32, gt=0)
    max_wait_ms: float = Field(default=2.0, ge=0)
    max_queue: int = Field(default=1024, gt=0)
    intra_op_threads: int = Field(default=0, ge=0)
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


# --------------------------------------------------------------------------- backends and models


def parse_param_size(value: str | float) -> float | None:
    """``8b`` → 8.0, ``135m`` → 0.135, ``1.5B`` → 1.5, ``70`` → 70.0 (billions); None if unreadable."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value) if value > 0 else None
    text = str(value).strip().lower()
    scale = {"b": 1.0, "m": 1e-3, "k": 1e-6, "t": 1e3}.get(text[-1:], None)
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


class ModelSpec(Strict):
    name: str = Field(min_length=1)
    backend: str
    served_model_id: str | None = None  # the id the backend knows; defaults to ``name``
    description: str = ""
    # Declared facts a looper may order by: ``param_size`` like "8b", "135m" or 0.5 (billions).
    param_size: str | float | None = None
    pricing: Pricing | None = None

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


class SignalCommon(Strict):
    name: str = Field(min_length=1)
    # What a failure (timeout, model error, overload) means: ``skip`` = the signal did not match;
    # ``fail_closed`` = the request is refused with 503 (retryable), never treated as a match. Signals
    # a guard (block / mask decision) reads always fail closed.
    on_error: Literal["skip", "fail_closed"] = "skip"
    timeout_ms: float = Field(default=500.0, gt=0)
    # A model-backed signal whose model cannot load stops start-up, unless it is optional (then it
    # reports an error on every request and its on_error policy decides).
    optional: bool = False


# Which messages a model-backed signal reads: the last user turn, every user turn, everything a model
# reads as instructions or input (system, developer, user, tool results, tool definitions), or that
# plus the assistant turns the client sends back.
Scope = Literal["last_user", "all_user", "prompt", "all"]


class ModelSignalCommon(SignalCommon):
    """Model-backed signals scan text in model-sized windows, at most ``token_budget`` tokens per
    request; longer input is scanned at its head and tail (``head_tail``) or refused with 413
    (``refuse``), so memory and CPU per request stay bounded whatever the prompt length."""

    # Routing signals read intent: the head and tail of the last user turn are enough.
    token_budget: int = Field(default=512, ge=64, le=1_048_576)
    over_budget: Literal["head_tail", "refuse"] = "head_tail"
    # Tokens per window (default: the model's length, at most 254). A short attack at the end of a long
    # window is diluted by the rest of it; smaller windows see it plainly at about the same cost.
    window_tokens: int | None = Field(default=None, ge=16, le=510)


class KeywordSignal(SignalCommon):
    operator: Literal["any", "all", "none", "OR", "AND", "NOR"] = "any"
    keywords: list[NonBlank] = Field(min_length=1)
    method: Literal["word", "regex", "substring"] = "word"
    case_sensitive: bool = False

    @field_validator("operator")
    @classmethod
    def _normalise_operator(cls, value: str) -> str:
        return {"OR": "any", "AND": "all", "NOR": "none"}.get(value, value)


class ContextSignal(SignalCommon):
    min_tokens: int = Field(default=0, ge=0)
    max_tokens: int | None = Field(default=None, gt=0)


class LanguageSignal(SignalCommon):
    languages: list[str] = Field(min_length=1, description="ISO 639-1 codes, e.g. en, fr, zh")
    min_confidence: float = Field(default=0.0, ge=0, le=1)


class EmbeddingSignal(ModelSignalCommon):
    candidates: list[str] = Field(min_length=1)
    threshold: float = Field(default=0.6, ge=-1, le=1)
    aggregation_method: Literal["max", "mean"] = "max"
    model: str = "embedding"


class DomainCategory(Strict):
    name: str = Field(min_length=1)
    description: str = ""
    examples: list[str] = Field(default_factory=list)


class DomainSignal(ModelSignalCommon):
    # Categories by description/examples (embedding nearest centroid) or a user classifier model dir.
    categories: list[DomainCategory] = Field(default_factory=list)
    classifier_model: str | None = None
    threshold: float = Field(default=0.3, ge=0, le=1)
    model: str = "embedding"

    @model_validator(mode="after")
    def _needs_categories(self) -> DomainSignal:
        if not self.categories and not self.classifier_model:
            raise ValueError("a domain signal needs `categories` or `classifier_model`")
        return self


class ComplexitySignal(ModelSignalCommon):
    hard: list[str] = Field(min_length=1)
    easy: list[str] = Field(min_length=1)
    margin: float = Field(default=0.0, ge=-1, le=1)
    model: str = "embedding"


class JailbreakSignal(ModelSignalCommon):
    threshold: float = Field(default=0.8, ge=0, le=1)
    model: str = "jailbreak"
    scope: Scope = "prompt"
    # A guard: what it cannot read whole, it refuses rather than waves through.
    token_budget: int = Field(default=8192, ge=64, le=1_048_576)
    over_budget: Literal["head_tail", "refuse"] = "refuse"


class PIISignal(ModelSignalCommon):
    pii_types_allowed: list[str] = Field(default_factory=list)
    threshold: float = Field(default=0.5, ge=0, le=1)
    model: str = "pii"
    use_patterns: bool = True
    scope: Scope = "all"
    token_budget: int = Field(default=8192, ge=64, le=1_048_576)
    over_budget: Literal["head_tail", "refuse"] = "refuse"


class Signals(Strict):
    keywords: list[KeywordSignal] = Field(default_factory=list)
    context: list[ContextSignal] = Field(default_factory=list)
    language: list[LanguageSignal] = Field(default_factory=list)
    embeddings: list[EmbeddingSignal] = Field(default_factory=list)
    domains: list[DomainSignal] = Field(default_factory=list)
    complexity: list[ComplexitySignal] = Field(default_factory=list)
    jailbreak: list[JailbreakSignal] = Field(default_factory=list)
    pii: list[PIISignal] = Field(default_factory=list)


# Leaf ``type`` → the ``routing.signals`` section that declares it.
SIGNAL_SECTIONS: dict[str, str] = {
    "keyword": "keywords",
    "context": "context",
    "language": "language",
    "embedding": "embeddings",
    "domain": "domains",
    "complexity": "complexity",
    "jailbreak": "jailbreak",
    "pii": "pii",
}


# --------------------------------------------------------------------------- rules


class RuleLeaf(Strict):
    type: Literal["keyword", "context", "language", "embedding", "domain", "complexity", "jailbreak", "pii"]
    name: str = Field(min_length=1)


class RuleNode(Strict):
    operator: Literal["AND", "OR", "NOT"]
    conditions: list[Rule] = Field(min_length=1)

    @model_validator(mode="after")
    def _not_is_unary(self) -> RuleNode:
        if self.operator == "NOT" and len(self.conditions) != 1:
            raise ValueError("NOT takes exactly one condition")
        return self


def _rule_kind(value: Any) -> str:
    if isinstance(value, dict):
        return "node" if "operator" in value or "conditions" in value else "leaf"
    return "node" if isinstance(value, RuleNode) else "leaf"


Rule = Annotated[
    Union[Annotated[RuleNode, Tag("node")], Annotated[RuleLeaf, Tag("leaf")]],
    Discriminator(_rule_kind),
]
RuleNode.model_rebuild()


# --------------------------------------------------------------------------- algorithms and plugins


class StaticAlgorithm(Strict):
    type: Literal["static"] = "static"


# ``static`` routes to a model; every other type is a looper algorithm from the registry.
Algorithm = Annotated[
    Union[(StaticAlgorithm, *(spec.config_model for spec in ALGORITHMS.values()))],  # type: ignore[valid-type]
    Field(discriminator="type"),
]


class SystemPromptConfig(Strict):
    system_prompt: str
    mode: Literal["insert", "replace"] = "insert"


class SystemPromptPlugin(Strict):
    type: Literal["system_prompt"]
    configuration: SystemPromptConfig


class HeaderPair(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$")
    value: str


class HeaderMutationConfig(Strict):
    add: list[HeaderPair] = Field(default_factory=list)
    remove: list[str] = Field(default_factory=list)


class HeaderMutationPlugin(Strict):
    type: Literal["header_mutation"]
    configuration: HeaderMutationConfig


class BlockConfig(Strict):
    status: int = Field(default=403, ge=400, le=599)
    message: str = "This request was blocked by the gateway's policy."
    code: str = "request_blocked"


class BlockPlugin(Strict):
    type: Literal["block"]
    configuration: BlockConfig = Field(default_factory=BlockConfig)


class PIIMaskConfig(Strict):
    replacement: str = "[{label}]"


class PIIMaskPlugin(Strict):
    type: Literal["pii_mask"]
    configuration: PIIMaskConfig = Field(default_factory=PIIMaskConfig)


Plugin = Annotated[
    Union[SystemPromptPlugin, HeaderMutationPlugin, BlockPlugin, PIIMaskPlugin], Field(discriminator="type")
]


class ModelRef(Strict):
    model: str
    weight: float = Field(default=1.0, gt=0)
    use_reasoning: bool = False


class Decision(Strict):
    name: str = Field(pattern=NAME_PATTERN)
    description: str = ""
    priority: int = 0
    rules: Rule | None = None  # None: always matches (a catch-all route)
    modelRefs: list[ModelRef] = Field(default_factory=list)
    algorithm: Algorithm = Field(default_factory=StaticAlgorithm)
    plugins: list[Plugin] = Field(default_factory=list)

    @property
    def is_looper(self) -> bool:
        return self.algorithm.type != "static"

    @property
    def algorithm_settings(self) -> BaseModel | None:
        """The looper settings block (``algorithm.<type>``), None for a routing decision."""
        return getattr(self.algorithm, self.algorithm.type) if self.is_looper else None

    def plugin(self, kind: type[BaseModel]) -> Any:
        return next((p for p in self.plugins if isinstance(p, kind)), None)

    @property
    def plugin_block(self) -> BlockPlugin | None:
        return self.plugin(BlockPlugin)

    @property
    def is_guard(self) -> bool:
        return any(isinstance(p, (BlockPlugin, PIIMaskPlugin)) for p in self.plugins)

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
