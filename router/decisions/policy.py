"""The compiled policy: one immutable object built from a config, swapped atomically on reload.

It answers, per entry path, which decisions are eligible and which signals those decisions need, so a
request runs only the signals some eligible decision references.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING

from router.config.schema import Backend, Config, Decision, ModelSpec
from router.decisions import rules
from router.decisions.selection.spec import Candidate
from router.looper.base import ModelFacts
from router.looper.registry import ALGORITHMS
from router.signals.base import Signal
from router.signals.registry import build_signals

if TYPE_CHECKING:
    from router.signals.runtime import ClassifierRuntime


class Entry(StrEnum):
    AUTO = "auto"  # an auto alias: every decision is eligible
    LOOPER = "looper"  # a looper slug (vllm-sr/fusion, vllm-sr/remom ...): that algorithm's decisions (and guards) only
    PLUGIN = "plugin"  # a concrete model plus plugins[{id: <algorithm>}]: request-scoped looper
    MODEL = "model"  # a concrete model: passthrough after the guards
    INTERNAL = "internal"  # an authenticated looper sub-call: no classification, never deliberated again


@dataclass(frozen=True, slots=True)
class EntryChoice:
    """How a request's ``model`` enters: which decisions are eligible, and the model or algorithm it named."""

    entry: Entry
    eligible: DecisionSet
    algorithm: str | None = None
    model: ModelSpec | None = None


@dataclass(frozen=True, slots=True)
class Match:
    decision: Decision
    confidence: float


@dataclass(slots=True)
class DecisionSet:
    decisions: list[Decision]  # routing, looper and block decisions, sorted by priority
    signals: list[Signal]
    masks: list[Decision] = field(default_factory=list)  # masking guards: applied, never chosen

    def mask(self, matched: dict[str, float]) -> Decision | None:
        return next((d for d in self.masks if rules.evaluate(d.rules, matched) is not None), None)

    def select(self, matched: dict[str, float], usable: Callable[[Decision], bool] | None = None) -> Match | None:
        """The winning decision; ``usable`` passes over decisions this request may not use (a tenant's
        models or loopers), so the next eligible one wins."""
        best: Match | None = None
        for d in self.decisions:  # already sorted by priority, highest first
            if best is not None and d.priority < best.decision.priority:
                break
            if usable is not None and not usable(d):
                continue
            conf = rules.evaluate(d.rules, matched)
            # On equal confidence a real rule beats a catch-all; otherwise file order decides.
            if conf is not None and (
                best is None or (conf, d.rules is not None) > (best.confidence, best.decision.rules is not None)
            ):
                best = Match(d, conf)
        return best


