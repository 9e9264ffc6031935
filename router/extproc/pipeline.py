"""The request journey after the body is read: parse → entry path → signals → decision → action."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import orjson
import structlog

from router.actions import Action, Respond, Route
from router.config.schema import (
    FusionAlgorithm,
    HeaderMutationPlugin,
    ModelSpec,
    SystemPromptPlugin,
)
from router.decisions.masking import apply_masking
from router.decisions.policy import DecisionSet
from router.looper.settings import parse_plugin
from router.extproc import headers as H
from router.observability import record, tracing
from router.openai.errors import OpenAIError
from router.openai.parse import parse_chat_body
from router.signals.base import SignalContext
from router.signals.runner import matched_leaves, run_signals
from router.state import Entry, RequestState, ResponsePath

if TYPE_CHECKING:
    from router.app import App

log = structlog.get_logger("router.pipeline")


def response_headers(state: RequestState) -> dict[str, str]:
    """The x-vsr-* headers the client gets back, in one place for every response path."""
    out = {
        H.SELECTED_DECISION: state.decision_name,
        H.RESPONSE_PATH: str(state.response_path or ResponsePath.ERROR),
    }
    if state.model is not None:
        out[H.SELECTED_MODEL] = state.model.name
    if state.entry is not None:
        out[H.ENTRY_PATH] = str(state.entry)
    if state.debug:
        out[H.MATCHED_SIGNALS] = ",".join(state.matched_signal_keys()) or "none"
    return out


def error_response(state: RequestState, err: OpenAIError) -> Respond:
    state.response_path = ResponsePath.ERROR
    state.error_code = err.code
    return Respond(err.status, err.body(), response_headers(state))


def _signal_context(state: RequestState) -> SignalContext:
    req = state.request
    assert req is not None
    users = req.user_texts()
    return SignalContext(
        last_user_text=req.last_user_text(),
        user_texts=users,
        conversation_text="\n".join(m.text() for m in req.messages),
    )


async def _decide(state: RequestState, eligible: DecisionSet) -> None:
    started = time.perf_counter()
    ctx = _signal_context(state)
    with tracing.span("router.signals", **{"signals.count": len(eligible.signals)}):
        state.signals = await run_signals(eligible.signals, ctx)
    leaves = matched_leaves(state.signals)
    match = eligible.select(leaves)
    state.mask = eligible.mask(leaves)
    state.signal_ms = (time.perf_counter() - started) * 1000
    record.signals_done(str(state.entry), state.signals, state.signal_ms)
    if match is not None:
        state.decision, state.confidence = match.decision, match.confidence


async def handle(app: App, state: RequestState) -> Action:
    with tracing.span("router.request", parent_headers=state.headers, **{"http.route": state.path,
                      "request.id": state.request_id}) as span:
        try:
            action = await _handle(app, state)
        except OpenAIError as err:
            action = error_response(state, err)
        if span is not None:
            span.set_attribute("router.entry", str(state.entry))
            span.set_attribute("router.decision", state.decision_name)
            span.set_attribute("router.response_path", str(state.response_path))
            if state.model is not None:
                span.set_attribute("router.model", state.model.name)
        return action


async def _handle(app: App, state: RequestState) -> Action:
    policy = state.policy
    state.raw, state.request = parse_chat_body(bytes(state.body))
    req = state.request
    if policy.config.global_.router.log_prompts:
        # Prompts are personal data: logged only when the operator turns this on, and only at debug.
        log.debug("request_prompt", request_id=state.request_id, prompt=req.last_user_text())
    if state.internal:
        # An authenticated looper sub-call: the looper already chose the model; never classify or re-fuse.
        state.entry = Entry.INTERNAL
        model = policy.resolve_internal(req.model, state.headers.get(policy.config.global_.router.cluster_header))
        if model is None:
            raise OpenAIError(404, f"The model `{req.model}` does not exist.", "model_not_found", param="model")
        state.response_path = ResponsePath.INTERNAL
        return route_to(app, state, model)

    # plugins[{id: fusion}] → validated settings (against the request's pinned policy), or None
    override = parse_plugin(req.plugins, policy)
    state.fusion_override = override
    name = req.model
    if name in policy.auto_names:
        state.entry = Entry.AUTO
        await _decide(state, policy.all_decisions)
    elif name in policy.fusion_slugs:
        state.entry = Entry.FUSION
        await _decide(state, policy.looper_decisions)
    else:
        model = policy.resolve_model(name)
        if model is None:
            raise OpenAIError(
                404,
                f"The model `{name}` does not exist. Use one of the configured models, "
                f"an auto alias ({', '.join(sorted(policy.auto_names))}) or a Fusion slug "
                f"({', '.join(sorted(policy.fusion_slugs))}).",
                "model_not_found",
                param="model",
            )
        # Guards (block / mask decisions) apply to every entry path, a concrete model included.
        state.entry = Entry.PLUGIN if override is not None else Entry.MODEL
        await _decide(state, policy.guard_decisions)
        if state.decision is None or state.decision.plugin_block is None:
            # No block: go where the client asked, masked if a masking guard matched.
            state.decision = None
            _mask(state)
            if override is not None:
                return await app.loopers.run_direct(state, judge=model)
            state.response_path = ResponsePath.ROUTED
            return route_to(app, state, model)

    _mask(state)
    decision = state.decision
    if decision is not None and (block := decision.plugin_block) is not None:
        state.response_path = ResponsePath.BLOCKED
        cfg = block.configuration
        log.info("request_blocked", request_id=state.request_id, decision=decision.name, entry=str(state.entry),
                 signals=state.matched_signal_keys())
        err = OpenAIError(cfg.status, cfg.message, cfg.code, extra={"decision": decision.name})
        state.error_code = cfg.code
        return Respond(err.status, err.body(), response_headers(state))

    if decision is not None and isinstance(decision.algorithm, FusionAlgorithm):
        return await app.loopers.run_decision(state, decision)

    if state.entry is Entry.FUSION or override is not None:
        # Fusion was asked for; a single-model route would be a silent fallback.
        if override is not None and override.analysis_models:
            state.decision = None
            return await app.loopers.run_direct(state, judge=None)
        raise OpenAIError(
            404 if state.entry is Entry.FUSION else 400,
            f"No Fusion decision matched this request for `{name}`, and no request-level panel was given "
            "(plugins[{id: fusion, analysis_models: [...]}]).",
            "no_fusion_decision_matched",
            param="model",
        )

    if decision is None:
        model = policy.default_model
    else:
        model = policy.models[decision.modelRefs[0].model]
    state.response_path = ResponsePath.ROUTED
    return route_to(app, state, model)


def _mask(state: RequestState) -> None:
    """Apply a matched masking guard to the body once, before routing or Fusion reads it."""
    if state.mask is not None and state.raw is not None:
        count = apply_masking(state, state.mask, state.raw)
        log.info("pii_masked", request_id=state.request_id, guard=state.mask.name, replacements=count)


def route_to(app: App, state: RequestState, model: ModelSpec) -> Route:
    """Send the request to ``model``'s backend: routing header, served model id, decision plugins."""
    assert state.raw is not None
    state.model = model
    policy = state.policy
    backend = policy.backend_of(model)
    raw = state.raw
    raw["model"] = model.served_id
    set_headers = {policy.config.global_.router.cluster_header: backend.cluster_name}
    remove: list[str] = []
    decision = state.decision
    if decision is not None:
        for plugin in decision.plugins:
            if isinstance(plugin, SystemPromptPlugin):
                _apply_system_prompt(raw, plugin)
            elif isinstance(plugin, HeaderMutationPlugin):
                set_headers.update({h.name.lower(): h.value for h in plugin.configuration.add})
                remove.extend(h.lower() for h in plugin.configuration.remove)
    key = app.api_key(backend)
    if key:
        set_headers["authorization"] = f"Bearer {key}"
    set_headers.update(response_headers(state))
    body = orjson.dumps(raw)
    log.info(
        "request_routed",
        request_id=state.request_id,
        entry=str(state.entry),
        decision=state.decision_name,
        model=model.name,
        cluster=backend.cluster_name,
        signals=state.matched_signal_keys(),
        signal_ms=round(state.signal_ms, 3),
        latency_ms=round(state.elapsed_ms, 3),
    )
    return Route(set_headers, remove, body)


def _apply_system_prompt(raw: dict, plugin: SystemPromptPlugin) -> None:
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
