"""What an algorithm declares to the registry (kept apart from the table so algorithm modules can
import it without importing each other)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal, Protocol

from pydantic import BaseModel, Field, create_model

from router.config.base import AlgorithmBlock
from router.looper.base import Looper, ModelFacts
from router.looper.trace import LooperTrace


class ModelLookup(Protocol):
    """What resolving needs of the policy: model names (config names or served ids) → specs."""

    def resolve_model(self, name: str) -> Any: ...


@dataclass(frozen=True, slots=True)
class ResolveContext:
    lookup: ModelLookup
    candidates: Sequence[str]  # the decision's modelRefs (or the request plugin's models), config names
    weights: Mapping[str, float]  # modelRefs[].weight by model
    default_timeout: float  # global.integrations.looper.timeout_seconds
    trace_body: bool  # global.router.trace_in_body
    trace_headers: bool  # global.router.trace_in_headers
    facts: Callable[[str], ModelFacts]  # declared size and price of a model, for escalation orders
    fallback_model: str | None = None  # the concrete model a request named (plugin entry)


@dataclass(frozen=True, slots=True)
class CheckContext:
    """What a config cross-check needs: known model names and the reserved slugs/aliases."""

    models: frozenset[str]
    reserved: frozenset[str]
    model_refs: tuple[str, ...]

    def unknown_model(self, where: str, name: str | None, role: str = "") -> Iterator[str]:
        """The problem with naming ``name`` at ``where`` when it is not a configured model (a routing
        alias or looper slug is called out: it can never be a sub-call's model)."""
        if name is None or name in self.models:
            return
        kind = f"{role} model" if role else "model"
        hint = f" ({name!r} is a routing alias or looper slug and can never be a {kind})" if name in self.reserved else ""
        yield f"{where}: unknown {kind} {name!r}{hint}"


@dataclass(frozen=True)
class AlgorithmSpec:
    name: str
    summary: str
    settings: type[BaseModel]  # every knob optional, so layers merge field by field
    defaults: BaseModel  # the built-in layer under the decision's settings
    plugin: type[BaseModel]  # plugins[{id: ...}] on a request: settings + id/enabled + candidates
    plugin_ids: tuple[str, ...]
    default_slugs: tuple[str, ...]  # direct request model names, e.g. vllm-sr/fusion
    looper: type[Looper]
    trace: type[LooperTrace]
    resolve: Callable[[Any, ResolveContext], Any]  # merged settings → params
    check: Callable[[Any, CheckContext], Iterator[str]]  # config cross-checks, paths relative to the settings
    plugin_models: Callable[[Any], list[tuple[str, str]]]  # (field path, model name) a plugin names
    plugin_candidates: Callable[[Any], list[str] | None]  # a request-only candidate list, if the plugin gives one
    fields_doc: str = ""  # docs/loopers.md section anchor
    # Local encoder models the merged settings need: (model dir, required, settings field path).
    encoder_models: Callable[[Any], list[tuple[str, bool, str]]] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @cached_property
    def config_model(self) -> type[BaseModel]:
        """``{type: <name>, <name>: {...settings}}``: the decision's ``algorithm`` block."""
        fields: dict[str, Any] = {
            "type": (Literal[self.name], ...),
            self.name: (self.settings, Field(default_factory=self.settings)),
        }
        return create_model(f"{self.settings.__name__.removesuffix('Settings')}Algorithm", __base__=AlgorithmBlock, **fields)
