"""One simulated OpenAI-compatible backend as an aiohttp app, and helpers to run several in-process."""

from __future__ import annotations

import asyncio
import math
import random
import socket
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from typing import Any, cast

import orjson
from aiohttp import web

from router.sim.answers import Answer, JudgeKind, build_answer
from router.sim.spec import MODES, Mode, SimBackendSpec

# Streams in drop_midstream mode die after this many chunks (the role chunk plus a couple of deltas).
DROP_AFTER_CHUNKS = 3
_ARGUMENT_FRAGMENT = 8
_SHUTDOWN_TIMEOUT_S = 0.5  # stop() cancels slow (latency/paced) handlers after this; hanging ones end at once
_JUDGE_KINDS: dict[str, JudgeKind] = {"judge_json": "valid", "broken_json_judge": "broken"}
_ERROR_KINDS: dict[int, tuple[str, str]] = {
    400: ("invalid_request_error", "bad_request"),
    401: ("authentication_error", "invalid_api_key"),
    404: ("invalid_request_error", "not_found"),
    429: ("rate_limit_error", "rate_limit_exceeded"),
    503: ("server_error", "service_unavailable"),
}


@dataclass
class BackendState:
    spec: SimBackendSpec
    rng: random.Random
    log: deque[dict[str, Any]]
    started: int = field(default_factory=lambda: int(time.time()))
    stopping: asyncio.Event = field(default_factory=asyncio.Event)

    def record(self, request: web.Request, body: Any) -> dict[str, Any]:
        """Log a request as it arrives; the entry later says whether it ``completed`` or was
        ``cancelled`` (the client went away), so tests prove cancellation by what the backend saw."""
        entry = {
            "method": request.method,
            "path": request.path,
            "headers": {k.lower(): v for k, v in request.headers.items()},
            "body": body,
            "time": time.time(),
            "completed": False,
            "cancelled": False,
            "usage": None,  # the usage this backend reported in its answer, once sent
        }
        self.log.append(entry)
        return entry


STATE = web.AppKey("sim_state", BackendState)
ENTRY = web.RequestKey("sim_entry", dict)


@dataclass(frozen=True)
class _Overrides:
    mode: Mode
    latency_s: float
    fail_status: int


def error_response(status: int, message: str, *, code: str | None = None, headers: dict[str, str] | None = None) -> web.Response:
    """OpenAI-shaped error body: {"error": {"message", "type", "code"}}."""
    fallback = ("server_error" if status >= 500 else "invalid_request_error", "sim_error")
    kind, default_code = _ERROR_KINDS.get(status, fallback)
    body = {"error": {"message": message, "type": kind, "code": code or default_code}}
    return _json(body, status=status, headers=headers)


def _json(payload: Any, *, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=orjson.dumps(payload), status=status, content_type="application/json", headers=headers)


def _overrides(request: web.Request, spec: SimBackendSpec) -> _Overrides:
    """Per-request knobs from x-sim-* headers, so a test can bend one request without a new backend."""
    mode = request.headers.get("x-sim-mode", spec.mode)
    if mode not in MODES:
        raise ValueError(f"x-sim-mode must be one of {', '.join(MODES)}")
    latency_ms = float(request.headers.get("x-sim-latency-ms", spec.latency_ms))
    fail_status = int(request.headers.get("x-sim-fail-status", spec.fail_status))
    if latency_ms < 0 or not 400 <= fail_status <= 599:
        raise ValueError("x-sim-latency-ms must be >= 0 and x-sim-fail-status within 400..599")
    return _Overrides(cast(Mode, mode), latency_ms / 1000, fail_status)


async def chat_completions(request: web.Request) -> web.StreamResponse:
    try:
        response = await _chat_completions(request)
    except (asyncio.CancelledError, ConnectionResetError):  # the client went away mid-answer
        if ENTRY in request:
            request[ENTRY]["cancelled"] = True
        raise
    if ENTRY in request:
        request[ENTRY]["completed"] = True
    return response


