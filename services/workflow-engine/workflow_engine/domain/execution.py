"""The execution aggregate: state, evolve and decide. Pure and deterministic: the clock is passed in, and every
id is derived from the execution id, the step id and the attempt, so replaying a stream gives the same state."""

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Literal

from contracts import ErrorCode, Event
from contracts.budgets import Budget
from contracts.errors import DomainError
from contracts.workflows import (
    AbandonStep,
    AgentStep,
    ApprovalDecided,
    ApprovalStep,
    BranchArrived,
    CancelExecution,
    ConditionStep,
    DecideApproval,
    DelayStep,
    ExecuteWorkflow,
    ExecutionCancelled,
    ExecutionCompleted,
    ExecutionFailed,
    ExecutionPaused,
    ExecutionResumed,
    ExecutionRetried,
    ExecutionStarted,
    ExecutionStatus,
    FireTimer,
    JoinStep,
    Origin,
    ParallelStep,
    PauseExecution,
    RecordTaskResult,
    ResumeExecution,
    RetryExecution,
    RetryScheduled,
    StepFailed,
    StepQueued,
    StepScheduled,
    StepStatus,
    StepSucceeded,
    WebhookStep,
    WorkflowSpec,
)
from workflow_engine.domain.expressions import holds, render

AGGREGATE = "execution"
UNACTIONABLE = "unactionable"  # the error kind of an attempt the engine could not carry out (AbandonStep)
ACTIVE = frozenset({StepStatus.SCHEDULED, StepStatus.RUNNING, StepStatus.WAITING, StepStatus.RETRY_SCHEDULED})
LIVE = frozenset({ExecutionStatus.RUNNING, ExecutionStatus.PAUSED})


class ExecutionNotFound(DomainError):
    code = ErrorCode.EXECUTION_NOT_FOUND


class InvalidTransition(DomainError):
    code = ErrorCode.INVALID_TRANSITION


@dataclass(frozen=True, slots=True)
class Attempt:
    attempt: int
    started_at: str
    finished_at: str | None = None
    status: StepStatus = StepStatus.SCHEDULED
    error: str | None = None


@dataclass(frozen=True, slots=True)
class StepRun:
    status: StepStatus = StepStatus.PENDING
    attempt: int = 0
    budget_from: int = 0
    key: str | None = None
    input: dict[str, Any] = field(default_factory=dict)
    output: Any = None
    error: str | None = None
    error_kind: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    timeout_at: str | None = None
    wake_at: str | None = None
    retry_at: str | None = None
    arrivals: tuple[str, ...] = ()
    attempts: tuple[Attempt, ...] = ()

    def end_attempt(self, status: StepStatus, at: str, error: str | None = None) -> tuple[Attempt, ...]:
        if not self.attempts:
            return self.attempts
        last = replace(self.attempts[-1], finished_at=at, status=status, error=error)
        return (*self.attempts[:-1], last)


@dataclass(frozen=True, slots=True)
class Execution:
    execution_id: str = ""
    workflow_id: str = ""
    workflow_version: int = 0
    spec: WorkflowSpec | None = None
    input: dict[str, Any] = field(default_factory=dict)
    budget: Budget | None = None
    origin: Origin | None = None
    status: ExecutionStatus = ExecutionStatus.RUNNING
    steps: dict[str, StepRun] = field(default_factory=dict)
    queued: tuple[tuple[str, int, bool], ...] = ()
    output: dict[str, Any] | None = None
    error: str | None = None
    failed_step: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    updated_at: str | None = None

    @property
    def exists(self) -> bool:
        return self.spec is not None

    def context(self) -> dict[str, Any]:
        outputs = {sid: {"output": run.output} for sid, run in self.steps.items() if run.status is StepStatus.SUCCEEDED}
        return {"input": self.input, "steps": outputs}


def _set(state: Execution, step_id: str, **changes: Any) -> Execution:
    return replace(state, steps={**state.steps, step_id: replace(state.steps[step_id], **changes)})


