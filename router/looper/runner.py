"""Runs looper algorithms for a request: picks the algorithm from the registry, merges its settings
(defaults → decision → request plugin), resolves models and budgets, runs it with the shared services
(model client, ledger, cancellation, live streaming of the final call), and turns what happened into
an OpenAI response (or SSE stream) with the algorithm's typed trace and the ``x-vsr-looper-*`` headers.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any, Protocol

import structlog
from pydantic import BaseModel

from router import headers as H
from router.actions import Action, Respond, Stream
from router.config.schema import Config, Decision
from router.looper.base import Answer, CallResult, DeltaSink, Looper, LooperRun
from router.looper.client import ModelClient
from router.looper.encoders import RuntimeEncoders
from router.looper.errors import StageFailure
from router.looper.merge import merge
from router.looper.registry import ALGORITHMS
from router.looper.spec import AlgorithmSpec, ResolveContext
from router.looper.trace import LooperTrace, TraceError
from router.observability import record, tracing
from router.openai import sse
from router.openai.errors import OpenAIError
from router.openai.types import (
    AssistantMessage,
    ChatCompletion,
    ChatCompletionChunk,
    Choice,
    ChunkChoice,
    ChunkDelta,
    OutFunctionCall,
    OutToolCall,
    ToolCallDelta,
    completion_id,
)
from router.state import LooperOverride, RequestState, ResponsePath

log = structlog.get_logger("router.looper")

_TRACE_FORWARD = ("traceparent", "tracestate", "x-request-id")


class LooperHost(Protocol):
    """What the runner needs of the process: the live config, the sub-call secret, an endpoint override."""

    @property
    def config(self) -> Config: ...

    looper_secret: str
    looper_endpoint: str | None


@dataclass(slots=True)
class Finished:
    answer: Answer | None
    trace: LooperTrace
    error: OpenAIError | None


class LooperRunner:
    def __init__(self, host: LooperHost):
        self.host = host
        self._client: ModelClient | None = None

    @property
    def client(self) -> ModelClient:
        looper_cfg = self.host.config.global_.integrations.looper
        if self.host.looper_endpoint:
            looper_cfg = looper_cfg.model_copy(update={"endpoint": self.host.looper_endpoint})
        if self._client is None or self._client.settings != looper_cfg or self._client.secret != self.host.looper_secret:
            if self._client is not None:  # settings changed on reload: retire the old pool
                asyncio.get_running_loop().create_task(self._client.close())
            self._client = ModelClient(looper_cfg, self.host.looper_secret, self.host.config.global_.router.cluster_header)
        return self._client

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()

    # -- entry points ------------------------------------------------------------------------------

    async def run_decision(self, state: RequestState, decision: Decision) -> Action:
        """A looper decision won: its settings, merged with the request plugin's when it names the same algorithm."""
        spec = ALGORITHMS[decision.algorithm.type]
        override = state.looper_override if state.looper_override and state.looper_override.algorithm == spec.name else None
        if override is not None:
            _cap_plugin_budget(merge(spec.settings, spec.defaults, decision.algorithm_settings), override.settings, decision.name)
        merged = merge(spec.settings, spec.defaults, decision.algorithm_settings, override.settings if override else None)
        candidates = (override.candidates if override and override.candidates else None) or [r.model for r in decision.modelRefs]
        weights = {r.model: r.weight for r in decision.modelRefs}
        return await self._run(state, spec, merged, candidates, weights, decision.name, None)

    async def run_direct(self, state: RequestState, override: LooperOverride, fallback_model: str | None) -> Action:
        """No decision of the plugin's algorithm matched: a request-scoped run (``<algorithm>_direct``)."""
        spec = ALGORITHMS[override.algorithm]
        merged = merge(spec.settings, spec.defaults, override.settings)
        candidates = override.candidates or ([fallback_model] if fallback_model else [])
        return await self._run(state, spec, merged, candidates, {}, f"{spec.name}_direct", fallback_model)

    # -- one run -----------------------------------------------------------------------------------

    async def _run(
        self,
        state: RequestState,
        spec: AlgorithmSpec,
        merged: BaseModel,
        candidates: list[str],
        weights: dict[str, float],
        decision_name: str,
        fallback: str | None,
    ) -> Action:
        policy = state.policy
        cfg = policy.config.global_
        ctx = ResolveContext(
            lookup=policy,
            candidates=candidates,
            weights=weights,
            default_timeout=cfg.integrations.looper.timeout_seconds,
            trace_body=cfg.router.trace_in_body,
            trace_headers=cfg.router.trace_in_headers,
            facts=policy.facts,
            fallback_model=fallback,
        )
        params = spec.resolve(merged, ctx)
        # A tenant's restrictions cover every model the run would call (panels included).
        state.access.require_looper(spec.name)
        state.access.require_models(params.models, f"{spec.name} model")
        state.algorithm = spec.name
        state.response_path = ResponsePath.LOOPER
        state.model = policy.models[params.primary]
        assert state.request is not None and state.raw is not None
        forward = {k: v for k, v in state.headers.items() if k in _TRACE_FORWARD}
        tracing.inject(forward)  # sub-calls (a stream's run after this span closes) stay in the request's trace
        client = self.client

        async def caller(model: str, body: dict[str, Any], timeout: float, *, on_delta: DeltaSink | None) -> CallResult:
            model_spec = policy.models[model]
            return await client.complete(
                model_spec, policy.backend_of(model_spec), body, timeout=timeout, on_delta=on_delta, extra_headers=forward
            )

        run = LooperRun(
            state.request,
            state.raw,
            params,
            decision_name,
            state.request_id,
            caller,
            policy.facts,
            encoders=RuntimeEncoders(policy.runtime, policy.unavailable_models),
        )
        run.budget.limit = params.max_total_tokens
        looper = spec.looper(run)
        if state.request.stream:
            return Stream(200, state.response_headers(), self._stream(spec, looper, run, state))
        done = await self._execute(spec, looper, run, state)
        headers = {**state.response_headers(), **self._headers(spec, looper, run, done)}
        trace = done.trace.model_dump(mode="json", exclude_unset=True) if params.trace_body else None
        if done.error is not None:
            err = done.error
            if trace is not None:
                err.extra = {spec.name: trace}
            state.error_code = err.code
            return Respond(err.status, err.body(), headers)
        assert done.answer is not None
        answer = done.answer
        completion = ChatCompletion(
            model=state.request.model,
            choices=[
                Choice(
                    message=AssistantMessage(content=answer.content, tool_calls=_tool_calls(answer.tool_calls)),
                    finish_reason=answer.finish_reason,
                )
            ],
            usage=run.ledger.usage,
            **({spec.name: trace} if trace is not None else {}),
        )
        return Respond(200, completion.model_dump_json().encode(), headers)

    async def _execute(self, spec: AlgorithmSpec, looper: Looper, run: LooperRun, state: RequestState) -> Finished:
        answer: Answer | None = None
        error: OpenAIError | None = None
        failure: StageFailure | None = None
        try:
            answer = await looper.execute()
        except StageFailure as exc:
            failure = exc
        trace = looper.trace()
        if failure is not None:
            trace.error = TraceError(stage=failure.stage, reason=failure.reason, message=failure.message)
            trace.outcome = failure.reason
            error = OpenAIError(
                failure.status,
                failure.message,
                failure.reason,
                type="upstream_error" if failure.status >= 500 else "invalid_request_error",
            )
        elif answer is not None and answer.tool_calls == [] and answer.content is None:
            answer.content = ""
        budget = run.budget.trace()
        if budget is not None:
            trace.budget = budget
            if budget.budget_exhausted:
                record.looper_budget_exhausted(spec.name, run.decision)
        if state.on_looper_usage is not None:
            await state.on_looper_usage(run.budget.spent if run.budget.limited else run.ledger.usage.total_tokens)
        outcome = trace.outcome
        record.looper_done(spec.name, run.decision, trace)
        grounding = getattr(trace, "grounding", None)
        if grounding is not None:
            record.grounding_done(run.decision, grounding)
        if spec.name == "fusion":
            saved = record.fusion_done(run.decision, trace)
            gate = getattr(trace, "gate", None)
            if gate is not None and saved is not None:
                gate.tokens_saved_estimate = saved
        log.info(
            "looper_done",
            request_id=run.request_id,
            algorithm=spec.name,
            decision=run.decision,
            outcome=outcome,
            iterations=run.ledger.calls,
            failed=len(run.ledger.failures),
            latency_ms=round(run.ledger.total_ms, 3),
            stream=run.streaming,
        )
        if failure is None and answer is not None and state.model is not None and answer.outcome in ("accepted", "exhausted"):
            # Confidence: the model whose answer the client gets is known only now.
            accepted = getattr(trace, "accepted_model", None)
            if accepted:
                state.model = state.policy.models[accepted]
        return Finished(answer, trace, error)

    def _headers(self, spec: AlgorithmSpec, looper: Looper, run: LooperRun, done: Finished) -> dict[str, str]:
        if not run.params.trace_headers:
            return {}
        usage = run.ledger.usage
        out = {
            H.LOOPER_ALGORITHM: spec.name,
            H.LOOPER_DECISION: run.decision,
            H.LOOPER_MODELS: ",".join(run.ledger.answered),
            H.LOOPER_ITERATIONS: str(run.ledger.calls),
            H.LOOPER_LATENCY: f"{run.ledger.total_ms:.1f}",
            H.LOOPER_PROMPT_TOKENS: str(usage.prompt_tokens),
            H.LOOPER_COMPLETION_TOKENS: str(usage.completion_tokens),
            H.LOOPER_TOTAL_TOKENS: str(usage.total_tokens),
            H.LOOPER_OUTCOME: done.trace.outcome,
            H.LOOPER_BUDGET: run.budget.header() or "",
            **looper.headers(),
        }
        return {k: v for k, v in out.items() if v}

    # -- streaming ---------------------------------------------------------------------------------

    async def _stream(
        self, spec: AlgorithmSpec, looper: Looper, run: LooperRun, state: RequestState
    ) -> AsyncGenerator[bytes, None]:
        """SSE: progress comments while earlier stages run, then the final call's deltas as they
        arrive (or the accepted answer, for algorithms that choose among finished answers), a finish
        chunk with the trace, the usage chunk when asked for, and [DONE]. Every stream ends with
        [DONE], an error event before it when the run failed. Closing this generator (the client
        went away) cancels every in-flight call."""
        assert state.request is not None
        cid, created, model = completion_id(), int(time.time()), state.request.model
        queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        relayed = False

        def chunk(delta: ChunkDelta, finish: str | None = None, **extra: Any) -> bytes:
            return sse.event(
                ChatCompletionChunk(
                    id=cid, created=created, model=model, choices=[ChunkChoice(delta=delta, finish_reason=finish)], **extra
                )
            )

        async def progress(text: str) -> None:
            queue.put_nowait(sse.comment(text))

        async def on_delta(delta: dict[str, Any]) -> None:
            nonlocal relayed
            out = ChunkDelta(content=delta.get("content"), tool_calls=_tool_call_deltas(delta.get("tool_calls")))
            if not relayed:
                out.role = "assistant"
                relayed = True
            queue.put_nowait(chunk(out))

        run.progress, run.on_delta = progress, on_delta
        task = asyncio.create_task(self._execute(spec, looper, run, state))
        task.add_done_callback(lambda _t: queue.put_nowait(None))
        try:
            yield sse.comment(f"{spec.name}: started")
            while (item := await queue.get()) is not None:
                yield item
            try:
                done = task.result()
            except Exception as exc:
                log.exception("looper_stream_failed", request_id=run.request_id, algorithm=spec.name)
                err = OpenAIError(500, f"The {spec.name} run failed inside the router: {type(exc).__name__}.", "internal_error")
                record.stream_failed(err.code)
                yield sse.event(err.payload())
                yield sse.DONE
                return
            trace = done.trace.model_dump(mode="json", exclude_unset=True) if run.params.trace_body else None
            if done.error is not None:
                # The stream was counted when it started (200); its failure is counted here.
                record.stream_failed(done.error.code)
                payload = done.error.payload()
                if trace is not None:
                    payload[spec.name] = trace
                yield sse.event(payload)
                yield sse.DONE
                return
            answer = done.answer
            assert answer is not None
            if not relayed and (answer.content or answer.tool_calls):
                # The answer was chosen among finished ones (confidence, an adaptive-Fusion gate): send it whole.
                yield chunk(
                    ChunkDelta(role="assistant", content=answer.content or None, tool_calls=_tool_call_deltas(answer.tool_calls))
                )
            yield chunk(ChunkDelta(), answer.finish_reason, **({spec.name: trace} if trace is not None else {}))
            if state.request.include_usage:
                yield sse.event(ChatCompletionChunk(id=cid, created=created, model=model, choices=[], usage=run.ledger.usage))
            yield sse.DONE
        finally:
            if not task.done():
                # The client went away (Envoy reset the stream): stop every in-flight model call.
                log.info("looper_cancelled", request_id=run.request_id, algorithm=spec.name, decision=run.decision)
                task.cancel()
                try:
                    await task
                except BaseException:  # noqa: BLE001 - cancellation of our own task
                    pass


