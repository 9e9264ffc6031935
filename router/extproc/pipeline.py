"""The request journey after the body is read: parse → entry path → signals → decision → action.

The pipeline knows "a looper decision", never a particular algorithm: the looper runner picks the
algorithm from the registry.
"""

from __future__ import annotations

import random
import time
from typing import TYPE_CHECKING

import orjson
import structlog

from router.actions import Action, Respond, Route
from router.config.schema import Decision, ModelSpec
from router.decisions.plugins import apply_masking, apply_model_ref, apply_route_plugins, block_error, model_ref_for
from router.decisions.policy import DecisionSet, Entry, EntryChoice
from router.decisions.selection.observed import OBSERVED
from router.decisions.selection.registry import SELECTIONS
from router.decisions.selection.spec import SelectContext, Selection
from router.looper.plugins import parse_plugins
from router.observability import record, tracing
from router.openai.errors import OpenAIError
from router.openai.parse import parse_chat_body
from router.openai.tokens import completion_cap, prompt_tokens
from router.openai.types import ChatCompletionRequest
from router.responses import error_response
from router.sessions.affinity import select_with_affinity
from router.sessions.keys import session_key, validate_header
from router.signals.admission import Shed
from router.signals.base import MessageText, SignalContext, TextTooLong
from router.signals.runner import matched_leaves, run_signals
from router.state import RequestState, ResponsePath
from router.tenants import tokens
from router.tenants.access import Access
from router.tenants.identify import identify

if TYPE_CHECKING:
    from router.app import App

log = structlog.get_logger("router.pipeline")

__all__ = ["error_response", "handle", "route_to"]


async def handle(app: App, state: RequestState) -> Action:
    with tracing.span(
        "router.request", parent_headers=state.headers, **{"http.route": state.path, "request.id": state.request_id}
    ) as span:
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
    _identify(state)
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
    _check_entry_access(state, choice)
    await _admit_tokens(app, state)
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
    model = await _pick_model(app, state, decision)
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
    raise OpenAIError(
        404,
        f"No {choice.algorithm} decision matched this request for `{state.request.model if state.request else ''}`, "
        f"and no request-level candidates were given (plugins[{{id: {choice.algorithm}, ...}}]).",
        f"no_{choice.algorithm}_decision_matched",
        param="model",
    )


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
    state.selection = Selection(choice.model.name, "requested", "the request named this model")
    state.response_path = ResponsePath.ROUTED
    return route_to(app, state, choice.model)


async def _plugin_run(app: App, state: RequestState, fallback: str | None) -> Action:
    """A request plugin asked for a looper no decision provides: run it request-scoped, or say why not."""
    override = state.looper_override
    assert override is not None
    if override.candidates or fallback is not None:
        state.decision = None
        return await app.loopers.run_direct(state, override, fallback)
    what = (
        f"the matched decision `{state.decision.name}` runs {state.decision.algorithm.type}"
        if state.decision
        else "no decision matched"
    )
    raise OpenAIError(
        400,
        f"plugins[{{id: {override.algorithm}}}] asked for {override.algorithm}, but {what}, and the plugin names no "
        "models of its own to run it with.",
        f"no_{override.algorithm}_decision_matched",
        param="plugins",
    )


def _blocked(state: RequestState) -> Respond | None:
    """Apply a matched masking guard; answer a matched blocking guard."""
    _mask(state)
    err = block_error(state.decision)
    if err is None:
        return None
    assert state.decision is not None
    state.response_path = ResponsePath.BLOCKED
    log.info(
        "request_blocked",
        request_id=state.request_id,
        decision=state.decision.name,
        entry=state.entry_label,
        signals=state.matched_signal_keys(),
    )
    state.error_code = err.code
    return Respond(err.status, err.body(), state.response_headers())


# --------------------------------------------------------------------------- signals and decision


def _signal_context(state: RequestState) -> SignalContext:
    req = state.request
    assert req is not None
    return SignalContext(tuple(MessageText(role, text) for role, text in req.role_texts()), tenant=state.tenant)


async def _run_signals(app: App, state: RequestState, eligible: DecisionSet) -> None:
    """Signals under admission control; a check that cannot be made is a retryable 503, never a pass."""
    ctx = _signal_context(state)
    settings = state.policy.config.global_.classifiers
    retry = {"retry-after": str(settings.retry_after_seconds)}
    try:
        with tracing.span("router.signals", None, **{"signals.count": len(eligible.signals)}):
            if any(not s.cheap for s in eligible.signals):
                async with app.admission.turn() as left:
                    state.signals = await run_signals(eligible.signals, ctx, left)
            else:
                state.signals = await run_signals(eligible.signals, ctx)
    except Shed as shed:
        record.shed(shed.reason)
        log.warning("request_shed", request_id=state.request_id, reason=shed.reason)
        raise OpenAIError(
            503, "The gateway is overloaded and could not check this request in time; retry shortly.", "overloaded", headers=retry
        ) from None
    except TextTooLong as long:
        raise OpenAIError(
            413,
            f"The conversation is too long to check: about {long.approx_tokens} tokens, and the "
            f"`{long.signal}` check reads at most {long.budget} tokens per request. Shorten it.",
            "too_long_to_check",
        ) from None
    by_key = {s.key: s for s in eligible.signals}
    for res in state.signals.values():
        if res.error is None:
            continue
        guard = res.key in state.policy.guard_signals
        if guard or by_key[res.key].spec.on_error == "fail_closed":
            record.shed("guard_unavailable" if guard else "signal_unavailable")
            log.warning("check_unavailable", request_id=state.request_id, signal=res.key, reason=res.error_reason)
            if guard:
                raise OpenAIError(
                    503,
                    f"The safety check `{res.key}` could not run ({res.error_reason}); the request was "
                    "not forwarded unchecked. Retry shortly.",
                    "safety_check_unavailable",
                    headers=retry,
                )
            raise OpenAIError(
                503,
                f"The check `{res.key}` could not run ({res.error_reason}); retry shortly.",
                "classifier_unavailable",
                headers=retry,
            )


