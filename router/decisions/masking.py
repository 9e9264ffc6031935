"""PII masking: replace detected entities in the outgoing messages instead of refusing the request."""

from __future__ import annotations

from typing import Any

from router.config.schema import Decision, PIIMaskPlugin
from router.state import RequestState


def apply_masking(state: RequestState, decision: Decision | None, raw: dict[str, Any]) -> int:
    """Mask every PII entity the pii signals found; returns how many replacements were made."""
    plugin = decision.plugin(PIIMaskPlugin) if decision is not None else None
    if plugin is None:
        return 0
    entities: list[tuple[str, str]] = []
    for res in state.signals.values():
        if res.type == "pii" and res.detail:
            entities += [(e["text"], e["label"]) for e in res.detail.get("entities", []) if e.get("text")]
    # Longest first so "john.smith@x.com" is masked before "john".
    entities.sort(key=lambda e: -len(e[0]))
    count = 0
    for msg in raw.get("messages") or []:
        if not isinstance(msg, dict) or msg.get("role") != "user":
            continue
        content = msg.get("content")
        if isinstance(content, str):
            msg["content"], n = _mask(content, entities, plugin.configuration.replacement)
            count += n
        elif isinstance(content, list):
            for part in content:
                if isinstance(part, dict) and isinstance(part.get("text"), str):
                    part["text"], n = _mask(part["text"], entities, plugin.configuration.replacement)
                    count += n
    return count


def _mask(text: str, entities: list[tuple[str, str]], replacement: str) -> tuple[str, int]:
    n = 0
    for value, label in entities:
        if value in text:
            n += text.count(value)
            text = text.replace(value, replacement.format(label=label))
    return text, n
