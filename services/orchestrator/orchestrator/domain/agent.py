"""The agent aggregate: state, decide and evolve. Pure: no I/O, the clock is not needed."""

from dataclasses import dataclass, replace

from contracts import ErrorCode, Event
from contracts.agents import (
    AgentRegistered,
    AgentSpec,
    AgentStatus,
    AgentStatusChanged,
    ChangeAgentStatus,
    RegisterAgent,
)
from contracts.errors import DomainError

AGGREGATE = "agent"


class AgentNotFound(DomainError):
    code = ErrorCode.AGENT_NOT_FOUND


class AgentAlreadyExists(DomainError):
    code = ErrorCode.CONFLICT


class InvalidTransition(DomainError):
    code = ErrorCode.INVALID_TRANSITION


@dataclass(frozen=True, slots=True)
class Agent:
    agent_id: str = ""
    spec: AgentSpec | None = None
    status: AgentStatus = AgentStatus.AVAILABLE

    @property
    def exists(self) -> bool:
        return self.spec is not None


def evolve(state: Agent, event: Event) -> Agent:
    match event:
        case AgentRegistered(agent_id=agent_id, spec=spec):
            return Agent(agent_id=agent_id, spec=spec, status=AgentStatus.AVAILABLE)
        case AgentStatusChanged(status=status):
            return replace(state, status=status)
    return state


def decide_register(state: Agent, command: RegisterAgent) -> list[Event]:
    if state.exists:
        raise AgentAlreadyExists(f"agent {command.agent_id} already exists")
    return [AgentRegistered(agent_id=command.agent_id, spec=command.spec)]


def decide_status(state: Agent, command: ChangeAgentStatus) -> list[Event]:
    if not state.exists:
        raise AgentNotFound(f"agent {command.agent_id} not found")
    if state.status == command.status:
        raise InvalidTransition(f"agent {command.agent_id} is already {command.status.value}")
    return [AgentStatusChanged(agent_id=command.agent_id, previous=state.status, status=command.status)]
