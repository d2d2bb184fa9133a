"""Composition root of the neptune service."""

from fastapi import FastAPI

from neptune.settings import NeptuneSettings
from servicekit.queries import QueryRouter, serve_queries
from servicekit.runtime import Runtime, create_app

SERVICE = "neptune"


def build_app(settings: NeptuneSettings) -> FastAPI:
    async def setup(runtime: Runtime, app: FastAPI) -> None:
        # No queries of its own yet; it answers the ping every service answers, so the gateway sees it is up.
        serve_queries(runtime.bus, SERVICE, QueryRouter(), workers=settings.query_workers)

    return create_app(settings, setup, title="neptune")
