"""Optional OpenTelemetry spans: the ext_proc stream, the signals, each looper sub-call; the incoming
W3C trace context (``traceparent``) is continued and propagated to upstream calls.

Off by default and free when off: ``span()`` is a no-op context manager unless ``setup_tracing`` ran.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import structlog

from router.config.schema import TracingSettings

log = structlog.get_logger("router.tracing")

_tracer: Any = None
_propagator: Any = None
_provider: Any = None


def setup_tracing(settings: TracingSettings) -> bool:
    """Install a tracer provider for ``settings``; False (and nothing installed) when tracing is off."""
    global _tracer, _propagator, _provider
    if not settings.enabled:
        return False
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SimpleSpanProcessor
        from opentelemetry.sdk.trace.sampling import ParentBasedTraceIdRatio
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
    except ImportError as exc:
        raise RuntimeError("tracing is enabled but OpenTelemetry is not installed: pip install 'fusion-router[otel]'") from exc
    provider = TracerProvider(
        resource=Resource.create({"service.name": settings.service_name}), sampler=ParentBasedTraceIdRatio(settings.sample_ratio)
    )
    if settings.exporter == "console":
        # Development: one JSON object per line on stdout, written as each span ends.
        exporter = ConsoleSpanExporter(out=sys.stdout, formatter=lambda s: s.to_json(indent=None) + "\n")
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    else:
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        except ImportError as exc:
            raise RuntimeError("tracing.exporter=otlp needs opentelemetry-exporter-otlp-proto-http") from exc
        exporter = OTLPSpanExporter(endpoint=settings.endpoint) if settings.endpoint else OTLPSpanExporter()
        provider.add_span_processor(BatchSpanProcessor(exporter))
    _provider = provider
    _tracer = provider.get_tracer("fusion-router")
    _propagator = TraceContextTextMapPropagator()
    log.info(
        "tracing_enabled",
        exporter=settings.exporter,
        endpoint=settings.endpoint,
        service_name=settings.service_name,
        sample_ratio=settings.sample_ratio,
    )
    return True


def shutdown_tracing() -> None:
    """Flush spans still queued (OTLP batches) and stop; a no-op when tracing is off."""
    global _tracer, _propagator, _provider
    if _provider is not None:
        try:
            _provider.shutdown()
        except Exception as exc:  # noqa: BLE001 - an unreachable collector must not fail the shutdown
            log.warning("tracing_shutdown_failed", error=str(exc))
    _tracer = _propagator = _provider = None


def enabled() -> bool:
    return _tracer is not None


def _parent_context(parent_headers: Mapping[str, str] | None) -> Any:
    """The context carried by ``parent_headers``' traceparent; None (= the current span) when they
    carry none, so a span without an incoming trace still nests under the span around it."""
    if not parent_headers or _propagator is None:
        return None
    ctx = _propagator.extract(carrier=dict(parent_headers))
    from opentelemetry import trace

    return ctx if trace.get_current_span(ctx).get_span_context().is_valid else None


@contextmanager
def span(name: str, parent_headers: Mapping[str, str] | None = None, **attributes: Any) -> Iterator[Any]:
    """A span (child of ``parent_headers``' traceparent when it has one, else of the current span);
    a no-op yielding None when tracing is off."""
    if _tracer is None:
        yield None
        return
    with _tracer.start_as_current_span(name, context=_parent_context(parent_headers)) as s:
        for key, value in attributes.items():
            if value is not None:
                s.set_attribute(key, value)
        yield s


def inject(headers: dict[str, str]) -> dict[str, str]:
    """Add the current trace context to outgoing headers (upstream model calls)."""
    if _propagator is not None:
        _propagator.inject(carrier=headers)
    return headers
