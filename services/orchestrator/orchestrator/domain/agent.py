"""The agent aggregate: state, decide and evolve. Pure: no I/O, the clock is not needed."""

from dataclasses import dataclass, replace

from contracts import ErrorCode, Event
from contracts.agents import (
    AgentPaused,
    AgentRegistered,
    AgentResumed,
    AgentRetired,
    AgentSpec,
    AgentState,
    AgentStatus,
    AgentStatusChanged,
    AgentUpdated,
    RegisterAgent,
    RetireAgent,
    SetAgentState,
    UpdateAgent,
)
from contracts.errors import DomainError

AGGREGATE = "agent"


class AgentNotFound(DomainError):
    code = ErrorCode.AGENT_NOT_FOUND


class AgentAlreadyExists(DomainError):
    code = ErrorCode.CONFLICT


class AgentRetiredError(DomainError):
    code = ErrorCode.AGENT_RETIRED


class InvalidTransition(DomainError):
    code = ErrorCode.INVALID_TRANSITION


@dataclass(frozen=True, slots=True)
class Agent:
    agent_id: str = ""
    spec: AgentSpec | None = None
    spec_version: int = 0
    state: AgentState = AgentState.ACTIVE
    retired: bool = False

    @property
    def exists(self) -> bool:
        return self.spec is not None


def evolve(state: Agent, event: Event) -> Agent:
    match event:
        case AgentRegistered(agent_id=agent_id, spec=spec):
            return Agent(agent_id=agent_id, spec=spec, spec_version=1)
        case AgentUpdated(spec=spec, spec_version=spec_version):
            return replace(state, spec=spec, spec_version=spec_version)
        case AgentPaused():
            return replace(state, state=AgentState.PAUSED)
        case AgentResumed():
            return replace(state, state=AgentState.ACTIVE)
        case AgentRetired():
            return replace(state, retired=True)
        case AgentStatusChanged(status=status):  # stored before availability was derived
            return replace(state, state=AgentState.PAUSED if status is AgentStatus.OFFLINE else AgentState.ACTIVE)
    return state


def _live(state: Agent, agent_id: str) -> AgentSpec:
    if state.spec is None:
        raise AgentNotFound(f"agent {agent_id} not found")
    if state.retired:
        raise AgentRetiredError(f"agent {agent_id} is retired")
    return state.spec


def decide_register(state: Agent, command: RegisterAgent) -> list[Event]:
    if state.exists:
        raise AgentAlreadyExists(f"agent {command.agent_id} already exists")
    return [AgentRegistered(agent_id=command.agent_id, spec=command.spec)]


def decide_update(state: Agent, command: UpdateAgent) -> list[Event]:
    if _live(state, command.agent_id) == command.spec:
        return []
    return [AgentUpdated(agent_id=command.agent_id, spec=command.spec, spec_version=state.spec_version + 1)]


def decide_retire(state: Agent, command: RetireAgent) -> list[Event]:
    _live(state, command.agent_id)
    return [AgentRetired(agent_id=command.agent_id)]


def decide_state(state: Agent, command: SetAgentState) -> list[Event]:
    _live(state, command.agent_id)
    if state.state == command.state:
        raise InvalidTransition(f"agent {command.agent_id} is already {command.state.value}")
    if command.state is AgentState.PAUSED:
        return [AgentPaused(agent_id=command.agent_id)]
    return [AgentResumed(agent_id=command.agent_id)]
