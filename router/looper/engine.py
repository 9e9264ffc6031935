"""Runs loopers for the ext_proc side: picks the algorithm from one table, merges settings, and turns
the outcome into an immediate or a streamed OpenAI response."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import orjson
import structlog

from router.actions import Action, Respond, Stream
from router.config.schema import Decision, FusionAlgorithm, ModelSpec
from router.extproc.pipeline import response_headers
from router.looper.base import Looper, LooperRun, Outcome
from router.looper.client import ModelClient
from router.looper.fusion import Fusion
from router.looper.settings import DEFAULTS, merge, resolve
from router.observability import record, tracing
from router.openai import sse
from router.state import RequestState, ResponsePath

if TYPE_CHECKING:
    from router.app import App

log = structlog.get_logger("router.looper")

# algorithm.type → implementation. A new deliberation algorithm registers here and nowhere else.
LOOPERS: dict[str, type[Looper]] = {"fusion": Fusion}

_TRACE_FORWARD = ("traceparent", "tracestate", "x-request-id")


class Loopers:
    def __init__(self, app: App):
        self.app = app
        self._client: ModelClient | None = None

    @property
    def client(self) -> ModelClient:
        looper_cfg = self.app.config.global_.integrations.looper
        if self.app.looper_endpoint:
            looper_cfg = looper_cfg.model_copy(update={"endpoint": self.app.looper_endpoint})
        if self._client is None or self._client.settings != looper_cfg:
            if self._client is not None:  # settings changed on reload: retire the old pool
                asyncio.get_running_loop().create_task(self._client.close())
            self._client = ModelClient(looper_cfg, self.app.looper_secret, self.app.config.global_.router.cluster_header)
        return self._client

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()

    async def run_decision(self, state: RequestState, decision: Decision) -> Action:
        assert isinstance(decision.algorithm, FusionAlgorithm)
        merged = merge(DEFAULTS, decision.algorithm.fusion, state.fusion_override)
        return await self._run(state, decision.algorithm.type, merged, decision.modelRefs, decision.name, None)

    async def run_direct(self, state: RequestState, judge: ModelSpec | None) -> Action:
        merged = merge(DEFAULTS, state.fusion_override)
        return await self._run(state, "fusion", merged, [], "fusion_direct", judge.name if judge else None)

    async def _run(self, state: RequestState, kind: str, merged, model_refs, decision_name: str, fallback_judge: str | None) -> Action:
        policy = state.policy
        cfg = policy.config.global_
        params = resolve(merged, model_refs, policy, cfg.router, cfg.integrations.looper.timeout_seconds, fallback_judge)
        state.model = policy.models[params.judge]
        state.response_path = ResponsePath.FUSION
        assert state.request is not None and state.raw is not None
        looper = LOOPERS[kind]()
        forward = {k: v for k, v in state.headers.items() if k in _TRACE_FORWARD}
        tracing.inject(forward)  # sub-calls (a stream's run after this span closes) stay in the request's trace
        run = LooperRun(state.request, state.raw, params, policy, self.client, decision_name, state.request_id, forward_headers=forward)
        if state.request.stream:
            return Stream(200, response_headers(state), _stream(looper, run, state))
        outcome = await looper.run(run)
        headers = {**response_headers(state), **{k: v for k, v in outcome.headers.items() if v}}
        if outcome.error is not None:
            if not params.trace_body:
                outcome.error.extra = None
            state.error_code = outcome.error.code
            return Respond(outcome.error.status, outcome.error.body(), headers)
        return Respond(200, orjson.dumps(_completion(state, outcome, params.trace_body)), headers)


def _completion(state: RequestState, outcome: Outcome, trace_body: bool) -> dict[str, Any]:
    assert state.request is not None
    message: dict[str, Any] = {"role": "assistant", "content": outcome.content}
    if outcome.tool_calls:
        message["tool_calls"] = outcome.tool_calls
    body: dict[str, Any] = {
        "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": state.request.model,
        "choices": [{"index": 0, "message": message, "finish_reason": outcome.finish_reason}],
        "usage": outcome.usage.model_dump(),
    }
    if trace_body:
        body["fusion"] = outcome.trace
    return body


async def _stream(looper: Looper, run: LooperRun, state: RequestState) -> AsyncIterator[bytes]:
    """SSE: progress comments while panel and judge run, then the synthesis call's deltas as they
    arrive, a finish chunk, the usage chunk when asked for, and [DONE]. Closing this generator (the
    client went away) cancels every in-flight call."""
    assert state.request is not None
    cid = f"chatcmpl-{uuid.uuid4().hex[:24]}"
    created = int(time.time())
    model = state.request.model
    queue: asyncio.Queue[bytes | None] = asyncio.Queue()
    first = True

    async def progress(text: str) -> None:
        queue.put_nowait(sse.comment(text))

    async def on_delta(delta: dict[str, Any]) -> None:
        nonlocal first
        if first:
            delta = {"role": "assistant", **delta}
            first = False
        queue.put_nowait(sse.chunk(cid, model, created, delta))

    run.progress, run.on_delta = progress, on_delta
    task = asyncio.create_task(looper.run(run))
    task.add_done_callback(lambda _t: queue.put_nowait(None))
    try:
        yield sse.comment("fusion: started")
        while (item := await queue.get()) is not None:
            yield item
        outcome = task.result()
        if outcome.error is not None:
            # The stream was counted when it started (200); its failure is counted here.
            record.stream_failed(outcome.error.code)
            payload = outcome.error.payload()
            if not run.params.trace_body:
                payload.pop("fusion", None)
            yield sse.event(payload)
            yield sse.DONE
            return
        if first and outcome.content:
            # The final call produced no deltas we relayed (e.g. BUFFERED fallback); send it whole.
            yield sse.chunk(cid, model, created, {"role": "assistant", "content": outcome.content})
        final: dict[str, Any] = {
            "id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
            "choices": [{"index": 0, "delta": {}, "finish_reason": outcome.finish_reason}],
        }
        if run.params.trace_body:
            final["fusion"] = outcome.trace
        yield sse.event(final)
        if state.request.include_usage:
            yield sse.usage_chunk(cid, model, created, outcome.usage.model_dump())
        yield sse.DONE
    finally:
        if not task.done():
            # The client went away (Envoy reset the stream): stop every in-flight model call.
            log.info("fusion_cancelled", request_id=state.request_id, decision=run.decision)
            task.cancel()
            try:
                await task
            except BaseException:  # noqa: BLE001 - cancellation of our own task
                pass
