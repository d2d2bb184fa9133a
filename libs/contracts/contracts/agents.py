"""Agent commands, events and queries (owned by the orchestrator)."""

from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from contracts.messages import Command, Event, Id, Label, Name, Number, Query
from contracts.registry import REGISTRY

Capability = Label


class AgentStatus(StrEnum):
    AVAILABLE = "available"
    BUSY = "busy"
    OFFLINE = "offline"


class ModelSetting(BaseModel):
    """Which model provider runs the agent: ``local`` (deterministic, offline) or ``openai``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    provider: Literal["local", "openai"] = "local"
    model: str = Field(default="local-deterministic", min_length=1, max_length=120)
    temperature: Number = Field(default=0.2, ge=0.0, le=2.0)


class AgentSpec(BaseModel):
    """What a caller supplies to create an agent."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: Name
    role: Name
    instructions: str = Field(default="", max_length=20_000)
    capabilities: list[Capability] = Field(default_factory=list, max_length=50)
    model: ModelSetting = Field(default_factory=ModelSetting)


@REGISTRY.register
class RegisterAgent(Command):
    """Create an agent in the workspace."""

    service = "orchestrator"
    agent_id: Id
    spec: AgentSpec


@REGISTRY.register
class ChangeAgentStatus(Command):
    """Mark an agent available, busy or offline."""

    service = "orchestrator"
    agent_id: Id
    status: AgentStatus


@REGISTRY.register
class AgentRegistered(Event):
    aggregate = "agent"
    agent_id: str
    spec: AgentSpec


@REGISTRY.register
class AgentStatusChanged(Event):
    aggregate = "agent"
    agent_id: str
    previous: AgentStatus
    status: AgentStatus


class AgentView(BaseModel):
    """The read model of an agent, served by the orchestrator's projection."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    agent_id: str
    workspace_id: str
    name: str
    role: str
    instructions: str
    capabilities: list[str]
    model: ModelSetting
    status: AgentStatus
    version: int
    created_at: str
    updated_at: str


@REGISTRY.register
class GetAgent(Query):
    service = "orchestrator"
    agent_id: Id


@REGISTRY.register
class ListAgents(Query):
    service = "orchestrator"
    status: AgentStatus | None = None
    limit: int = Field(default=100, ge=1, le=500)
