"""One OpenTelemetry trace spans the HTTP request, the command, its handler and the events it produced."""

from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from conftest import Platform
from servicekit.testing import eventually


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    provider = trace.get_tracer_provider()
    assert isinstance(provider, TracerProvider), "services install an SDK tracer provider"
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield exporter
    exporter.shutdown()


async def test_one_trace_from_request_to_projection(platform: Platform, spans: InMemorySpanExporter) -> None:
    ws = await platform.new_workspace()
    headers = platform.auth(ws)
    created = await platform.client.post("/api/v1/agents", json={"name": "a", "role": "r"}, headers=headers)
    assert created.status_code == 201
    agent_id = created.json()["resource_ids"]["agent_id"]
    env = platform.settings.platform_env

    def in_trace() -> list[ReadableSpan]:
        server = next(
            s
            for s in spans.get_finished_spans()
            if s.kind is trace.SpanKind.SERVER and s.name.startswith("POST /api/v1/agents")
        )
        assert server.context is not None
        return [
            s
            for s in spans.get_finished_spans()
            if s.context is not None and s.context.trace_id == server.context.trace_id
        ]

    async def projected() -> list[ReadableSpan] | None:
        found = in_trace()
        names = " | ".join(s.name for s in found)
        consumed = [s for s in found if s.kind is trace.SpanKind.CONSUMER]
        command_seen = any(f"{env}.cmd.orchestrator" in s.name for s in consumed)
        event_seen = any(f"{env}.evt.agent" in s.name for s in consumed)
        return found if command_seen and event_seen and "relay commit" in names else None

    found = await eventually(projected)
    kinds = {s.kind for s in found}
    assert {trace.SpanKind.SERVER, trace.SpanKind.PRODUCER, trace.SpanKind.CONSUMER} <= kinds
    assert any(s.kind is trace.SpanKind.CONSUMER and agent_id in s.name for s in found), "the event's own span"
