"""Signal specs (``routing.signals.<section>[]``) and the one table of signal types.

``SIGNAL_TYPES`` is the single place a signal type is declared: its ``routing.signals`` section, its
spec class, its rule-leaf ``type``, its implementation (``module:Class``, imported only when a config
declares one, so onnxruntime loads only for model-backed signals) and whether it needs a model. The
schema's ``Signals`` section and ``RuleLeaf`` types, the loader's leaf checks, the signal registry and
the classifier runtime's list of model-backed sections all derive from it. Adding a signal type is a
spec class here, a row in the table and its implementation module (docs/architecture.md).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, field_validator, model_validator

from router.config.base import NonBlank, Strict
from router.signals import pii_labels
from router.signals.mmlu import MMLU_CATEGORY_NAMES

# --------------------------------------------------------------------------- shared fields


class SignalCommon(Strict):
    name: str = Field(min_length=1)
    description: str = ""  # what the signal means; documentation only (vLLM-SR has it on every signal)
    # What a failure (timeout, model error, overload) means: ``skip`` = the signal did not match;
    # ``fail_closed`` = the request is refused with 503 (retryable), never treated as a match. Signals
    # a guard (block / mask decision) reads always fail closed.
    on_error: Literal["skip", "fail_closed"] = "skip"
    timeout_ms: float = Field(default=500.0, gt=0)
    # A model-backed signal whose model cannot load stops start-up, unless it is optional (then it
    # reports an error on every request and its on_error policy decides).
    optional: bool = False

    def leaf_names(self) -> set[str]:
        """The ``name`` values rule leaves of this signal's type may use to mean this signal."""
        return {self.name}


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
    model: str

    def model_names(self) -> list[str]:
        """The model directories (under ``global.classifiers.models_dir``) this signal loads."""
        return [self.model]


_TOKEN_COUNT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kKmM]?)\s*$")


def _token_count(value: Any) -> Any:
    """``32K`` → 32000, ``1.5M`` → 1500000 (vLLM-SR's token counts); integers pass through."""
    if isinstance(value, str):
        m = _TOKEN_COUNT.match(value)
        if m is None:
            raise ValueError("expected a token count like 4096, 32K or 1M")
        return int(float(m.group(1)) * {"": 1, "k": 1000, "m": 1_000_000}[m.group(2).lower()])
    return value


TokenCount = Annotated[int, BeforeValidator(_token_count)]

# --------------------------------------------------------------------------- one spec per type


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
    min_tokens: TokenCount = Field(default=0, ge=0)
    max_tokens: TokenCount | None = Field(default=None, gt=0)


class LanguageSignal(SignalCommon):
    # Omitted: the signal's name is the language code (vLLM-SR's ``{name: zh}``).
    languages: list[str] = Field(default_factory=list, description="ISO 639-1 codes, e.g. en, fr, zh")
    min_confidence: float = Field(default=0.0, ge=0, le=1)

    @model_validator(mode="after")
    def _name_is_the_code(self) -> LanguageSignal:
        if not self.languages:
            object.__setattr__(self, "languages", [self.name])
        return self


class EmbeddingSignal(ModelSignalCommon):
    candidates: list[str] = Field(min_length=1)
    threshold: float = Field(default=0.6, ge=-1, le=1)
    # ``any`` (vLLM-SR): some candidate reaches the threshold, which is ``max`` reaching it.
    aggregation_method: Literal["max", "mean", "any"] = "max"
    model: str = "embedding"


class DomainCategory(Strict):
    name: str = Field(min_length=1)
    description: str = ""
    examples: list[str] = Field(default_factory=list)
    # MMLU subject categories this category stands for (vLLM-SR's ``mmlu_categories``): the prompt is
    # then classified among the built-in MMLU categories, and this category matches when the winner is
    # one of these. ``description`` is documentation only in that case.
    mmlu_categories: list[str] = Field(default_factory=list)

    @field_validator("mmlu_categories")
    @classmethod
    def _known(cls, value: list[str]) -> list[str]:
        bad = [c for c in value if c not in MMLU_CATEGORY_NAMES]
        if bad:
            raise ValueError(f"unknown MMLU categories {bad} (known: {list(MMLU_CATEGORY_NAMES)})")
        return value


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
        if self.classifier_model and any(c.mmlu_categories for c in self.categories):
            raise ValueError("mmlu_categories need the built-in embedding classifier; drop classifier_model")
        return self

    def leaf_names(self) -> set[str]:
        # A domain signal's leaves are its categories (and the signal itself: "some category matched").
        return {self.name} | {c.name for c in self.categories}

    def model_names(self) -> list[str]:
        return [self.classifier_model] if self.classifier_model else [self.model]


def _candidates(value: Any) -> Any:
    """vLLM-SR writes ``hard: {candidates: [...]}``; the router's own layout a plain list."""
    if isinstance(value, dict) and set(value) == {"candidates"}:
        return value["candidates"]
    return value


