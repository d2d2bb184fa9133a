"""Tracing set-up: OTLP export when OTEL_EXPORTER_OTLP_ENDPOINT is set, otherwise spans stay in-process."""

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from servicekit.settings import ServiceSettings


def build_tracer_provider(settings: ServiceSettings) -> TracerProvider:
    provider = TracerProvider(
        resource=Resource.create({"service.name": settings.otel_service_name or settings.service_name})
    )
    if settings.otel_exporter_otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        endpoint = settings.otel_exporter_otlp_endpoint.rstrip("/") + "/v1/traces"
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint, timeout=5)))
    return provider


def global_tracer_provider(settings: ServiceSettings) -> TracerProvider:
    """The process-wide provider, created on first use (OpenTelemetry allows setting it once)."""
    current = trace.get_tracer_provider()
    if isinstance(current, TracerProvider):
        return current
    provider = build_tracer_provider(settings)
    trace.set_tracer_provider(provider)
    return provider