async def _decide(app: App, state: RequestState, eligible: DecisionSet) -> None:
    started = time.perf_counter()
    await _run_signals(app, state, eligible)
    leaves = matched_leaves(state.signals)
    # A tenant's restrictions pass over the decisions it may not use: the next eligible one wins.
    match = eligible.select(leaves, state.access.decision_ok if state.access.policy is not None else None)
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


# --------------------------------------------------------------------------- tenants and budgets


def _identify(state: RequestState) -> None:
    """Who the request is for (global.tenants), and a session id the router would read checked."""
    g = state.policy.config.global_
    if g.tenants.enabled:
        state.tenant = identify(g.tenants, state.headers)
        state.access = Access(state.tenant, g.tenants.policy(state.tenant))
    if state.policy.uses_sessions:
        validate_header(g.sessions, state.headers)


def _check_entry_access(state: RequestState, choice: EntryChoice) -> None:
    """What the request names outright (a model, a looper slug, a looper plugin) must be the tenant's to use."""
    access = state.access
    if access.policy is None:
        return
    if choice.entry is Entry.LOOPER and choice.algorithm is not None:
        access.require_looper(choice.algorithm, param="model")
    if state.looper_override is not None:
        access.require_looper(state.looper_override.algorithm, param="plugins")
    if choice.model is not None:
        access.require_model(choice.model.name)


async def _admit_tokens(app: App, state: RequestState) -> None:
    """A tenant with tokens_per_minute: charge this request's estimate (prompt + the completion cap it
    asks for) or refuse it (429 / 413); a looper run is charged the rest of what it spends when it ends."""
    policy = state.access.policy
    if policy is None or policy.tokens_per_minute is None or state.tenant is None or state.raw is None:
        return
    window = app.shared.tokens
    assert window is not None
    tenant, raw = state.tenant, state.raw
    cost = prompt_tokens(raw) + (completion_cap(raw) or 0)
    await tokens.admit(window, tenant, cost, policy.tokens_per_minute, state.request_id)

    async def charge_rest(total: int) -> None:
        await tokens.charge(window, tenant, total - cost)

    state.on_looper_usage = charge_rest


# --------------------------------------------------------------------------- model selection


async def _pick_model(app: App, state: RequestState, decision: Decision | None) -> ModelSpec:
    """One model among the decision's modelRefs the request may use: the decision's selection
    algorithm, or the conversation's earlier model (session affinity)."""
    policy, access = state.policy, state.access
    if decision is None:
        model = policy.default_model
        access.require_model(model.name, "default model")
        state.selection = Selection(model.name, "default", "no decision matched; default_model")
        return model
    assert state.raw is not None
    candidates = policy.candidates[decision.name]
    if access.policy is not None:
        candidates = tuple(c for c in candidates if access.model_ok(c.model))
    if not candidates:  # decision_ok passes such decisions over; kept as a guard against a policy bug
        access.require_model(decision.modelRefs[0].model)
    spec = SELECTIONS[decision.algorithm.type]
    raw = state.raw
    ctx = SelectContext(
        decision.name, candidates, policy.facts, OBSERVED, lambda: (prompt_tokens(raw), completion_cap(raw)), _RNG
    )

    def fresh() -> Selection:
        return spec.select(decision.selection_settings, ctx)

    sessions = app.shared.sessions if decision.session_affinity else None
    if sessions is not None:
        key = session_key(sessions.settings, state.headers, state.raw, state.tenant)
        selection = await select_with_affinity(
            sessions, key, decision, lambda m: m in policy.models and access.model_ok(m), fresh, state.request_id
        )
    else:
        selection = fresh()
    state.selection = selection
    record.selection(decision.name, selection.algorithm, selection.model)
    return policy.models[selection.model]


_RNG = random.Random()


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
        selection=state.selection.algorithm if state.selection else None,
        tenant=state.tenant,
        cluster=backend.cluster_name,
        signals=state.matched_signal_keys(),
        signal_ms=round(state.signal_ms, 3),
        latency_ms=round(state.elapsed_ms, 3),
    )
    return Route(set_headers, remove, body)
