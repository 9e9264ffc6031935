"""Our compiled ext_proc stubs against the real Envoy 1.40 binary (FULL_DUPLEX_STREAMED wire).

Self-contained on purpose: a tiny grpc.aio ExternalProcessor, an aiohttp upstream on two ports
(clusters upstream_a / upstream_b) and Envoy on free ports with its own --base-id.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import subprocess
import sys
import time

import aiohttp
import grpc
import pytest
import pytest_asyncio
from aiohttp import web

from router._pb.envoy.config.core.v3 import base_pb2 as core
from router._pb.envoy.extensions.filters.http.ext_proc.v3 import processing_mode_pb2 as pm
from router._pb.envoy.service.ext_proc.v3 import external_processor_pb2 as ep
from router._pb.envoy.service.ext_proc.v3 import external_processor_pb2_grpc as ep_grpc
from router.local import free_port

pytestmark = pytest.mark.envoy
ENVOY = shutil.which("envoy", path=os.path.dirname(sys.executable))
ROUTE_HEADER = "x-route-cluster"
NEW_BODY = b'{"model": "rewritten-by-ext-proc"}'
SSE_CHUNKS = (b"data: one\n\n", b"data: two\n\n")


def _header(msg: ep.HttpHeaders, key: str) -> core.HeaderValue | None:
    return next((h for h in msg.headers.headers if h.key == key), None)


class Processor(ep_grpc.ExternalProcessorServicer):
    def __init__(self) -> None:
        self.first: dict[str, ep.ProcessingRequest] = {}
        self.client_got_first_chunk = asyncio.Event()

    async def Process(self, request_iterator, context):
        first = await context.read()
        if first is grpc.aio.EOF or not first.HasField("request_headers"):
            return
        case = _header(first.request_headers, "x-test-case")
        case = case.raw_value.decode() if case else ""
        self.first[case] = first
        if case == "route":
            await self._route(context)
        elif case == "stream":
            await self._stream(context)
        while await context.read() is not grpc.aio.EOF:  # drain until Envoy half-closes
            pass

    async def _route(self, context) -> None:
        # FULL_DUPLEX_STREAMED: hold the headers response until the body is complete.
        while True:
            msg = await context.read()
            if msg is grpc.aio.EOF or msg.HasField("request_trailers"):
                break
            if msg.HasField("request_body") and msg.request_body.end_of_stream:
                break
        set_cluster = core.HeaderValueOption(
            header=core.HeaderValue(key=ROUTE_HEADER, raw_value=b"upstream_b"),
            append_action=core.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD,
        )
        await context.write(
            ep.ProcessingResponse(
                request_headers=ep.HeadersResponse(
                    response=ep.CommonResponse(
                        header_mutation=ep.HeaderMutation(set_headers=[set_cluster]), clear_route_cache=True
                    )
                )
            )
        )
        await context.write(
            ep.ProcessingResponse(
                request_body=ep.BodyResponse(
                    response=ep.CommonResponse(
                        body_mutation=ep.BodyMutation(
                            streamed_response=ep.StreamedBodyResponse(body=NEW_BODY, end_of_stream=True)
                        )
                    )
                )
            )
        )

    async def _stream(self, context) -> None:
        headers = core.HeaderMap(
            headers=[
                core.HeaderValue(key=":status", raw_value=b"200"),
                core.HeaderValue(key="content-type", raw_value=b"text/event-stream"),
            ]
        )
        await context.write(
            ep.ProcessingResponse(
                streamed_immediate_response=ep.StreamedImmediateResponse(headers_response=ep.HttpHeaders(headers=headers))
            )
        )
        for i, chunk in enumerate(SSE_CHUNKS):
            if i:  # the client must see chunk 1 before chunk 2 exists: proves real streaming
                await asyncio.wait_for(self.client_got_first_chunk.wait(), 15)
            await context.write(
                ep.ProcessingResponse(
                    streamed_immediate_response=ep.StreamedImmediateResponse(
                        body_response=ep.StreamedBodyResponse(body=chunk, end_of_stream=i == len(SSE_CHUNKS) - 1)
                    )
                )
            )


def _cluster(name: str, port: int, http2: bool = False) -> dict:
    cluster = {
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [
                {"lb_endpoints": [{"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}}}]}
            ],
        },
    }
    if http2:
        cluster["typed_extension_protocol_options"] = {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {"http2_protocol_options": {}},
            }
        }
    return cluster


def _envoy_config(listen: int, admin: int, grpc_port: int, up_a: int, up_b: int) -> dict:
    ext_proc = {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor",
        "grpc_service": {"envoy_grpc": {"cluster_name": "ext_proc"}},
        "message_timeout": "30s",
        "allow_mode_override": True,
        "processing_mode": {
            "request_header_mode": "SEND",
            "response_header_mode": "SKIP",
            "request_body_mode": "FULL_DUPLEX_STREAMED",
            "request_trailer_mode": "SEND",
        },
    }
    hcm = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "ingress",
        "route_config": {
            "virtual_hosts": [
                {
                    "name": "all",
                    "domains": ["*"],
                    "routes": [{"match": {"prefix": "/"}, "route": {"cluster_header": ROUTE_HEADER, "timeout": "0s"}}],
                }
            ]
        },
        "http_filters": [
            {"name": "envoy.filters.http.ext_proc", "typed_config": ext_proc},
            {
                "name": "envoy.filters.http.router",
                "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
            },
        ],
    }
    return {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
        "static_resources": {
            "listeners": [
                {
                    "name": "main",
                    "address": {"socket_address": {"address": "127.0.0.1", "port_value": listen}},
                    "filter_chains": [
                        {"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]}
                    ],
                }
            ],
            "clusters": [_cluster("ext_proc", grpc_port, http2=True), _cluster("upstream_a", up_a), _cluster("upstream_b", up_b)],
        },
    }


async def _upstream(request: web.Request) -> web.Response:
    return web.json_response(
        {
            "port": request.transport.get_extra_info("sockname")[1],
            "body": (await request.read()).decode(),
            "route_header": request.headers.get(ROUTE_HEADER),
        }
    )


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def stack(tmp_path_factory):
    if ENVOY is None:
        pytest.skip("envoy binary not found next to the interpreter")
    tmp = tmp_path_factory.mktemp("envoy")
    processor = Processor()
    server = grpc.aio.server()
    ep_grpc.add_ExternalProcessorServicer_to_server(processor, server)
    grpc_port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    runner = web.AppRunner(web.Application(handler_args={}))
    runner.app.router.add_route("*", "/{tail:.*}", _upstream)
    await runner.setup()
    up_a, up_b, listen, admin = (free_port() for _ in range(4))
    for port in (up_a, up_b):
        await web.TCPSite(runner, "127.0.0.1", port).start()
    cfg = tmp / "envoy.json"
    cfg.write_text(json.dumps(_envoy_config(listen, admin, grpc_port, up_a, up_b)))
    log = open(tmp / "envoy.log", "wb")  # noqa: SIM115 - the log lives as long as Envoy
    proc = subprocess.Popen(
        [ENVOY, "-c", str(cfg), "--base-id", str(random.randint(10_000, 2_000_000)), "--concurrency", "1", "--log-level", "warn"],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        async with aiohttp.ClientSession() as s:
            while True:
                if proc.poll() is not None:
                    pytest.fail(f"envoy exited {proc.returncode}:\n{(tmp / 'envoy.log').read_text()}")
                try:
                    async with s.get(f"http://127.0.0.1:{admin}/ready") as r:
                        if r.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                if time.monotonic() > deadline:
                    pytest.fail(f"envoy not ready:\n{(tmp / 'envoy.log').read_text()}")
                await asyncio.sleep(0.1)
        yield {"url": f"http://127.0.0.1:{listen}", "processor": processor, "up_b": up_b}
    finally:
        proc.terminate()  # by PID: only the Envoy this fixture started
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        await server.stop(0)
        await runner.cleanup()


async def test_route_by_raw_value_header_with_streamed_body(stack):
    async with (
        aiohttp.ClientSession() as s,
        s.post(
            stack["url"] + "/v1/chat/completions",
            data=b'{"model": "auto"}',
            headers={"x-test-case": "route", "content-type": "application/json"},
        ) as r,
    ):
        assert r.status == 200, await r.text()
        got = await r.json()
    assert got == {"port": stack["up_b"], "body": NEW_BODY.decode(), "route_header": "upstream_b"}
    # (a) the first message carries protocol_config; header values arrive in raw_value only
    first = stack["processor"].first["route"]
    assert first.HasField("protocol_config")
    assert first.protocol_config.request_body_mode == pm.ProcessingMode.FULL_DUPLEX_STREAMED
    path = _header(first.request_headers, ":path")
    assert (path.raw_value, path.value) == (b"/v1/chat/completions", "")
    assert not first.request_headers.end_of_stream


async def test_streamed_immediate_response_reaches_client(stack):
    processor = stack["processor"]
    received = b""
    async with (
        aiohttp.ClientSession() as s,
        s.post(stack["url"] + "/v1/chat/completions", data=b'{"stream": true}', headers={"x-test-case": "stream"}) as r,
    ):
        assert r.status == 200
        assert r.headers["content-type"] == "text/event-stream"
        async for chunk in r.content.iter_any():
            received += chunk
            if received.startswith(SSE_CHUNKS[0]):
                processor.client_got_first_chunk.set()
    assert received == b"".join(SSE_CHUNKS)
    assert processor.first["stream"].protocol_config.request_body_mode == pm.ProcessingMode.FULL_DUPLEX_STREAMED
