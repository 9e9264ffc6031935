"""Load and validate the router config; every error names the file, the field path and what was expected."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import structlog
import yaml
from pydantic import ValidationError
from pydantic_core import ErrorDetails

from router.config import vsr
from router.config.reference import (
    UNSUPPORTED_LEAF_TYPES,
    UNSUPPORTED_PLUGINS,
    UNSUPPORTED_SIGNAL_SECTIONS,
    not_supported,
)
from router.config.report import VSR_V03, ConfigReport
from router.config.schema import (
    Config,
    RuleLeaf,
    RuleNode,
)
from router.config.signals import SIGNAL_SECTIONS, SIGNAL_TYPES
from router.decisions.policy_checks import check_policies
from router.decisions.selection.registry import SELECTIONS
from router.looper.registry import ALGORITHMS
from router.looper.spec import CheckContext

log = structlog.get_logger("router.config")


class ConfigError(Exception):
    """A config that cannot be used; ``problems`` holds one ``field.path: message`` line each, and
    ``report`` what the reader understood before it gave up (format, used, ignored, unsupported)."""

    def __init__(self, source: str, problems: list[str], report: ConfigReport | None = None):
        self.source = source
        self.problems = problems
        self.report = report
        super().__init__("\n".join(f"{source}: {p}" for p in problems))


# Discriminated unions put the chosen member's tag into pydantic's error location; users never wrote it.
_UNION_TAGS = {
    "algorithm": {*SELECTIONS, *ALGORITHMS},
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


def _describe(err: ErrorDetails) -> str:
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
    by_name = {m.name: m for m in cfg.models}
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

    for j, sig in enumerate(getattr(cfg.routing.signals, "keywords")):  # noqa: B009 - a registry-built section
        if sig.method == "regex":
            for k, pattern in enumerate(sig.keywords):
                try:
                    re.compile(pattern)
                except re.error as exc:
                    yield f"routing.signals.keywords[{j}].keywords[{k}]: invalid regular expression {pattern!r} ({exc})"

    declared: dict[str, set[str]] = {}
    for t in SIGNAL_TYPES:
        names: set[str] = set()
        leaves: set[str] = set()
        for j, sig in enumerate(getattr(cfg.routing.signals, t.section)):
            if sig.name in names:
                yield f"routing.signals.{t.section}[{j}].name: duplicate signal name {sig.name!r}"
            names.add(sig.name)
            leaves |= sig.leaf_names()  # a domain's categories, a complexity signal's ``name:level``
        declared[t.leaf] = leaves

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
            elif ref.lora_name and by_name[ref.model].loras and ref.lora_name not in by_name[ref.model].loras:
                yield (
                    f"{at}.modelRefs[{j}].lora_name: {ref.lora_name!r} is not one of model {ref.model!r}'s loras "
                    f"{by_name[ref.model].loras}"
                )
        if not d.modelRefs and not d.is_looper and not d.is_guard:
            yield f"{at}.modelRefs: a routing decision needs at least one model"
        if d.rules is not None:
            yield from _check_rule(d.rules, f"{at}.rules", declared)
        settings = d.algorithm_settings
        if settings is not None:
            ctx = CheckContext(
                models=frozenset(models), reserved=frozenset(reserved), model_refs=tuple(r.model for r in d.modelRefs)
            )
            for problem in ALGORITHMS[d.algorithm.type].check(settings, ctx):
                yield f"{at}.algorithm.{d.algorithm.type}.{problem}"
    # Selection among modelRefs, session affinity, tenants, the shared store (docs/policies.md).
    yield from check_policies(cfg)


def _leaf_owners(cfg: Config) -> dict[str, tuple[str, int]]:
    """Rule leaf ``type:name`` → (signals section, index) of the signal that answers it."""
    owners: dict[str, tuple[str, int]] = {}
    for t in SIGNAL_TYPES:
        for j, sig in enumerate(getattr(cfg.routing.signals, t.section)):
            owners[f"{t.leaf}:{sig.name}"] = (t.section, j)
            for name in sorted(sig.leaf_names()):
                owners.setdefault(f"{t.leaf}:{name}", (t.section, j))
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
                yield (
                    f"routing.signals.{section}[{j}].on_error: {sig.name!r} is read by the guard {d.name!r}, so it "
                    "cannot be skipped on error (a failed guard answers 503); remove on_error or use fail_closed"
                )


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


def _refuse_reference_features(data: dict[str, Any]) -> Iterator[str]:
    """The router's own layout with vLLM-SR features it lacks: refused by name, not as unknown keys."""
    routing = data.get("routing")
    if not isinstance(routing, dict):
        return
    signals = routing.get("signals")
    if isinstance(signals, dict):
        for section in signals:
            if section in UNSUPPORTED_SIGNAL_SECTIONS:
                yield not_supported(f"{section} signals", UNSUPPORTED_SIGNAL_SECTIONS[section], f"routing.signals.{section}")
    decisions = routing.get("decisions")
    for i, d in enumerate(decisions if isinstance(decisions, list) else []):
        if not isinstance(d, dict):
            continue
        for j, p in enumerate(d.get("plugins") or []):
            kind = p.get("type") if isinstance(p, dict) else None
            if kind in UNSUPPORTED_PLUGINS:
                yield not_supported(f"the {kind} plugin", UNSUPPORTED_PLUGINS[kind], f"routing.decisions[{i}].plugins[{j}].type")
        yield from _refuse_leaves(d.get("rules"), f"routing.decisions[{i}].rules")


