"""The compiled policy: one immutable object built from a config, swapped atomically on reload.

It answers, per entry path, which decisions are eligible and which signals those decisions need, so a
request runs only the signals some eligible decision references.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from router.config.schema import Backend, Config, Decision, ModelSpec
from router.decisions import rules
from router.signals.base import Signal
from router.signals.registry import build_signals


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

    def select(self, matched: dict[str, float]) -> Match | None:
        best: Match | None = None
        for d in self.decisions:  # already sorted by priority, highest first
            if best is not None and d.priority < best.decision.priority:
                break
            conf = rules.evaluate(d.rules, matched)
            # On equal confidence a real rule beats a catch-all; otherwise file order decides.
            if conf is not None and (best is None or (conf, d.rules is not None) > (best.confidence, best.decision.rules is not None)):
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
    fusion_slugs: frozenset[str]
    all_decisions: DecisionSet = field(init=False)
    looper_decisions: DecisionSet = field(init=False)
    guard_decisions: DecisionSet = field(init=False)
    served_aliases: dict[str, str] = field(init=False)

    def __post_init__(self) -> None:
        ordered = sorted(self.config.routing.decisions, key=lambda d: -d.priority)  # stable: file order breaks ties
        self.all_decisions = self._set(ordered)
        # Guards (block / mask) stay eligible on every entry path: naming a concrete model or a Fusion
        # slug must not be a way around a jailbreak or PII policy.
        guards = [d for d in ordered if d.is_guard]
        self.looper_decisions = self._set([d for d in ordered if d.is_looper or d.is_guard])
        self.guard_decisions = self._set(guards)
        # Clients may name a model by its served id too; config names win on clashes.
        self.served_aliases = {m.served_id: m.name for m in self.models.values() if m.served_id not in self.models}

    def _set(self, decisions: list[Decision]) -> DecisionSet:
        by_leaf: dict[str, Signal] = {}
        for sig in self.signals.values():
            for leaf in sig.leaf_keys():
                by_leaf[leaf] = sig
        needed: dict[str, Signal] = {}
        for d in decisions:
            for leaf in rules.leaves(d.rules):
                sig = by_leaf.get(leaf)
                if sig is not None:
                    needed[sig.key] = sig
        return DecisionSet([d for d in decisions if not d.is_mask], list(needed.values()), [d for d in decisions if d.is_mask])

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


def compile_policy(config: Config, version: str = "0", runtime: Any = None) -> Policy:
    g = config.global_
    return Policy(
        config=config,
        version=version,
        signals=build_signals(config.routing.signals, runtime),
        models={m.name: m for m in config.models},
        backends={b.name: b for b in config.backends},
        auto_names=frozenset(g.router.auto_model_names),
        fusion_slugs=frozenset(g.integrations.looper.fusion.model_names),
    )
