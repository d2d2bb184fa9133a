"""The team aggregate: state, decide and evolve. Pure: which agents exist is passed in by the handler."""

from collections.abc import Mapping
from dataclasses import dataclass, replace

from contracts import ErrorCode, Event
from contracts.errors import DomainError
from contracts.teams import (
    AddTeamMember,
    ArchiveTeam,
    CreateTeam,
    RemoveTeamMember,
    TeamArchived,
    TeamCreated,
    TeamDetails,
    TeamMember,
    TeamMemberAdded,
    TeamMemberRemoved,
    TeamSpec,
    TeamUpdated,
    UpdateTeam,
)

AGGREGATE = "team"


class TeamNotFound(DomainError):
    code = ErrorCode.TEAM_NOT_FOUND


class TeamIsArchived(DomainError):
    code = ErrorCode.TEAM_ARCHIVED


class UnknownMember(DomainError):
    code = ErrorCode.UNKNOWN_MEMBER


class InvalidTeam(DomainError):
    code = ErrorCode.INVALID_TEAM


@dataclass(frozen=True, slots=True)
class Team:
    team_id: str = ""
    details: TeamDetails | None = None
    members: tuple[TeamMember, ...] = ()
    template: str | None = None
    archived: bool = False

    @property
    def exists(self) -> bool:
        return self.details is not None

    @property
    def lead(self) -> str | None:
        return next((m.agent_id for m in self.members if m.lead), None)


Agents = Mapping[str, bool]
"""The workspace's agents that the decision may name, by id: True when retired."""


def evolve(state: Team, event: Event) -> Team:
    match event:
        case TeamCreated(team_id=team_id, spec=spec, template=template):
            details = TeamDetails(name=spec.name, department=spec.department, description=spec.description)
            return Team(team_id=team_id, details=details, members=tuple(spec.members), template=template)
        case TeamUpdated(details=details):
            return replace(state, details=details)
        case TeamArchived():
            return replace(state, archived=True)
        case TeamMemberAdded(member=member):
            kept = tuple(m.model_copy(update={"lead": False}) if member.lead else m for m in state.members)
            return replace(state, members=(*kept, member))
        case TeamMemberRemoved(agent_id=agent_id):
            return replace(state, members=tuple(m for m in state.members if m.agent_id != agent_id))
    return state


def _check_agent(agent_id: str, agents: Agents) -> None:
    if agent_id not in agents:
        raise UnknownMember(f"{agent_id} is not an agent of the workspace")
    if agents[agent_id]:
        raise UnknownMember(f"agent {agent_id} is retired")


def _live(state: Team, team_id: str) -> Team:
    if not state.exists:
        raise TeamNotFound(f"team {team_id} not found")
    if state.archived:
        raise TeamIsArchived(f"team {team_id} is archived")
    return state


def decide_create(state: Team, command: CreateTeam, agents: Agents, template: str | None = None) -> list[Event]:
    if state.exists:
        raise InvalidTeam(f"team {command.team_id} already exists", code=ErrorCode.CONFLICT)
    for member in command.spec.members:
        _check_agent(member.agent_id, agents)
    return [TeamCreated(team_id=command.team_id, spec=command.spec, template=template)]


def decide_update(state: Team, command: UpdateTeam) -> list[Event]:
    if _live(state, command.team_id).details == command.details:
        return []
    return [TeamUpdated(team_id=command.team_id, details=command.details)]


def decide_archive(state: Team, command: ArchiveTeam) -> list[Event]:
    _live(state, command.team_id)
    return [TeamArchived(team_id=command.team_id)]


def decide_add(state: Team, command: AddTeamMember, agents: Agents) -> list[Event]:
    _live(state, command.team_id)
    _check_agent(command.member.agent_id, agents)
    if any(m.agent_id == command.member.agent_id for m in state.members):
        raise InvalidTeam(f"agent {command.member.agent_id} is a member already", code=ErrorCode.CONFLICT)
    if len(state.members) >= 20:
        raise InvalidTeam("a team has at most 20 members")
    return [TeamMemberAdded(team_id=command.team_id, member=command.member)]


def decide_remove(state: Team, command: RemoveTeamMember) -> list[Event]:
    _live(state, command.team_id)
    if not any(m.agent_id == command.agent_id for m in state.members):
        raise UnknownMember(f"agent {command.agent_id} is not a member of the team", code=ErrorCode.NOT_FOUND)
    if state.lead == command.agent_id:
        raise InvalidTeam("the lead cannot leave: add another member as the lead first", code=ErrorCode.CONFLICT)
    return [TeamMemberRemoved(team_id=command.team_id, agent_id=command.agent_id)]


def spec_of(state: Team) -> TeamSpec:
    assert state.details is not None
    return TeamSpec(**state.details.model_dump(), members=list(state.members))
