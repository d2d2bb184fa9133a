"""Delegations: a task to a named agent, or to the best available agent by capability/role and load; followed to
its result."""

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel

from contracts.delegations import (
    Delegate,
    DelegationLine,
    DelegationRequest,
    DelegationStatus,
    DelegationView,
    GetDelegation,
    ListDelegations,
)
from gateway.body import JsonBodyRoute
from gateway.deps import CurrentPrincipal, Queries
from gateway.routes.common import PENDING, CommandResponse, Send

router = APIRouter(tags=["delegations"], route_class=JsonBodyRoute)
DelegationPath = Annotated[str, Path(min_length=1, max_length=40, pattern=r"^[A-Za-z0-9_]+$")]
IdFilter = Annotated[str | None, Query(pattern=r"^[A-Za-z0-9_-]{1,64}$")]


class DelegationList(BaseModel):
    items: list[DelegationLine]


@router.post(
    "/delegations",
    response_model=CommandResponse,
    status_code=201,
    summary="Delegate a task to an agent, named or routed by capability/role to the least loaded free one",
    description="The answer's `resource_ids` name the delegation, the agent it went to and its execution. Refused "
    "with 409 `delegation_loop` when the target is the delegating agent or already in the chain, "
    "`delegation_too_deep` when the chain is at its depth limit, `agent_retired` for a retired agent and `no_agent` "
    "when no agent of the workspace has the capability/role, or every one that has is busy (`details` then say "
    '`{"reason": "busy"}`: routing never picks an agent at its concurrency limit; try later); 404 `agent_not_found` '
    "or `delegation_not_found` for an unknown agent or parent delegation.",
    responses=PENDING,
)
async def delegate(body: DelegationRequest, send: Send) -> CommandResponse:
    delegation_id = f"dg_{send.command_id[:24]}"
    command = Delegate(delegation_id=delegation_id, request=body)
    return await send(command, created=f"/api/v1/delegations/{delegation_id}")


@router.get("/delegations", response_model=DelegationList, summary="The workspace's delegations, newest first")
async def list_delegations(
    principal: CurrentPrincipal,
    queries: Queries,
    agent_id: Annotated[IdFilter, Query(description="Delegations to this agent or made by it.")] = None,
    status: DelegationStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> DelegationList:
    query = ListDelegations(agent_id=agent_id, status=status, limit=limit)
    return DelegationList.model_validate({"items": await queries.ask(principal, query)})


@router.get(
    "/delegations/{delegation_id}",
    response_model=DelegationView,
    summary="A delegation: its agent, chain and depth, execution, status, output or error, usage and timings",
)
async def get_delegation(delegation_id: DelegationPath, principal: CurrentPrincipal, queries: Queries) -> Any:
    return await queries.ask(principal, GetDelegation(delegation_id=delegation_id))  # 404 unless it is the caller's
