"""REST endpoints under /api/v1."""

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from contracts import Command, ErrorCode, OutcomeStatus
from contracts.agents import AgentSpec, AgentStatus, AgentView, ChangeAgentStatus, GetAgent, ListAgents, RegisterAgent
from gateway.commands import CommandStatus, fingerprint
from gateway.deps import Commands, CurrentPrincipal, IdempotencyKey, Queries, Workspaces
from gateway.errors import PROBLEM_RESPONSES, STATUS_OF, ApiError

router = APIRouter(prefix="/api/v1", responses=PROBLEM_RESPONSES)
ResourceId = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]


class CommandResponse(BaseModel):
    """Where a command stands: ``accepted`` (with the ids it touched), ``rejected``, or ``pending``."""

    command_id: str
    type: str
    status: str
    submitted_at: datetime
    resource_ids: dict[str, str] = Field(default_factory=dict)
    error_code: ErrorCode | None = None
    error_message: str | None = None
    links: dict[str, str] = Field(default_factory=dict)


class AgentList(BaseModel):
    items: list[AgentView]


class StatusChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: AgentStatus


class WorkspaceInfo(BaseModel):
    workspace_id: str
    name: str


def _response(status: CommandStatus, links: dict[str, str] | None = None) -> CommandResponse:
    outcome = status.outcome
    return CommandResponse(
        command_id=status.command_id,
        type=status.type,
        status=status.status,
        submitted_at=status.submitted_at,
        resource_ids=outcome.resource_ids if outcome else {},
        error_code=outcome.error_code if outcome else None,
        error_message=outcome.error_message if outcome else None,
        links={"status": f"/api/v1/commands/{status.command_id}", **(links or {})},
    )


async def _run(
    request: Request,
    response: Response,
    commands: Commands,
    principal: CurrentPrincipal,
    command_id: str,
    command: Command,
    *,
    created: str | None = None,
) -> CommandResponse:
    body = await request.body()
    status = await commands.submit(
        principal, command_id, command, request_fingerprint=fingerprint(request.method, request.url.path, body)
    )
    links = {"resource": created} if created else {}
    if status.outcome is None:
        response.status_code = 202
        response.headers["Location"] = f"/api/v1/commands/{status.command_id}"
        return _response(status, links)
    if status.outcome.status is OutcomeStatus.REJECTED:
        code = status.outcome.error_code or ErrorCode.CONFLICT
        raise ApiError(code, status.outcome.error_message or "The command was rejected.", status=STATUS_OF.get(code))
    if created:
        response.status_code = 201
        response.headers["Location"] = created
    return _response(status, links)


@router.get("/workspace", response_model=WorkspaceInfo, summary="The caller's workspace")
async def get_workspace(principal: CurrentPrincipal, workspaces: Workspaces) -> WorkspaceInfo:
    doc = await workspaces.get(principal.workspace_id)
    if doc is None:
        raise ApiError(ErrorCode.NOT_FOUND, "Workspace not found.")
    return WorkspaceInfo(workspace_id=doc["_id"], name=doc["name"])


@router.post(
    "/agents",
    response_model=CommandResponse,
    status_code=201,
    summary="Create an agent",
    responses={202: {"model": CommandResponse, "description": "Accepted; poll the command's status link."}},
)
async def create_agent(
    spec: AgentSpec,
    request: Request,
    response: Response,
    principal: CurrentPrincipal,
    commands: Commands,
    idempotency_key: IdempotencyKey = None,
) -> CommandResponse:
    command_id = commands.command_id(principal, idempotency_key)
    agent_id = f"agt_{command_id[:24]}"
    command = RegisterAgent(agent_id=agent_id, spec=spec)
    return await _run(request, response, commands, principal, command_id, command, created=f"/api/v1/agents/{agent_id}")


@router.get("/agents/{agent_id}", response_model=AgentView, summary="Get an agent")
async def get_agent(agent_id: ResourceId, principal: CurrentPrincipal, queries: Queries) -> Any:
    return await queries.ask(principal, GetAgent(agent_id=agent_id))


@router.get("/agents", response_model=AgentList, summary="List agents, optionally by availability")
async def list_agents(
    principal: CurrentPrincipal,
    queries: Queries,
    status: AgentStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> AgentList:
    items = await queries.ask(principal, ListAgents(status=status, limit=limit))
    return AgentList.model_validate({"items": items})


@router.post("/agents/{agent_id}/status", response_model=CommandResponse, summary="Change an agent's availability")
async def change_agent_status(
    agent_id: ResourceId,
    change: StatusChange,
    request: Request,
    response: Response,
    principal: CurrentPrincipal,
    commands: Commands,
    idempotency_key: IdempotencyKey = None,
) -> CommandResponse:
    command = ChangeAgentStatus(agent_id=agent_id, status=change.status)
    command_id = commands.command_id(principal, idempotency_key)
    return await _run(request, response, commands, principal, command_id, command)


@router.get("/commands/{command_id}", response_model=CommandResponse, summary="A command's status and outcome")
async def get_command(command_id: ResourceId, principal: CurrentPrincipal, commands: Commands) -> CommandResponse:
    status = await commands.status(principal, command_id)
    if status is None:
        raise ApiError(ErrorCode.NOT_FOUND, f"Command {command_id} not found.")
    return _response(status)
