"""Team runs and coordinations (owned by the orchestrator): a team, or several, working on one objective.

A run goes through three executions of the workflow engine, each started by the orchestrator with an inline
definition: the lead's plan (one step whose output must follow a schema that names the members by id from a closed
list), the plan's steps (one per member task, each member's output handed to the next), and the lead's summary (a
small call the run's budget keeps a reserve for, so a run stopped by its budget still ends with a summary).
A coordination is a run over the members of several teams, planned by the first team's lead.
"""

from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from contracts.budgets import Budget
from contracts.messages import NOT_BLANK, Command, Event, Id, Integer, Query
from contracts.registry import REGISTRY
from contracts.workflows import StepId

MAX_PLAN_STEPS = 12
MAX_TEAMS = 5
RunId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_]{1,40}$")]
"""A run's id: no hyphen, so that its executions' ids (``tr-<run id>-plan|work|sum``) parse back to it."""
Objective = Annotated[str, StringConstraints(min_length=1, max_length=4000, pattern=NOT_BLANK)]


class Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class TeamRunStatus(StrEnum):
    PLANNING = "planning"
    RUNNING = "running"
    SUMMARIZING = "summarizing"
    COMPLETED = "completed"
    FAILED = "failed"
    BUDGET_EXCEEDED = "budget_exceeded"
    CANCELLED = "cancelled"


RUN_ENDS = frozenset(
    {TeamRunStatus.COMPLETED, TeamRunStatus.FAILED, TeamRunStatus.BUDGET_EXCEEDED, TeamRunStatus.CANCELLED}
)


class RunMember(Model):
    """A member as the run saw it when it started: the closed list the lead plans from."""

    agent_id: str
    name: str
    role: str
    team_id: str
    capabilities: list[str] = Field(default_factory=list)
    lead: bool = False


class PlanStep(Model):
    """One step of the lead's plan: a member, what it must do and what it must produce."""

    id: StepId
    agent_id: str
    task: str
    produces: str = ""


class Handoff(Model):
    """What a member was given for its step: the typed envelope of a handoff, recorded as it was built."""

    objective: str
    task: str
    produces: str = ""
    inputs: dict[str, Any] = Field(default_factory=dict, description="The previous member's output and the run input.")
    constraints: dict[str, Any] = Field(default_factory=dict, description="Deadline, output schema, budget left.")
    references: list[str] = Field(default_factory=list, description="Keys of the run's shared context it may read.")
    messages: list[str] = Field(
        default_factory=list, description="Ids of the messages it had received during the run, given in its prompt."
    )


class RunRequest(Model):
    """What a caller sends to run a team (or coordinate teams) on an objective."""

    objective: Objective
    input: dict[str, Any] = Field(default_factory=dict)
    budget: Budget | None = Field(default=None, description="A hard limit on the model usage of the whole run.")
    max_steps: Integer = Field(default=6, ge=1, le=MAX_PLAN_STEPS, description="The longest plan the lead may make.")


# Commands ---------------------------------------------------------------------------------------------------------


@REGISTRY.register
class RunTeam(Command):
    """Run one team (``team_ids`` of one) or coordinate several on an objective."""

    service = "orchestrator"
    run_id: RunId
    team_ids: list[Id] = Field(min_length=1, max_length=MAX_TEAMS)
    request: RunRequest
    kind: Literal["team_run", "coordination"] = "team_run"


@REGISTRY.register
class CancelTeamRun(Command):
    service = "orchestrator"
    run_id: RunId
    reason: str = Field(default="", max_length=2000)


@REGISTRY.register
class NoteRunExecution(Command):
    """An event of one of the run's executions, as the orchestrator followed it (internal)."""

    service = "orchestrator"
    run_id: RunId
    execution_id: Id
    event_type: str = Field(max_length=100)
    data: dict[str, Any] = Field(default_factory=dict)


@REGISTRY.register
class RecordHandoff(Command):
    """What the agent runtime gave a member for a step of the run (internal, sent by the runtime)."""

    service = "orchestrator"
    run_id: RunId
    step_id: StepId
    attempt: int
    agent_id: str
    handoff: Handoff


# Events -----------------------------------------------------------------------------------------------------------


@REGISTRY.register
class TeamRunStarted(Event):
    aggregate = "team_run"
    run_id: str
    kind: Literal["team_run", "coordination"]
    team_ids: list[str]
    objective: str
    input: dict[str, Any]
    budget: Budget | None
    max_steps: int
    members: list[RunMember]
    lead: str
    execution_id: str = Field(description="The lead's planning execution.")
    at: str


@REGISTRY.register
class TeamRunPlanned(Event):
    aggregate = "team_run"
    plan: list[PlanStep]
    execution_id: str = Field(description="The execution that runs the plan.")
    at: str


