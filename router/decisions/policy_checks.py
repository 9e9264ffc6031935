"""Config cross-checks for the routing policies: selection among modelRefs, session affinity, tenants
and the shared store. Every problem names the field to fix (the loader prefixes the file)."""

from __future__ import annotations

from collections.abc import Iterator

from router.config.schema import Config
from router.decisions.selection.registry import SELECTIONS
from router.decisions.selection.spec import CheckContext
from router.looper.base import ModelFacts
from router.looper.registry import ALGORITHMS


def check_policies(cfg: Config) -> Iterator[str]:
    by_name = {m.name: (k, m) for k, m in enumerate(cfg.models)}

    def facts(name: str) -> ModelFacts | None:
        found = by_name.get(name)
        if found is None:
            return None
        m = found[1]
        return ModelFacts(
            m.name,
            m.param_billions,
            m.pricing.prompt_per_1m if m.pricing else None,
            m.pricing.completion_per_1m if m.pricing else None,
        )

    def currency(name: str) -> str | None:
        found = by_name.get(name)
        return found[1].pricing.currency if found and found[1].pricing else None

    for i, d in enumerate(cfg.routing.decisions):
        at = f"routing.decisions[{i}]"
        if d.session_affinity and (d.is_looper or d.is_guard):
            kind = "a looper decision runs several models" if d.is_looper else "a guard never picks a model"
            yield f"{at}.session_affinity: {kind}; session affinity pins the model of routing decisions only"
        settings = d.selection_settings
        if settings is None:
            continue
        ctx = CheckContext(
            model_refs=tuple((r.model, r.weight) for r in d.modelRefs),
            facts=facts,
            model_path=lambda n: f"models[{by_name[n][0]}]" if n in by_name else "models[]",
            currency=currency,
        )
        for problem in SELECTIONS[d.algorithm.type].check(settings, ctx):
            yield f"{at}.{problem}"

    g = cfg.global_
    for where, store in (("global.sessions.store", g.sessions.store), ("global.tenants.tokens_store", g.tenants.tokens_store)):
        if store == "redis" and g.redis is None:
            yield f"{where}: redis needs global.redis (address: host:port)"
    yield from _check_tenants(cfg)


def _check_tenants(cfg: Config) -> Iterator[str]:
    t = cfg.global_.tenants
    models = {m.name for m in cfg.models}
    if t.header in (cfg.global_.router.cluster_header, cfg.global_.sessions.header):
        yield f"global.tenants.header: {t.header!r} is already the cluster or session header"
    for i, p in enumerate(t.policies):
        at = f"global.tenants.policies[{i}]"
        for j, m in enumerate(p.models or []):
            if m not in models:
                yield f"{at}.models[{j}]: unknown model {m!r} (expected one of {sorted(models)})"
        for j, a in enumerate(p.loopers or []):
            if a not in ALGORITHMS:
                yield f"{at}.loopers[{j}]: unknown looper algorithm {a!r} (expected one of {sorted(ALGORITHMS)})"
        if p.tokens_per_minute is None:
            continue
        for k, d in enumerate(cfg.routing.decisions):
            settings = d.algorithm_settings
            cap = getattr(settings, "max_completion_tokens", None) if settings is not None else None
            usable = p.loopers is None or d.algorithm.type in p.loopers
            if cap is not None and usable and cap > p.tokens_per_minute:
                yield (
                    f"{at}.tokens_per_minute: {p.tokens_per_minute} is below one call's max_completion_tokens ({cap}) "
                    f"of routing.decisions[{k}] ({d.name!r}); no request of that decision could ever fit"
                )
