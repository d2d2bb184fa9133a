"""Workflow definitions, executions and agent tasks (owned by the workflow engine).

A definition is a graph of steps. Values flow through expressions: ``$input.<path>`` reads the execution's input,
``$steps.<step id>.output.<path>`` reads an earlier step's output. A string that does not start with ``$`` is a
literal.
"""

import re
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator

from contracts import patterns
from contracts.budgets import Budget
from contracts.messages import A_NUMBER, Command, Event, Id, Integer, Number, Query, Title
from contracts.outputs import check_output_schema
from contracts.registry import REGISTRY

StepId = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_-]{0,63}$")]
EXPRESSION = re.compile(r"^\$(input|steps\.([a-z][a-z0-9_-]{0,63})\.output)(\.[A-Za-z0-9_-]+)*$")


class Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


NEVER_RETRIED = frozenset({"cancelled", "budget_exceeded", "no_agent"})
"""Error kinds a retry cannot mend: a cancellation, a budget that has run out, a workspace with no agent for the step
(a person adds one and retries from the failed step)."""


class RetryPolicy(Model):
    """How a failed attempt is retried: up to ``max_attempts`` in all, waiting ``backoff_s`` times ``multiplier``
    to the power of (attempt - 1), capped at ``max_backoff_s``. ``retry_on`` lists the error kinds that are retried
    (empty: every kind but those in ``NEVER_RETRIED``)."""

    max_attempts: Integer = Field(default=1, ge=1, le=20)
    backoff_s: Number = Field(default=1.0, ge=0, le=3600)
    multiplier: Number = Field(default=2.0, ge=1, le=10)
    max_backoff_s: Number = Field(default=300.0, ge=0, le=86_400)
    retry_on: list[str] = Field(default_factory=list, max_length=20)

    def delay(self, attempt: int) -> float:
        return float(min(self.max_backoff_s, self.backoff_s * self.multiplier ** max(0, attempt - 1)))

    def retries(self, error_kind: str, attempt: int) -> bool:
        if attempt >= self.max_attempts or error_kind in NEVER_RETRIED:
            return False
        return not self.retry_on or error_kind in self.retry_on


class Operator(StrEnum):
    EQ = "eq"
    NE = "ne"
    GT = "gt"
    GTE = "gte"
    LT = "lt"
    LTE = "lte"
    CONTAINS = "contains"
    IN = "in"
    EXISTS = "exists"
    MATCHES = "matches"


class Comparison(Model):
    field: str = Field(description="An expression: $input.<path> or $steps.<id>.output.<path>.")
    op: Operator
    value: Any = Field(
        default=None,
        description=f"What the field is compared with. For `matches`, a regular expression in {patterns.SYNTAX}.",
    )


class AllOf(Model):
    all: list["Predicate"] = Field(min_length=1)


class AnyOf(Model):
    any: list["Predicate"] = Field(min_length=1)


Predicate = Comparison | AllOf | AnyOf


class Branch(Model):
    when: Predicate
    next: StepId


class StepBase(Model):
    id: StepId
    name: str = Field(default="", max_length=200)
    timeout_s: Number = Field(default=300.0, gt=0, le=7 * 86_400)
    retry: RetryPolicy = Field(default_factory=RetryPolicy)


class AgentStep(StepBase):
    """Work done by an agent, chosen by id or by role/capability."""

    kind: Literal["agent"]
    agent_id: Id | None = None
    role: str | None = None
    capability: str | None = None
    instructions: str = Field(default="", max_length=20_000)
    input: dict[str, Any] = Field(default_factory=dict, description="Values or expressions passed to the agent.")
    output_schema: dict[str, Any] | None = Field(
        default=None,
        description="JSON Schema (draft 2020-12, no `pattern` keywords) the agent's output must follow; an output "
        "that does not is retried per the step's policy with the error kind `invalid_output`.",
    )
    max_output_tokens: Annotated[int, Field(ge=1, le=100_000), A_NUMBER] | None = Field(
        default=None, description="A cap on the answer's length, below the agent's own setting."
    )
    next: StepId | None = None

    @field_validator("output_schema")
    @classmethod
    def _valid_output_schema(cls, schema: dict[str, Any] | None) -> dict[str, Any] | None:
        return None if schema is None else check_output_schema(schema)


