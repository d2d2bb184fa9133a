"""The team run aggregate: state, decide and evolve. Pure: the team's members, the clock and what the followed
executions said are passed in.

A run moves planning -> running -> summarizing -> an end. Each phase is one execution of the workflow engine
(``tr-<run>-plan``, ``-work``, ``-sum``); the orchestrator follows their events and notes them here. The lead's plan is
checked against the closed list of members the run started with (``check_plan``); one that names anyone else, or is
empty or too long, ends the run before anything runs.
"""

import json
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Literal

from contracts import ErrorCode, Event
from contracts.budgets import Budget
from contracts.errors import DomainError
from contracts.team_runs import (
    RUN_ENDS,
    CancelTeamRun,
    HandoffRecorded,
    MemberStepFailed,
    MemberStepScheduled,
    MemberStepSucceeded,
    NoteRunExecution,
    PlanRejected,
    PlanStep,
    RecordHandoff,
    RunMember,
    RunTeam,
    TeamRunCancelled,
    TeamRunEnded,
    TeamRunPlanned,
    TeamRunStarted,
    TeamRunStatus,
    TeamRunSummarizing,
)
from contracts.workflows import (
    ExecutionCancelled,
    ExecutionCompleted,
    ExecutionFailed,
    StepFailed,
    StepScheduled,
    StepSucceeded,
)

AGGREGATE = "team_run"
EXECUTION_PREFIX = "tr-"
Phase = Literal["plan", "work", "sum"]
PHASES: tuple[Phase, ...] = ("plan", "work", "sum")
SUMMARY_RESERVE = 0.2  # of a run's budget, kept for the lead's summary: the plan and the work stop before it


class TeamRunNotFound(DomainError):
    code = ErrorCode.TEAM_RUN_NOT_FOUND


class RunIsOver(DomainError):
    code = ErrorCode.INVALID_TRANSITION


def execution_id(run_id: str, phase: Phase) -> str:
    return f"{EXECUTION_PREFIX}{run_id}-{phase}"


def parse_execution_id(value: str) -> tuple[str, Phase] | None:
    """``(run id, phase)`` of one of a run's executions; None for any other id."""
    if not value.startswith(EXECUTION_PREFIX):
        return None
    run_id, _, phase = value.removeprefix(EXECUTION_PREFIX).rpartition("-")
    for known in PHASES:
        if phase == known and run_id:
            return run_id, known
    return None


@dataclass(frozen=True, slots=True)
class StepState:
    agent_id: str
    status: str = "pending"  # pending, scheduled, succeeded, failed
    attempt: int = 0
    output: Any = None
    error: str | None = None
    error_kind: str | None = None


@dataclass(frozen=True, slots=True)
class TeamRun:
    run_id: str = ""
    started: TeamRunStarted | None = None
    status: TeamRunStatus = TeamRunStatus.PLANNING
    plan: tuple[PlanStep, ...] = ()
    steps: dict[str, StepState] = field(default_factory=dict)
    handoffs: frozenset[tuple[str, int]] = frozenset()
    outcome: str | None = None
    error: str | None = None
    summary: str | None = None

    @property
    def exists(self) -> bool:
        return self.started is not None

    @property
    def over(self) -> bool:
        return self.status in RUN_ENDS

    @property
    def current_execution(self) -> str | None:
        phase: dict[TeamRunStatus, Phase] = {
            TeamRunStatus.PLANNING: "plan",
            TeamRunStatus.RUNNING: "work",
            TeamRunStatus.SUMMARIZING: "sum",
        }
        return execution_id(self.run_id, phase[self.status]) if self.status in phase else None


def _step(state: TeamRun, step_id: str, **changes: Any) -> TeamRun:
    if step_id not in state.steps:
        return state
    return replace(state, steps={**state.steps, step_id: replace(state.steps[step_id], **changes)})


