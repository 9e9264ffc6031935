"""Decision plugins applied to a routed request, in one place: the system prompt and header mutations
(blocking and PII masking are guards, applied before any model sees the request)."""

from __future__ import annotations

from typing import Any

from router.config.schema import Decision, HeaderMutationPlugin, SystemPromptPlugin


def apply_route_plugins(decision: Decision | None, raw: dict[str, Any], set_headers: dict[str, str], remove: list[str]) -> None:
    """Apply ``decision``'s routing plugins to the outgoing body and headers."""
    if decision is None:
        return
    for plugin in decision.plugins:
        if isinstance(plugin, SystemPromptPlugin):
            _system_prompt(raw, plugin)
        elif isinstance(plugin, HeaderMutationPlugin):
            set_headers.update({h.name.lower(): h.value for h in plugin.configuration.add})
            remove.extend(h.lower() for h in plugin.configuration.remove)


def _system_prompt(raw: dict[str, Any], plugin: SystemPromptPlugin) -> None:
    cfg = plugin.configuration
    messages = raw.get("messages") or []
    system = {"role": "system", "content": cfg.system_prompt}
    if messages and messages[0].get("role") == "system":
        if cfg.mode == "replace":
            messages[0] = system
        else:
            first = messages[0].get("content")
            if isinstance(first, str):
                messages[0] = {**messages[0], "content": f"{cfg.system_prompt}\n\n{first}"}
            else:
                messages.insert(0, system)
    else:
        messages.insert(0, system)
    raw["messages"] = messages
