"""Optional OpenTelemetry spans: the ext_proc stream, the signals, each looper sub-call; the incoming
W3C trace context (``traceparent``) is continued and propagated to upstream calls.

Off by default and free when off: ``span()`` is a no-op context manager unless ``setup_tracing`` ran.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import structlog

from router.config.schema import TracingSettings

log = structlog.get_logger("router.tracing")

_tracer: Any = None
_propagator: Any = None


def setup_tracing(settings: TracingSettings) -> bool:
    global _tracer, _propagator
    if not settings.enabled:
        return False
    try:
        from opentelemetry import trace
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
        from opentelemetry.sdk.trace.sampling import ParentBasedTraceIdRatio
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
    except ImportError as exc:
        raise RuntimeError("tracing is enabled but OpenTelemetry is not installed: pip install 'fusion-router[otel]'") from exc
    if settings.exporter == "console":
        exporter = ConsoleSpanExporter()
    else:
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        except ImportError as exc:
            raise RuntimeError("tracing.exporter=otlp needs opentelemetry-exporter-otlp-proto-http") from exc
        exporter = OTLPSpanExporter(endpoint=settings.endpoint) if settings.endpoint else OTLPSpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": settings.service_name}),
                              sampler=ParentBasedTraceIdRatio(settings.sample_ratio))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    _tracer = trace.get_tracer("fusion-router")
    _propagator = TraceContextTextMapPropagator()
    log.info("tracing_enabled", exporter=settings.exporter, endpoint=settings.endpoint)
    return True


def enabled() -> bool:
    return _tracer is not None


@contextmanager
def span(name: str, parent_headers: Mapping[str, str] | None = None, **attributes: Any) -> Iterator[Any]:
    """A span (child of the current one, or of ``parent_headers``' traceparent); a no-op when off."""
    if _tracer is None:
        yield None
        return
    ctx = _propagator.extract(carrier=dict(parent_headers)) if parent_headers else None
    with _tracer.start_as_current_span(name, context=ctx) as s:
        for key, value in attributes.items():
            if value is not None:
                s.set_attribute(key, value)
        yield s


def inject(headers: dict[str, str]) -> dict[str, str]:
    """Add the current trace context to outgoing headers (upstream model calls)."""
    if _propagator is not None:
        _propagator.inject(carrier=headers)
    return headers