def evolve(state: TeamRun, event: Event) -> TeamRun:
    match event:
        case TeamRunStarted():
            return TeamRun(run_id=event.run_id, started=event)
        case TeamRunPlanned(plan=plan):
            steps = {s.id: StepState(agent_id=s.agent_id) for s in plan}
            return replace(state, status=TeamRunStatus.RUNNING, plan=tuple(plan), steps=steps)
        case PlanRejected(error=error):
            return replace(state, error=error)
        case MemberStepScheduled(step_id=step_id, attempt=attempt):
            return _step(state, step_id, status="scheduled", attempt=attempt)
        case MemberStepSucceeded(step_id=step_id, attempt=attempt, output=output):
            return _step(state, step_id, status="succeeded", attempt=attempt, output=output, error=None)
        case MemberStepFailed(step_id=step_id, attempt=attempt, error=error, error_kind=kind):
            return _step(state, step_id, status="failed", attempt=attempt, error=error, error_kind=kind)
        case HandoffRecorded(step_id=step_id, attempt=attempt):
            return replace(state, handoffs=state.handoffs | {(step_id, attempt)})
        case TeamRunSummarizing(outcome=outcome, error=error):
            return replace(state, status=TeamRunStatus.SUMMARIZING, outcome=outcome, error=error)
        case TeamRunEnded(status=status, summary=summary, error=error):
            return replace(state, status=TeamRunStatus(status), summary=summary, error=error or state.error)
        case TeamRunCancelled():
            return replace(state, status=TeamRunStatus.CANCELLED)
    return state


# Deciding ---------------------------------------------------------------------------------------------------------


def _iso(now: datetime) -> str:
    return now.isoformat()


def decide_start(state: TeamRun, command: RunTeam, members: list[RunMember], lead: str, now: datetime) -> list[Event]:
    if state.exists:
        return []
    request = command.request
    return [
        TeamRunStarted(
            run_id=command.run_id,
            kind=command.kind,
            team_ids=list(command.team_ids),
            objective=request.objective,
            input=request.input,
            budget=request.budget,
            max_steps=request.max_steps,
            members=members,
            lead=lead,
            execution_id=execution_id(command.run_id, "plan"),
            at=_iso(now),
        )
    ]


def _live(state: TeamRun, run_id: str) -> TeamRunStarted:
    if state.started is None:
        raise TeamRunNotFound(f"team run {run_id} not found")
    return state.started


def decide_cancel(state: TeamRun, command: CancelTeamRun, now: datetime) -> list[Event]:
    _live(state, command.run_id)
    if state.status is TeamRunStatus.CANCELLED:
        return []
    if state.over:
        raise RunIsOver(f"team run {command.run_id} is {state.status.value}: it cannot be cancelled")
    reason = command.reason or "cancelled"
    return [TeamRunCancelled(reason=reason, execution_id=state.current_execution, at=_iso(now))]


def decide_handoff(state: TeamRun, command: RecordHandoff, now: datetime) -> list[Event]:
    """The handoff of a step's attempt, recorded once with its size; for a step of the plan it is also the step's
    start (the runtime sends it as the member begins), so the engine's StepScheduled need not be followed."""
    _live(state, command.run_id)
    if (command.step_id, command.attempt) in state.handoffs:
        return []
    size = len(json.dumps(command.handoff.model_dump(mode="json"), ensure_ascii=False).encode())
    events: list[Event] = [
        HandoffRecorded(
            step_id=command.step_id,
            attempt=command.attempt,
            agent_id=command.agent_id,
            handoff=command.handoff,
            size_bytes=size,
        )
    ]
    run = state.steps.get(command.step_id)
    fresh = run is not None and command.attempt > run.attempt and run.status != "succeeded"
    if fresh and state.status is TeamRunStatus.RUNNING:
        events.append(MemberStepScheduled(step_id=command.step_id, attempt=command.attempt, at=_iso(now)))
    return events


