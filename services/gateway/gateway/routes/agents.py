from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict

from contracts.agents import AgentSpec, AgentStatus, AgentView, ChangeAgentStatus, GetAgent, ListAgents, RegisterAgent
from gateway.body import JsonBodyRoute
from gateway.deps import CurrentPrincipal, Queries
from gateway.routes.common import CommandResponse, ResourceId, Send

router = APIRouter(tags=["agents"], route_class=JsonBodyRoute)


class AgentList(BaseModel):
    items: list[AgentView]


class StatusChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: AgentStatus


@router.post(
    "/agents",
    response_model=CommandResponse,
    status_code=201,
    summary="Create an agent",
    responses={202: {"model": CommandResponse, "description": "Accepted; poll the command's status link."}},
)
async def create_agent(spec: AgentSpec, send: Send) -> CommandResponse:
    command_id = send.command_id
    agent_id = f"agt_{command_id[:24]}"
    command = RegisterAgent(agent_id=agent_id, spec=spec)
    return await send(command, created=f"/api/v1/agents/{agent_id}")


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
async def change_agent_status(agent_id: ResourceId, change: StatusChange, send: Send) -> CommandResponse:
    return await send(ChangeAgentStatus(agent_id=agent_id, status=change.status))
