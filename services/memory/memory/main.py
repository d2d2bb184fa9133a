"""Composition root of the memory service."""

from collections.abc import Callable
from datetime import datetime

from fastapi import FastAPI

from contracts import Actor, EventRecord
from contracts.memory import ClearShortTerm, Scope, ScopeKind
from contracts.workflows import EXECUTION_AGGREGATE, EXECUTION_ENDS
from memory.embeddings import OpenAIEmbeddings
from memory.handlers import build_router
from memory.projections import AGGREGATES, EntriesProjection
from memory.queries import build_queries
from memory.retrieval import Retriever
from memory.settings import MemorySettings
from servicekit.commands import envelope_for, publish_command, serve_commands
from servicekit.eventstore import utcnow
from servicekit.projections import serve_events, serve_projection
from servicekit.queries import serve_queries
from servicekit.runtime import Runtime, create_app

SERVICE = "memory"


def build_app(settings: MemorySettings, clock: Callable[[], datetime] = utcnow) -> FastAPI:
    async def setup(runtime: Runtime, app: FastAPI) -> None:
        rows, stamps = runtime.db["entries"], runtime.db["search_stamps"]
        projections = [EntriesProjection(aggregate, rows, stamps) for aggregate in AGGREGATES]
        await projections[0].ensure_indexes()
        embeddings = None
        if settings.embeddings_model and settings.openai_api_key:
            embeddings = OpenAIEmbeddings(settings.openai_api_key, settings.embeddings_model, settings.openai_base_url)
        retriever = Retriever(rows, stamps, embeddings=embeddings)
        serve_commands(runtime.bus, SERVICE, build_router(clock, projections[0]), runtime.store, runtime.policy)
        for projection in projections:
            serve_projection(runtime.bus, SERVICE, projection, runtime.store, runtime.policy)
        serve_queries(runtime.bus, SERVICE, build_queries(runtime.store, rows, retriever, clock))

        if settings.clear_short_term_on_scope_end:

            async def on_execution_event(record: EventRecord) -> None:
                if record.type not in EXECUTION_ENDS:
                    return
                scope = Scope(kind=ScopeKind.EXECUTION, id=record.aggregate_id)
                command = ClearShortTerm(scope=scope)
                envelope = envelope_for(
                    command,
                    workspace_id=record.workspace_id,
                    command_id=f"clear-{record.event_id}",
                    actor=Actor(kind="service", id=SERVICE),
                    causation_id=record.event_id,
                )
                await publish_command(runtime.bus, SERVICE, envelope)

            serve_events(
                runtime.bus,
                SERVICE,
                EXECUTION_AGGREGATE,
                "scope_ends",
                on_execution_event,
                runtime.policy,
                sorted(EXECUTION_ENDS),
            )

    return create_app(settings, setup, title="memory", event_store=True)
