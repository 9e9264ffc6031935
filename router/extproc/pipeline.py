"""The request journey after the body is read: parse → entry path → signals → decision → action.

The pipeline knows "a looper decision", never a particular algorithm: the looper runner picks the
algorithm from the registry.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import orjson
import structlog

from router.actions import Action, Respond, Route
from router.config.schema import ModelSpec
from router.decisions.plugins import apply_masking, apply_model_ref, apply_route_plugins, block_error, model_ref_for
from router.decisions.policy import DecisionSet, EntryChoice
from router.looper.plugins import parse_plugins
from router.observability import record, tracing
from router.openai.errors import OpenAIError
from router.openai.parse import parse_chat_body
from router.openai.types import ChatCompletionRequest
from router.responses import error_response
from router.signals.admission import Shed
from router.signals.base import MessageText, SignalContext, TextTooLong
from router.signals.runner import matched_leaves, run_signals
from router.state import Entry, RequestState, ResponsePath

if TYPE_CHECKING:
    from router.app import App

log = structlog.get_logger("router.pipeline")

__all__ = ["error_response", "handle", "route_to"]


async def handle(app: App, state: RequestState) -> Action:
    with tracing.span("router.request", parent_headers=state.headers, **{"http.route": state.path,
                      "request.id": state.request_id}) as span:
        try:
            action = await _handle(app, state)
        except OpenAIError as err:
            action = error_response(state, err)
        if span is not None:
            span.set_attribute("router.entry", state.entry_label)
            span.set_attribute("router.decision", state.decision_name)
            span.set_attribute("router.response_path", state.path_label)
            if state.model is not None:
                span.set_attribute("router.model", state.model.name)
        return action


async def _handle(app: App, state: RequestState) -> Action:
    policy = state.policy
    state.raw, state.request = parse_chat_body(state.body, policy.config.global_.router.max_json_depth)
    state.body = bytearray()  # parsed: the raw dict is the body from here on (a 16 MiB body is not kept twice)
    req = state.request
    if policy.config.global_.router.log_prompts:
        # Prompts are personal data: logged only when the operator turns this on, and only at debug.
        log.debug("request_prompt", request_id=state.request_id, prompt=req.last_user_text())
    if state.internal:
        return _internal(app, state)
    # plugins[{id: <algorithm>}] → validated settings (against the request's pinned policy), or None
    state.looper_override = parse_plugins(req.plugins, policy)
    choice = policy.entry_for(req.model)
    if choice is None:
        raise OpenAIError(
            404,
            f"The model `{req.model}` does not exist. Use one of the configured models, "
            f"an auto alias ({', '.join(sorted(policy.auto_names))}) or a looper slug "
            f"({', '.join(sorted(policy.slug_algorithms))}).",
            "model_not_found",
            param="model",
        )
    if choice.entry is Entry.AUTO:
        return await _auto(app, state, choice)
    if choice.entry is Entry.LOOPER:
        return await _slug(app, state, choice)
    return await _concrete(app, state, choice)


def _internal(app: App, state: RequestState) -> Action:
    """An authenticated looper sub-call: the looper already chose the model; never classify or deliberate."""
    assert state.request is not None
    policy = state.policy
    state.entry = Entry.INTERNAL
    model = policy.resolve_internal(state.request.model, state.headers.get(policy.config.global_.router.cluster_header))
    if model is None:
        raise OpenAIError(404, f"The model `{state.request.model}` does not exist.", "model_not_found", param="model")
    state.response_path = ResponsePath.INTERNAL
    return route_to(app, state, model)


async def _auto(app: App, state: RequestState, choice: EntryChoice) -> Action:
    """An auto alias: every decision is eligible; a looper decision deliberates, others route."""
    state.entry = Entry.AUTO
    await _decide(app, state, choice.eligible)
    if (blocked := _blocked(state)) is not None:
        return blocked
    decision, override = state.decision, state.looper_override
    if decision is not None and decision.is_looper and (override is None or override.algorithm == decision.algorithm.type):
        return await app.loopers.run_decision(state, decision)
    if override is not None:
        return await _plugin_run(app, state, fallback=None)
    model = state.policy.default_model if decision is None else state.policy.models[decision.modelRefs[0].model]
    state.response_path = ResponsePath.ROUTED
    return route_to(app, state, model)


async def _slug(app: App, state: RequestState, choice: EntryChoice) -> Action:
    """A looper slug: only that algorithm's decisions (and the guards); never a silent single-model fallback."""
    assert choice.algorithm is not None
    state.entry, state.algorithm = Entry.LOOPER, choice.algorithm
    await _decide(app, state, choice.eligible)
    if (blocked := _blocked(state)) is not None:
        return blocked
    decision, override = state.decision, state.looper_override
    if decision is not None and decision.is_looper and (override is None or override.algorithm == decision.algorithm.type):
        return await app.loopers.run_decision(state, decision)
    if override is not None and override.candidates:
        return await _plugin_run(app, state, fallback=None)
    raise OpenAIError(404, f"No {choice.algorithm} decision matched this request for `{state.request.model if state.request else ''}`, "
                      f"and no request-level candidates were given (plugins[{{id: {choice.algorithm}, ...}}]).",
                      f"no_{choice.algorithm}_decision_matched", param="model")