async def _chat_completions(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    spec = state.spec
    headers = {"x-sim-backend": spec.name}
    raw = await request.read()
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        state.record(request, raw.decode("utf-8", "replace"))
        return error_response(400, f"request body is not valid JSON: {exc}", code="invalid_json", headers=headers)
    request[ENTRY] = state.record(request, body)
    if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
        return error_response(400, "body must be an object with a `messages` list", headers=headers)

    model = body.get("model")
    if isinstance(model, str):
        headers["x-sim-received-model"] = model
    served = model if isinstance(model, str) and model else spec.models[0]
    if spec.strict_models and served not in spec.models:
        return error_response(404, f"The model `{served}` does not exist.", code="model_not_found", headers=headers)
    try:
        knobs = _overrides(request, spec)
    except ValueError as exc:
        return error_response(400, str(exc), headers=headers)

    mode = knobs.mode
    targeted = _targeted(body, spec.fault_on)
    if not targeted and mode in ("error", "hang", "drop_midstream"):
        mode = "normal"
    if spec.fail_rate and mode != "error" and state.rng.random() < spec.fail_rate:
        mode = "error"
    await asyncio.sleep(knobs.latency_s)
    if mode == "error":
        echo = f" (you sent {request.headers.get('authorization')})" if spec.echo_auth else ""
        return error_response(knobs.fail_status, f"simulated failure from {spec.name}{echo}", headers=headers)
    if mode == "hang":
        # Never answers: a client that goes away cancels this handler; stop() ends it at once.
        await state.stopping.wait()
        _abort(request)
        return web.Response()

    confidence = float(request.headers.get("x-sim-confidence", spec.model_confidence.get(served, spec.confidence)))
    answer = build_answer(
        body,
        served_model=served,
        backend=spec.name,
        default_max_tokens=spec.max_tokens,
        judge=_JUDGE_KINDS.get(mode),
        confidence=confidence,
        fixed=spec.fixed_answer,
        scripted=spec.answers,
    )
    logprobs = _wants_logprobs(body) if spec.logprobs else None
    if spec.answer_bytes and answer.content is not None and len(answer.content) < spec.answer_bytes:
        answer = replace(answer, content=answer.content + " " + "x" * (spec.answer_bytes - len(answer.content) - 1))
    if spec.malformed != "none" and targeted:
        return await _malformed(request, headers, spec.malformed, bool(body.get("stream")), served)
    pace = 1 / spec.tokens_per_second if spec.tokens_per_second else 0.0
    completion_id = f"chatcmpl-{uuid.uuid4().hex}"
    drop = mode == "drop_midstream"
    if body.get("stream"):
        options = body.get("stream_options")
        include_usage = isinstance(options, dict) and bool(options.get("include_usage"))
        chunks = _stream_chunks(answer, completion_id, served, include_usage, logprobs, confidence)
        if include_usage and not drop:
            request[ENTRY]["usage"] = _usage(answer)
        return await _stream(request, headers, chunks, pace, drop)
    if drop:
        _abort(request)
        return web.Response()  # never sent: the connection is already gone
    await asyncio.sleep(answer.completion_tokens * pace)
    payload = _completion(answer, completion_id, served, logprobs, confidence)
    request[ENTRY]["usage"] = payload["usage"]
    if spec.write_chunk_bytes:
        return await _write_in_pieces(request, headers, orjson.dumps(payload), spec.write_chunk_bytes)
    return _json(payload, headers=headers)


def _targeted(body: dict[str, Any], fault_on: str) -> bool:
    if fault_on == "all":
        return True
    messages = [m for m in body.get("messages") or [] if isinstance(m, dict)]
    last = messages[-1] if messages else {}
    content = last.get("content")
    text = content if isinstance(content, str) else ""
    if fault_on == "judge":
        return last.get("role") == "user" and "consensus" in text.lower()
    first = messages[0] if messages else {}
    first_content = first.get("content")
    system = first_content if first.get("role") == "system" and isinstance(first_content, str) else ""
    return "Panel answers:" in system or "Latest answers:" in system


async def _write_in_pieces(request: web.Request, headers: dict[str, str], data: bytes, size: int) -> web.StreamResponse:
    """A real server's large answer: several writes with pauses between them (what a single
    ``read(n)`` on the client would cut short)."""
    response = web.StreamResponse(headers={**headers, "Content-Type": "application/json"})
    response.content_length = len(data)
    await response.prepare(request)
    for start in range(0, len(data), size):
        await response.write(data[start : start + size])
        await asyncio.sleep(0.005)
    await response.write_eof()
    return response


_HUGE_LINE = 600 * 1024  # above aiohttp's default 64 KiB line limit and the old 512 KiB reader


async def _malformed(request: web.Request, headers: dict[str, str], kind: str, stream: bool, model: str) -> web.StreamResponse:
    """Answers a broken server might send, to prove the router rejects them as typed failures."""
    base = {"id": "chatcmpl-broken", "object": "chat.completion", "created": int(time.time()), "model": model}
    if kind == "not_json":
        return web.Response(body=b"<html>upstream proxy error</html>", content_type="text/html", headers=headers)
    if not stream:
        if kind == "choices_strings":
            return _json({**base, "choices": ["x"]}, headers=headers)
        if kind == "usage_string":
            return _json(
                {
                    **base,
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": "lots", "completion_tokens": 1, "total_tokens": 2},
                },
                headers=headers,
            )
        if kind == "huge_line":
            content = "y" * _HUGE_LINE
            return _json(
                {
                    **base,
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
                },
                headers=headers,
            )
        return _json(
            {**base, "choices": [{"index": 0, "message": {"role": "assistant", "content": 7}, "finish_reason": "stop"}]},
            headers=headers,
        )
    response = web.StreamResponse(headers={**headers, "Content-Type": "text/event-stream"})
    await response.prepare(request)
    chunk = {**base, "object": "chat.completion.chunk"}
    if kind == "huge_line":
        event = {**chunk, "choices": [{"index": 0, "delta": {"content": "z" * _HUGE_LINE}, "finish_reason": None}]}
    elif kind == "int_delta":
        event = {**chunk, "choices": [{"index": 0, "delta": {"content": 42}, "finish_reason": None}]}
    elif kind == "usage_string":
        event = {**chunk, "choices": [], "usage": {"prompt_tokens": "lots"}}
    else:
        event = {**chunk, "choices": ["x"]}
    await response.write(b"data: " + orjson.dumps(event) + b"\n\n")
    await response.write(
        b"data: " + orjson.dumps({**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}) + b"\n\n"
    )
    await response.write(b"data: [DONE]\n\n")
    await response.write_eof()
    return response


def _abort(request: web.Request) -> None:
    if request.transport is not None:
        request.transport.abort()


def _usage(answer: Answer) -> dict[str, int]:
    total = answer.prompt_tokens + answer.completion_tokens
    return {"prompt_tokens": answer.prompt_tokens, "completion_tokens": answer.completion_tokens, "total_tokens": total}


def _wants_logprobs(body: dict[str, Any]) -> int | None:
    """How many alternatives per token the request asked for (0: logprobs only), None: no logprobs."""
    if body.get("logprobs") is not True:
        return None
    top = body.get("top_logprobs")
    return top if isinstance(top, int) and not isinstance(top, bool) and top >= 0 else 0


def _token_logprobs(text: str, top: int | None, confidence: float) -> dict[str, Any] | None:
    """OpenAI-shaped ``logprobs.content``: each token chosen with probability ``confidence``; the
    runner-up is far behind, so the margin is about ``confidence`` too."""
    if top is None:
        return None
    chosen = math.log(confidence)
    tokens = []
    for piece in _pieces(text):
        alts = [{"token": piece, "logprob": chosen, "bytes": None}]
        if top > 1:
            alts.append({"token": "<alt>", "logprob": math.log(1e-6), "bytes": None})
        tokens.append({"token": piece, "logprob": chosen, "bytes": None, "top_logprobs": alts[:top]})
    return {"content": tokens}


def _completion(
    answer: Answer, completion_id: str, model: str, top: int | None = None, confidence: float = 0.9
) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": answer.content}
    if answer.tool_call:
        call = answer.tool_call
        message["tool_calls"] = [
            {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}
        ]
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": answer.finish_reason,
                "logprobs": _token_logprobs(answer.content or "", top, confidence),
            }
        ],
        "usage": _usage(answer),
    }