class ComplexitySignal(ModelSignalCommon):
    hard: Annotated[list[str], BeforeValidator(_candidates)] = Field(min_length=1)
    easy: Annotated[list[str], BeforeValidator(_candidates)] = Field(min_length=1)
    # Two levels: hard when (best hard similarity - best easy similarity) > margin, else easy.
    margin: float | None = Field(default=None, ge=-1, le=1)
    # Three levels (vLLM-SR): hard above +threshold, easy below -threshold, medium between.
    threshold: float | None = Field(default=None, ge=0, le=1)
    model: str = "embedding"

    @model_validator(mode="after")
    def _one_band(self) -> ComplexitySignal:
        if self.margin is not None and self.threshold is not None:
            raise ValueError("set `margin` (two levels: hard/easy) or `threshold` (three levels: hard/medium/easy), not both")
        return self

    @property
    def levels(self) -> tuple[str, ...]:
        return ("hard", "medium", "easy") if self.threshold is not None else ("hard", "easy")

    def leaf_names(self) -> set[str]:
        # Leaves are ``<name>:hard``, ``<name>:easy`` (and ``<name>:medium`` with a threshold).
        return {self.name} | {f"{self.name}:{level}" for level in self.levels}


class JailbreakSignal(ModelSignalCommon):
    threshold: float = Field(default=0.8, ge=0, le=1)
    model: str = "jailbreak"
    # Every message, assistant turns included: a client writes those too (a fabricated "assistant"
    # turn that instructs the model is an old injection trick).
    scope: Scope = "all"
    # A guard: what it cannot read whole, it refuses rather than waves through.
    token_budget: int = Field(default=8192, ge=64, le=1_048_576)
    over_budget: Literal["head_tail", "refuse"] = "refuse"


class PIISignal(ModelSignalCommon):
    # Router labels (EMAIL, GIVEN_NAME, ...) or vLLM-SR's (EMAIL_ADDRESS, PERSON, GPE, ...).
    pii_types_allowed: list[str] = Field(default_factory=list)
    threshold: float = Field(default=0.5, ge=0, le=1)
    model: str = "pii"
    use_patterns: bool = True
    scope: Scope = "all"
    token_budget: int = Field(default=8192, ge=64, le=1_048_576)
    over_budget: Literal["head_tail", "refuse"] = "refuse"

    @field_validator("pii_types_allowed")
    @classmethod
    def _known_labels(cls, value: list[str]) -> list[str]:
        bad = pii_labels.unknown(value)
        if bad:
            raise ValueError(
                f"unknown PII labels {bad}: an allowance the detector never matches would do nothing "
                f"(router labels: {sorted(pii_labels.ROUTER_LABELS)}; vLLM-SR labels: "
                f"{sorted(pii_labels.REFERENCE_LABELS)})"
            )
        return value


class TenantSignal(SignalCommon):
    """Matches requests of the named tenants (``global.tenants``: a trusted header Envoy sets, or an API
    key's digest); omitted: the signal's name is the tenant."""

    tenants: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _name_is_the_tenant(self) -> TenantSignal:
        if not self.tenants:
            object.__setattr__(self, "tenants", [self.name])
        return self


# --------------------------------------------------------------------------- the table


@dataclass(frozen=True)
class SignalType:
    section: str  # routing.signals.<section>
    leaf: str  # rule leaf ``type``
    spec: type[SignalCommon]
    implementation: str  # "module:Class", imported when a config declares such a signal
    model_backed: bool  # needs the classifier runtime (ONNX models)


SIGNAL_TYPES: tuple[SignalType, ...] = (
    SignalType("keywords", "keyword", KeywordSignal, "router.signals.keyword:KeywordSignal", False),
    SignalType("context", "context", ContextSignal, "router.signals.context:ContextSignal", False),
    SignalType("language", "language", LanguageSignal, "router.signals.language:LanguageSignal", False),
    SignalType("embeddings", "embedding", EmbeddingSignal, "router.signals.embedding:EmbeddingSignal", True),
    SignalType("domains", "domain", DomainSignal, "router.signals.domain:DomainSignal", True),
    SignalType("complexity", "complexity", ComplexitySignal, "router.signals.complexity:ComplexitySignal", True),
    SignalType("jailbreak", "jailbreak", JailbreakSignal, "router.signals.jailbreak:JailbreakSignal", True),
    SignalType("pii", "pii", PIISignal, "router.signals.pii:PIISignal", True),
    SignalType("tenants", "tenant", TenantSignal, "router.signals.tenant:TenantSignal", False),
)

BY_SECTION: dict[str, SignalType] = {t.section: t for t in SIGNAL_TYPES}
BY_LEAF: dict[str, SignalType] = {t.leaf: t for t in SIGNAL_TYPES}
# Leaf ``type`` → the ``routing.signals`` section that declares it.
SIGNAL_SECTIONS: dict[str, str] = {t.leaf: t.section for t in SIGNAL_TYPES}
LEAF_TYPES: tuple[str, ...] = tuple(t.leaf for t in SIGNAL_TYPES)
ML_SECTIONS: tuple[str, ...] = tuple(t.section for t in SIGNAL_TYPES if t.model_backed)