def evolve(state: Execution, event: Event) -> Execution:  # noqa: PLR0912 - one case per event
    match event:
        case ExecutionStarted():
            return Execution(
                execution_id=event.execution_id,
                workflow_id=event.workflow_id,
                workflow_version=event.workflow_version,
                spec=event.spec,
                input=event.input,
                budget=event.budget,
                origin=event.origin,
                steps={s.id: StepRun() for s in event.spec.steps},
                started_at=event.started_at,
                updated_at=event.started_at,
            )
        case StepScheduled():
            run = state.steps[event.step_id]
            assert state.spec is not None
            waiting = isinstance(state.spec.step(event.step_id), ApprovalStep | DelayStep)
            state = replace(
                _set(
                    state,
                    event.step_id,
                    status=StepStatus.WAITING if waiting else StepStatus.SCHEDULED,
                    attempt=event.attempt,
                    budget_from=event.attempt - 1 if event.fresh else run.budget_from,
                    key=event.key,
                    input=event.input,
                    output=None,
                    error=None,
                    error_kind=None,
                    started_at=event.at,
                    finished_at=None,
                    timeout_at=event.timeout_at,
                    wake_at=event.wake_at,
                    retry_at=None,
                    attempts=(*run.attempts, Attempt(event.attempt, event.at)),
                ),
                queued=tuple(q for q in state.queued if q[0] != event.step_id),
            )
            return replace(state, updated_at=event.at)
        case StepSucceeded():
            run = state.steps[event.step_id]
            return replace(
                _set(
                    state,
                    event.step_id,
                    status=StepStatus.SUCCEEDED,
                    output=event.output,
                    finished_at=event.at,
                    arrivals=(),
                    attempts=run.end_attempt(StepStatus.SUCCEEDED, event.at),
                ),
                updated_at=event.at,
            )
        case StepFailed():
            run = state.steps[event.step_id]
            return replace(
                _set(
                    state,
                    event.step_id,
                    status=StepStatus.FAILED,
                    error=event.error,
                    error_kind=event.error_kind,
                    finished_at=event.at,
                    attempts=run.end_attempt(StepStatus.FAILED, event.at, event.error),
                ),
                updated_at=event.at,
            )
        case RetryScheduled():
            return _set(state, event.step_id, status=StepStatus.RETRY_SCHEDULED, retry_at=event.due_at)
        case StepQueued():
            return replace(
                _set(state, event.step_id, status=StepStatus.PENDING),
                queued=(*state.queued, (event.step_id, event.attempt, event.fresh)),
            )
        case BranchArrived():
            run = state.steps[event.step_id]
            return _set(state, event.step_id, status=StepStatus.WAITING, arrivals=(*run.arrivals, event.from_step))
        case ApprovalDecided():
            return replace(state, updated_at=event.at)
        case ExecutionPaused():
            return replace(state, status=ExecutionStatus.PAUSED, updated_at=event.at)
        case ExecutionResumed():
            return replace(state, status=ExecutionStatus.RUNNING, updated_at=event.at)
        case ExecutionCancelled():
            steps = {
                sid: replace(run, status=StepStatus.CANCELLED, attempts=run.end_attempt(StepStatus.CANCELLED, event.at))
                if run.status in ACTIVE
                else run
                for sid, run in state.steps.items()
            }
            return replace(
                state,
                status=ExecutionStatus.CANCELLED,
                steps=steps,
                queued=(),
                error=event.reason or None,
                finished_at=event.at,
                updated_at=event.at,
            )
        case ExecutionRetried():
            return replace(
                state,
                status=ExecutionStatus.RUNNING,
                queued=(),
                error=None,
                failed_step=None,
                finished_at=None,
                updated_at=event.at,
            )
        case ExecutionCompleted():
            return replace(
                state, status=ExecutionStatus.COMPLETED, output=event.output, finished_at=event.at, updated_at=event.at
            )
        case ExecutionFailed():
            return replace(
                state,
                status=ExecutionStatus.FAILED,
                error=event.error,
                failed_step=event.step_id,
                finished_at=event.at,
                updated_at=event.at,
            )
    return state


def _iso(moment: datetime) -> str:
    return moment.isoformat()