async def _concrete(app: App, state: RequestState, choice: EntryChoice) -> Action:
    """A concrete model: the guards run, then the request goes where it asked (or a request plugin
    deliberates with that model as its fallback judge/candidate)."""
    assert choice.model is not None
    state.entry = Entry.PLUGIN if state.looper_override is not None else Entry.MODEL
    await _decide(app, state, choice.eligible)
    if (blocked := _blocked(state)) is not None:
        return blocked
    state.decision = None  # guards never pick the model
    if state.looper_override is not None:
        return await _plugin_run(app, state, fallback=choice.model.name)
    state.response_path = ResponsePath.ROUTED
    return route_to(app, state, choice.model)


async def _plugin_run(app: App, state: RequestState, fallback: str | None) -> Action:
    """A request plugin asked for a looper no decision provides: run it request-scoped, or say why not."""
    override = state.looper_override
    assert override is not None
    if override.candidates or fallback is not None:
        state.decision = None
        return await app.loopers.run_direct(state, override, fallback)
    what = f"the matched decision `{state.decision.name}` runs {state.decision.algorithm.type}" if state.decision else "no decision matched"
    raise OpenAIError(400, f"plugins[{{id: {override.algorithm}}}] asked for {override.algorithm}, but {what}, and the plugin names no "
                      "models of its own to run it with.", f"no_{override.algorithm}_decision_matched", param="plugins")


def _blocked(state: RequestState) -> Respond | None:
    """Apply a matched masking guard; answer a matched blocking guard."""
    _mask(state)
    err = block_error(state.decision)
    if err is None:
        return None
    assert state.decision is not None
    state.response_path = ResponsePath.BLOCKED
    log.info("request_blocked", request_id=state.request_id, decision=state.decision.name, entry=state.entry_label,
             signals=state.matched_signal_keys())
    state.error_code = err.code
    return Respond(err.status, err.body(), state.response_headers())


# --------------------------------------------------------------------------- signals and decision


def _signal_context(state: RequestState) -> SignalContext:
    req = state.request
    assert req is not None
    return SignalContext(tuple(MessageText(role, text) for role, text in req.role_texts()))


async def _run_signals(app: App, state: RequestState, eligible: DecisionSet) -> None:
    """Signals under admission control; a check that cannot be made is a retryable 503, never a pass."""
    ctx = _signal_context(state)
    settings = state.policy.config.global_.classifiers
    retry = {"retry-after": str(settings.retry_after_seconds)}
    try:
        with tracing.span("router.signals", **{"signals.count": len(eligible.signals)}):
            if any(not s.cheap for s in eligible.signals):
                async with app.admission.turn() as left:
                    state.signals = await run_signals(eligible.signals, ctx, left)
            else:
                state.signals = await run_signals(eligible.signals, ctx)
    except Shed as shed:
        record.shed(shed.reason)
        log.warning("request_shed", request_id=state.request_id, reason=shed.reason)
        raise OpenAIError(503, "The gateway is overloaded and could not check this request in time; retry shortly.",
                          "overloaded", headers=retry) from None
    except TextTooLong as long:
        raise OpenAIError(413, f"The conversation is too long to check: about {long.approx_tokens} tokens, and the "
                          f"`{long.signal}` check reads at most {long.budget} tokens per request. Shorten it.",
                          "too_long_to_check") from None
    by_key = {s.key: s for s in eligible.signals}
    for res in state.signals.values():
        if res.error is None:
            continue
        guard = res.key in state.policy.guard_signals
        if guard or by_key[res.key].spec.on_error == "fail_closed":
            record.shed("guard_unavailable" if guard else "signal_unavailable")
            log.warning("check_unavailable", request_id=state.request_id, signal=res.key, reason=res.error_reason)
            if guard:
                raise OpenAIError(503, f"The safety check `{res.key}` could not run ({res.error_reason}); the request was "
                                  "not forwarded unchecked. Retry shortly.", "safety_check_unavailable", headers=retry)
            raise OpenAIError(503, f"The check `{res.key}` could not run ({res.error_reason}); retry shortly.",
                              "classifier_unavailable", headers=retry)


async def _decide(app: App, state: RequestState, eligible: DecisionSet) -> None:
    started = time.perf_counter()
    await _run_signals(app, state, eligible)
    leaves = matched_leaves(state.signals)
    match = eligible.select(leaves)
    state.mask = eligible.mask(leaves)
    state.signal_ms = (time.perf_counter() - started) * 1000
    record.signals_done(state.entry_label, state.signals, state.signal_ms)
    if match is not None:
        state.decision, state.confidence = match.decision, match.confidence


def _mask(state: RequestState) -> None:
    """Apply a matched masking guard to the body once, before routing or a looper reads it; the typed
    view is rebuilt so it never holds the unmasked text."""
    if state.mask is not None and state.raw is not None:
        count = apply_masking(state.mask, state.signals.values(), state.raw)
        if count:
            state.request = ChatCompletionRequest.model_validate(state.raw)
        log.info("pii_masked", request_id=state.request_id, guard=state.mask.name, replacements=count)


# --------------------------------------------------------------------------- routing


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
    apply_route_plugins(state.decision, raw, set_headers, remove)
    # The decision's modelRef: LoRA adapter as the served name, thinking on/off, reasoning effort.
    apply_model_ref(raw, model_ref_for(state.decision, model), model)
    key = app.api_key(backend)
    if key:
        set_headers["authorization"] = f"Bearer {key}"
    set_headers.update(state.response_headers())
    body = orjson.dumps(raw)
    log.info(
        "request_routed",
        request_id=state.request_id,
        entry=state.entry_label,
        decision=state.decision_name,
        model=model.name,
        cluster=backend.cluster_name,
        signals=state.matched_signal_keys(),
        signal_ms=round(state.signal_ms, 3),
        latency_ms=round(state.elapsed_ms, 3),
    )
    return Route(set_headers, remove, body)
