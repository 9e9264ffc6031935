"""Upstream model calls for loopers: pooled aiohttp, per-call deadline, size cap, cancellation.

Calls go back through Envoy (``global.integrations.looper.endpoint``) with the authenticated looper
marker, so Envoy's clusters, retries and health checks apply; or, with no endpoint configured, straight
to the model's backend URL.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

from router.config.schema import Backend, LooperIntegration, ModelSpec
from router.extproc import headers as H
from router.observability import record, tracing
from router.openai.types import Usage

DeltaSink = Callable[[dict[str, Any]], Awaitable[None]]


class UpstreamError(Exception):
    """A failed model call with a typed reason (``timeout``, ``http_502``, ``rate_limited`` ...)."""

    def __init__(self, reason: str, message: str, status: int | None = None):
        super().__init__(message)
        self.reason = reason
        self.status = status
        self.message = message


@dataclass(slots=True)
class CallResult:
    model: str
    content: str = ""
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    finish_reason: str | None = None
    usage: Usage = field(default_factory=Usage)
    latency_ms: float = 0.0
    first_token_ms: float | None = None


class ModelClient:
    def __init__(self, settings: LooperIntegration, secret: str, cluster_header: str = H.CLUSTER):
        self.settings = settings
        self.secret = secret
        self.cluster_header = cluster_header
        self._session: aiohttp.ClientSession | None = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=self.settings.max_connections, ttl_dns_cache=60)
            self._session = aiohttp.ClientSession(connector=connector, json_serialize=lambda o: orjson.dumps(o).decode())
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    def _target(self, model: ModelSpec, backend: Backend) -> tuple[str, dict[str, str], str]:
        """URL, headers and the body's ``model`` for one call."""
        if self.settings.endpoint:
            # Through Envoy. The looper names the cluster and the served id itself: Envoy's internal
            # listener routes on that alone; on the main listener the authenticated marker makes the
            # router skip classification and honour the same choice.
            return self.settings.endpoint, {H.LOOPER_TOKEN: self.secret, self.cluster_header: backend.cluster_name}, model.served_id
        if backend.endpoint is None:
            raise UpstreamError("no_endpoint", f"backend {backend.name!r} has no endpoint and no looper endpoint is set")
        base = backend.endpoint.rstrip("/")
        url = base + ("/chat/completions" if base.endswith("/v1") else "/v1/chat/completions")
        headers = {}
        key = os.environ.get(backend.api_key_env) if backend.api_key_env else None
        if key:
            headers["authorization"] = f"Bearer {key}"
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
        with tracing.span("looper.call", parent_headers=extra_headers, **{"llm.model": model.name,
                          "llm.stream": on_delta is not None}):
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
        started = time.perf_counter()
        result = CallResult(model=model.name)
        outcome = "error"
        try:
            async with asyncio.timeout(timeout):
                tmo = aiohttp.ClientTimeout(total=None, sock_connect=self.settings.connect_timeout_seconds)
                async with self._http().post(url, data=orjson.dumps(payload), headers={"content-type": "application/json", **headers}, timeout=tmo) as resp:
                    if resp.status >= 400:
                        text = (await resp.content.read(4096)).decode("utf-8", "replace")
                        reason = "rate_limited" if resp.status == 429 else f"http_{resp.status}"
                        raise UpstreamError(reason, f"{model.name} answered HTTP {resp.status}: {_error_text(text)}", resp.status)
                    if on_delta is None:
                        await self._read_whole(resp, result)
                    else:
                        await self._read_stream(resp, result, on_delta, started)
            outcome = "ok"
        except TimeoutError:
            outcome = "timeout"
            raise UpstreamError("timeout", f"{model.name} did not answer within {timeout:g}s") from None
        except aiohttp.ClientPayloadError as exc:
            raise UpstreamError("stream_broken", f"{model.name} broke off its response: {exc}") from None
        except aiohttp.ClientError as exc:
            raise UpstreamError("connection_error", f"{model.name} could not be reached: {exc}") from None
        finally:
            elapsed = time.perf_counter() - started
            record.upstream_call(model.name, outcome, elapsed,
                                 result.first_token_ms / 1000 if result.first_token_ms is not None else None,
                                 result.usage.prompt_tokens, result.usage.completion_tokens)
        result.latency_ms = elapsed * 1000
        return result

    async def _read_whole(self, resp: aiohttp.ClientResponse, result: CallResult) -> None:
        cap = self.settings.max_response_bytes
        data = await resp.content.read(cap + 1)
        if len(data) > cap:
            raise UpstreamError("response_too_large", f"{result.model} answered more than {cap} bytes")
        try:
            doc = orjson.loads(data)
            choice = doc["choices"][0]
            msg = choice.get("message") or {}
        except (orjson.JSONDecodeError, KeyError, IndexError, TypeError):
            raise UpstreamError("invalid_response", f"{result.model} answered something that is not a chat completion") from None
        result.content = msg.get("content") or ""
        result.tool_calls = msg.get("tool_calls") or []
        result.finish_reason = choice.get("finish_reason")
        if isinstance(doc.get("usage"), dict):
            result.usage = Usage.model_validate(doc["usage"])

    async def _read_stream(self, resp: aiohttp.ClientResponse, result: CallResult, on_delta: DeltaSink, started: float) -> None:
        cap = self.settings.max_response_bytes
        seen = 0
        content: list[str] = []
        calls: dict[int, dict[str, Any]] = {}
        done = False
        async for raw_line in resp.content:
            seen += len(raw_line)
            if seen > cap:
                raise UpstreamError("response_too_large", f"{result.model} streamed more than {cap} bytes")
            line = raw_line.strip()
            if not line.startswith(b"data:"):
                continue
            data = line[5:].strip()
            if data == b"[DONE]":
                done = True
                break
            try:
                doc = orjson.loads(data)
            except orjson.JSONDecodeError:
                raise UpstreamError("invalid_response", f"{result.model} streamed a chunk that is not JSON") from None
            if isinstance(doc.get("usage"), dict):
                result.usage = Usage.model_validate(doc["usage"])
            if "error" in doc:
                raise UpstreamError("stream_error", f"{result.model} reported an error mid-stream: {_error_text(orjson.dumps(doc).decode())}")
            for choice in doc.get("choices") or []:
                delta = choice.get("delta") or {}
                if choice.get("finish_reason"):
                    result.finish_reason = choice["finish_reason"]
                if not delta.get("content") and not delta.get("tool_calls"):
                    continue
                if result.first_token_ms is None:
                    result.first_token_ms = (time.perf_counter() - started) * 1000
                if delta.get("content"):
                    content.append(delta["content"])
                for tc in delta.get("tool_calls") or []:
                    slot = calls.setdefault(tc.get("index", 0), {"id": None, "type": "function", "function": {"name": "", "arguments": ""}})
                    slot["id"] = tc.get("id") or slot["id"]
                    fn = tc.get("function") or {}
                    slot["function"]["name"] += fn.get("name") or ""
                    slot["function"]["arguments"] += fn.get("arguments") or ""
                await on_delta({k: v for k, v in delta.items() if k in ("content", "tool_calls", "role")})
        if not done:
            raise UpstreamError("stream_broken", f"{result.model} ended its stream without [DONE]")
        result.content = "".join(content)
        result.tool_calls = [calls[i] for i in sorted(calls)]


def _error_text(text: str) -> str:
    try:
        doc = orjson.loads(text)
        if isinstance(doc, dict) and isinstance(doc.get("error"), dict):
            return str(doc["error"].get("message", ""))[:300]
    except orjson.JSONDecodeError:
        pass
    return text[:300]
