"""Team runs and coordinations: run a team (or several) on an objective, follow the run, cancel it."""

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from contracts import EventRecord
from contracts.memory import ListMemory, Scope, ScopeKind, Tier
from contracts.messages import Id
from contracts.public_events import PublicEventMessage
from contracts.team_runs import (
    MAX_TEAMS,
    PUBLIC_RUN_EVENTS,
    RUN_STREAM_ENDS,
    CancelTeamRun,
    GetTeamRun,
    ListTeamRuns,
    RunRequest,
    RunTeam,
    TeamRunLine,
    TeamRunStatus,
    TeamRunView,
)
from gateway.body import JsonBodyRoute
from gateway.deps import BusDep, CurrentPrincipal, Queries
from gateway.queries import QueryClient
from gateway.routes.common import PENDING, CommandResponse, ResourceId, Send
from gateway.sse import LastEventId, event_stream
from gateway.workspaces import Principal

router = APIRouter(tags=["team runs"], route_class=JsonBodyRoute)
RunPath = Annotated[str, Path(min_length=1, max_length=40, pattern=r"^[A-Za-z0-9_]+$")]


class RunList(BaseModel):
    items: list[TeamRunLine]


class CoordinationCreate(RunRequest):
    """A run across the members of several teams, planned by the first team's lead."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    team_ids: list[Id] = Field(min_length=2, max_length=MAX_TEAMS, description="The teams; the first one leads.")


class CancelRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field(default="", max_length=2000)


def _run_id(send: Send) -> str:
    return f"run_{send.command_id[:24]}"


def public_run_event(record: EventRecord) -> PublicEventMessage | None:
    """A run's event as its live stream sends it: the public type and the event's own fields."""
    public = PUBLIC_RUN_EVENTS.get(record.type)
    if public is None:
        return None
    return PublicEventMessage(version=record.version, type=public, data=record.data)


async def _view(principal: Principal, queries: QueryClient, run_id: str) -> Any:
    view = await queries.ask(principal, GetTeamRun(run_id=run_id))  # 404 unless it is the caller's
    scope = Scope(kind=ScopeKind.TEAM_RUN, id=run_id)
    entries = await queries.ask(principal, ListMemory(tier=Tier.WORKING, scope=scope, limit=500))
    view["shared_context"] = sorted({str(entry["key"]) for entry in entries})
    return view


@router.post(
    "/teams/{team_id}/runs",
    response_model=CommandResponse,
    status_code=201,
    summary="Run a team on an objective: its lead plans, its members work, the lead summarises",
    responses=PENDING,
)
async def run_team(team_id: ResourceId, body: RunRequest, send: Send) -> CommandResponse:
    run_id = _run_id(send)
    command = RunTeam(run_id=run_id, team_ids=[team_id], request=body)
    return await send(command, created=f"/api/v1/team-runs/{run_id}")


@router.get("/teams/{team_id}/runs", response_model=RunList, summary="A team's runs, newest first")
async def list_team_runs(
    team_id: ResourceId,
    principal: CurrentPrincipal,
    queries: Queries,
    status: TeamRunStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> RunList:
    query = ListTeamRuns(team_id=team_id, status=status, limit=limit)
    return RunList.model_validate({"items": await queries.ask(principal, query)})


@router.get(
    "/team-runs/{run_id}",
    response_model=TeamRunView,
    summary="A run: its plan and each step's member, input, output and timings, handoffs, shared context keys, "
    "usage and summary",
)
async def get_team_run(run_id: RunPath, principal: CurrentPrincipal, queries: Queries) -> Any:
    return await _view(principal, queries, run_id)


@router.post(
    "/team-runs/{run_id}/cancel",
    response_model=CommandResponse,
    summary="Cancel a run (the execution it is running is cancelled with it)",
    responses=PENDING,
)
async def cancel_team_run(run_id: RunPath, body: CancelRequest, send: Send) -> CommandResponse:
    return await send(CancelTeamRun(run_id=run_id, reason=body.reason))


@router.get(
    "/team-runs/{run_id}/events",
    summary="Follow a run live (Server-Sent Events)",
    description="Every event of the run from its start (or after `Last-Event-ID`), then live until it ends. Each "
    "SSE has the event's version as `id`, its public type as `event` and `data` a JSON object `{version, type, "
    "data}`. The types: " + ", ".join(sorted(set(PUBLIC_RUN_EVENTS.values()))) + ".",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def team_run_events(
    run_id: RunPath,
    request: Request,
    principal: CurrentPrincipal,
    queries: Queries,
    bus: BusDep,
    last_event_id: LastEventId = None,
) -> StreamingResponse:
    await queries.ask(principal, GetTeamRun(run_id=run_id))  # 404 unless it is the caller's
    subject = bus.subjects.event("team_run", principal.workspace_id, run_id, "*")
    return await event_stream(request, bus, subject, last_event_id, public_run_event, RUN_STREAM_ENDS)


@router.post(
    "/coordinations",
    response_model=CommandResponse,
    status_code=201,
    summary="Coordinate several teams on one objective: one plan across their members",
    responses=PENDING,
)
async def coordinate(body: CoordinationCreate, send: Send) -> CommandResponse:
    run_id = _run_id(send)
    request = RunRequest.model_validate(body.model_dump(exclude={"team_ids"}))
    command = RunTeam(run_id=run_id, team_ids=list(body.team_ids), request=request, kind="coordination")
    return await send(command, created=f"/api/v1/coordinations/{run_id}")


@router.get("/coordinations", response_model=RunList, summary="The coordinations, newest first")
async def list_coordinations(
    principal: CurrentPrincipal,
    queries: Queries,
    status: TeamRunStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> RunList:
    query = ListTeamRuns(kind="coordination", status=status, limit=limit)
    return RunList.model_validate({"items": await queries.ask(principal, query)})


@router.get("/coordinations/{run_id}", response_model=TeamRunView, summary="A coordination (a run of several teams)")
async def get_coordination(run_id: RunPath, principal: CurrentPrincipal, queries: Queries) -> Any:
    return await _view(principal, queries, run_id)
