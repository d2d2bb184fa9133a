"""Teams: create (by hand or from a department template, with its agents), read, list, update, archive, members,
status; the team templates."""

from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field, model_validator

from contracts.team_runs import TeamRunLine
from contracts.teams import (
    AddTeamMember,
    ArchiveTeam,
    CreateTeam,
    CreateTeamFromTemplate,
    Department,
    GetTeam,
    GetTeamStatus,
    ListTeams,
    ListTeamTemplates,
    RemoveTeamMember,
    TeamDetails,
    TeamFromTemplate,
    TeamMember,
    TeamSpec,
    TeamTemplate,
    TeamView,
    UpdateTeam,
)
from gateway.body import JsonBodyRoute
from gateway.deps import CurrentPrincipal, Queries
from gateway.routes.common import PENDING, CommandResponse, ResourceId, Send

router = APIRouter(tags=["teams"], route_class=JsonBodyRoute)


class TeamCreate(BaseModel):
    """Exactly one of: ``spec`` (a team of existing agents) or ``from_template`` (a team and its new agents)."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"oneOf": [{"required": ["spec"]}, {"required": ["from_template"]}]}
    )

    spec: TeamSpec | None = None
    from_template: TeamFromTemplate | None = None

    @model_validator(mode="after")
    def _one(self) -> "TeamCreate":
        if (self.spec is None) == (self.from_template is None):
            raise ValueError("give exactly one of 'spec' and 'from_template'")
        return self


class TeamList(BaseModel):
    items: list[TeamView]


class TemplateList(BaseModel):
    items: list[TeamTemplate]


class MemberStatus(BaseModel):
    agent_id: str
    role: str
    lead: bool
    name: str | None
    status: str
    in_flight: int
    limit: int


class TeamStatus(BaseModel):
    team: TeamView
    members: list[MemberStatus]
    active_runs: list[TeamRunLine]
    recent_runs: list[TeamRunLine] = Field(description="The latest ended runs.")
    usage_this_month: dict[str, Any]


@router.post("/teams", response_model=CommandResponse, status_code=201, summary="Create a team", responses=PENDING)
async def create_team(body: TeamCreate, send: Send) -> CommandResponse:
    team_id = f"team_{send.command_id[:24]}"
    command: CreateTeam | CreateTeamFromTemplate
    if body.spec is not None:
        command = CreateTeam(team_id=team_id, spec=body.spec)
    else:
        assert body.from_template is not None
        command = CreateTeamFromTemplate(team_id=team_id, request=body.from_template)
    return await send(command, created=f"/api/v1/teams/{team_id}")


@router.get("/teams", response_model=TeamList, summary="List teams, by department")
async def list_teams(
    principal: CurrentPrincipal,
    queries: Queries,
    department: Department | None = None,
    include_archived: bool = False,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> TeamList:
    query = ListTeams(department=department, include_archived=include_archived, limit=limit)
    return TeamList.model_validate({"items": await queries.ask(principal, query)})


@router.get("/team-templates", response_model=TemplateList, summary="The department team templates")
async def list_team_templates(principal: CurrentPrincipal, queries: Queries) -> TemplateList:
    return TemplateList.model_validate({"items": await queries.ask(principal, ListTeamTemplates())})


@router.get("/teams/{team_id}", response_model=TeamView, summary="Get a team")
async def get_team(team_id: ResourceId, principal: CurrentPrincipal, queries: Queries) -> Any:
    return await queries.ask(principal, GetTeam(team_id=team_id))


@router.get(
    "/teams/{team_id}/status",
    response_model=TeamStatus,
    summary="A team's members with their availability and tasks in flight, and its usage this month",
)
async def team_status(team_id: ResourceId, principal: CurrentPrincipal, queries: Queries) -> Any:
    return await queries.ask(principal, GetTeamStatus(team_id=team_id))


@router.put(
    "/teams/{team_id}", response_model=CommandResponse, summary="Rename or redescribe a team", responses=PENDING
)
async def update_team(team_id: ResourceId, details: TeamDetails, send: Send) -> CommandResponse:
    return await send(UpdateTeam(team_id=team_id, details=details))


@router.post("/teams/{team_id}/archive", response_model=CommandResponse, summary="Archive a team", responses=PENDING)
async def archive_team(team_id: ResourceId, send: Send) -> CommandResponse:
    return await send(ArchiveTeam(team_id=team_id))


@router.post(
    "/teams/{team_id}/members",
    response_model=CommandResponse,
    summary="Add an agent of the workspace to a team (lead true: it becomes the lead)",
    responses=PENDING,
)
async def add_member(team_id: ResourceId, member: TeamMember, send: Send) -> CommandResponse:
    return await send(AddTeamMember(team_id=team_id, member=member))


@router.delete(
    "/teams/{team_id}/members/{agent_id}",
    response_model=CommandResponse,
    summary="Remove a member (not the lead)",
    responses=PENDING,
)
async def remove_member(team_id: ResourceId, agent_id: ResourceId, send: Send) -> CommandResponse:
    return await send(RemoveTeamMember(team_id=team_id, agent_id=agent_id))
