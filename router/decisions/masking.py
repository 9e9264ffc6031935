"""PII masking: replace detected entities in every outgoing message instead of refusing the request."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from router.config.schema import Decision, PIIMaskPlugin
from router.signals.base import SignalResult


def entities_of(results: Iterable[SignalResult]) -> list[tuple[str, str]]:
    """(text, label) of every PII entity the pii signals found, longest first, so that
    "john.smith@x.com" is masked before "john"."""
    found: dict[str, str] = {}
    for res in results:
        if res.type == "pii" and res.detail:
            for e in res.detail.get("entities", []):
                if e.get("text"):
                    found.setdefault(e["text"], e["label"])
    return sorted(found.items(), key=lambda e: -len(e[0]))


def apply_masking(decision: Decision | None, results: Iterable[SignalResult], raw: dict[str, Any]) -> int:
    """Mask every entity in every message of ``raw`` (any role: a secret in a system prompt, a tool
    result or a replayed assistant turn leaves the gateway just as well); returns the replacements."""
    plugin = decision.plugin(PIIMaskPlugin) if decision is not None else None
    if plugin is None:
        return 0
    entities = entities_of(results)
    replacement = plugin.configuration.replacement
    count = 0
    for msg in raw.get("messages") or []:
        if not isinstance(msg, dict):
            continue
        content = msg.get("content")
        if isinstance(content, str):
            msg["content"], n = _mask(content, entities, replacement)
            count += n
        elif isinstance(content, list):
            for part in content:
                if isinstance(part, dict) and isinstance(part.get("text"), str):
                    part["text"], n = _mask(part["text"], entities, replacement)
                    count += n
        for call in msg.get("tool_calls") or []:
            fn = call.get("function") if isinstance(call, dict) else None
            if isinstance(fn, dict) and isinstance(fn.get("arguments"), str):
                fn["arguments"], n = _mask(fn["arguments"], entities, replacement)
                count += n
    # Tool definitions reach the model too: their descriptions (at any depth of the parameter schema).
    for tool in raw.get("tools") or []:
        count += _mask_descriptions(tool, entities, replacement)
    return count


def _mask_descriptions(node: object, entities: list[tuple[str, str]], replacement: str) -> int:
    count = 0
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for key, value in item.items():
                if key == "description" and isinstance(value, str):
                    item[key], n = _mask(value, entities, replacement)
                    count += n
                elif isinstance(value, (dict, list)):
                    stack.append(value)
        elif isinstance(item, list):
            stack.extend(v for v in item if isinstance(v, (dict, list)))
    return count


def _mask(text: str, entities: list[tuple[str, str]], replacement: str) -> tuple[str, int]:
    n = 0
    for value, label in entities:
        if value in text:
            n += text.count(value)
            text = text.replace(value, replacement.format(label=label))
    return text, n
