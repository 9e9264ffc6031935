"""Loading the vLLM Semantic Router corpus (tests/compat/reference, Apache-2.0, see README.md).

Whole configs load as users would hand them over; Helm values files carry the config under their
``config`` key. Fragments (config/fragments/**, and the e2e authz profile overlays) are parts of a
config; each is placed into a small v0.3 skeleton that supplies what its context would: the models
and the signals its decisions name, a decision for a plugin or an algorithm block, an endpoint for an
overlay's backend reference.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from router.config import ConfigError, ConfigReport, read_config_data

HERE = Path(__file__).resolve().parent
REFERENCE = HERE / "reference"

# Overlays meant to be merged onto a deployment's config (their comments say so): fragments here.
OVERLAYS = ("e2e/config/authz-profile-",)


def corpus_files() -> list[str]:
    """Every corpus YAML, relative to tests/compat/reference."""
    return sorted(str(p.relative_to(REFERENCE)) for p in REFERENCE.rglob("*.yaml*"))


def is_fragment(rel: str) -> bool:
    return rel.startswith("config/fragments/") or rel.startswith(OVERLAYS)


def raw(rel: str) -> Any:
    data = yaml.safe_load((REFERENCE / rel).read_text(encoding="utf-8"))
    if isinstance(data, dict) and list(data) == ["config"]:  # a Helm values file
        data = data["config"]
    return data


_MODELS = ("qwen3-8b", "qwen3-32b", "qwen2.5:3b", "qwen-coordinator")


def _skeleton() -> dict[str, Any]:
    """What a fragment's surroundings would provide: models (qwen3-32b with the LoRA the
    computer-science fragment names) and the signals the decision fragments reference."""
    fragments = REFERENCE / "config" / "fragments" / "signal"
    domains = yaml.safe_load((fragments / "domain" / "mmlu.yaml").read_text())["routing"]["signals"]["domains"]
    complexity = yaml.safe_load((fragments / "complexity" / "escalation.yaml").read_text())["routing"]["signals"]["complexity"]
    return {
        "version": "v0.3",
        "providers": {
            "defaults": {"default_model": "qwen3-8b"},
            "models": [
                {"name": m, "backend_refs": [{"name": "primary", "endpoint": f"127.0.0.1:{8000 + i}"}]}
                for i, m in enumerate(_MODELS)
            ],
        },
        "routing": {
            "modelCards": [{"name": m} for m in _MODELS if m != "qwen3-32b"]
            + [{"name": "qwen3-32b", "loras": [{"name": "computer-science-expert"}]}],
            "signals": {
                "domains": domains,
                "complexity": complexity,
                "keywords": [{"name": "urgent_keywords", "operator": "OR", "keywords": ["urgent", "asap"]}],
                "jailbreak": [{"name": "prompt_injection", "threshold": 0.8}],
            },
            "decisions": [],
        },
    }


def _catch_all(**extra: Any) -> dict[str, Any]:
    return {
        "name": "fragment_route",
        "priority": 1,
        "rules": {"operator": "AND", "conditions": []},
        "modelRefs": [{"model": "qwen3-8b"}, {"model": "qwen3-32b"}],
        **extra,
    }


def wrap_fragment(rel: str, data: dict[str, Any]) -> dict[str, Any]:
    """The fragment inside its skeleton (a whole v0.3 document)."""
    data = copy.deepcopy(data)
    if rel.startswith(OVERLAYS):
        # The base config an overlay is merged onto gives its backend references their endpoints.
        for i, model in enumerate(data.get("providers", {}).get("models", [])):
            for ref in model.get("backend_refs", []):
                ref.setdefault("endpoint", f"127.0.0.1:{9000 + i}")
        return data
    doc = _skeleton()
    routing = doc["routing"]
    if "algorithm" in data:
        routing["decisions"].append(_catch_all(algorithm=data["algorithm"]))
    if "plugin" in data or "plugins" in data:
        routing["decisions"].append(_catch_all(plugins=data.get("plugins") or [data["plugin"]]))
    fragment_routing = data.get("routing") or {}
    for section, items in (fragment_routing.get("signals") or {}).items():
        # The fragment's own declaration replaces the skeleton's signal of the same section.
        routing["signals"][section] = items
    routing["decisions"] += fragment_routing.get("decisions") or []
    if "global" in data:
        doc["global"] = data["global"]
    return doc


def load(rel: str) -> tuple[Any, ConfigReport | None, list[str]]:
    """(config or None, report, problems) for one corpus file, fragments wrapped."""
    data = raw(rel)
    if is_fragment(rel):
        data = wrap_fragment(rel, data)
    try:
        cfg, report = read_config_data(data, rel)
    except ConfigError as err:
        return None, err.report, err.problems
    return cfg, report, []
