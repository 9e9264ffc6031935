"""Upstream model calls for loopers: pooled aiohttp, per-call deadline, size cap, cancellation.

Calls go back through Envoy (``global.integrations.looper.endpoint``) with the authenticated looper
marker, so Envoy's clusters, retries and health checks apply; or, with no endpoint configured, straight
to the model's backend URL. Either way the backend's API key goes with the call, every answer is read
whole (up to the cap) and validated with the typed upstream models, and upstream error texts lose any
secret they echo before they reach a trace or a client.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import orjson
from pydantic import ValidationError

from router import headers as H
from router.config.schema import Backend, LooperIntegration, ModelSpec
from router.looper.base import CallResult
from router.looper.errors import UpstreamError
from router.observability import record, tracing
from router.openai.upstream import TokenLogprob, UpstreamChunk, UpstreamCompletion, UpstreamToolCall
from router.redact import redact

DeltaSink = Callable[[dict[str, Any]], Awaitable[None]]
ERROR_TEXT_BYTES = 4096  # of an error body, enough for its message


class ModelClient:
    def __init__(self, settings: LooperIntegration, secret: str, cluster_header: str = H.CLUSTER):
        self.settings = settings
        self.secret = secret
        self.cluster_header = cluster_header
        self._session: aiohttp.ClientSession | None = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=self.settings.max_connections, ttl_dns_cache=60)
            self._session = aiohttp.ClientSession(connector=connector, auto_decompress=True)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    @staticmethod
    def api_key(backend: Backend) -> str | None:
        return os.environ.get(backend.api_key_env) if backend.api_key_env else None

    def _target(self, model: ModelSpec, backend: Backend) -> tuple[str, dict[str, str], str]:
        """URL, headers and the body's ``model`` for one call."""
        headers: dict[str, str] = {}
        key = self.api_key(backend)
        if key:
            # Whatever the path: straight to the backend, or through Envoy's internal listener (which
            # forwards it as is) or its main listener (where the router sets it again).
            headers["authorization"] = f"Bearer {key}"
        if self.settings.endpoint:
            # Through Envoy. The looper names the cluster and the served id itself: Envoy's internal
            # listener routes on that alone; on the main listener the authenticated marker makes the
            # router skip classification and honour the same choice.
            headers |= {H.LOOPER_TOKEN: self.secret, self.cluster_header: backend.cluster_name}
            return self.settings.endpoint, headers, model.served_id
        if backend.endpoint is None:
            raise UpstreamError("no_endpoint", f"backend {backend.name!r} has no endpoint and no looper endpoint is set")
        base = backend.endpoint.rstrip("/")
        url = base + ("/chat/completions" if base.endswith("/v1") else "/v1/chat/completions")
        return url, headers, model.served_id

    async def complete(
        self,
        model: ModelSpec,
        backend: Backend,
        body: dict[str, Any],
        *,
        timeout: float,
        on_delta: DeltaSink | None = None,
        extra_headers: dict[str, str] | None = None,
    ) -> CallResult:
        with tracing.span(
            "looper.call", parent_headers=extra_headers, **{"llm.model": model.name, "llm.stream": on_delta is not None}
        ):
            return await self._complete(model, backend, body, timeout=timeout, on_delta=on_delta, extra_headers=extra_headers)

    async def _complete(
        self,
        model: ModelSpec,
        backend: Backend,
        body: dict[str, Any],
        *,
        timeout: float,
        on_delta: DeltaSink | None,
        extra_headers: dict[str, str] | None,
    ) -> CallResult:
        url, headers, wire_model = self._target(model, backend)
        if extra_headers:
            headers.update(extra_headers)
        tracing.inject(headers)
        payload = {**body, "model": wire_model, "stream": on_delta is not None}
        if on_delta is not None:
            payload["stream_options"] = {"include_usage": True}
        else:
            payload.pop("stream_options", None)
        secrets = [k for k in (self.api_key(backend),) if k]
        started = time.perf_counter()
        result = CallResult(model=model.name)
        outcome = "error"
        try:
            async with asyncio.timeout(timeout):
                tmo = aiohttp.ClientTimeout(total=None, sock_connect=self.settings.connect_timeout_seconds)
                async with self._http().post(
                    url, data=orjson.dumps(payload), headers={"content-type": "application/json", **headers}, timeout=tmo
                ) as resp:
                    if resp.status >= 400:
                        text = (await resp.content.read(ERROR_TEXT_BYTES)).decode("utf-8", "replace")
                        reason = "rate_limited" if resp.status == 429 else f"http_{resp.status}"
                        raise UpstreamError(
                            reason, f"{model.name} answered HTTP {resp.status}: {_error_text(text, secrets)}", resp.status
                        )
                    if on_delta is None:
                        await self._read_whole(resp, result)
                    else:
                        await self._read_stream(resp, result, on_delta, started, secrets)
            outcome = "ok"
        except TimeoutError:
            outcome = "timeout"
            raise UpstreamError("timeout", f"{model.name} did not answer within {timeout:g}s") from None
        except asyncio.CancelledError:
            outcome = "cancelled"  # a straggler no longer needed, or the client left: not the model's fault
            raise
        except aiohttp.ClientPayloadError as exc:
            raise UpstreamError("stream_broken", f"{model.name} broke off its response: {redact(str(exc), secrets)}") from None
        except aiohttp.ClientError as exc:
            raise UpstreamError("connection_error", f"{model.name} could not be reached: {redact(str(exc), secrets)}") from None
        finally:
            elapsed = time.perf_counter() - started
            record.upstream_call(
                model.name,
                outcome,
                elapsed,
                result.first_token_ms / 1000 if result.first_token_ms is not None else None,
                result.usage.prompt_tokens,
                result.usage.completion_tokens,
            )
        result.latency_ms = elapsed * 1000
        return result

    async def _body(self, resp: aiohttp.ClientResponse, model: str) -> bytes:
        """The whole body, however it arrives (one write, many pieces, chunked), up to the cap."""
        cap = self.settings.max_response_bytes
        if (resp.content_length or 0) > cap:
            raise UpstreamError("response_too_large", f"{model} announced {resp.content_length} bytes, above the cap of {cap}")
        buf = bytearray()
        async for piece in resp.content.iter_any():
            buf += piece
            if len(buf) > cap:
                raise UpstreamError("response_too_large", f"{model} answered more than {cap} bytes")
        return bytes(buf)

    async def _read_whole(self, resp: aiohttp.ClientResponse, result: CallResult) -> None:
        data = await self._body(resp, result.model)
        try:
            doc = UpstreamCompletion.model_validate_json(data)
        except ValidationError as exc:
            raise UpstreamError(
                "invalid_response", f"{result.model} answered something that is not a chat completion ({_first_problem(exc)})"
            ) from None
        choice = doc.choices[0]
        result.content = choice.message.content or ""
        result.tool_calls = [_tool_call(tc) for tc in choice.message.tool_calls or []]
        result.finish_reason = choice.finish_reason
        if choice.logprobs is not None and choice.logprobs.content is not None:
            result.logprobs = choice.logprobs.content
        if doc.usage is not None:
            result.usage = doc.usage.typed()

    async def _lines(self, resp: aiohttp.ClientResponse, model: str) -> AsyncIterator[bytes]:
        """SSE lines of any length up to the body cap (aiohttp's line reader stops at 64 KiB)."""
        cap = self.settings.max_response_bytes
        seen = 0
        buf = bytearray()
        async for piece in resp.content.iter_any():
            seen += len(piece)
            if seen > cap:
                raise UpstreamError("response_too_large", f"{model} streamed more than {cap} bytes")
            buf += piece
            start = 0
            while (end := buf.find(b"\n", start)) != -1:
                yield bytes(buf[start:end])
                start = end + 1
            del buf[:start]
        if buf:
            yield bytes(buf)

    async def _read_stream(
        self, resp: aiohttp.ClientResponse, result: CallResult, on_delta: DeltaSink, started: float, secrets: list[str]
    ) -> None:
        content: list[str] = []
        logprobs: list[TokenLogprob] = []
        calls: dict[int, dict[str, Any]] = {}
        done = False
        async for raw_line in self._lines(resp, result.model):
            line = raw_line.strip()
            if not line.startswith(b"data:"):
                continue  # comments, event names, keep-alives
            data = line[5:].strip()
            if data == b"[DONE]":
                done = True
                break
            try:
                chunk = UpstreamChunk.model_validate_json(data)
            except ValidationError as exc:
                raise UpstreamError(
                    "invalid_response", f"{result.model} streamed a chunk that is not a completion chunk ({_first_problem(exc)})"
                ) from None
            if chunk.error is not None:
                text = chunk.error if isinstance(chunk.error, str) else chunk.error.message
                raise UpstreamError("stream_error", f"{result.model} reported an error mid-stream: {redact(text[:300], secrets)}")
            if chunk.usage is not None:
                result.usage = chunk.usage.typed()
            for choice in chunk.choices:
                if choice.finish_reason:
                    result.finish_reason = choice.finish_reason
                if choice.logprobs is not None and choice.logprobs.content:
                    logprobs += choice.logprobs.content
                delta = choice.delta
                if not delta.content and not delta.tool_calls:
                    continue
                if result.first_token_ms is None:
                    result.first_token_ms = (time.perf_counter() - started) * 1000
                out: dict[str, Any] = {}
                if delta.content:
                    content.append(delta.content)
                    out["content"] = delta.content
                if delta.tool_calls:
                    out["tool_calls"] = [tc.model_dump(exclude_none=True) for tc in delta.tool_calls]
                    for tc in delta.tool_calls:
                        slot = calls.setdefault(
                            tc.index or 0, {"id": None, "type": "function", "function": {"name": "", "arguments": ""}}
                        )
                        slot["id"] = tc.id or slot["id"]
                        slot["function"]["name"] += tc.function.name or ""
                        slot["function"]["arguments"] += tc.function.arguments or ""
                await on_delta(out)
        if not done:
            raise UpstreamError("stream_broken", f"{result.model} ended its stream without [DONE]")
        result.content = "".join(content)
        result.tool_calls = [calls[i] for i in sorted(calls)]
        result.logprobs = logprobs or None


def _tool_call(tc: UpstreamToolCall) -> dict[str, Any]:
    return {
        "id": tc.id,
        "type": tc.type or "function",
        "function": {"name": tc.function.name or "", "arguments": tc.function.arguments or ""},
    }


def _first_problem(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"]) or "body"
    return f"{where}: {err['msg']}"


def _error_text(text: str, secrets: list[str]) -> str:
    try:
        doc = orjson.loads(text)
        if isinstance(doc, dict) and isinstance(doc.get("error"), dict):
            text = str(doc["error"].get("message", ""))
        elif isinstance(doc, dict) and isinstance(doc.get("error"), str):
            text = doc["error"]
    except orjson.JSONDecodeError:
        pass
    return redact(text[:300], secrets)
