"""Load and validate the router config; every error names the file, the field path and what was expected."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from router.config.schema import SIGNAL_SECTIONS, Config, RuleLeaf, RuleNode
from router.looper.registry import ALGORITHMS
from router.looper.spec import CheckContext


class ConfigError(Exception):
    """A config that cannot be used; ``problems`` holds one ``field.path: message`` line each."""

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = problems
        super().__init__("\n".join(f"{source}: {p}" for p in problems))


# Discriminated unions put the chosen member's tag into pydantic's error location; users never wrote it.
_UNION_TAGS = {
    "algorithm": {"static", *ALGORITHMS},
    "plugins": {"system_prompt", "header_mutation", "block", "pii_mask"},
}


def _path(loc: tuple[Any, ...]) -> str:
    out = ""
    union: str | None = None  # the union field whose tag may come next
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
            continue
        if part in ("node", "leaf") or str(part).startswith("function-"):
            continue
        if union is not None and part in _UNION_TAGS[union]:
            union = None
            continue
        union = part if part in _UNION_TAGS else None
        out += ("." if out else "") + str(part)
    return out or "(top level)"


def _describe(err: dict[str, Any]) -> str:
    kind, msg = err["type"], err["msg"]
    got = err.get("input")
    if kind == "extra_forbidden":
        return "unknown key (not part of the schema; check the spelling)"
    if kind == "missing":
        return "required field is missing"
    if isinstance(got, (str, int, float, bool)) or got is None:
        return f"{msg} (got {got!r})"
    return f"{msg} (got a {type(got).__name__})"


def _cross_check(cfg: Config) -> Iterator[str]:
    """References between sections: what pydantic alone cannot see."""
    backends = {b.name for b in cfg.backends}
    seen: set[str] = set()
    for i, b in enumerate(cfg.backends):
        if b.name in seen:
            yield f"backends[{i}].name: duplicate backend name {b.name!r}"
        seen.add(b.name)
    models: set[str] = set()
    for i, m in enumerate(cfg.models):
        if m.name in models:
            yield f"models[{i}].name: duplicate model name {m.name!r}"
        models.add(m.name)
        if m.backend not in backends:
            yield f"models[{i}].backend: unknown backend {m.backend!r} (expected one of {sorted(backends)})"
    router = cfg.global_.router
    looper = cfg.global_.integrations.looper
    slugs = {slug for name in ALGORITHMS for slug in looper.slugs(name)}
    reserved = set(router.auto_model_names) | slugs
    for i, m in enumerate(cfg.models):
        if m.name in reserved:
            yield f"models[{i}].name: {m.name!r} is a reserved auto/Fusion model name"
    if cfg.default_model is not None and cfg.default_model not in models:
        yield f"default_model: unknown model {cfg.default_model!r} (expected one of {sorted(models)})"

    for j, sig in enumerate(cfg.routing.signals.keywords):
        if sig.method == "regex":
            for k, pattern in enumerate(sig.keywords):
                try:
                    re.compile(pattern)
                except re.error as exc:
                    yield f"routing.signals.keywords[{j}].keywords[{k}]: invalid regular expression {pattern!r} ({exc})"

    declared: dict[str, set[str]] = {}
    for leaf_type, section in SIGNAL_SECTIONS.items():
        names: set[str] = set()
        for j, sig in enumerate(getattr(cfg.routing.signals, section)):
            if sig.name in names:
                yield f"routing.signals.{section}[{j}].name: duplicate signal name {sig.name!r}"
            names.add(sig.name)
        declared[leaf_type] = names
    # A domain signal's leaves are its categories; complexity leaves are ``name:hard|easy``.
    for sig in cfg.routing.signals.domains:
        declared["domain"] |= {c.name for c in sig.categories} | {sig.name}
    declared["complexity"] |= {f"{s.name}:{lvl}" for s in cfg.routing.signals.complexity for lvl in ("hard", "easy")}

    yield from _check_guard_on_error(cfg)

    names = set()
    for i, d in enumerate(cfg.routing.decisions):
        at = f"routing.decisions[{i}]"
        if d.name in names:
            yield f"{at}.name: duplicate decision name {d.name!r}"
        names.add(d.name)
        for j, ref in enumerate(d.modelRefs):
            if ref.model not in models:
                yield f"{at}.modelRefs[{j}].model: unknown model {ref.model!r} (expected one of {sorted(models)})"
        if not d.modelRefs and not d.is_looper and not d.is_guard:
            yield f"{at}.modelRefs: a routing decision needs at least one model"
        if d.rules is not None:
            yield from _check_rule(d.rules, f"{at}.rules", declared)
        settings = d.algorithm_settings
        if settings is not None:
            ctx = CheckContext(models=frozenset(models), reserved=frozenset(reserved), model_refs=tuple(r.model for r in d.modelRefs))
            for problem in ALGORITHMS[d.algorithm.type].check(settings, ctx):
                yield f"{at}.algorithm.{d.algorithm.type}.{problem}"


def _leaf_owners(cfg: Config) -> dict[str, tuple[str, int]]:
    """Rule leaf ``type:name`` → (signals section, index) of the signal that answers it."""
    owners: dict[str, tuple[str, int]] = {}
    for leaf_type, section in SIGNAL_SECTIONS.items():
        for j, sig in enumerate(getattr(cfg.routing.signals, section)):
            owners[f"{leaf_type}:{sig.name}"] = (section, j)
    for j, dom in enumerate(cfg.routing.signals.domains):
        for cat in dom.categories:
            owners.setdefault(f"domain:{cat.name}", ("domains", j))
    for j, cx in enumerate(cfg.routing.signals.complexity):
        for level in ("hard", "easy"):
            owners[f"complexity:{cx.name}:{level}"] = ("complexity", j)
    return owners


def _check_guard_on_error(cfg: Config) -> Iterator[str]:
    """A signal a guard reads must fail closed: skipping it on error would forward what the guard
    exists to stop (an overloaded PII check once let card numbers through)."""
    owners = _leaf_owners(cfg)
    flagged: set[tuple[str, int]] = set()
    for d in cfg.routing.decisions:
        if not d.is_guard:
            continue
        for leaf in _leaves(d.rules):
            owner = owners.get(leaf)
            if owner is None or owner in flagged:
                continue
            section, j = owner
            sig = getattr(cfg.routing.signals, section)[j]
            if "on_error" in sig.model_fields_set and sig.on_error == "skip":
                flagged.add(owner)
                yield (f"routing.signals.{section}[{j}].on_error: {sig.name!r} is read by the guard {d.name!r}, so it "
                       "cannot be skipped on error (a failed guard answers 503); remove on_error or use fail_closed")


def _leaves(rule: RuleNode | RuleLeaf | None) -> Iterator[str]:
    if rule is None:
        return
    if isinstance(rule, RuleLeaf):
        yield f"{rule.type}:{rule.name}"
        return
    for cond in rule.conditions:
        yield from _leaves(cond)


def _check_rule(rule: RuleNode | RuleLeaf, at: str, declared: dict[str, set[str]]) -> Iterator[str]:
    if isinstance(rule, RuleLeaf):
        if rule.name not in declared[rule.type]:
            section = SIGNAL_SECTIONS[rule.type]
            yield (
                f"{at}.name: no {rule.type} signal named {rule.name!r} in routing.signals.{section}"
                f" (declared: {sorted(declared[rule.type]) or 'none'})"
            )
        return
    for k, cond in enumerate(rule.conditions):
        yield from _check_rule(cond, f"{at}.conditions[{k}]", declared)


def parse_config(data: Any, source: str = "<config>") -> Config:
    if not isinstance(data, dict):
        raise ConfigError(source, [f"(top level): expected a mapping of sections, got {type(data).__name__}"])
    try:
        cfg = Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(source, [f"{_path(e['loc'])}: {_describe(e)}" for e in exc.errors()]) from None
    problems = list(_cross_check(cfg))
    if problems:
        raise ConfigError(source, problems)
    return cfg


def load_config(path: str | Path) -> Config:
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(source, [f"cannot read file: {exc.strerror or exc}"]) from None
    except UnicodeDecodeError:
        raise ConfigError(source, ["file is not UTF-8 text"]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ConfigError(source, [f"{where}invalid YAML: {getattr(exc, 'problem', exc)}"]) from None
    return parse_config(data, source)