def _stream_chunks(
    answer: Answer, completion_id: str, model: str, include_usage: bool, top: int | None = None, confidence: float = 0.9
) -> Iterator[tuple[dict[str, Any], bool]]:
    """(chunk, paced) pairs: paced chunks carry one token's worth of output."""
    created = int(time.time())

    def chunk(delta: dict[str, Any] | None, finish: str | None = None) -> dict[str, Any]:
        choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]
        return {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": choices,
        }

    if answer.tool_call:
        call = answer.tool_call
        head = {"index": 0, "id": call.id, "type": "function", "function": {"name": call.name, "arguments": ""}}
        yield chunk({"role": "assistant", "content": None, "tool_calls": [head]}), False
        args = call.arguments
        for start in range(0, len(args), _ARGUMENT_FRAGMENT):
            fragment = args[start : start + _ARGUMENT_FRAGMENT]
            yield chunk({"tool_calls": [{"index": 0, "function": {"arguments": fragment}}]}), True
    else:
        yield chunk({"role": "assistant", "content": ""}), False
        for piece in _pieces(answer.content or ""):
            out = chunk({"content": piece})
            lp = _token_logprobs(piece, top, confidence)
            if lp is not None:
                out["choices"][0]["logprobs"] = lp
            yield out, True
    yield chunk({}, answer.finish_reason), False
    if include_usage:
        yield {**chunk(None), "usage": _usage(answer)}, False