class ConditionStep(StepBase):
    """Routes to the first branch whose predicate holds, else to ``default`` (or ends the path)."""

    kind: Literal["condition"]
    branches: list[Branch] = Field(min_length=1, max_length=50)
    default: StepId | None = None


class ParallelStep(StepBase):
    """Starts every branch at once; the branches meet again at ``join``."""

    kind: Literal["parallel"]
    branches: list[StepId] = Field(min_length=2, max_length=20)
    join: StepId


class JoinStep(StepBase):
    """Waits until every branch of its parallel step has arrived."""

    kind: Literal["join"]
    next: StepId | None = None


class ApprovalStep(StepBase):
    """Waits for a person to approve or reject through the API."""

    kind: Literal["approval"]
    timeout_s: Number = Field(default=7 * 86_400, gt=0, le=90 * 86_400)
    prompt: str = Field(default="", max_length=5000)
    next: StepId | None = None
    on_reject: StepId | None = Field(default=None, description="Where a rejection goes; none fails the execution.")


class DelayStep(StepBase):
    kind: Literal["delay"]
    seconds: Number = Field(ge=0, le=30 * 86_400)
    next: StepId | None = None


class WebhookStep(StepBase):
    """An HTTP call; a 2xx answer succeeds with the parsed JSON (or text) as output."""

    kind: Literal["webhook"]
    url: str = Field(
        pattern=r"^https?://",
        max_length=2000,
        description="Reaches public addresses only (no loopback, private, link-local, multicast or cloud metadata "
        "address, checked on every connection), unless the deployment allows the host; redirects are not followed.",
    )
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "POST"
    headers: dict[str, str] = Field(default_factory=dict)
    body: dict[str, Any] = Field(default_factory=dict)
    next: StepId | None = None


Step = Annotated[
    AgentStep | ConditionStep | ParallelStep | JoinStep | ApprovalStep | DelayStep | WebhookStep,
    Field(discriminator="kind"),
]


class WorkflowSpec(Model):
    """A workflow definition as a caller writes it."""

    name: Title
    description: str = Field(default="", max_length=5000)
    input_fields: list[str] | None = Field(
        default=None, description="Top-level input fields; when given, conditions may only read these."
    )
    start: StepId
    steps: list[Step] = Field(min_length=1, max_length=200)

    def step(
        self, step_id: str
    ) -> "AgentStep | ConditionStep | ParallelStep | JoinStep | ApprovalStep | DelayStep | WebhookStep":
        return next(s for s in self.steps if s.id == step_id)


class ExecutionStatus(StrEnum):
    RUNNING = "running"
    PAUSED = "paused"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


class StepStatus(StrEnum):
    PENDING = "pending"
    SCHEDULED = "scheduled"
    RUNNING = "running"
    WAITING = "waiting"
    RETRY_SCHEDULED = "retry_scheduled"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"


# Commands -------------------------------------------------------------------------------------------------------


@REGISTRY.register
class CreateWorkflow(Command):
    """Create a workflow from a spec, or from a template (optionally renamed)."""

    service = "workflow-engine"
    workflow_id: Id
    spec: WorkflowSpec | None = None
    template: str | None = None
    name: str | None = Field(default=None, min_length=1, max_length=200)

    @model_validator(mode="after")
    def _spec_or_template(self) -> "CreateWorkflow":
        if (self.spec is None) == (self.template is None):
            raise ValueError("give exactly one of spec and template")
        return self


@REGISTRY.register
class UpdateWorkflow(Command):
    service = "workflow-engine"
    workflow_id: Id
    spec: WorkflowSpec


@REGISTRY.register
class ArchiveWorkflow(Command):
    service = "workflow-engine"
    workflow_id: Id


