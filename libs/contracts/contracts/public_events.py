"""The public events of an execution: what clients see of its progress (the live stream of
``GET /api/v1/workflows/executions/{id}/events``).

The workflow engine records its own, internal events (``contracts.workflows``); some of them are bookkeeping of
its own (a step queued while the execution is paused, a parallel branch arriving at its join) and others carry
more than a client needs (an execution's start holds the whole definition). This module is the one place where
internal events become public ones (``public_event``), so the engine can change its internals without breaking
clients: a public event type, once published, keeps its name and fields (fields may be added).

Each public event is sent as one Server-Sent Event: ``id`` is the execution's event version (increasing, with gaps
where internal events were left out; send it back as ``Last-Event-ID`` to resume after it), ``event`` the public
type, ``data`` a JSON ``PublicEventMessage``.
"""

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from contracts.envelope import EventRecord
from contracts.registry import REGISTRY, UnknownMessageType
from contracts.workflows import (
    EXECUTION_AGGREGATE,
    ApprovalDecided,
    BranchArrived,
    ExecutionCancelled,
    ExecutionCompleted,
    ExecutionFailed,
    ExecutionPaused,
    ExecutionResumed,
    ExecutionRetried,
    ExecutionStarted,
    RetryScheduled,
    StepFailed,
    StepQueued,
    StepScheduled,
    StepSucceeded,
)

INTERNAL_ONLY = frozenset({StepQueued.type_name, BranchArrived.type_name})  # the engine's bookkeeping: not streamed


class PublicEvent(BaseModel):
    """One public event of an execution; ``type_name`` is its public type."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    type_name: ClassVar[str]


class PublicExecutionStarted(PublicEvent):
    """The execution began with this input, on this version of its workflow."""

    type_name = "execution.started"
    workflow_id: str
    workflow_version: int
    input: dict[str, Any]
    at: str


class PublicStepStarted(PublicEvent):
    """An attempt of a step began (a retry is a new attempt)."""

    type_name = "step.started"
    step_id: str
    attempt: int
    input: dict[str, Any] = Field(description="The step's input, its expressions resolved.")
    at: str
    deadline: str | None = Field(default=None, description="When the attempt times out, if it can.")
    wake_at: str | None = Field(default=None, description="When a delay step completes.")


class PublicStepSucceeded(PublicEvent):
    """An attempt of a step succeeded with this output."""

    type_name = "step.succeeded"
    step_id: str
    attempt: int
    output: Any = None
    at: str


class PublicStepFailed(PublicEvent):
    """An attempt of a step failed; `error_kind` is machine-readable (`timeout`, `http_503`, `forbidden_address`...)."""

    type_name = "step.failed"
    step_id: str
    attempt: int
    error: str
    error_kind: str
    at: str


class PublicRetryScheduled(PublicEvent):
    """A failed step will be tried again, as attempt `attempt`, at `due_at`."""

    type_name = "step.retry_scheduled"
    step_id: str
    attempt: int
    due_at: str


class PublicApprovalDecided(PublicEvent):
    """Someone approved or rejected a waiting approval step."""

    type_name = "approval.decided"
    step_id: str
    approved: bool
    comment: str
    at: str


class PublicExecutionPaused(PublicEvent):
    """The execution was paused: no step starts until it is resumed."""

    type_name = "execution.paused"
    at: str


class PublicExecutionResumed(PublicEvent):
    """The execution was resumed."""

    type_name = "execution.resumed"
    at: str


class PublicExecutionRetried(PublicEvent):
    """A failed execution runs again from these steps."""

    type_name = "execution.retried"
    steps: list[str]
    at: str


class PublicExecutionCompleted(PublicEvent):
    """The execution ended well; `output` has each agent, webhook and approval step's output by step id."""

    type_name = "execution.completed"
    output: dict[str, Any]
    at: str


class PublicExecutionFailed(PublicEvent):
    """The execution ended at a failed step (a retry may start it again)."""

    type_name = "execution.failed"
    step_id: str
    error: str
    at: str