def _cap_plugin_budget(decision: BaseModel, plugin: BaseModel, name: str) -> None:
    """A request may lower a decision's ``max_total_tokens``, never raise it."""
    mine, theirs = getattr(decision, "max_total_tokens", None), getattr(plugin, "max_total_tokens", None)
    if mine is not None and theirs is not None and theirs > mine:
        raise OpenAIError(
            400,
            f"plugins[].max_total_tokens ({theirs}) is above the budget of the decision `{name}` ({mine}); "
            "a request may only lower it.",
            "invalid_plugin",
            param="plugins[].max_total_tokens",
        )


def _tool_calls(calls: list[dict[str, Any]]) -> list[OutToolCall] | None:
    if not calls:
        return None
    return [
        OutToolCall(
            id=c.get("id"),
            function=OutFunctionCall(
                name=(c.get("function") or {}).get("name") or "", arguments=(c.get("function") or {}).get("arguments") or ""
            ),
        )
        for c in calls
    ]


def _tool_call_deltas(calls: list[dict[str, Any]] | None) -> list[ToolCallDelta] | None:
    if not calls:
        return None
    out = []
    for i, c in enumerate(calls):
        fn = c.get("function") or {}
        out.append(
            ToolCallDelta(
                index=c.get("index", i),
                id=c.get("id"),
                type="function" if c.get("id") else None,
                function=OutFunctionCall(name=fn.get("name") or "", arguments=fn.get("arguments") or ""),
            )
        )
    return out
