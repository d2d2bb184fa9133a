"""Agents: create, read, list, update (a new version), retire, take out of service and back; availability; usage;
the workspace's monthly budget."""

from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from contracts.agents import (
    AgentAvailability,
    AgentSpec,
    AgentState,
    AgentStatus,
    AgentView,
    Capability,
    GetAgent,
    GetAvailability,
    GetUsage,
    ListAgents,
    RegisterAgent,
    RetireAgent,
    SetAgentState,
    UpdateAgent,
    UsageGroup,
    UsageReport,
)
from contracts.budgets import Budget, SetWorkspaceBudget
from contracts.messages import Name
from gateway.body import JsonBodyRoute
from gateway.deps import CurrentPrincipal, Queries
from gateway.routes.common import PENDING, CommandResponse, DateTime, ResourceId, Send, segment

router = APIRouter(tags=["agents"], route_class=JsonBodyRoute)
AGENT_ID = segment("agent_id", not_one_of=["availability"])  # /agents/availability is not an agent
IdFilter = Annotated[str | None, Query(pattern=r"^[A-Za-z0-9_-]{1,64}$")]


class AgentList(BaseModel):
    items: list[AgentView]


class AvailabilityList(BaseModel):
    items: list[AgentAvailability]


class StateChange(BaseModel):
    """``paused`` takes the agent out of service (it gets no new task; tasks in flight finish); ``active`` puts it
    back. Availability (available, busy, offline) is derived by the runtime, never set by hand."""

    model_config = ConfigDict(extra="forbid")

    status: AgentState


class WorkspaceBudget(BaseModel):
    model_config = ConfigDict(extra="forbid")

    budget: Budget | None = Field(description="The monthly cap on model usage; null removes it.")


@router.post("/agents", response_model=CommandResponse, status_code=201, summary="Create an agent", responses=PENDING)
async def create_agent(spec: AgentSpec, send: Send) -> CommandResponse:
    agent_id = f"agt_{send.command_id[:24]}"
    return await send(RegisterAgent(agent_id=agent_id, spec=spec), created=f"/api/v1/agents/{agent_id}")


@router.get("/agents/availability", response_model=AvailabilityList, summary="Which agents are available?")
async def availability(
    principal: CurrentPrincipal,
    queries: Queries,
    role: Annotated[Name | None, Query()] = None,
    capability: Annotated[Capability | None, Query()] = None,
) -> AvailabilityList:
    items = await queries.ask(principal, GetAvailability(role=role, capability=capability))
    return AvailabilityList.model_validate({"items": items})


@router.get(f"/agents/{AGENT_ID}", response_model=AgentView, summary="Get an agent, with its availability")
async def get_agent(agent_id: ResourceId, principal: CurrentPrincipal, queries: Queries) -> Any:
    return await queries.ask(principal, GetAgent(agent_id=agent_id))


@router.get("/agents", response_model=AgentList, summary="List agents, by role, capability and status")
async def list_agents(
    principal: CurrentPrincipal,
    queries: Queries,
    status: AgentStatus | None = None,
    role: Annotated[Name | None, Query()] = None,
    capability: Annotated[Capability | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> AgentList:
    items = await queries.ask(principal, ListAgents(status=status, role=role, capability=capability, limit=limit))
    return AgentList.model_validate({"items": items})


@router.put(
    f"/agents/{AGENT_ID}",
    response_model=CommandResponse,
    summary="Replace an agent's spec (a new version; tasks in flight keep theirs)",
    responses=PENDING,
)
async def update_agent(agent_id: ResourceId, spec: AgentSpec, send: Send) -> CommandResponse:
    return await send(UpdateAgent(agent_id=agent_id, spec=spec))


@router.post(
    f"/agents/{AGENT_ID}/retire",
    response_model=CommandResponse,
    summary="Retire an agent (no new tasks; its history stays readable)",
    responses=PENDING,
)
async def retire_agent(agent_id: ResourceId, send: Send) -> CommandResponse:
    return await send(RetireAgent(agent_id=agent_id))


@router.post(
    f"/agents/{AGENT_ID}/status",
    response_model=CommandResponse,
    summary="Take an agent out of service (paused) or back (active)",
    responses=PENDING,
)
async def change_agent_state(agent_id: ResourceId, change: StateChange, send: Send) -> CommandResponse:
    return await send(SetAgentState(agent_id=agent_id, state=change.status))


@router.get("/usage", response_model=UsageReport, summary="Model usage and cost: by period, agent or execution")
async def usage(
    principal: CurrentPrincipal,
    queries: Queries,
    since: DateTime | None = None,
    until: DateTime | None = None,
    agent_id: IdFilter = None,
    execution_id: IdFilter = None,
    group_by: UsageGroup | None = None,
) -> Any:
    query = GetUsage(since=since, until=until, agent_id=agent_id, execution_id=execution_id, group_by=group_by)
    return await queries.ask(principal, query)


@router.put(
    "/workspace/budget",
    response_model=CommandResponse,
    summary="Set the workspace's monthly cap on model usage (tokens and/or USD)",
    responses=PENDING,
)
async def set_workspace_budget(body: WorkspaceBudget, send: Send) -> CommandResponse:
    return await send(SetWorkspaceBudget(budget=body.budget))
