"""The looper reference generated from the registry: one knob table per algorithm (from its settings
model) and the JSON schema of its trace, so ``docs/loopers.md`` can never drift from the code."""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel

from router.looper.registry import ALGORITHMS
from router.looper.spec import AlgorithmSpec

BEGIN = "<!-- generated: fusion-router loopers --markdown (do not edit below) -->"
END = "<!-- end generated -->"


def _type(info: Any) -> str:
    text = str(info.annotation).replace("typing.", "").replace("NoneType", "null")
    for prefix in ("router.looper.fusion.", "router.looper.trace.", "router.looper.confidence.", "router.looper.remom."):
        text = text.replace(prefix, "")
    text = text.replace("<class '", "").replace("'>", "").replace(" | None", "").replace(" | null", "")
    if text.startswith("Optional[") and text.endswith("]"):
        text = text[len("Optional[") : -1]
    return text.replace("|", "\\|")


def _default(spec: AlgorithmSpec, name: str) -> str:
    value = getattr(spec.defaults, name, None)
    if value is None:
        return "—"
    if isinstance(value, str) and "\n" in value:
        return "built-in"
    if isinstance(value, BaseModel):
        value = value.model_dump()
    return f"`{json.dumps(value)}`"


def settings_table(spec: AlgorithmSpec) -> str:
    rows = ["| knob | type | default |", "| --- | --- | --- |"]
    for name, info in spec.settings.model_fields.items():
        rows.append(f"| `{name}` | {_type(info)} | {_default(spec, name)} |")
    return "\n".join(rows)


def markdown() -> str:
    parts = [BEGIN, ""]
    for name, spec in ALGORITHMS.items():
        slugs = ", ".join(f"`{s}`" for s in spec.default_slugs)
        plugins = ", ".join(f"`{p}`" for p in spec.plugin_ids)
        parts += [
            f"### `{name}`",
            "",
            spec.summary,
            "",
            f"Direct slug(s): {slugs} (`global.integrations.looper.{name}.model_names`). Request plugin id(s): {plugins}. "
            f"Trace: the response's top-level `{name}` object.",
            "",
            f"`routing.decisions[].algorithm.{name}` knobs (every one optional; defaults → decision → request plugin, field by field):",
            "",
            settings_table(spec),
            "",
            "<details><summary>Trace JSON schema</summary>",
            "",
            "```json",
            json.dumps(spec.trace.model_json_schema(), indent=1, sort_keys=True),
            "```",
            "",
            "</details>",
            "",
        ]
    parts.append(END)
    return "\n".join(parts) + "\n"
