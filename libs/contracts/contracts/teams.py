"""Team commands, events and queries (owned by the orchestrator).

A team is agents of the workspace with a role in the team, exactly one of them its lead; an agent may be in
several teams. Team templates (Sales, Marketing, Support, Operations) create a team and its agents in one call.
"""

from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from contracts.agents import Capability, ModelSetting
from contracts.budgets import Budget
from contracts.messages import Boolean, Command, Event, Id, Integer, Name, Query
from contracts.registry import REGISTRY

Slug = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9-]{0,39}$")]
MAX_MEMBERS = 20


class Department(StrEnum):
    SALES = "sales"
    MARKETING = "marketing"
    SUPPORT = "support"
    OPERATIONS = "operations"
    OTHER = "other"


class TeamMember(BaseModel):
    """An agent of the workspace in the team, with its role there."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    agent_id: Id
    role: Name
    lead: Boolean = False


def _one_lead(members: list[TeamMember]) -> list[TeamMember]:
    if len({m.agent_id for m in members}) != len(members):
        raise ValueError("an agent is in a team once")
    if sum(m.lead for m in members) != 1:
        raise ValueError("a team has exactly one lead (`lead: true` on one member)")
    return members


class TeamSpec(BaseModel):
    """What a caller supplies to create a team by hand."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: Name
    department: Department = Department.OTHER
    description: str = Field(default="", max_length=2000)
    members: list[TeamMember] = Field(min_length=1, max_length=MAX_MEMBERS)

    @model_validator(mode="after")
    def _lead(self) -> "TeamSpec":
        _one_lead(self.members)
        return self


class TeamDetails(BaseModel):
    """What an update of a team may change (its members change one by one)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: Name
    department: Department = Department.OTHER
    description: str = Field(default="", max_length=2000)


class TemplateMember(BaseModel):
    """A member a team template creates: an agent written for the role."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    key: Slug = Field(description="The member's key in the template, used to rename, drop or configure it.")
    name: Name
    role: Name
    instructions: str = Field(default="", max_length=20_000)
    capabilities: list[Capability] = Field(default_factory=list, max_length=50)
    lead: Boolean = False
    model: ModelSetting = Field(default_factory=ModelSetting)
    budget: Budget | None = None


class MemberChange(BaseModel):
    """How a team created from a template changes one of its members."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: Name | None = None
    model: ModelSetting | None = None
    budget: Budget | None = None


class TeamFromTemplate(BaseModel):
    """Create a team and its agents from a department template in one call: rename it, drop members by key,
    change members (name, model, budget), add members of your own."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    template: Slug
    name: Name | None = None
    drop: list[Slug] = Field(default_factory=list, max_length=MAX_MEMBERS)
    change: dict[str, MemberChange] = Field(
        default_factory=dict, description="By member key: how to change that member (each key a template member's)."
    )
    add: list[TemplateMember] = Field(default_factory=list, max_length=MAX_MEMBERS)
    model: ModelSetting | None = Field(default=None, description="The model of every member not changed one by one.")


@REGISTRY.register
class CreateTeam(Command):
    """Create a team of existing agents of the workspace."""

    service = "orchestrator"
    team_id: Id
    spec: TeamSpec


@REGISTRY.register
class CreateTeamFromTemplate(Command):
    """Create a team and one new agent per member from a template."""

    service = "orchestrator"
    team_id: Id
    request: TeamFromTemplate


@REGISTRY.register
class UpdateTeam(Command):
    service = "orchestrator"
    team_id: Id
    details: TeamDetails


@REGISTRY.register
class ArchiveTeam(Command):
    service = "orchestrator"
    team_id: Id


@REGISTRY.register
class AddTeamMember(Command):
    """Add an agent of the workspace to the team (as its new lead when ``lead``: the old lead stays a member)."""

    service = "orchestrator"
    team_id: Id
    member: TeamMember


@REGISTRY.register
class RemoveTeamMember(Command):
    """Remove a member (not the lead: make another member the lead first)."""

    service = "orchestrator"
    team_id: Id
    agent_id: Id


@REGISTRY.register
class TeamCreated(Event):
    aggregate = "team"
    team_id: str
    spec: TeamSpec
    template: str | None = None


@REGISTRY.register
class TeamUpdated(Event):
    aggregate = "team"
    team_id: str
    details: TeamDetails


@REGISTRY.register
class TeamArchived(Event):
    aggregate = "team"
    team_id: str


@REGISTRY.register
class TeamMemberAdded(Event):
    aggregate = "team"
    team_id: str
    member: TeamMember


@REGISTRY.register
class TeamMemberRemoved(Event):
    aggregate = "team"
    team_id: str
    agent_id: str


class TeamView(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    team_id: str
    workspace_id: str
    name: str
    department: Department
    description: str
    members: list[TeamMember]
    lead: str
    template: str | None
    archived: bool
    version: int
    created_at: str
    updated_at: str


class TeamTemplate(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    slug: Slug
    name: str
    department: Department
    description: str
    members: list[TemplateMember]


@REGISTRY.register
class GetTeam(Query):
    service = "orchestrator"
    team_id: Id


@REGISTRY.register
class ListTeams(Query):
    service = "orchestrator"
    department: Department | None = None
    include_archived: Boolean = False
    limit: Integer = Field(default=100, ge=1, le=500)


@REGISTRY.register
class GetTeamStatus(Query):
    """The team's members with their availability and in-flight tasks, and its model usage this month."""

    service = "orchestrator"
    team_id: Id


@REGISTRY.register
class ListTeamTemplates(Query):
    service = "orchestrator"
