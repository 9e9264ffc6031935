"""The grpc.aio ext_proc server, with the standard gRPC health service beside it.

With a shared secret configured (router/extproc/auth.py) every ``Process`` stream must carry it;
the health service stays open (the kubelet and Envoy's health checks call it without one).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import grpc
import structlog
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from router._pb.envoy.service.ext_proc.v3 import external_processor_pb2_grpc as ep_grpc
from router.extproc import auth, wire
from router.extproc import headers as H
from router.extproc.stream import Phases
from router.observability import metrics
from router.openai.errors import OpenAIError

if TYPE_CHECKING:
    from router.app import App

log = structlog.get_logger("router.server")

SERVICE_NAME = "envoy.service.ext_proc.v3.ExternalProcessor"
MAX_MESSAGE = 64 * 1024 * 1024  # bodies Envoy forwards can be far above grpc's 4 MiB default


class ExternalProcessor(ep_grpc.ExternalProcessorServicer):
    def __init__(self, app: App, secret: str | None = None):
        self.app = app
        self.secret = secret

    async def Process(
        self, request_iterator: AsyncIterator[wire.ProcessingRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[wire.ProcessingResponse]:
        if self.secret is not None and not auth.authorized(context.invocation_metadata(), self.secret):
            metrics.UNAUTHENTICATED_STREAMS.inc()
            log.warning("extproc_unauthenticated", peer=context.peer())
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "this ext_proc server needs the shared secret")
            return
        phases = Phases(self.app)
        metrics.IN_FLIGHT.inc()
        try:
            async for response in phases.run(request_iterator):
                yield response
        except Exception:
            log.exception("stream_failed", request_id=phases.state.request_id)
            # Still an OpenAI-shaped answer for the client; if the stream is past the point where Envoy
            # takes an immediate response, Envoy resets it instead (fail closed).
            err = OpenAIError(500, "The router failed to process this request.", "internal_error")
            yield wire.immediate(500, err.body(), {"content-type": "application/json", H.RESPONSE_PATH: "error"})
        finally:
            metrics.IN_FLIGHT.dec()


def build_server(app: App, address: str, secret: str | None = None) -> tuple[grpc.aio.Server, health.HealthServicer]:
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE),
            ("grpc.max_send_message_length", MAX_MESSAGE),
            ("grpc.so_reuseport", 1),  # lets several worker processes share one port
            ("grpc.max_concurrent_streams", 100000),
            ("grpc.http2.max_pings_without_data", 0),
            ("grpc.keepalive_permit_without_calls", 1),
        ]
    )
    ep_grpc.add_ExternalProcessorServicer_to_server(ExternalProcessor(app, secret), server)  # type: ignore[no-untyped-call]  # generated stub
    health_servicer = health.aio.HealthServicer() if hasattr(health, "aio") else health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    server.add_insecure_port(address)
    return server, health_servicer


async def set_serving(health_servicer: health.HealthServicer, serving: bool) -> None:
    status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
    for name in ("", SERVICE_NAME):
        result = health_servicer.set(name, status)
        if hasattr(result, "__await__"):
            await result
