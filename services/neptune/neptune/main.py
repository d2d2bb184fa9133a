"""Composition root of the neptune service: conversations (commands, read model, queries)."""

from collections.abc import Callable
from datetime import datetime

import httpx
from fastapi import FastAPI

from neptune.conversations import ConversationsProjection, build_router, register_queries
from neptune.model_turn import build_llm
from neptune.settings import NeptuneSettings
from servicekit.commands import serve_commands
from servicekit.eventstore import utcnow
from servicekit.projections import serve_projection
from servicekit.queries import QueryRouter, serve_queries
from servicekit.runtime import Runtime, create_app

SERVICE = "neptune"


def build_app(settings: NeptuneSettings, clock: Callable[[], datetime] = utcnow) -> FastAPI:
    async def setup(runtime: Runtime, app: FastAPI) -> None:
        http = httpx.AsyncClient(base_url=settings.gateway_url, timeout=settings.gateway_timeout_s)
        runtime.on_stop(http.aclose)
        rows = ConversationsProjection(runtime.db["conversations"])
        await rows.ensure_indexes()
        llm = build_llm(settings)
        if llm is not None:
            runtime.on_stop(llm.close)
        router = build_router(runtime.bus, http, clock, settings, llm)
        serve_commands(runtime.bus, SERVICE, router, runtime.store, runtime.policy)
        serve_projection(runtime.bus, SERVICE, rows, runtime.store, runtime.policy)
        queries = QueryRouter()
        register_queries(queries, runtime.store, rows)
        serve_queries(runtime.bus, SERVICE, queries, workers=settings.query_workers)

    return create_app(settings, setup, title="neptune", event_store=True)
