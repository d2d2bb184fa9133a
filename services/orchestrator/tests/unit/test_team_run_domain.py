"""The team run aggregate, pure: the plan checked against the closed member list, the executions' events noted in
any order and any number of times, the summary's budget reserve, the lead's table."""

from datetime import UTC, datetime
from functools import reduce
from typing import Any

import pytest

from contracts import Event
from contracts.budgets import Budget
from contracts.team_runs import (
    CancelTeamRun,
    Handoff,
    NoteRunExecution,
    RecordHandoff,
    RunMember,
    RunRequest,
    RunTeam,
    TeamRunEnded,
    TeamRunStatus,
)
from contracts.workflows import AgentStep
from orchestrator.domain.run_plans import summary_spec, work_spec
from orchestrator.domain.team_run import (
    Phase,
    RunIsOver,
    TeamRun,
    TeamRunNotFound,
    budgets,
    check_plan,
    decide_cancel,
    decide_handoff,
    decide_note,
    decide_start,
    evolve,
    execution_id,
    noted,
    parse_execution_id,
    table,
)

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
MEMBERS = [
    RunMember(agent_id="a1", name="Q", role="lead qualifier", team_id="t1", lead=True),
    RunMember(agent_id="a2", name="W", role="proposal writer", team_id="t1"),
]
PLAN = {
    "steps": [
        {"member": "a1", "task": "qualify", "produces": "a score"},
        {"member": "a2", "task": "write", "produces": "a draft"},
    ]
}


def apply(state: TeamRun, events: list[Event]) -> TeamRun:
    return reduce(evolve, events, state)


def note(state: TeamRun, phase: str, event_type: str, **data: Any) -> tuple[TeamRun, list[Event]]:
    command = NoteRunExecution(run_id="r1", execution_id=f"tr-r1-{phase}", event_type=event_type, data=data)
    events = decide_note(state, command, NOW)
    return apply(state, events), events


def started(budget: Budget | None = None) -> TeamRun:
    request = RunRequest(objective="Handle the new leads", budget=budget, max_steps=3)
    command = RunTeam(run_id="r1", team_ids=["t1"], request=request)
    return apply(TeamRun(), decide_start(TeamRun(), command, MEMBERS, "a1", NOW))


def planned() -> TeamRun:
    state, events = note(started(), "plan", "ExecutionCompleted", output={"plan": PLAN})
    assert [type(e).__name__ for e in events] == ["TeamRunPlanned"]
    return state


def test_execution_ids_parse_back_to_their_run_and_phase() -> None:
    assert parse_execution_id(execution_id("run_abc", "work")) == ("run_abc", "work")
    assert parse_execution_id("tr-run_abc-sum") == ("run_abc", "sum")
    assert parse_execution_id("tr--plan") is None
    assert parse_execution_id("tr-run_abc-other") is None
    assert parse_execution_id("dg-x-plan") is None


@pytest.mark.parametrize(
    ("output", "problem"),
    [
        (None, "no steps"),
        ({"steps": []}, "no steps"),
        ({"steps": [{"member": "a9", "task": "x"}]}, "'a9', who is not a member"),
        ({"steps": [{"member": "a1", "task": "  "}]}, "says nothing to do"),
        ({"steps": [{"member": "a1", "task": "x"}] * 4}, "more than the 3 allowed"),
        ({"steps": ["a1"]}, "not an object"),
    ],
)
def test_a_plan_names_only_members_and_is_bounded(output: Any, problem: str) -> None:
    steps, error = check_plan(output, MEMBERS, 3)
    assert steps == []
    assert error is not None
    assert problem in error


def test_a_plan_naming_a_stranger_ends_the_run_failed_before_anything_runs() -> None:
    bad = {"steps": [{"member": "a1", "task": "x"}, {"member": "boss", "task": "y"}]}
    state, events = note(started(), "plan", "ExecutionCompleted", output={"plan": bad})
    assert [type(e).__name__ for e in events] == ["PlanRejected", "TeamRunEnded"]
    assert state.status is TeamRunStatus.FAILED
    assert state.plan == ()


def test_the_work_is_chained_each_member_given_the_previous_output() -> None:
    spec = work_spec(planned())
    assert [s.id for s in spec.steps] == ["s1", "s2"]
    first, second = spec.steps
    assert isinstance(first, AgentStep)
    assert isinstance(second, AgentStep)
    assert first.input["previous"] is None
    assert second.input["previous"] == "$steps.s1.output"
    assert first.next == "s2"


def test_step_events_in_any_order_and_repeated_give_one_state() -> None:
    state = planned()
    state, _ = note(state, "work", "StepScheduled", step_id="s1", attempt=1)
    state, _ = note(state, "work", "StepSucceeded", step_id="s1", attempt=1, output={"score": 80})
    _, repeat = note(state, "work", "StepSucceeded", step_id="s1", attempt=1, output={"score": 80})
    assert repeat == []
    _, scheduled = note(state, "work", "StepScheduled", step_id="s1", attempt=1)  # after its success
    assert scheduled == []
    # The execution's end came before s2's own event: its output is taken from the end.
    state, events = note(state, "work", "ExecutionCompleted", output={"s1": {"score": 80}, "s2": {"draft": "d"}})
    assert [type(e).__name__ for e in events] == ["MemberStepSucceeded", "TeamRunSummarizing"]
    assert state.status is TeamRunStatus.SUMMARIZING
    assert [row["status"] for row in table(state)] == ["succeeded", "succeeded"]
    _, after = note(state, "work", "StepSucceeded", step_id="s2", attempt=1, output={"draft": "d"})
    assert after == []  # the run moved on: a late event of the work changes nothing


