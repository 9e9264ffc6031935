"""The per-stream phase machine: one gRPC stream carries one HTTP request through Envoy.

BUFFERED: headers get an empty answer at once, the whole body arrives in one message and is answered
with header + body mutations together. FULL_DUPLEX_STREAMED: the headers answer is held until the
body's ``end_of_stream``, then headers and body go back as separate messages; only this mode lets the
router stream its own response (StreamedImmediateResponse).
"""

from __future__ import annotations

import hmac
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import structlog

from router._pb.envoy.extensions.filters.http.ext_proc.v3 import processing_mode_pb2 as pm
from router.actions import Action, Respond, Route, Stream
from router.extproc import headers as H
from router.extproc import wire
from router.extproc.pipeline import handle
from router.observability import record
from router.openai.errors import OpenAIError
from router.openai.types import ModelCard, ModelList
from router.responses import error_response
from router.state import BodyMode, RequestState, ResponsePath

if TYPE_CHECKING:
    from router.app import App

log = structlog.get_logger("router.extproc")

CHAT_PATH = "/v1/chat/completions"
MODELS_PATH = "/v1/models"
_MODES = {
    pm.ProcessingMode.FULL_DUPLEX_STREAMED: BodyMode.STREAMED,
    pm.ProcessingMode.BUFFERED: BodyMode.BUFFERED,
    pm.ProcessingMode.NONE: BodyMode.NONE,
}