class _Decision:
    """Collects the events of one decision, evolving the state as it goes so later choices see earlier ones."""

    def __init__(self, state: Execution, now: datetime) -> None:
        self.state = state
        self.now = now
        self.at = _iso(now)
        self.events: list[Event] = []

    @property
    def spec(self) -> WorkflowSpec:
        assert self.state.spec is not None
        return self.state.spec

    def emit(self, event: Event) -> None:
        self.events.append(event)
        self.state = evolve(self.state, event)

    def enter(self, step_id: str, attempt: int | None = None, *, fresh: bool = True) -> None:
        run = self.state.steps[step_id]
        number = attempt if attempt is not None else run.attempt + 1
        if self.state.status is ExecutionStatus.PAUSED:
            self.emit(StepQueued(step_id=step_id, attempt=number, fresh=fresh))
            return
        step = self.spec.step(step_id)
        key = f"{self.state.execution_id}:{step_id}:{number}"
        deadline = _iso(self.now + timedelta(seconds=step.timeout_s))
        context = self.state.context()

        def scheduled(**extra: Any) -> StepScheduled:
            return StepScheduled(step_id=step_id, attempt=number, key=key, at=self.at, fresh=fresh, **extra)

        match step:
            case AgentStep():
                self.emit(scheduled(input=render(step.input, context), timeout_at=deadline))
            case WebhookStep():
                self.emit(scheduled(input=render(step.body, context), timeout_at=deadline))
            case ApprovalStep():
                self.emit(scheduled(timeout_at=deadline))
            case DelayStep():
                self.emit(scheduled(wake_at=_iso(self.now + timedelta(seconds=step.seconds))))
            case ConditionStep():
                self.emit(scheduled())
                target = next((b.next for b in step.branches if holds(b.when, context)), step.default)
                self.emit(StepSucceeded(step_id=step_id, attempt=number, output={"next": target}, at=self.at))
                if target is not None:
                    self.handover(step_id, target)
            case ParallelStep():
                self.emit(scheduled())
                self.emit(
                    StepSucceeded(step_id=step_id, attempt=number, output={"branches": step.branches}, at=self.at)
                )
                for branch in step.branches:
                    self.handover(step_id, branch)
            case JoinStep():
                raise AssertionError("a join is entered by arriving branches")  # pragma: no cover

    def handover(self, from_step: str, to_step: str) -> None:
        target = self.spec.step(to_step)
        if not isinstance(target, JoinStep):
            self.enter(to_step)
            return
        self.emit(BranchArrived(step_id=to_step, from_step=from_step))
        parallel = next(s for s in self.spec.steps if isinstance(s, ParallelStep) and s.join == to_step)
        run = self.state.steps[to_step]
        if len(run.arrivals) >= len(parallel.branches):
            number = run.attempt + 1
            key = f"{self.state.execution_id}:{to_step}:{number}"
            self.emit(StepScheduled(step_id=to_step, attempt=number, key=key, at=self.at))
            self.emit(StepSucceeded(step_id=to_step, attempt=number, output={"joined": list(run.arrivals)}, at=self.at))
            if target.next is not None:
                self.handover(to_step, target.next)

    def succeed(self, step_id: str, attempt: int, output: Any) -> None:
        self.emit(StepSucceeded(step_id=step_id, attempt=attempt, output=output, at=self.at))
        step = self.spec.step(step_id)
        follow = getattr(step, "next", None)
        if follow is not None:
            self.handover(step_id, follow)

    def fail(self, step_id: str, error: str, kind: str) -> None:
        run = self.state.steps[step_id]
        step = self.spec.step(step_id)
        self.emit(StepFailed(step_id=step_id, attempt=run.attempt, error=error, error_kind=kind, at=self.at))
        tried = run.attempt - run.budget_from
        if step.retry.retries(kind, tried):
            due = _iso(self.now + timedelta(seconds=step.retry.delay(tried)))
            self.emit(RetryScheduled(step_id=step_id, attempt=run.attempt + 1, due_at=due))
        else:
            self.emit(ExecutionFailed(step_id=step_id, error=error, error_kind=kind, at=self.at))

    def finish_if_done(self) -> None:
        state = self.state
        if state.status not in LIVE or state.queued:
            return
        if any(run.status in ACTIVE for run in state.steps.values()):
            return
        outputs = {
            sid: run.output
            for sid, run in state.steps.items()
            if run.status is StepStatus.SUCCEEDED
            and isinstance(self.spec.step(sid), AgentStep | WebhookStep | ApprovalStep)
        }
        self.emit(ExecutionCompleted(output=outputs, at=self.at))


def _decision(state: Execution, now: datetime, execution_id: str) -> _Decision:
    if not state.exists:
        raise ExecutionNotFound(f"execution {execution_id} not found")
    return _Decision(state, now)


