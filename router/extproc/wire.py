"""Build ext_proc ProcessingResponse messages. Envoy 1.40 reads header values from ``raw_value`` only."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping

from router._pb.envoy.config.core.v3 import base_pb2 as core
from router._pb.envoy.service.ext_proc.v3 import external_processor_pb2 as ep
from router._pb.envoy.type.v3 import http_status_pb2 as http_status

OVERWRITE = core.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
STREAM_CHUNK = 64 * 1024  # Envoy takes streamed body mutations in pieces of at most 64 KiB

ProcessingRequest = ep.ProcessingRequest
ProcessingResponse = ep.ProcessingResponse


def read_headers(headers: ep.HttpHeaders) -> dict[str, str]:
    return {h.key.lower(): (h.raw_value.decode("latin-1") if h.raw_value else h.value) for h in headers.headers.headers}


def mutation(set_headers: Mapping[str, str], remove: Iterable[str] = ()) -> ep.HeaderMutation:
    return ep.HeaderMutation(
        set_headers=[
            core.HeaderValueOption(
                header=core.HeaderValue(key=k, raw_value=v.encode("latin-1", "replace")), append_action=OVERWRITE
            )
            for k, v in set_headers.items()
        ],
        remove_headers=list(remove),
    )


def empty_headers_response() -> ep.ProcessingResponse:
    return ep.ProcessingResponse(request_headers=ep.HeadersResponse())


def headers_response(
    set_headers: Mapping[str, str], remove: Iterable[str], *, clear_route_cache: bool = True
) -> ep.ProcessingResponse:
    common = ep.CommonResponse(header_mutation=mutation(set_headers, remove), clear_route_cache=clear_route_cache)
    return ep.ProcessingResponse(request_headers=ep.HeadersResponse(response=common))


def buffered_body_response(set_headers: Mapping[str, str], remove: Iterable[str], body: bytes | None) -> ep.ProcessingResponse:
    common = ep.CommonResponse(header_mutation=mutation(set_headers, remove), clear_route_cache=True)
    if body is not None:
        common.body_mutation.CopyFrom(ep.BodyMutation(body=body))
    return ep.ProcessingResponse(request_body=ep.BodyResponse(response=common))


def streamed_body_responses(body: bytes) -> Iterator[ep.ProcessingResponse]:
    """The body in ≤ 64 KiB pieces, built one at a time (a 16 MiB body is never held twice more)."""
    view = memoryview(body)
    starts = range(0, len(body), STREAM_CHUNK) if body else range(1)
    last = starts[-1]
    for start in starts:
        streamed = ep.StreamedBodyResponse(body=bytes(view[start : start + STREAM_CHUNK]), end_of_stream=start == last)
        common = ep.CommonResponse(body_mutation=ep.BodyMutation(streamed_response=streamed))
        yield ep.ProcessingResponse(request_body=ep.BodyResponse(response=common))


def immediate(status: int, body: bytes, headers: Mapping[str, str], details: str = "") -> ep.ProcessingResponse:
    return ep.ProcessingResponse(
        immediate_response=ep.ImmediateResponse(
            status=http_status.HttpStatus(code=status),  # type: ignore[arg-type]  # the enum is open: any HTTP status number
            headers=mutation(headers),
            body=body,
            details=details,
        )
    )


def stream_headers(status: int, headers: Mapping[str, str]) -> ep.ProcessingResponse:
    values = [core.HeaderValue(key=":status", raw_value=str(status).encode())]
    values += [core.HeaderValue(key=k, raw_value=v.encode("latin-1", "replace")) for k, v in headers.items()]
    sir = ep.StreamedImmediateResponse(
        headers_response=ep.HttpHeaders(headers=core.HeaderMap(headers=values), end_of_stream=False)
    )
    return ep.ProcessingResponse(streamed_immediate_response=sir)


def stream_body(chunk: bytes, end_of_stream: bool = False) -> ep.ProcessingResponse:
    sir = ep.StreamedImmediateResponse(body_response=ep.StreamedBodyResponse(body=chunk, end_of_stream=end_of_stream))
    return ep.ProcessingResponse(streamed_immediate_response=sir)


def trailers_response() -> ep.ProcessingResponse:
    return ep.ProcessingResponse(request_trailers=ep.TrailersResponse())


def body_mode_of(msg: ep.ProcessingRequest) -> int | None:
    """The request body mode Envoy announced in the first message (``None`` when absent)."""
    if msg.HasField("protocol_config"):
        return msg.protocol_config.request_body_mode
    return None