@dataclass(slots=True)
class Policy:
    config: Config
    version: str
    signals: dict[str, Signal]
    models: dict[str, ModelSpec]
    backends: dict[str, Backend]
    auto_names: frozenset[str]
    # Direct looper slug (vllm-sr/fusion, vllm-sr/remom ...) → its algorithm.
    slug_algorithms: dict[str, str]
    # The classifier runtime (None when no signal or looper needs a model), and looper encoder models
    # that could not load at start-up but whose decisions may run without them (on_error: skip).
    runtime: ClassifierRuntime | None = None
    unavailable_models: dict[str, str] = field(default_factory=dict)
    all_decisions: DecisionSet = field(init=False)
    guard_decisions: DecisionSet = field(init=False)
    # Per looper algorithm: its decisions plus the guards (a slug evaluates only those).
    looper_sets: dict[str, DecisionSet] = field(init=False)
    served_aliases: dict[str, str] = field(init=False)
    # Signals a guard (block / mask decision) reads: their failure refuses the request (503), never
    # lets it through unchecked.
    guard_signals: frozenset[str] = field(init=False)
    # Some decision keeps sessions on their model: session ids are read (and checked) on every request.
    uses_sessions: bool = field(init=False)
    # Per decision: its modelRefs as selection candidates (built once, not per request).
    candidates: dict[str, tuple[Candidate, ...]] = field(init=False)

    def __post_init__(self) -> None:
        ordered = sorted(self.config.routing.decisions, key=lambda d: -d.priority)  # stable: file order breaks ties
        self.all_decisions = self._set(ordered)
        # Guards (block / mask) stay eligible on every entry path: naming a concrete model or a Fusion
        # slug must not be a way around a jailbreak or PII policy.
        guards = [d for d in ordered if d.is_guard]
        self.guard_decisions = self._set(guards)
        self.looper_sets = {
            algorithm: self._set([d for d in ordered if d.algorithm.type == algorithm or d.is_guard])
            for algorithm in set(self.slug_algorithms.values())
        }
        self.guard_signals = frozenset(s.key for s in self.guard_decisions.signals)
        # Clients may name a model by its served id too; config names win on clashes.
        self.served_aliases = {m.served_id: m.name for m in self.models.values() if m.served_id not in self.models}
        self.uses_sessions = any(d.session_affinity for d in self.config.routing.decisions)
        self.candidates = {
            d.name: tuple(Candidate(r.model, r.weight) for r in d.modelRefs) for d in self.config.routing.decisions
        }

    def _set(self, decisions: list[Decision]) -> DecisionSet:
        by_leaf: dict[str, Signal] = {}
        for sig in self.signals.values():
            for leaf in sig.leaf_keys():
                by_leaf[leaf] = sig
        needed: dict[str, Signal] = {}
        for d in decisions:
            for leaf in rules.leaves(d.rules):
                found = by_leaf.get(leaf)
                if found is not None:
                    needed[found.key] = found
        return DecisionSet([d for d in decisions if not d.is_mask], list(needed.values()), [d for d in decisions if d.is_mask])

    @property
    def fusion_slugs(self) -> frozenset[str]:
        return frozenset(slug for slug, algorithm in self.slug_algorithms.items() if algorithm == "fusion")

    @property
    def reserved_names(self) -> frozenset[str]:
        """Names that can never be a model: auto aliases and looper slugs."""
        return self.auto_names | frozenset(self.slug_algorithms)

    def facts(self, name: str) -> ModelFacts:
        spec = self.models[name]
        price = spec.pricing
        return ModelFacts(
            name, spec.param_billions, price.prompt_per_1m if price else None, price.completion_per_1m if price else None
        )

    def entry_for(self, name: str) -> EntryChoice | None:
        """The entry path for a request's ``model`` (None: no such model). The pipeline and
        ``fusion-router classify`` both ask here, so they cannot drift apart."""
        if name in self.auto_names:
            return EntryChoice(Entry.AUTO, self.all_decisions)
        algorithm = self.slug_algorithms.get(name)
        if algorithm is not None:
            return EntryChoice(Entry.LOOPER, self.looper_sets[algorithm], algorithm=algorithm)
        model = self.resolve_model(name)
        if model is None:
            return None
        # Guards (block / mask decisions) apply to every entry path, a concrete model included.
        return EntryChoice(Entry.MODEL, self.guard_decisions, model=model)

    def resolve_model(self, name: str) -> ModelSpec | None:
        spec = self.models.get(name)
        if spec is None and name in self.served_aliases:
            spec = self.models[self.served_aliases[name]]
        return spec

    def resolve_internal(self, name: str, cluster: str | None) -> ModelSpec | None:
        """A looper sub-call names the served id and the cluster; two models may share a served id."""
        if cluster:
            for spec in self.models.values():
                if name in (spec.name, spec.served_id) and self.backend_of(spec).cluster_name == cluster:
                    return spec
        return self.resolve_model(name)

    def backend_of(self, model: ModelSpec) -> Backend:
        return self.backends[model.backend]

    @property
    def default_model(self) -> ModelSpec:
        name = self.config.default_model or self.config.models[0].name
        return self.models[name]

    async def start(self) -> None:
        for sig in self.signals.values():
            await sig.start()
        await self._start_looper_models()

    async def _start_looper_models(self) -> None:
        """Load the encoder models looper decisions use (grounding, self-consistency, debate): a required
        one that cannot load stops start-up naming the path; an optional one is recorded as unavailable."""
        from router.looper.model_needs import model_needs

        for need in model_needs(self.config):
            if need.model in self.unavailable_models:
                if need.required:
                    raise RuntimeError(f"{need.where}: {self.unavailable_models[need.model]}")
                continue
            try:
                if self.runtime is None:
                    raise RuntimeError("no classifier runtime")
                await self.runtime.batcher(need.model)
            except Exception as exc:
                if need.required:
                    raise RuntimeError(f"{need.where}: {exc}") from exc
                self.unavailable_models[need.model] = str(exc)


def compile_policy(config: Config, version: str = "0", runtime: ClassifierRuntime | None = None) -> Policy:
    g = config.global_
    looper = g.integrations.looper
    return Policy(
        config=config,
        version=version,
        signals=build_signals(config.routing.signals, runtime),
        models={m.name: m for m in config.models},
        backends={b.name: b for b in config.backends},
        auto_names=frozenset(g.router.auto_model_names),
        slug_algorithms={slug: name for name in ALGORITHMS for slug in looper.slugs(name)},
        runtime=runtime,
    )
