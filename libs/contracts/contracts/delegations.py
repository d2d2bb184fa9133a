"""Delegations (owned by the orchestrator): a task handed to one agent, named or routed by capability and load.

A delegation runs as a one-step execution of the workflow engine (``dg-<delegation id>``, its origin the
delegation), so it gets the engine's timeout, retry and budget. An agent that delegates while it works on a
delegation names that one as the parent: the chain of agents is the parent's chain and the parent's agent. A chain
is bounded: a target already in it (A -> B -> A, or an agent delegating to itself) is a ``delegation_loop``, and a
chain longer than the orchestrator's ``delegation_max_depth`` agents is ``delegation_too_deep``; both are refused
before any model is called.
"""

from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator

from contracts.budgets import Budget
from contracts.messages import NOT_BLANK, Command, Event, Id, Integer, Label, Query
from contracts.outputs import check_output_schema
from contracts.registry import REGISTRY

DelegationId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_]{1,40}$")]
"""A delegation's id: no hyphen, so that its execution's id (``dg-<delegation id>``) parses back to it."""
TaskText = Annotated[str, StringConstraints(min_length=1, max_length=4000, pattern=NOT_BLANK)]
MAX_DEADLINE_S = 3600
ROUTED: dict[str, Any] = {"anyOf": [{"required": ["capability"]}, {"required": ["role"]}]}


class Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class DelegationStatus(StrEnum):
    REQUESTED = "requested"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


DELEGATION_ENDS = frozenset({DelegationStatus.SUCCEEDED, DelegationStatus.FAILED})


class DelegationRequest(Model):
    """What a caller (a person through the API, or an agent through the runtime) sends to delegate a task. The
    target is exactly one of: ``agent_id`` (that agent), or ``capability`` and/or ``role`` (the least loaded agent
    of the workspace that has it and is free now)."""

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        json_schema_extra={
            "oneOf": [
                {"required": ["agent_id"], "not": ROUTED},
                {"not": {"required": ["agent_id"]}, **ROUTED},
            ]
        },
    )

    task: TaskText = Field(description="What the agent must do (its step's instructions).")
    input: dict[str, Any] = Field(default_factory=dict, description="Data the agent is given with the task.")
    agent_id: Id | None = Field(default=None, description="The agent to delegate to.")
    capability: Label | None = Field(default=None, description="Route to an agent with this capability.")
    role: Label | None = Field(default=None, description="Route to an agent with this role.")
    from_agent_id: Id | None = Field(default=None, description="The agent that delegates (none: a person).")
    parent_delegation_id: DelegationId | None = Field(
        default=None, description="The delegation the delegating agent is working on: the chain continues from it."
    )
    budget: Budget | None = Field(default=None, description="A hard limit on the model usage of the delegation.")
    run_id: Id | None = Field(
        default=None,
        description="The team run it is made from: its calls hold on that run's budget (with `budget` as their "
        "limit), so a run's delegations stay within the run's budget.",
    )
    deadline_s: Integer = Field(
        default=600, ge=1, le=MAX_DEADLINE_S, description="How long the agent has for each attempt (seconds)."
    )
    output_schema: dict[str, Any] | None = Field(
        default=None, description="JSON Schema (draft 2020-12, no `pattern` keywords) the agent's output must follow."
    )

    @field_validator("output_schema")
    @classmethod
    def _valid_output_schema(cls, schema: dict[str, Any] | None) -> dict[str, Any] | None:
        return None if schema is None else check_output_schema(schema)

    @model_validator(mode="after")
    def _one_target(self) -> "DelegationRequest":
        routed = self.capability is not None or self.role is not None
        if (self.agent_id is not None) == routed:
            raise ValueError("give exactly one target: 'agent_id', or 'capability' and/or 'role'")
        return self


# Commands ---------------------------------------------------------------------------------------------------------


@REGISTRY.register
class Delegate(Command):
    """Delegate a task to an agent (named, or routed at once by capability/role and load)."""

    service = "orchestrator"
    delegation_id: DelegationId
    request: DelegationRequest


@REGISTRY.register
class NoteDelegationOutcome(Command):
    """An event of the delegation's execution, as the orchestrator followed it (internal)."""

    service = "orchestrator"
    delegation_id: DelegationId
    execution_id: Id
    event_type: str = Field(max_length=100)
    data: dict[str, Any] = Field(default_factory=dict)


# Events -----------------------------------------------------------------------------------------------------------


@REGISTRY.register
class DelegationRequested(Event):
    aggregate = "delegation"
    delegation_id: str
    request: DelegationRequest
    agent_id: str = Field(description="The agent it went to: the named one, or the one routing chose.")
    routed: bool = Field(description="True when the agent was chosen by capability/role and load.")
    chain: list[str] = Field(description="The agents that delegated before it, the first one first.")
    depth: int = Field(description="The agent's place in the chain: 1 when no agent delegated before.")
    execution_id: str
    at: str
    deadline_at: str


@REGISTRY.register
class DelegationStarted(Event):
    """An attempt of the delegated step began."""

    aggregate = "delegation"
    attempt: int
    at: str


@REGISTRY.register
class DelegationSucceeded(Event):
    aggregate = "delegation"
    output: Any = None
    at: str


@REGISTRY.register
class DelegationFailed(Event):
    aggregate = "delegation"
    error: str
    error_kind: str = Field(description="timeout, budget_exceeded, no_agent, invalid_output, cancelled, ...")
    at: str


# Queries ----------------------------------------------------------------------------------------------------------


@REGISTRY.register
class GetDelegation(Query):
    service = "orchestrator"
    delegation_id: DelegationId


@REGISTRY.register
class ListDelegations(Query):
    service = "orchestrator"
    agent_id: Id | None = None
    status: DelegationStatus | None = None
    limit: Integer = Field(default=50, ge=1, le=500)


# Views ------------------------------------------------------------------------------------------------------------


class DelegationLine(Model):
    delegation_id: str
    task: str
    agent_id: str
    from_agent_id: str | None
    parent_delegation_id: str | None
    depth: int
    status: DelegationStatus
    created_at: str
    ended_at: str | None


class DelegationView(Model):
    delegation_id: str
    workspace_id: str
    task: str
    input: dict[str, Any]
    agent_id: str
    routed: bool
    capability: str | None
    role: str | None
    from_agent_id: str | None
    parent_delegation_id: str | None
    run_id: str | None = Field(default=None, description="The team run it was made from, whose budget it holds on.")
    chain: list[str]
    depth: int
    budget: Budget | None
    deadline_s: int
    output_schema: dict[str, Any] | None
    execution_id: str
    status: DelegationStatus
    attempt: int
    output: Any = None
    error: str | None
    error_kind: str | None
    usage: dict[str, Any] = Field(description="The model usage of the delegation's execution.")
    created_at: str
    deadline_at: str
    started_at: str | None
    ended_at: str | None
    updated_at: str
    version: int