def start(command: ExecuteWorkflow, spec: WorkflowSpec, version: int, now: datetime) -> list[Event]:
    """The events that start an execution of ``spec`` (the workflow's current version)."""
    decision = _Decision(Execution(), now)
    decision.emit(
        ExecutionStarted(
            execution_id=command.execution_id,
            workflow_id=command.workflow_id,
            workflow_version=version,
            spec=spec,
            input=command.input,
            budget=command.budget,
            origin=command.origin,
            started_at=decision.at,
        )
    )
    decision.enter(spec.start)
    decision.finish_if_done()
    return decision.events


def record_result(state: Execution, command: RecordTaskResult, now: datetime) -> list[Event]:
    """A task's result; stale or duplicate results (another attempt, a finished execution) change nothing."""
    decision = _decision(state, now, command.execution_id)
    run = state.steps.get(command.step_id)
    if state.status not in LIVE or run is None or run.attempt != command.attempt:
        return []
    if run.status not in {StepStatus.SCHEDULED, StepStatus.RUNNING}:
        return []
    if command.ok:
        decision.succeed(command.step_id, command.attempt, command.output)
    else:
        decision.fail(command.step_id, command.error or "the task failed", command.error_kind)
    decision.finish_if_done()
    return decision.events


def fire_timer(state: Execution, command: FireTimer, now: datetime) -> list[Event]:
    """A durable timer came due; one that no longer matches the step's attempt is stale and ignored."""
    decision = _decision(state, now, command.execution_id)
    run = state.steps.get(command.step_id)
    if state.status not in LIVE or run is None:
        return []
    match command.purpose:
        case "retry" if run.status is StepStatus.RETRY_SCHEDULED and run.attempt + 1 == command.attempt:
            decision.enter(command.step_id, command.attempt, fresh=False)
        case "timeout" if run.attempt == command.attempt and run.status in ACTIVE - {StepStatus.RETRY_SCHEDULED}:
            step = decision.spec.step(command.step_id)
            decision.fail(command.step_id, f"timed out after {step.timeout_s:g}s", "timeout")
        case "delay" if run.attempt == command.attempt and run.status is StepStatus.WAITING:
            decision.succeed(
                command.step_id,
                command.attempt,
                {"waited_s": getattr(decision.spec.step(command.step_id), "seconds", 0)},
            )
        case _:
            return []
    decision.finish_if_done()
    return decision.events


def abandon_step(state: Execution, command: AbandonStep, now: datetime) -> list[Event]:
    """The engine gave up on carrying out an attempt: it fails, and the execution with it (no retry: acting on the
    same attempt again would fail the same way). An attempt the step has moved past is left alone."""
    decision = _decision(state, now, command.execution_id)
    run = state.steps.get(command.step_id)
    if state.status not in LIVE or run is None:
        return []
    if run.attempt == command.attempt and run.status in ACTIVE - {StepStatus.RETRY_SCHEDULED}:
        decision.emit(
            StepFailed(
                step_id=command.step_id,
                attempt=run.attempt,
                error=command.error,
                error_kind=UNACTIONABLE,
                at=decision.at,
            )
        )
    elif not (run.status is StepStatus.RETRY_SCHEDULED and run.attempt + 1 == command.attempt):
        return []  # the step moved on (a later attempt, or an end); its retry's timer is what could not be kept
    decision.emit(
        ExecutionFailed(step_id=command.step_id, error=command.error, error_kind=UNACTIONABLE, at=decision.at)
    )
    return decision.events


def pause(state: Execution, command: PauseExecution, now: datetime) -> list[Event]:
    decision = _decision(state, now, command.execution_id)
    if state.status is not ExecutionStatus.RUNNING:
        raise InvalidTransition(f"cannot pause an execution that is {state.status.value}")
    decision.emit(ExecutionPaused(at=decision.at))
    return decision.events


def resume(state: Execution, command: ResumeExecution, now: datetime) -> list[Event]:
    decision = _decision(state, now, command.execution_id)
    if state.status is not ExecutionStatus.PAUSED:
        raise InvalidTransition(f"cannot resume an execution that is {state.status.value}")
    decision.emit(ExecutionResumed(at=decision.at))
    for step_id, attempt, fresh in state.queued:
        decision.enter(step_id, attempt, fresh=fresh)
    decision.finish_if_done()
    return decision.events


