"""What a routing decision does to the request on its way to the model, in one place: the system
prompt and header mutations of its plugins, and what its modelRef says about reasoning and LoRA
adapters (blocking and PII masking are guards, applied before any model sees the request)."""

from __future__ import annotations

from typing import Any

from router.config.schema import (
    Decision,
    HeaderMutationPlugin,
    ModelRef,
    ModelSpec,
    SystemPromptPlugin,
)

# The effort a reasoning-effort family gets when the modelRef turns thinking on without naming one.
DEFAULT_REASONING_EFFORT = "medium"


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