class Origin(Model):
    """What an execution runs for, when another service started it (a team run, a delegation): carried into every
    task of the execution, so the agent runtime knows the run's shared context and the delegation chain."""

    kind: Literal["team_run", "delegation", "dry_run"] = Field(
        description="A dry run's agent steps use the deterministic local provider whatever their agents' models, and "
        "its webhook steps are not called (they succeed with what they would have called)."
    )
    id: Id
    team_id: Id | None = None
    objective: str = Field(default="", max_length=4000)
    budget_run_id: Id | None = Field(
        default=None,
        description="A team run whose budget the execution's calls hold on (a delegation made during the run), "
        "instead of a budget of the execution's own.",
    )
    since: datetime | None = Field(
        default=None,
        description="When the run or delegation started: messages its agents receive from then on "
        "reach their next tasks.",
    )


@REGISTRY.register
class ExecuteWorkflow(Command):
    """Run a saved workflow, or, with ``spec``, a definition given inline (another service's plan, validated like a
    saved one): ``workflow_id`` then only names it."""

    service = "workflow-engine"
    workflow_id: Id
    execution_id: Id
    input: dict[str, Any] = Field(default_factory=dict)
    budget: Budget | None = Field(default=None, description="A hard limit on the model usage of the whole execution.")
    spec: WorkflowSpec | None = Field(default=None, description="An inline definition, run without being saved.")
    origin: Origin | None = None


@REGISTRY.register
class PauseExecution(Command):
    service = "workflow-engine"
    execution_id: Id


@REGISTRY.register
class ResumeExecution(Command):
    service = "workflow-engine"
    execution_id: Id


@REGISTRY.register
class CancelExecution(Command):
    service = "workflow-engine"
    execution_id: Id
    reason: str = Field(default="", max_length=2000)


@REGISTRY.register
class RetryExecution(Command):
    """Retry a failed execution from its failed step(s)."""

    service = "workflow-engine"
    execution_id: Id


@REGISTRY.register
class DecideApproval(Command):
    service = "workflow-engine"
    execution_id: Id
    step_id: StepId
    approved: bool
    comment: str = Field(default="", max_length=5000)


@REGISTRY.register
class RecordTaskResult(Command):
    """The outcome of one attempt of a step's work (an agent task or a webhook call)."""

    service = "workflow-engine"
    execution_id: Id
    step_id: StepId
    attempt: int
    ok: bool
    output: Any = None
    error: str | None = None
    error_kind: str = "error"


@REGISTRY.register
class AbandonStep(Command):
    """The engine cannot carry out what a step's attempt asks of it (its task, its timers), however often it tries:
    the attempt fails with error kind ``unactionable`` and the execution fails with it, without a retry (the same
    attempt would fail the same way; RetryExecution starts the step again). Sent by the engine itself."""

    service = "workflow-engine"
    execution_id: Id
    step_id: StepId
    attempt: int
    error: str = Field(max_length=2000)


@REGISTRY.register
class FireTimer(Command):
    """A durable timer came due: a retry backoff, a step timeout or a delay."""

    service = "workflow-engine"
    execution_id: Id
    step_id: StepId
    attempt: int
    purpose: Literal["retry", "timeout", "delay"]


# Events ---------------------------------------------------------------------------------------------------------


@REGISTRY.register
class WorkflowCreated(Event):
    aggregate = "workflow"
    workflow_id: str
    version: int
    spec: WorkflowSpec
    template: str | None = None


@REGISTRY.register
class WorkflowUpdated(Event):
    aggregate = "workflow"
    workflow_id: str
    version: int
    spec: WorkflowSpec


@REGISTRY.register
class WorkflowArchived(Event):
    aggregate = "workflow"
    workflow_id: str


@REGISTRY.register
class ExecutionStarted(Event):
    aggregate = "execution"
    execution_id: str
    workflow_id: str
    workflow_version: int
    spec: WorkflowSpec
    input: dict[str, Any]
    started_at: str
    budget: Budget | None = None
    origin: Origin | None = None


@REGISTRY.register
class StepScheduled(Event):
    """An attempt of a step begins; ``key`` is its idempotency key (one per step attempt)."""

    aggregate = "execution"
    step_id: str
    attempt: int
    key: str
    input: dict[str, Any] = Field(default_factory=dict)
    at: str
    fresh: bool = Field(default=True, description="False for a retry: the attempt counts against the retry budget.")
    timeout_at: str | None = None
    wake_at: str | None = Field(default=None, description="When a delay step completes.")


