"""Composition root of the gateway."""

import secrets
from functools import partial

from fastapi import FastAPI
from starlette.middleware import Middleware

from gateway.commands import CommandGateway
from gateway.errors import BodyLimitMiddleware, install_error_handlers
from gateway.queries import QueryClient
from gateway.routes import router
from gateway.schema import exact_openapi
from gateway.settings import GatewaySettings
from gateway.workspaces import WorkspaceStore
from servicekit.queries import ping
from servicekit.runtime import Runtime, create_app


def build_app(settings: GatewaySettings) -> FastAPI:
    async def setup(runtime: Runtime, app: FastAPI) -> None:
        workspaces = WorkspaceStore(runtime.db)
        commands = CommandGateway(runtime.db, runtime.bus, settings.command_wait_s)
        await workspaces.ensure_indexes()
        await commands.ensure_indexes()
        runtime.on_stop(commands.close)
        app.state.settings = settings
        app.state.workspaces = workspaces
        configured = settings.neptune_token_secret.get_secret_value()
        app.state.neptune_secret = configured.encode() if configured else secrets.token_bytes(32)
        app.state.commands = commands
        app.state.queries = QueryClient(runtime.bus, settings.query_timeout_s)
        for backend in settings.backends:  # /readyz says which backend does not answer its queries
            runtime.check_ready(backend, partial(ping, runtime.bus, backend, settings.backend_ping_timeout_s))

    app = create_app(
        settings,
        setup,
        routers=[router],
        middleware=[
            Middleware(BodyLimitMiddleware, limit=settings.max_body_bytes, timeout_s=settings.body_read_timeout_s)
        ],
        title="Agent Platform API",
        version="0.1.0",
        description="Run teams of AI agents: agents, teams, workflows, memory and Neptune, per workspace.",
    )
    install_error_handlers(app)
    app.openapi = exact_openapi(app, settings)  # type: ignore[method-assign]
    return app
