"""Agent commands, events and queries (owned by the orchestrator)."""

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from contracts.budgets import Budget, UsageTotals
from contracts.messages import Command, Event, Id, Integer, Label, Name, Number, Query
from contracts.registry import REGISTRY

Capability = Label
ModelName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,119}$")]
LOCAL_MODEL = "local-deterministic"


class AgentStatus(StrEnum):
    """An agent's availability, derived by the runtime (never set by hand): ``available`` below its concurrency
    limit, ``busy`` at it, ``offline`` when no runtime worker is alive, ``paused`` when a person took it out of
    service, ``retired`` for good."""

    AVAILABLE = "available"
    BUSY = "busy"
    OFFLINE = "offline"
    PAUSED = "paused"
    RETIRED = "retired"


class AgentState(StrEnum):
    """What a person decides: an agent in service (``active``) or taken out of it (``paused``: it gets no new task)."""

    ACTIVE = "active"
    PAUSED = "paused"


class ModelSetting(BaseModel):
    """Which model runs the agent. ``local`` is a deterministic, offline stand-in for a model, not a model (it lets
    the platform run with no network); ``openai`` is any OpenAI-compatible endpoint (OPENAI_BASE_URL, OPENAI_API_KEY);
    ``auto`` (the default) is ``openai`` with OPENAI_MODEL when the runtime has an endpoint configured, else
    ``local``. ``model`` left out is the provider's default model."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    provider: Literal["auto", "local", "openai"] = "auto"
    model: ModelName | None = None
    temperature: Number = Field(default=0.2, ge=0.0, le=2.0)
    max_output_tokens: Integer = Field(default=1024, ge=1, le=32_768)

    @model_validator(mode="after")
    def _known_model(self) -> "ModelSetting":
        if self.provider == "local" and self.model not in {None, LOCAL_MODEL}:
            raise ValueError(f"the local provider has one model, {LOCAL_MODEL!r}")
        return self


class AgentSpec(BaseModel):
    """What a caller supplies to create (or, whole, to update) an agent."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: Name
    role: Name
    instructions: str = Field(default="", max_length=20_000)
    capabilities: list[Capability] = Field(default_factory=list, max_length=50)
    model: ModelSetting = Field(default_factory=ModelSetting)
    concurrency_limit: Integer = Field(default=4, ge=1, le=100, description="Tasks the agent works on at once.")
    budget: Budget | None = Field(default=None, description="A hard limit on each task of this agent.")


def can_take(spec: AgentSpec, role: str | None, capability: str | None) -> bool:
    """Whether an agent may be routed a task asking for ``role`` and/or ``capability`` (either matches, case aside)."""
    return (role is not None and spec.role.casefold() == role.casefold()) or (
        capability is not None and capability.casefold() in {c.casefold() for c in spec.capabilities}
    )


def fits(spec: AgentSpec, role: str | None, capability: str | None) -> bool:
    """Whether an agent is what a step asks for: its role and its capability (each where given). Staffing creates an
    agent for a step that no agent fits; routing prefers agents that fit to those that only ``can_take`` it."""
    return (role is None or spec.role.casefold() == role.casefold()) and (
        capability is None or capability.casefold() in {c.casefold() for c in spec.capabilities}
    )


@REGISTRY.register
class RegisterAgent(Command):
    """Create an agent in the workspace."""

    service = "orchestrator"
    agent_id: Id
    spec: AgentSpec


@REGISTRY.register
class UpdateAgent(Command):
    """Replace an agent's spec: a new version. Tasks in flight keep the version they started with."""

    service = "orchestrator"
    agent_id: Id
    spec: AgentSpec


@REGISTRY.register
class RetireAgent(Command):
    """Retire an agent for good: it gets no new task; its history stays readable."""

    service = "orchestrator"
    agent_id: Id


@REGISTRY.register
class SetAgentState(Command):
    """A person takes an agent out of service (``paused``) or back (``active``)."""

    service = "orchestrator"
    agent_id: Id
    state: AgentState


class StaffNeed(BaseModel):
    """An agent a workflow needs: by role and/or capability."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    role: Name | None = None
    capability: Capability | None = None


@REGISTRY.register
class StaffAgents(Command):
    """Create, for each need that no agent of the workspace meets, an agent written for the role."""

    service = "orchestrator"
    needs: list[StaffNeed] = Field(max_length=100)


@REGISTRY.register
class AgentRegistered(Event):
    aggregate = "agent"
    agent_id: str
    spec: AgentSpec


@REGISTRY.register
class AgentUpdated(Event):
    aggregate = "agent"
    agent_id: str
    spec: AgentSpec
    spec_version: int


@REGISTRY.register
class AgentRetired(Event):
    aggregate = "agent"
    agent_id: str


@REGISTRY.register
class AgentPaused(Event):
    aggregate = "agent"
    agent_id: str


@REGISTRY.register
class AgentResumed(Event):
    aggregate = "agent"
    agent_id: str


@REGISTRY.register
class AgentStatusChanged(Event):
    """Stored by earlier versions, when availability was set by hand; replayed as paused (offline) or active."""

    aggregate = "agent"
    agent_id: str
    previous: AgentStatus
    status: AgentStatus


class AgentView(BaseModel):
    """The read model of an agent, with its availability as the runtime sees it now."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    agent_id: str
    workspace_id: str
    name: str
    role: str
    instructions: str
    capabilities: list[str]
    model: ModelSetting
    concurrency_limit: int
    budget: Budget | None
    state: AgentState
    retired: bool
    spec_version: int
    status: AgentStatus
    in_flight: int
    version: int
    created_at: str
    updated_at: str


class AgentAvailability(BaseModel):
    """One agent's answer to "which agents are available?"."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    agent_id: str
    name: str
    role: str
    capabilities: list[str]
    status: AgentStatus
    in_flight: int
    limit: int


@REGISTRY.register
class GetAgent(Query):
    service = "orchestrator"
    agent_id: Id


@REGISTRY.register
class ListAgents(Query):
    service = "orchestrator"
    status: AgentStatus | None = None
    role: Name | None = None
    capability: Capability | None = None
    limit: Integer = Field(default=100, ge=1, le=500)


@REGISTRY.register
class GetAvailability(Query):
    """Every agent not retired, with its status, in-flight tasks and limit; by role and/or capability."""

    service = "orchestrator"
    role: Name | None = None
    capability: Capability | None = None


class UsageGroup(StrEnum):
    TASK = "task"
    AGENT = "agent"
    EXECUTION = "execution"
    MODEL = "model"
    DAY = "day"


@REGISTRY.register
class GetUsage(Query):
    """Model usage summed over ``[since, until)``, optionally for one agent or execution, grouped by ``group_by``."""

    service = "orchestrator"
    since: datetime | None = None
    until: datetime | None = None
    agent_id: Id | None = None
    execution_id: Id | None = None
    group_by: UsageGroup | None = None


class UsageReport(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    since: datetime | None
    until: datetime | None
    total: UsageTotals
    groups: dict[str, UsageTotals] = Field(default_factory=dict)
    budget: dict[str, Any] | None = Field(default=None, description="The workspace's monthly cap and what is left.")