def _pieces(content: str) -> Iterable[str]:
    """Split into word-sized deltas that concatenate back to exactly `content`."""
    start = 0
    for word in content.split():
        end = content.index(word, start) + len(word)
        yield content[start:end]
        start = end
    if start < len(content):
        yield content[start:]


async def _stream(
    request: web.Request,
    headers: dict[str, str],
    chunks: Iterator[tuple[dict[str, Any], bool]],
    pace: float,
    drop: bool,
) -> web.StreamResponse:
    response = web.StreamResponse(headers={**headers, "Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await response.prepare(request)
    for sent, (chunk, paced) in enumerate(chunks):
        if drop and sent == DROP_AFTER_CHUNKS:
            _abort(request)  # no [DONE], no terminating chunk: the client sees a truncated body
            return response
        if paced and pace:
            await asyncio.sleep(pace)
        await response.write(b"data: " + orjson.dumps(chunk) + b"\n\n")
    await response.write(b"data: [DONE]\n\n")
    await response.write_eof()
    return response


async def list_models(request: web.Request) -> web.Response:
    state = request.app[STATE]
    state.record(request, None)
    data = [{"id": m, "object": "model", "created": state.started, "owned_by": "vllm"} for m in state.spec.models]
    return _json({"object": "list", "data": data}, headers={"x-sim-backend": state.spec.name})


async def health(request: web.Request) -> web.Response:
    return _json({"status": "ok", "backend": request.app[STATE].spec.name})


async def get_requests(request: web.Request) -> web.Response:
    return _json(list(request.app[STATE].log))


async def clear_requests(request: web.Request) -> web.Response:
    request.app[STATE].log.clear()
    return web.Response(status=204)


def build_app(spec: SimBackendSpec) -> web.Application:
    app = web.Application(client_max_size=64 * 1024 * 1024)  # long-context benchmarks send big prompts
    app[STATE] = BackendState(spec, random.Random(spec.seed), deque(maxlen=spec.request_log_size))
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_get("/v1/models", list_models)
    app.router.add_get("/health", health)
    app.router.add_get("/_sim/requests", get_requests)
    app.router.add_delete("/_sim/requests", clear_requests)
    return app


@dataclass
class RunningBackend:
    spec: SimBackendSpec
    host: str
    port: int
    _runner: web.AppRunner
    _state: BackendState

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def url(self) -> str:
        """Base URL without /v1, e.g. http://127.0.0.1:8001."""
        return f"http://{self.host}:{self.port}"

    @property
    def requests(self) -> list[dict[str, Any]]:
        """Recorded requests, oldest first: {method, path, headers (lower-cased), body, time}."""
        return list(self._state.log)

    def clear_requests(self) -> None:
        self._state.log.clear()

    async def stop(self) -> None:
        self._state.stopping.set()
        await self._runner.cleanup()


async def start_backend(spec: SimBackendSpec, host: str = "127.0.0.1") -> RunningBackend:
    app = build_app(spec)
    # handler_cancellation: a client that goes away cancels its (sleeping, hanging) handler.
    runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=_SHUTDOWN_TIMEOUT_S, access_log=None)
    await runner.setup()
    sock: socket.socket | None = None
    try:
        # Bind ourselves so port 0 yields the chosen port without reaching into aiohttp internals.
        sock = socket.create_server((host, spec.port))
        await web.SockSite(runner, sock).start()
    except BaseException:
        if sock is not None:
            sock.close()
        await runner.cleanup()
        raise
    return RunningBackend(spec, host, sock.getsockname()[1], runner, app[STATE])


async def start_backends(specs: Sequence[SimBackendSpec], host: str = "127.0.0.1") -> list[RunningBackend]:
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ValueError(f"backend names must be unique: {names}")
    started: list[RunningBackend] = []
    try:
        for spec in specs:
            started.append(await start_backend(spec, host))
    except BaseException:
        await stop_backends(started)
        raise
    return started


async def stop_backends(backends: Iterable[RunningBackend]) -> None:
    await asyncio.gather(*(b.stop() for b in backends))


@asynccontextmanager
async def running_backends(specs: Sequence[SimBackendSpec], host: str = "127.0.0.1") -> AsyncIterator[list[RunningBackend]]:
    backends = await start_backends(specs, host)
    try:
        yield backends
    finally:
        await stop_backends(backends)