class PublicExecutionCancelled(PublicEvent):
    """The execution was cancelled."""

    type_name = "execution.cancelled"
    reason: str
    at: str


PUBLIC_EVENTS: tuple[type[PublicEvent], ...] = (
    PublicExecutionStarted,
    PublicStepStarted,
    PublicStepSucceeded,
    PublicStepFailed,
    PublicRetryScheduled,
    PublicApprovalDecided,
    PublicExecutionPaused,
    PublicExecutionResumed,
    PublicExecutionRetried,
    PublicExecutionCompleted,
    PublicExecutionFailed,
    PublicExecutionCancelled,
)
TERMINAL = frozenset(
    cls.type_name for cls in (PublicExecutionCompleted, PublicExecutionFailed, PublicExecutionCancelled)
)


class PublicEventMessage(BaseModel):
    """The data of one Server-Sent Event: the execution's event version, the public type and its fields."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    version: int
    type: str = Field(description="A public event type: " + ", ".join(cls.type_name for cls in PUBLIC_EVENTS))
    data: dict[str, Any]


def public_event(record: EventRecord) -> PublicEventMessage | None:
    """The public event of an execution's internal event, or None for one that stays internal (``StepQueued``,
    ``BranchArrived``) or that is not an execution's."""
    if record.aggregate != EXECUTION_AGGREGATE:
        return None
    try:
        internal = REGISTRY.load(record.type, record.schema_version, record.data)
    except UnknownMessageType:
        return None  # an internal event newer than these contracts: not public until it is mapped here
    event = _public(internal)
    if event is None:
        return None
    return PublicEventMessage(version=record.version, type=event.type_name, data=event.model_dump(mode="json"))


def _public(event: Any) -> PublicEvent | None:
    match event:
        case ExecutionStarted():
            return PublicExecutionStarted(
                workflow_id=event.workflow_id,
                workflow_version=event.workflow_version,
                input=event.input,
                at=event.started_at,
            )
        case StepScheduled():
            return PublicStepStarted(
                step_id=event.step_id,
                attempt=event.attempt,
                input=event.input,
                at=event.at,
                deadline=event.timeout_at,
                wake_at=event.wake_at,
            )
        case StepSucceeded():
            return PublicStepSucceeded(step_id=event.step_id, attempt=event.attempt, output=event.output, at=event.at)
        case StepFailed():
            return PublicStepFailed(
                step_id=event.step_id,
                attempt=event.attempt,
                error=event.error,
                error_kind=event.error_kind,
                at=event.at,
            )
        case RetryScheduled():
            return PublicRetryScheduled(step_id=event.step_id, attempt=event.attempt, due_at=event.due_at)
        case ApprovalDecided():
            return PublicApprovalDecided(
                step_id=event.step_id, approved=event.approved, comment=event.comment, at=event.at
            )
        case ExecutionPaused():
            return PublicExecutionPaused(at=event.at)
        case ExecutionResumed():
            return PublicExecutionResumed(at=event.at)
        case ExecutionRetried():
            return PublicExecutionRetried(steps=event.steps, at=event.at)
        case ExecutionCompleted():
            return PublicExecutionCompleted(output=event.output, at=event.at)
        case ExecutionFailed():
            return PublicExecutionFailed(step_id=event.step_id, error=event.error, at=event.at)
        case ExecutionCancelled():
            return PublicExecutionCancelled(reason=event.reason, at=event.at)
    return None  # internal only


def describe() -> str:
    """The vocabulary in Markdown, for the API reference: each public type, what it means and its fields."""
    lines = []
    for cls in PUBLIC_EVENTS:
        fields = ", ".join(
            f"`{name}`" + ("" if info.is_required() else " (optional)") for name, info in cls.model_fields.items()
        )
        lines.append(f"- `{cls.type_name}`: {(cls.__doc__ or '').strip()} Fields: {fields}.")
    return "\n".join(lines)
