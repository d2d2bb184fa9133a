"""FastAPI dependencies, as Annotated aliases."""

from typing import Annotated

from fastapi import Depends, Header, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from contracts import ErrorCode
from gateway.commands import CommandGateway
from gateway.credentials import PREFIX as NEPTUNE_PREFIX
from gateway.credentials import verify
from gateway.errors import ApiError
from gateway.queries import QueryClient
from gateway.settings import GatewaySettings
from gateway.workspaces import Principal, WorkspaceStore
from servicekit.bus import Bus


async def _workspaces(request: Request) -> WorkspaceStore:
    store: WorkspaceStore = request.app.state.workspaces
    return store


async def _commands(request: Request) -> CommandGateway:
    gateway: CommandGateway = request.app.state.commands
    return gateway


async def _queries(request: Request) -> QueryClient:
    client: QueryClient = request.app.state.queries
    return client


async def _settings(request: Request) -> GatewaySettings:
    settings: GatewaySettings = request.app.state.settings
    return settings


async def _bus(request: Request) -> Bus:
    bus: Bus = request.app.state.runtime.bus
    return bus


# The dependencies are coroutines: FastAPI runs a plain function's in a worker thread, a hop per request.
Workspaces = Annotated[WorkspaceStore, Depends(_workspaces)]
Commands = Annotated[CommandGateway, Depends(_commands)]
Queries = Annotated[QueryClient, Depends(_queries)]
BusDep = Annotated[Bus, Depends(_bus)]
Settings = Annotated[GatewaySettings, Depends(_settings)]


API_KEY = HTTPBearer(
    scheme_name="apiKey", description="A workspace API key: `Authorization: Bearer <key>`.", auto_error=False
)


def neptune_secret(request: Request) -> bytes:
    """The key that signs Neptune's credentials: the setting, or one drawn when the app started."""
    secret: bytes = request.app.state.neptune_secret
    return secret


async def _principal(
    request: Request,
    workspaces: Workspaces,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Security(API_KEY)],
) -> Principal:
    if credentials is None or credentials.scheme.lower() != "bearer" or not credentials.credentials.strip():
        raise ApiError(ErrorCode.UNAUTHORIZED, "Send the workspace API key as 'Authorization: Bearer <key>'.")
    token = credentials.credentials.strip()
    if token.startswith(NEPTUNE_PREFIX):
        principal = verify(neptune_secret(request), token)
        if principal is not None and not await workspaces.key_active(principal.workspace_id, principal.key_id):
            principal = None
    else:
        principal = await workspaces.authenticate(token)
    if principal is None:
        raise ApiError(ErrorCode.UNAUTHORIZED, "The API key is not valid.")
    return principal


CurrentPrincipal = Annotated[Principal, Depends(_principal)]
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=200,
        description="Makes a retried request safe: the same key and body return the first request's outcome.",
    ),
]