def test_what_is_not_noted_could_not_have_changed_the_run() -> None:
    """The orchestrator does not even send a note for a plan's or a summary's step events: in any state a note of
    them would decide nothing, while the work's steps and every execution's end are noted."""
    summarizing, _ = note(planned(), "work", "ExecutionCompleted", output={"s1": {"a": 1}, "s2": {"b": 2}})
    states: dict[Phase, TeamRun] = {"plan": started(), "work": planned(), "sum": summarizing}
    for phase, state in states.items():
        for kind in ("StepScheduled", "StepSucceeded", "StepFailed"):
            skipped = not noted(phase, kind)
            assert skipped == (phase != "work")
            if skipped:
                _, events = note(state, phase, kind, step_id="s1", attempt=1, output={"plan": PLAN})
                assert events == [], (phase, kind)
        for end in ("ExecutionCompleted", "ExecutionFailed", "ExecutionCancelled"):
            assert noted(phase, end)


def test_a_budget_stop_keeps_the_partial_results_and_the_lead_summarises_them() -> None:
    state = planned()
    state, _ = note(state, "work", "StepSucceeded", step_id="s1", attempt=1, output={"score": 80})
    state, _ = note(state, "work", "StepFailed", step_id="s2", attempt=1, error="no room", error_kind="budget_exceeded")
    state, events = note(state, "work", "ExecutionFailed", error="no room", error_kind="budget_exceeded")
    assert [type(e).__name__ for e in events] == ["TeamRunSummarizing"]
    summary = summary_spec(state).steps[0]
    assert isinstance(summary, AgentStep)
    assert summary.max_output_tokens is not None
    assert [row["status"] for row in summary.input["steps"]] == ["succeeded", "failed"]
    state, events = note(state, "sum", "ExecutionCompleted", output={"summary": {"summary": "One of two done."}})
    assert isinstance(events[0], TeamRunEnded)
    assert (events[0].status, events[0].summary_by) == ("budget_exceeded", "lead")
    assert state.status is TeamRunStatus.BUDGET_EXCEEDED


def test_when_the_summary_call_fails_the_runtime_writes_the_summary_from_the_table() -> None:
    state = planned()
    state, _ = note(state, "work", "ExecutionCompleted", output={"s1": {"a": 1}, "s2": {"b": 2}})
    state, events = note(state, "sum", "ExecutionFailed", error="budget", error_kind="budget_exceeded")
    ended = events[0]
    assert isinstance(ended, TeamRunEnded)
    assert ended.status == "completed"  # the work was done; only its summary was not the lead's
    assert ended.summary_by == "runtime"
    assert "2 of 2 planned steps done" in ended.summary


def test_the_summary_keeps_a_reserve_the_plan_and_work_cannot_take() -> None:
    work, summary = budgets(Budget(tokens=1000, cost_usd=1.0))
    assert work is not None
    assert summary is not None
    assert (work.tokens, summary.tokens) == (800, 1000)
    assert work.cost_usd == pytest.approx(0.8)
    assert budgets(None) == (None, None)


def test_cancel_is_once_and_not_after_the_end() -> None:
    state = planned()
    events = decide_cancel(state, CancelTeamRun(run_id="r1", reason="stop"), NOW)
    assert [getattr(e, "execution_id", None) for e in events] == ["tr-r1-work"]
    cancelled = apply(state, events)
    assert decide_cancel(cancelled, CancelTeamRun(run_id="r1"), NOW) == []
    _, ignored = note(cancelled, "work", "ExecutionCancelled")
    assert ignored == []
    done, _ = note(started(), "plan", "ExecutionFailed", error="x")
    with pytest.raises(RunIsOver):
        decide_cancel(done, CancelTeamRun(run_id="r1"), NOW)
    with pytest.raises(TeamRunNotFound):
        decide_cancel(TeamRun(), CancelTeamRun(run_id="r1"), NOW)


def test_a_handoff_is_recorded_once_per_attempt_with_its_size() -> None:
    state = planned()
    handoff = Handoff(objective="o", task="qualify", inputs={"previous": None})
    command = RecordHandoff(run_id="r1", step_id="s1", attempt=1, agent_id="a1", handoff=handoff)
    events = decide_handoff(state, command, NOW)
    assert [type(e).__name__ for e in events] == ["HandoffRecorded", "MemberStepScheduled"]
    assert getattr(events[0], "size_bytes", 0) > 20
    assert decide_handoff(apply(state, events), command, NOW) == []


def test_a_failed_step_is_taken_from_its_executions_end_when_its_own_event_comes_later() -> None:
    state = planned()
    state, _ = note(state, "work", "StepScheduled", step_id="s1", attempt=1)
    state, events = note(state, "work", "ExecutionFailed", step_id="s1", error="no room", error_kind="budget_exceeded")
    assert [type(e).__name__ for e in events] == ["MemberStepFailed", "TeamRunSummarizing"]
    assert [row["status"] for row in table(state)] == ["failed", "pending"]
    _, late = note(state, "work", "StepFailed", step_id="s1", attempt=1, error="no room", error_kind="budget_exceeded")
    assert late == []