def check_plan(output: Any, members: list[RunMember], max_steps: int) -> tuple[list[PlanStep], str | None]:
    """The lead's plan as steps, or why it is refused: it must be 1 to ``max_steps`` steps, each naming a member of
    the closed list by id and saying what to do."""
    steps = output.get("steps") if isinstance(output, dict) else None
    if not isinstance(steps, list) or not steps:
        return [], "the lead's plan has no steps"
    if len(steps) > max_steps:
        return [], f"the lead's plan has {len(steps)} steps, more than the {max_steps} allowed"
    known = {m.agent_id for m in members}
    plan: list[PlanStep] = []
    for index, item in enumerate(steps, start=1):
        if not isinstance(item, dict):
            return [], f"step {index} of the lead's plan is not an object"
        member, task = item.get("member"), item.get("task")
        if member not in known:
            return [], f"step {index} of the lead's plan names {str(member)[:80]!r}, who is not a member of the run"
        if not isinstance(task, str) or not task.strip():
            return [], f"step {index} of the lead's plan says nothing to do"
        produces = item.get("produces")
        plan.append(
            PlanStep(
                id=f"s{index}",
                agent_id=str(member),
                task=task[:2000],
                produces=produces[:500] if isinstance(produces, str) else "",
            )
        )
    return plan, None


def table(state: TeamRun) -> list[dict[str, Any]]:
    """The plan's steps and where they stand: what the lead sees, instead of a chat history."""
    rows = []
    for step in state.plan:
        run = state.steps.get(step.id)
        rows.append(
            {
                "step": step.id,
                "member": step.agent_id,
                "task": step.task,
                "status": run.status if run else "pending",
                "output": _short(run.output) if run and run.output is not None else None,
                "error": run.error if run else None,
            }
        )
    return rows


def _short(value: Any, limit: int = 600) -> Any:
    text = json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)
    return value if len(text) <= limit else text[:limit] + " ...(truncated)"


def fallback_summary(state: TeamRun, outcome: str, why: str) -> str:
    """A summary written without a model when the lead's call could not be made: the plan's table in words."""
    done = [row for row in table(state) if row["status"] == "succeeded"]
    parts = [f"The run {outcome.replace('_', ' ')}: {len(done)} of {len(state.plan)} planned steps done ({why})."]
    parts += [f"{row['step']} by {row['member']}: {row['task'][:200]}" for row in done]
    return " ".join(parts)


STEP_EVENTS = frozenset(cls.type_name for cls in (StepScheduled, StepSucceeded, StepFailed))


def noted(phase: Phase, event_type: str) -> bool:
    """Whether an event of the run's ``phase`` execution can change the run (``decide_note`` ignores the others):
    only the work execution's steps are the run's steps; the plan's and the summary's single steps end with their
    execution, whose own end event is noted."""
    return phase == "work" or event_type not in STEP_EVENTS