@REGISTRY.register
class StepSucceeded(Event):
    aggregate = "execution"
    step_id: str
    attempt: int
    output: Any = None
    at: str


@REGISTRY.register
class StepFailed(Event):
    aggregate = "execution"
    step_id: str
    attempt: int
    error: str
    error_kind: str
    at: str


@REGISTRY.register
class RetryScheduled(Event):
    aggregate = "execution"
    step_id: str
    attempt: int = Field(description="The attempt that will run.")
    due_at: str


@REGISTRY.register
class StepQueued(Event):
    """A step is due to start, but the execution is paused: it starts on resume."""

    aggregate = "execution"
    step_id: str
    attempt: int
    fresh: bool = True


@REGISTRY.register
class BranchArrived(Event):
    """A parallel branch reached its join."""

    aggregate = "execution"
    step_id: str
    from_step: str


@REGISTRY.register
class ApprovalDecided(Event):
    aggregate = "execution"
    step_id: str
    approved: bool
    comment: str
    at: str


@REGISTRY.register
class ExecutionPaused(Event):
    aggregate = "execution"
    at: str


@REGISTRY.register
class ExecutionResumed(Event):
    aggregate = "execution"
    at: str


@REGISTRY.register
class ExecutionCancelled(Event):
    aggregate = "execution"
    reason: str
    at: str


@REGISTRY.register
class ExecutionRetried(Event):
    aggregate = "execution"
    steps: list[str]
    at: str


@REGISTRY.register
class ExecutionCompleted(Event):
    aggregate = "execution"
    output: dict[str, Any]
    at: str


@REGISTRY.register
class ExecutionFailed(Event):
    aggregate = "execution"
    step_id: str
    error: str
    at: str
    error_kind: str = Field(default="error", description="The failed step's error kind (budget_exceeded, timeout...).")


EXECUTION_AGGREGATE = ExecutionStarted.aggregate  # the aggregate of these events: subjects evt.execution.<ws>.<id>.*
EXECUTION_ENDS = frozenset(cls.type_name for cls in (ExecutionCompleted, ExecutionFailed, ExecutionCancelled))


# Tasks (TASKS stream) and queries -------------------------------------------------------------------------------


class AgentTask(Model):
    """Work for an agent, published on ``task.<workspace>.<agent id or "any">`` with Nats-Msg-Id = ``key``.

    The worker answers with a RecordTaskResult command carrying ``execution_id``, ``step_id`` and ``attempt``, sent
    with the id ``result_command_id(key)`` so that a result sent twice is applied once.
    """

    key: str
    workspace_id: str
    execution_id: str
    step_id: str
    attempt: int
    agent_id: str | None
    role: str | None
    capability: str | None
    instructions: str
    input: dict[str, Any]
    deadline: str
    workflow_id: str = ""
    step_name: str = ""
    output_schema: dict[str, Any] | None = None
    context: dict[str, Any] = Field(
        default_factory=dict, description="The handoff: outputs of the steps that succeeded before this one, by id."
    )
    budget: Budget | None = Field(default=None, description="The execution's budget, shared by all its tasks.")
    origin: Origin | None = Field(default=None, description="The team run or delegation the execution runs for.")
    max_output_tokens: int | None = Field(default=None, description="The step's cap on the answer's length.")


def result_command_id(key: str) -> str:
    """The command id of the result of the step attempt ``key`` (an attempt has one result)."""
    return "result-" + key.replace(":", "-")


@REGISTRY.register
class GetWorkflow(Query):
    service = "workflow-engine"
    workflow_id: Id
    version: int | None = None


@REGISTRY.register
class ListWorkflows(Query):
    service = "workflow-engine"
    include_archived: bool = False
    limit: int = Field(default=100, ge=1, le=500)


@REGISTRY.register
class GetExecution(Query):
    service = "workflow-engine"
    execution_id: Id


@REGISTRY.register
class ListExecutions(Query):
    service = "workflow-engine"
    workflow_id: Id | None = None
    status: ExecutionStatus | None = None
    limit: int = Field(default=100, ge=1, le=500)


@REGISTRY.register
class ListWorkflowTemplates(Query):
    service = "workflow-engine"
