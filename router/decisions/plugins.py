"""Decision plugins, applied in this one module: ``block`` and ``pii_mask`` (the guards, before any model
sees the request), and what a routing decision does to the request on its way to the model: the
system prompt and header mutations of its plugins, and what its modelRef says about reasoning and
LoRA adapters. They read the decision and the signal results, never the whole request state."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from router.config.schema import (
    Decision,
    HeaderMutationPlugin,
    ModelRef,
    ModelSpec,
    PIIMaskPlugin,
    SystemPromptPlugin,
)
from router.openai.errors import OpenAIError
from router.signals.base import SignalResult

# The effort a reasoning-effort family gets when the modelRef turns thinking on without naming one.
DEFAULT_REASONING_EFFORT = "medium"


def block_error(decision: Decision | None) -> OpenAIError | None:
    """The error a matched blocking guard answers with (None when the decision does not block)."""
    block = decision.plugin_block if decision is not None else None
    if decision is None or block is None:
        return None
    cfg = block.configuration
    return OpenAIError(cfg.status, cfg.message, cfg.code, extra={"decision": decision.name})


def apply_route_plugins(decision: Decision | None, raw: dict[str, Any], set_headers: dict[str, str], remove: list[str]) -> None:
    """Apply ``decision``'s routing plugins (the enabled ones) to the outgoing body and headers."""
    if decision is None:
        return
    for plugin in decision.active_plugins:
        if isinstance(plugin, SystemPromptPlugin):
            _system_prompt(raw, plugin)
        elif isinstance(plugin, HeaderMutationPlugin):
            set_headers.update(plugin.configuration.to_set)
            remove.extend(plugin.configuration.to_remove)


def model_ref_for(decision: Decision | None, model: ModelSpec) -> ModelRef | None:
    """The decision's modelRef for the model the request is routed to (None: no decision picked it)."""
    if decision is None:
        return None
    return next((r for r in decision.modelRefs if r.model == model.name), None)


def apply_model_ref(raw: dict[str, Any], ref: ModelRef | None, model: ModelSpec) -> None:
    """What a vLLM backend understands of the modelRef:

    * ``lora_name``: the body's ``model`` is the adapter's name (vLLM serves a LoRA under its own name);
    * ``use_reasoning`` with a ``chat_template_kwargs`` family: ``chat_template_kwargs.<parameter>`` is
      true or false (e.g. Qwen3's ``enable_thinking``; false matters, such models think by default);
    * ``use_reasoning: true`` with a ``reasoning_effort`` family: ``<parameter>`` (dotted: nested) is the
      modelRef's ``reasoning_effort``, else ``medium``; ``false`` leaves the client's value alone;
    * ``reasoning_effort`` on a model without a family: the top-level ``reasoning_effort`` field.
    """
    if ref is None:
        return
    if ref.lora_name:
        raw["model"] = ref.lora_name
    family = model.reasoning_family
    if family is None:
        if ref.reasoning_effort and ref.use_reasoning is not False:
            raw["reasoning_effort"] = ref.reasoning_effort
        return
    if ref.use_reasoning is None:
        return
    if family.type == "chat_template_kwargs":
        kwargs = raw.get("chat_template_kwargs")
        raw["chat_template_kwargs"] = {**(kwargs if isinstance(kwargs, dict) else {}), family.parameter: ref.use_reasoning}
    elif ref.use_reasoning:
        _set_path(raw, family.parameter, ref.reasoning_effort or DEFAULT_REASONING_EFFORT)


def _set_path(raw: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = raw
    for key in parents:
        child = node.get(key)
        if not isinstance(child, dict):
            child = node[key] = {}
        node = child
    node[leaf] = value


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