@REGISTRY.register
class PlanRejected(Event):
    """The lead's plan named a non-member, was empty or too long: nothing ran."""

    aggregate = "team_run"
    error: str
    at: str


@REGISTRY.register
class MemberStepScheduled(Event):
    aggregate = "team_run"
    step_id: str
    attempt: int
    at: str


@REGISTRY.register
class HandoffRecorded(Event):
    aggregate = "team_run"
    step_id: str
    attempt: int
    agent_id: str
    handoff: Handoff
    size_bytes: int


@REGISTRY.register
class MemberStepSucceeded(Event):
    aggregate = "team_run"
    step_id: str
    attempt: int
    output: Any = None
    at: str


@REGISTRY.register
class MemberStepFailed(Event):
    aggregate = "team_run"
    step_id: str
    attempt: int
    error: str
    error_kind: str
    at: str


@REGISTRY.register
class TeamRunSummarizing(Event):
    """The work ended (``outcome``); the lead's summary call runs."""

    aggregate = "team_run"
    outcome: Literal["completed", "failed", "budget_exceeded"]
    error: str | None = None
    execution_id: str
    at: str


@REGISTRY.register
class TeamRunEnded(Event):
    aggregate = "team_run"
    status: Literal["completed", "failed", "budget_exceeded"]
    summary: str
    summary_by: Literal["lead", "runtime"] = Field(
        description="`runtime` when the lead's summary call could not be made: the summary is then the plan's table."
    )
    error: str | None = None
    at: str


@REGISTRY.register
class TeamRunCancelled(Event):
    aggregate = "team_run"
    reason: str
    execution_id: str | None = Field(description="The execution that was running, cancelled with the run.")
    at: str


# Queries ----------------------------------------------------------------------------------------------------------


@REGISTRY.register
class GetTeamRun(Query):
    service = "orchestrator"
    run_id: RunId


@REGISTRY.register
class ListTeamRuns(Query):
    service = "orchestrator"
    team_id: Id | None = None
    kind: Literal["team_run", "coordination"] | None = None
    status: TeamRunStatus | None = None
    limit: Integer = Field(default=50, ge=1, le=500)


# Views and the public events of a run -----------------------------------------------------------------------------


class PlanStepView(Model):
    id: str
    agent_id: str
    task: str
    produces: str
    status: str = Field(description="pending, scheduled, succeeded or failed.")
    attempt: int
    output: Any = None
    error: str | None = None
    error_kind: str | None = None
    scheduled_at: str | None = None
    finished_at: str | None = None


class HandoffView(Model):
    step_id: str
    attempt: int
    agent_id: str
    handoff: Handoff
    size_bytes: int
    at: str


class RunUsage(Model):
    total: dict[str, Any]
    by_phase: dict[str, dict[str, Any]] = Field(description="By phase: plan, work, summary.")


class TeamRunView(Model):
    run_id: str
    workspace_id: str
    kind: Literal["team_run", "coordination"]
    team_ids: list[str]
    objective: str
    input: dict[str, Any]
    budget: Budget | None
    max_steps: int
    members: list[RunMember]
    lead: str
    status: TeamRunStatus
    plan: list[PlanStepView]
    handoffs: list[HandoffView]
    executions: dict[str, str] = Field(description="The workflow engine's executions of the run, by phase.")
    shared_context: list[str] = Field(default_factory=list, description="The keys of the run's working memory.")
    usage: RunUsage
    summary: str | None
    summary_by: str | None
    error: str | None
    created_at: str
    updated_at: str
    ended_at: str | None
    version: int


class TeamRunLine(Model):
    run_id: str
    kind: Literal["team_run", "coordination"]
    team_ids: list[str]
    objective: str
    status: TeamRunStatus
    lead: str
    steps: int
    steps_done: int
    created_at: str
    updated_at: str
    ended_at: str | None


PUBLIC_RUN_EVENTS: dict[str, str] = {
    TeamRunStarted.type_name: "team_run.started",
    TeamRunPlanned.type_name: "team_run.planned",
    PlanRejected.type_name: "team_run.plan_rejected",
    MemberStepScheduled.type_name: "team_run.step_started",
    HandoffRecorded.type_name: "team_run.handoff",
    MemberStepSucceeded.type_name: "team_run.step_succeeded",
    MemberStepFailed.type_name: "team_run.step_failed",
    TeamRunSummarizing.type_name: "team_run.summarizing",
    TeamRunEnded.type_name: "team_run.ended",
    TeamRunCancelled.type_name: "team_run.cancelled",
}
"""The public type of each event of a run, as its live stream sends it (its fields are the event's)."""
RUN_STREAM_ENDS = frozenset({TeamRunEnded.type_name, TeamRunCancelled.type_name})
