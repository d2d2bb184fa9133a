"""Composition root of the orchestrator."""

from fastapi import FastAPI

from orchestrator.handlers import router as commands
from orchestrator.projections import AgentsProjection
from orchestrator.queries import build_queries
from orchestrator.settings import OrchestratorSettings
from servicekit.commands import serve_commands
from servicekit.projections import serve_projection
from servicekit.queries import serve_queries
from servicekit.runtime import Runtime, create_app

SERVICE = "orchestrator"


async def setup(runtime: Runtime, app: FastAPI) -> None:
    agents = AgentsProjection(runtime.db["agents"])
    await agents.ensure_indexes()
    serve_commands(runtime.bus, SERVICE, commands, runtime.store, runtime.policy)
    serve_projection(runtime.bus, SERVICE, agents, runtime.store, runtime.policy)
    serve_queries(runtime.bus, SERVICE, build_queries(agents), workers=runtime.settings.query_workers)


def build_app(settings: OrchestratorSettings) -> FastAPI:
    return create_app(settings, setup, title="orchestrator", event_store=True)