def _refuse_leaves(rule: Any, at: str) -> Iterator[str]:
    if not isinstance(rule, dict):
        return
    kind = rule.get("type")
    if isinstance(kind, str) and kind in UNSUPPORTED_LEAF_TYPES:
        yield not_supported(f"{kind} signals", UNSUPPORTED_LEAF_TYPES[kind], f"{at}.type")
    for k, cond in enumerate(rule.get("conditions") or []):
        yield from _refuse_leaves(cond, f"{at}.conditions[{k}]")


def _validate(data: dict[str, Any], source: str, report: ConfigReport) -> Config:
    try:
        cfg = Config.model_validate(data)
    except ValidationError as exc:
        problems = []
        for e in exc.errors():
            if report.format == VSR_V03 and e["type"] == "extra_forbidden":
                key = e["loc"][-1] if e["loc"] else "?"
                problems.append(not_supported(f"`{key}`", "a vLLM-SR setting fusion-router does not implement", _path(e["loc"])))
            else:
                problems.append(f"{_path(e['loc'])}: {_describe(e)}")
        raise ConfigError(source, problems, report) from None
    problems = list(_cross_check(cfg))
    if problems:
        raise ConfigError(source, problems, report)
    return cfg


def read_config_data(data: Any, source: str = "<config>") -> tuple[Config, ConfigReport]:
    """The config and the reader's report. Reads the router's own layout or vLLM-SR's v0.3 layout
    (``vsr.is_v03``); raises ConfigError naming every problem (each unsupported feature included)."""
    report = ConfigReport()
    if not isinstance(data, dict):
        raise ConfigError(source, [f"(top level): expected a mapping of sections, got {type(data).__name__}"], report)
    if vsr.is_v03(data):
        native = vsr.read_v03(data, report)
        if report.unsupported:
            raise ConfigError(source, list(report.unsupported), report)
    else:
        native = data
        for line in _refuse_reference_features(data):
            report.refuse(line)
        if report.unsupported:
            raise ConfigError(source, list(report.unsupported), report)
    return _validate(native, source, report), report


def parse_config(data: Any, source: str = "<config>") -> Config:
    cfg, report = read_config_data(data, source)
    for line in report.ignored:
        log.warning("config_setting_ignored", source=source, setting=line)
    return cfg


def _read_yaml(path: str | Path) -> Any:
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(source, [f"cannot read file: {exc.strerror or exc}"]) from None
    except UnicodeDecodeError:
        raise ConfigError(source, ["file is not UTF-8 text"]) from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ConfigError(source, [f"{where}invalid YAML: {getattr(exc, 'problem', exc)}"]) from None


def read_config(path: str | Path) -> tuple[Config, ConfigReport]:
    """A config file and what the reader made of it (no warnings logged: the caller shows the report)."""
    return read_config_data(_read_yaml(path), str(path))


def load_config(path: str | Path) -> Config:
    return parse_config(_read_yaml(path), str(path))