class Phases:
    """Drives one request. ``run`` consumes Envoy's messages and yields the router's answers."""

    def __init__(self, app: App):
        self.app = app
        self.state = RequestState(policy=app.policy)  # the policy is pinned for the request's life

    async def run(self, requests: AsyncIterator[wire.ProcessingRequest]) -> AsyncIterator[wire.ProcessingResponse]:
        state = self.state
        async for msg in requests:
            kind = msg.WhichOneof("request")
            if kind == "request_headers":
                early = self._on_headers(msg)
                if early is not None:
                    async for out in self._emit(early):
                        yield out
                    return
                if state.body_mode is BodyMode.BUFFERED:
                    yield wire.empty_headers_response()
                # STREAMED: the headers answer waits for the body's end (it carries the route).
            elif kind == "request_body":
                body = msg.request_body
                state.body += body.body
                limit = state.policy.config.global_.router.max_body_bytes
                if len(state.body) > limit:
                    err = OpenAIError(
                        413, f"The request body exceeds the configured limit of {limit} bytes.", "request_too_large"
                    )
                    async for out in self._emit(error_response(state, err)):
                        yield out
                    return
                if body.end_of_stream or state.body_mode is BodyMode.BUFFERED:
                    async for out in self._emit(await handle(self.app, state)):
                        yield out
                    if not isinstance(self._last, Route):
                        return
            elif kind == "request_trailers":
                # Trailers end the body when the client sent them; the body was answered already
                # unless it had no end_of_stream flag.
                if self._last is None:
                    async for out in self._emit(await handle(self.app, state)):
                        yield out
                yield wire.trailers_response()
            elif kind in ("response_headers", "response_body", "response_trailers"):
                # Response processing is off in the shipped Envoy config; answer neutrally if enabled.
                yield _neutral(kind)

    _last: Action | None = None

    def _on_headers(self, msg: wire.ProcessingRequest) -> Action | None:
        state = self.state
        mode = wire.body_mode_of(msg)
        state.body_mode = _MODES.get(mode, BodyMode.BUFFERED) if mode is not None else BodyMode.BUFFERED  # type: ignore[call-overload]  # protobuf enums are ints
        hdrs = wire.read_headers(msg.request_headers)
        state.headers = hdrs
        state.method = hdrs.get(":method", "")
        state.path = hdrs.get(":path", "").split("?", 1)[0]
        state.request_id = hdrs.get("x-request-id", "")
        router_cfg = state.policy.config.global_.router
        # The matched signals describe the policy: echoed only where the operator allows it.
        allowed = router_cfg.allow_debug_header or self.app.allow_debug_header
        state.debug = allowed and hdrs.get(router_cfg.debug_header, "") not in ("", "0", "false")
        token = hdrs.get(H.LOOPER_TOKEN)
        if token is not None:
            state.internal = hmac.compare_digest(token.encode(), self.app.looper_secret.encode())
            if not state.internal:
                log.warning("forged_looper_marker", request_id=state.request_id)

        if self.app.draining and not state.internal:
            # Shutting down: new client requests go elsewhere; sub-calls of in-flight Fusion runs still pass.
            return error_response(state, OpenAIError(503, "The router is shutting down; retry the request.", "router_draining"))
        too_large = _oversized_header(hdrs, router_cfg.max_header_bytes, router_cfg.max_headers_total_bytes)
        if too_large:
            return error_response(state, OpenAIError(431, too_large, "request_header_too_large"))
        if state.path == MODELS_PATH or state.path.startswith(MODELS_PATH + "/"):
            return self._models(state)
        if state.path != CHAT_PATH:
            return error_response(
                state,
                OpenAIError(
                    404,
                    f"Unsupported path `{state.path}`; this gateway serves POST {CHAT_PATH} and GET {MODELS_PATH}.",
                    "unsupported_path",
                ),
            )
        if state.method != "POST":
            return error_response(
                state, OpenAIError(405, f"Method {state.method} is not allowed on {CHAT_PATH}; use POST.", "method_not_allowed")
            )
        if msg.request_headers.end_of_stream:
            return error_response(
                state, OpenAIError(400, "The request body is empty; expected a JSON chat-completions request.", "empty_body")
            )
        length = hdrs.get("content-length")
        if length and length.isdigit() and int(length) > router_cfg.max_body_bytes:
            return error_response(
                state,
                OpenAIError(
                    413,
                    f"The request body exceeds the configured limit of {router_cfg.max_body_bytes} bytes.",
                    "request_too_large",
                ),
            )
        encoding = hdrs.get("content-encoding", "identity").strip().lower()
        if encoding not in ("", "identity"):
            # The router reads the body to route it; a compressed body would be read as garbage and
            # forwarded as is. Say so instead.
            return error_response(
                state,
                OpenAIError(
                    415,
                    f"Unsupported content-encoding `{encoding}`; send the JSON body uncompressed.",
                    "unsupported_content_encoding",
                ),
            )
        ctype = hdrs.get("content-type", "application/json").split(";", 1)[0].strip().lower()
        if ctype not in ("application/json", "", "text/plain"):
            return error_response(
                state, OpenAIError(415, f"Unsupported content-type `{ctype}`; send application/json.", "unsupported_media_type")
            )
        return None

    def _models(self, state: RequestState) -> Action:
        state.response_path = ResponsePath.MODELS
        if state.method != "GET":
            return error_response(
                state, OpenAIError(405, f"Method {state.method} is not allowed on {MODELS_PATH}; use GET.", "method_not_allowed")
            )
        policy = state.policy
        names = [*policy.config.global_.router.auto_model_names, *policy.slug_algorithms]
        names += [m.name for m in policy.config.models]
        if state.path != MODELS_PATH:
            wanted = state.path[len(MODELS_PATH) + 1 :]
            if wanted not in names:
                return error_response(state, OpenAIError(404, f"The model `{wanted}` does not exist.", "model_not_found"))
            return Respond(200, ModelCard(id=wanted).model_dump_json().encode(), state.response_headers())
        body = ModelList(data=[ModelCard(id=n) for n in names]).model_dump_json().encode()
        return Respond(200, body, state.response_headers())

    def _client_internal_headers(self, keep: set[str]) -> list[str]:
        # Client-supplied x-vsr-* headers never reach a backend (a forged routing or looper marker).
        return [k for k in self.state.headers if k.startswith(H.INTERNAL_PREFIX) and k not in keep]

    async def _emit(self, action: Action) -> AsyncIterator[wire.ProcessingResponse]:
        self._last = action
        state = self.state
        record.request_done(state)
        if isinstance(action, Route):
            remove = self._client_internal_headers(set(action.set_headers)) + action.remove_headers
            if state.body_mode is BodyMode.STREAMED:
                # The whole body is known before the headers answer goes out, so its exact length can
                # go with it (the filter's allow_content_length_header keeps it).
                body = action.body if action.body is not None else bytes(state.body)
                yield wire.headers_response({**action.set_headers, "content-length": str(len(body))}, remove)
                for out in wire.streamed_body_responses(body):
                    yield out
            else:
                set_headers = dict(action.set_headers)
                if action.body is not None:
                    set_headers["content-length"] = str(len(action.body))
                yield wire.buffered_body_response(set_headers, remove, action.body)
            return
        if isinstance(action, Respond):
            headers = {"content-type": action.content_type, **action.headers}
            yield wire.immediate(action.status, action.body, headers)
            return
        if isinstance(action, Stream):
            headers = {"content-type": action.content_type, "cache-control": "no-cache", **action.headers}
            if state.body_mode is BodyMode.STREAMED:
                yield wire.stream_headers(action.status, headers)
                try:
                    async for chunk in action.chunks:
                        yield wire.stream_body(chunk)
                finally:
                    await action.chunks.aclose()
                yield wire.stream_body(b"", end_of_stream=True)
            else:
                # BUFFERED cannot stream a local reply: one immediate response holds the whole SSE body.
                collected = bytearray()
                try:
                    async for chunk in action.chunks:
                        collected += chunk
                finally:
                    await action.chunks.aclose()
                yield wire.immediate(action.status, bytes(collected), headers)


def _neutral(kind: str) -> wire.ProcessingResponse:
    from router._pb.envoy.service.ext_proc.v3 import external_processor_pb2 as ep

    if kind == "response_headers":
        return ep.ProcessingResponse(response_headers=ep.HeadersResponse())
    if kind == "response_body":
        return ep.ProcessingResponse(response_body=ep.BodyResponse())
    return ep.ProcessingResponse(response_trailers=ep.TrailersResponse())


def _oversized_header(hdrs: dict[str, str], one: int, total: int) -> str | None:
    """Why the request's headers are too large for a backend, or None. Pseudo-headers (``:path``…)
    are Envoy's, not sent upstream as such, and not counted."""
    size = 0
    for name, value in hdrs.items():
        if name.startswith(":"):
            continue
        n = len(name) + len(value) + 4  # "name: value\r\n"
        if n > one:
            return f"The request header `{name[:64]}` is {n} bytes; this gateway forwards headers of up to {one} bytes."
        size += n
    if size > total:
        return f"The request headers total {size} bytes; this gateway forwards up to {total} bytes of headers."
    return None