def cancel(state: Execution, command: CancelExecution, now: datetime) -> list[Event]:
    decision = _decision(state, now, command.execution_id)
    if state.status not in LIVE:
        raise InvalidTransition(f"cannot cancel an execution that is {state.status.value}")
    decision.emit(ExecutionCancelled(reason=command.reason, at=decision.at))
    return decision.events


def retry(state: Execution, command: RetryExecution, now: datetime) -> list[Event]:
    """Restart a failed execution from its failed step and any step that was still in flight."""
    decision = _decision(state, now, command.execution_id)
    if state.status is not ExecutionStatus.FAILED:
        raise InvalidTransition(f"only a failed execution can be retried; this one is {state.status.value}")
    spec = decision.spec
    restart = [
        sid
        for sid, run in state.steps.items()
        if (run.status is StepStatus.FAILED or run.status in ACTIVE) and not isinstance(spec.step(sid), JoinStep)
    ]  # a waiting join keeps its arrivals and completes when the restarted branches reach it
    if state.failed_step is not None and state.failed_step not in restart:
        restart.append(state.failed_step)  # e.g. a rejected approval: it succeeded, but the execution failed there
    queued = [(sid, attempt, fresh) for sid, attempt, fresh in state.queued if sid not in restart]
    decision.emit(ExecutionRetried(steps=restart, at=decision.at))
    for step_id in restart:
        decision.enter(step_id)
    for step_id, attempt, fresh in queued:  # steps that were waiting for a resume when the execution failed
        decision.enter(step_id, attempt, fresh=fresh)
    decision.finish_if_done()
    return decision.events


def decide_approval(state: Execution, command: DecideApproval, now: datetime) -> list[Event]:
    decision = _decision(state, now, command.execution_id)
    if state.status not in LIVE:
        raise InvalidTransition(f"the execution is {state.status.value}")
    run = state.steps.get(command.step_id)
    step = decision.spec.step(command.step_id) if run is not None else None
    if not isinstance(step, ApprovalStep) or run is None or run.status is not StepStatus.WAITING:
        raise InvalidTransition(f"step {command.step_id!r} is not waiting for an approval")
    decision.emit(ApprovalDecided(step_id=step.id, approved=command.approved, comment=command.comment, at=decision.at))
    output = {"approved": command.approved, "comment": command.comment}
    if command.approved:
        decision.succeed(step.id, run.attempt, output)
    else:
        decision.emit(StepSucceeded(step_id=step.id, attempt=run.attempt, output=output, at=decision.at))
        if step.on_reject is not None:
            decision.handover(step.id, step.on_reject)
        else:
            decision.emit(
                ExecutionFailed(step_id=step.id, error=f"rejected: {command.comment}".strip(), at=decision.at)
            )
    decision.finish_if_done()
    return decision.events


def replay(events: Sequence[Event]) -> Execution:
    state = Execution()
    for event in events:
        state = evolve(state, event)
    return state


@dataclass(frozen=True, slots=True)
class StartedTimer:
    """A timer that an event starts: a step's timeout, a delay's wake-up, or a retry's backoff."""

    step_id: str
    attempt: int
    purpose: Literal["retry", "timeout", "delay"]
    at: datetime
    claims_call: bool = False  # a webhook's timeout, which is also the once-only claim of its call


def timers_started(spec: WorkflowSpec | None, events: Sequence[Event]) -> list[StartedTimer]:
    """The timers ``events`` start, in order; ``spec`` is the execution's definition (an ExecutionStarted among the
    events gives it for a new execution)."""
    timers: list[StartedTimer] = []
    for event in events:
        match event:
            case ExecutionStarted():
                spec = event.spec
            case StepScheduled():
                step = spec.step(event.step_id) if spec is not None else None
                if isinstance(step, DelayStep) and event.wake_at:
                    at = datetime.fromisoformat(event.wake_at)
                    timers.append(StartedTimer(event.step_id, event.attempt, "delay", at))
                elif event.timeout_at:  # conditions, fan-outs and joins have none: they complete within their decision
                    at = datetime.fromisoformat(event.timeout_at)
                    claims = isinstance(step, WebhookStep)
                    timers.append(StartedTimer(event.step_id, event.attempt, "timeout", at, claims))
            case RetryScheduled():
                timers.append(StartedTimer(event.step_id, event.attempt, "retry", datetime.fromisoformat(event.due_at)))
    return timers