def decide_note(state: TeamRun, command: NoteRunExecution, now: datetime) -> list[Event]:  # noqa: PLR0912
    started = _live(state, command.run_id)
    parsed = parse_execution_id(command.execution_id)
    if parsed is None or parsed[0] != command.run_id or state.over:
        return []
    phase, kind, data, at = parsed[1], command.event_type, command.data, _iso(now)
    if kind == ExecutionCancelled.type_name:
        return [
            TeamRunCancelled(reason=str(data.get("reason") or "its execution was cancelled"), execution_id=None, at=at)
        ]
    if phase == "plan" and state.status is TeamRunStatus.PLANNING:
        if kind == ExecutionCompleted.type_name:
            plan, problem = check_plan((data.get("output") or {}).get("plan"), started.members, started.max_steps)
            if problem is not None:
                summary = f"Nothing ran: {problem}."
                return [
                    PlanRejected(error=problem, at=at),
                    TeamRunEnded(status="failed", summary=summary, summary_by="runtime", error=problem, at=at),
                ]
            return [TeamRunPlanned(plan=plan, execution_id=execution_id(command.run_id, "work"), at=at)]
        if kind == ExecutionFailed.type_name:
            error_kind = str(data.get("error_kind", "error"))
            status: Literal["failed", "budget_exceeded"] = (
                "budget_exceeded" if error_kind == "budget_exceeded" else "failed"
            )
            error = f"the lead could not plan: {data.get('error', 'failed')}"
            return [
                TeamRunEnded(status=status, summary=f"Nothing ran: {error}.", summary_by="runtime", error=error, at=at)
            ]
        return []
    if phase == "work" and state.status in {TeamRunStatus.RUNNING, TeamRunStatus.SUMMARIZING}:
        # A step's own event may come after its execution's end (they are consumed apart): it is still taken.
        step_id = str(data.get("step_id", ""))
        attempt = int(data.get("attempt", 0) or 0)
        run = state.steps.get(step_id)
        if kind == StepScheduled.type_name and run is not None and attempt > run.attempt:
            return [MemberStepScheduled(step_id=step_id, attempt=attempt, at=at)]
        if kind == StepSucceeded.type_name and run is not None and run.status != "succeeded":
            return [MemberStepSucceeded(step_id=step_id, attempt=attempt, output=data.get("output"), at=at)]
        fresh = run is not None and (attempt > run.attempt or (attempt == run.attempt and run.status != "failed"))
        if kind == StepFailed.type_name and run is not None and run.status != "succeeded" and fresh:
            return [
                MemberStepFailed(
                    step_id=step_id,
                    attempt=attempt,
                    error=str(data.get("error", "failed"))[:2000],
                    error_kind=str(data.get("error_kind", "error")),
                    at=at,
                )
            ]
        summarize = execution_id(command.run_id, "sum")
        if state.status is not TeamRunStatus.RUNNING:
            return []
        if kind == ExecutionCompleted.type_name:
            outputs = data.get("output") or {}
            late: list[Event] = [  # a step's own event may come after the execution's end: its output is here
                MemberStepSucceeded(step_id=sid, attempt=state.steps[sid].attempt, output=outputs[sid], at=at)
                for sid in (s.id for s in state.plan)
                if sid in outputs and state.steps[sid].status != "succeeded"
            ]
            return [*late, TeamRunSummarizing(outcome="completed", execution_id=summarize, at=at)]
        if kind == ExecutionFailed.type_name:
            error_kind = str(data.get("error_kind", "error"))
            outcome: Literal["failed", "budget_exceeded"] = (
                "budget_exceeded" if error_kind == "budget_exceeded" else "failed"
            )
            error = str(data.get("error", "a step failed"))[:2000]
            failed: list[Event] = (
                [MemberStepFailed(step_id=step_id, attempt=run.attempt, error=error, error_kind=error_kind, at=at)]
                if run is not None and run.status not in {"failed", "succeeded"}
                else []
            )
            return [*failed, TeamRunSummarizing(outcome=outcome, error=error, execution_id=summarize, at=at)]
        return []
    if phase == "sum" and state.status is TeamRunStatus.SUMMARIZING:
        final: Literal["completed", "failed", "budget_exceeded"] = (
            "completed"
            if state.outcome == "completed"
            else "budget_exceeded"
            if state.outcome == "budget_exceeded"
            else "failed"
        )
        if kind == ExecutionCompleted.type_name:
            answer = (data.get("output") or {}).get("summary")
            text = answer.get("summary") if isinstance(answer, dict) else None
            if isinstance(text, str) and text.strip():
                return [TeamRunEnded(status=final, summary=text[:8000], summary_by="lead", error=state.error, at=at)]
            why = "the lead's summary was empty"
        elif kind == ExecutionFailed.type_name:
            why = f"the lead's summary call failed: {str(data.get('error', 'failed'))[:300]}"
        else:
            return []
        summary = fallback_summary(state, final, why)
        return [TeamRunEnded(status=final, summary=summary, summary_by="runtime", error=state.error, at=at)]
    return []


# Budgets ----------------------------------------------------------------------------------------------------------


def budgets(budget: Budget | None) -> tuple[Budget | None, Budget | None]:
    """The limits of the run's shared budget for (the plan and the work, the lead's summary): the summary may use
    all of it, the others stop ``SUMMARY_RESERVE`` short, so the summary's small call always has room."""
    if budget is None:
        return None, None
    tokens = None if budget.tokens is None else max(1, budget.tokens - max(1, int(budget.tokens * SUMMARY_RESERVE)))
    cost = None if budget.cost_usd is None else max(0.000001, budget.cost_usd * (1 - SUMMARY_RESERVE))
    return Budget(tokens=tokens, cost_usd=cost), budget
