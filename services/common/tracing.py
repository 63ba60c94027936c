"""OpenTelemetry tracing for every service: interceptors, spans, W3C or X-Ray ids and propagation.

Off by default (HW_TRACING=off): then no provider is installed, no interceptor is added and
`span()` costs a no-op context manager. `w3c` exports OTLP with W3C trace context; `xray`
uses X-Ray trace ids and the X-Ray propagator so traces join up in AWS X-Ray.
"""

from __future__ import annotations

import contextlib
import logging

from opentelemetry import trace

from services.common.settings import ServerSettings

logger = logging.getLogger("handwriting.tracing")
_tracer = trace.get_tracer("handwriting")
_configured_mode: str | None = None


def configure_tracing(settings: ServerSettings, exporter=None) -> None:
    """Install the tracer provider once per process. `exporter` overrides OTLP (tests pass an in-memory one)."""
    global _configured_mode
    mode = settings.tracing.lower()
    if mode == "off" or _configured_mode is not None:
        return
    if mode not in ("w3c", "xray"):
        raise ValueError(f"HW_TRACING must be off, w3c or xray, not {settings.tracing!r}")
    from opentelemetry.propagate import set_global_textmap
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    kwargs = {}
    if mode == "xray":
        from opentelemetry.sdk.extension.aws.trace import AwsXRayIdGenerator

        kwargs["id_generator"] = AwsXRayIdGenerator()
        set_global_textmap(_xray_propagator())
    else:
        from opentelemetry.propagators.composite import CompositePropagator
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        set_global_textmap(CompositePropagator([TraceContextTextMapPropagator()]))
    provider = TracerProvider(resource=Resource.create({"service.name": settings.service_name}), **kwargs)
    if exporter is None:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(
            BatchSpanProcessor(OTLPSpanExporter(endpoint=settings.otlp_endpoint, insecure=True))
        )
    else:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    _configured_mode = mode
    logger.info("tracing on", extra={"mode": mode, "endpoint": settings.otlp_endpoint})


def _xray_propagator():
    """AwsXRayPropagator that also finds the header in gRPC metadata, where keys are lower case."""
    from opentelemetry.propagators.aws import AwsXRayPropagator
    from opentelemetry.propagators.aws.aws_xray_propagator import TRACE_HEADER_KEY
    from opentelemetry.propagators.textmap import DefaultGetter, default_getter, default_setter

    class LowerCaseGetter(DefaultGetter):
        def __init__(self, inner):
            self.inner = inner

        def get(self, carrier, key):
            return self.inner.get(carrier, key) or self.inner.get(carrier, key.lower())

        def keys(self, carrier):
            return self.inner.keys(carrier)

    class GrpcXRayPropagator(AwsXRayPropagator):
        def extract(self, carrier, context=None, getter=default_getter):
            return super().extract(carrier, context, LowerCaseGetter(getter))

        def inject(self, carrier, context=None, setter=default_setter):
            headers = {}
            super().inject(headers, context)
            for value in headers.values():  # gRPC metadata keys must be lower case
                setter.set(carrier, TRACE_HEADER_KEY.lower(), value)

    return GrpcXRayPropagator()


def server_interceptors(settings: ServerSettings) -> list:
    if settings.tracing.lower() == "off":
        return []
    configure_tracing(settings)
    from opentelemetry.instrumentation.grpc import aio_server_interceptor, filters

    # health checks arrive every few seconds from Envoy, ECS and load balancers: not worth a trace each
    return [aio_server_interceptor(filter_=filters.negate(filters.health_check()))]


def client_interceptors(settings: ServerSettings) -> list:
    if settings.tracing.lower() == "off":
        return []
    configure_tracing(settings)
    from opentelemetry.instrumentation.grpc import aio_client_interceptors, filters

    return list(aio_client_interceptors(filter_=filters.negate(filters.health_check())))


def span(name: str, **attributes):
    """A child span of the current request; a no-op when tracing is off."""
    if _configured_mode is None:
        return contextlib.nullcontext()
    return _tracer.start_as_current_span(name, attributes=attributes)
