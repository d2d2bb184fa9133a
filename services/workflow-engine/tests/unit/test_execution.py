"""The execution aggregate: pure decide/evolve, every step kind, operator, retry and lifecycle transition."""

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from contracts import Event
from contracts.workflows import (
    AbandonStep,
    CancelExecution,
    Comparison,
    DecideApproval,
    ExecuteWorkflow,
    ExecutionCompleted,
    ExecutionFailed,
    ExecutionStatus,
    FireTimer,
    PauseExecution,
    RecordTaskResult,
    ResumeExecution,
    RetryExecution,
    RetryScheduled,
    StepScheduled,
    StepStatus,
    WorkflowSpec,
)
from workflow_engine.domain import execution as ex
from workflow_engine.domain.expressions import MISSING, compare, render

T0 = datetime(2026, 1, 1, tzinfo=UTC)


class Run:
    """Drives one execution through decide functions, keeping the event log like the store would."""

    def __init__(self, steps: list[dict[str, Any]], start: str = "a", input: dict[str, Any] | None = None) -> None:
        self.spec = WorkflowSpec.model_validate({"name": "w", "start": start, "steps": steps})
        self.now = T0
        self.log: list[Event] = ex.start(
            ExecuteWorkflow(workflow_id="wf", execution_id="e1", input=input or {}), self.spec, 1, self.now
        )

    @property
    def state(self) -> ex.Execution:
        return ex.replay(self.log)

    def apply(self, events: list[Event]) -> list[Event]:
        self.log.extend(events)
        return events

    def tick(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)

    def result(self, step: str, ok: bool = True, output: Any = None, error_kind: str = "error") -> list[Event]:
        attempt = self.state.steps[step].attempt
        cmd = RecordTaskResult(
            execution_id="e1",
            step_id=step,
            attempt=attempt,
            ok=ok,
            output=output,
            error=None if ok else "boom",
            error_kind=error_kind,
        )
        return self.apply(ex.record_result(self.state, cmd, self.now))

    def timer(self, step: str, purpose: str, attempt: int | None = None) -> list[Event]:
        number = attempt if attempt is not None else self.state.steps[step].attempt
        cmd = FireTimer(execution_id="e1", step_id=step, attempt=number, purpose=purpose)  # type: ignore[arg-type]
        return self.apply(ex.fire_timer(self.state, cmd, self.now))

    def status(self, step: str) -> StepStatus:
        return self.state.steps[step].status


def agent(step_id: str, next_step: str | None = None, **extra: Any) -> dict[str, Any]:
    return {"id": step_id, "kind": "agent", "role": "r", "next": next_step, **extra}


def test_agent_chain_completes_with_mapped_inputs_and_replays_identically() -> None:
    run = Run(
        [agent("a", "b", input={"lead": "$input.lead"}), agent("b", input={"score": "$steps.a.output.score", "k": 1})],
        input={"lead": {"email": "x@y"}},
    )
    first = run.state.steps["a"]
    assert (first.status, first.attempt, first.key, first.input) == (
        StepStatus.SCHEDULED,
        1,
        "e1:a:1",
        {"lead": {"email": "x@y"}},
    )
    run.result("a", output={"score": 80})
    assert run.state.steps["b"].input == {"score": 80, "k": 1}
    events = run.result("b", output="done")
    assert isinstance(events[-1], ExecutionCompleted)
    assert run.state.status is ExecutionStatus.COMPLETED
    assert run.state.output == {"a": {"score": 80}, "b": "done"}
    assert ex.replay(run.log) == ex.replay(list(run.log)), "replaying the same log gives the same state"


def test_results_for_stale_attempts_or_finished_executions_change_nothing() -> None:
    run = Run([agent("a")])
    stale = RecordTaskResult(execution_id="e1", step_id="a", attempt=7, ok=True)
    assert ex.record_result(run.state, stale, run.now) == []
    run.result("a")
    again = RecordTaskResult(execution_id="e1", step_id="a", attempt=1, ok=True)
    assert ex.record_result(run.state, again, run.now) == [], "a duplicate result after completion is ignored"


def test_an_abandoned_attempt_fails_its_execution_without_a_retry_and_a_retry_starts_it_again() -> None:
    run = Run([agent("a", retry={"max_attempts": 3})])
    abandon = AbandonStep(execution_id="e1", step_id="a", attempt=1, error="the engine could not carry it out")
    events = run.apply(ex.abandon_step(run.state, abandon, run.now))
    assert [type(e).__name__ for e in events] == ["StepFailed", "ExecutionFailed"]
    assert (run.state.steps["a"].error_kind, run.state.status) == ("unactionable", ExecutionStatus.FAILED)
    assert ex.abandon_step(run.state, abandon, run.now) == [], "once"
    run.apply(ex.retry(run.state, RetryExecution(execution_id="e1"), run.now))
    assert (run.status("a"), run.state.steps["a"].attempt) == (StepStatus.SCHEDULED, 2)


def test_an_abandoned_retry_fails_its_execution_and_a_stale_abandon_changes_nothing() -> None:
    run = Run([agent("a", retry={"max_attempts": 3, "backoff_s": 5})])
    run.result("a", ok=False)
    assert run.status("a") is StepStatus.RETRY_SCHEDULED
    stale = AbandonStep(execution_id="e1", step_id="a", attempt=1, error="x")
    assert ex.abandon_step(run.state, stale, run.now) == [], "the step moved past that attempt"
    retry = AbandonStep(execution_id="e1", step_id="a", attempt=2, error="its backoff could not be kept")
    events = run.apply(ex.abandon_step(run.state, retry, run.now))
    assert [type(e).__name__ for e in events] == ["ExecutionFailed"]
    assert run.state.status is ExecutionStatus.FAILED


def test_retry_succeeds_on_the_second_attempt_after_a_durable_backoff() -> None:
    run = Run([agent("a", retry={"max_attempts": 3, "backoff_s": 5, "multiplier": 2})])
    events = run.result("a", ok=False)
    retry = events[-1]
    assert isinstance(retry, RetryScheduled)
    assert (retry.attempt, retry.due_at) == (2, (T0 + timedelta(seconds=5)).isoformat())
    assert run.status("a") is StepStatus.RETRY_SCHEDULED
    assert run.timer("a", "retry", attempt=3) == [], "a timer for another attempt is stale"
    run.tick(5)
    run.timer("a", "retry", attempt=2)
    assert (run.status("a"), run.state.steps["a"].attempt, run.state.steps["a"].key) == (
        StepStatus.SCHEDULED,
        2,
        "e1:a:2",
    )
    assert run.timer("a", "retry", attempt=2) == [], "the same timer firing twice has one effect"
    run.result("a", output="ok")
    assert run.state.status is ExecutionStatus.COMPLETED
    assert [a.status for a in run.state.steps["a"].attempts] == [StepStatus.FAILED, StepStatus.SUCCEEDED]


def test_exhausted_retries_fail_the_execution_with_the_error() -> None:
    run = Run([agent("a", retry={"max_attempts": 2, "backoff_s": 0})])
    run.result("a", ok=False)
    run.timer("a", "retry", attempt=2)
    events = run.result("a", ok=False)
    assert isinstance(events[-1], ExecutionFailed)
    assert (run.state.status, run.state.error, run.state.failed_step) == (ExecutionStatus.FAILED, "boom", "a")


def test_errors_not_listed_in_retry_on_are_not_retried() -> None:
    run = Run([agent("a", retry={"max_attempts": 3, "retry_on": ["timeout"]})])
    assert isinstance(run.result("a", ok=False, error_kind="validation")[-1], ExecutionFailed)


def test_step_timeout_fails_the_attempt_and_retries() -> None:
    run = Run([agent("a", timeout_s=30, retry={"max_attempts": 2, "backoff_s": 1})])
    assert run.state.steps["a"].timeout_at == (T0 + timedelta(seconds=30)).isoformat()
    run.tick(30)
    events = run.timer("a", "timeout")
    assert run.state.steps["a"].error_kind == "timeout"
    assert isinstance(events[-1], RetryScheduled)
    run.timer("a", "retry", attempt=2)
    run.result("a", ok=True)
    assert run.state.status is ExecutionStatus.COMPLETED
    assert run.timer("a", "timeout", attempt=1) == [], "the first attempt's timeout no longer applies"


def test_retry_from_failed_step_through_the_api_command() -> None:
    run = Run([agent("a", "b"), agent("b")])
    run.result("a")
    run.result("b", ok=False)
    failed = run.state
    assert failed.status is ExecutionStatus.FAILED
    run.apply(ex.retry(run.state, RetryExecution(execution_id="e1"), run.now))
    assert (run.state.status, run.status("b"), run.state.steps["b"].attempt) == (
        ExecutionStatus.RUNNING,
        StepStatus.SCHEDULED,
        2,
    )
    run.result("b")
    assert run.state.status is ExecutionStatus.COMPLETED


@pytest.mark.parametrize(
    ("op", "actual", "value", "expected"),
    [
        ("eq", 5, 5, True),
        ("eq", 5, 6, False),
        ("ne", 5, 6, True),
        ("ne", 5, 5, False),
        ("gt", 5, 4, True),
        ("gt", 5, 5, False),
        ("gte", 5, 5, True),
        ("gte", 4, 5, False),
        ("lt", 4, 5, True),
        ("lt", 5, 5, False),
        ("lte", 5, 5, True),
        ("lte", 6, 5, False),
        ("contains", "hello world", "world", True),
        ("contains", ["a", "b"], "c", False),
        ("in", "b", ["a", "b"], True),
        ("in", "z", ["a", "b"], False),
        ("exists", 0, None, True),
        ("exists", MISSING, None, False),
        ("exists", MISSING, False, True),
        ("matches", "order-123", r"^order-\d+$", True),
        ("matches", "order-x", r"^order-\d+$", False),
        ("matches", "a" * 27 + "!", "(a+)+$", False),  # seconds of backtracking for Python's re
        ("matches", "x" * 100_001, "x", False),  # a text beyond the bound does not match
        ("matches", 5, "5", False),
        ("gt", "abc", 3, False),
        ("eq", MISSING, None, False),
    ],
)
def test_each_operator(op: str, actual: Any, value: Any, expected: bool) -> None:
    assert compare(Comparison(field="$input.x", op=op, value=value), actual) is expected  # type: ignore[arg-type]


def condition(branches: list[dict[str, Any]], default: str | None = None) -> dict[str, Any]:
    return {"id": "route", "kind": "condition", "branches": branches, "default": default}


def test_condition_routes_by_all_and_any() -> None:
    steps = [
        agent("a", "route"),
        condition(
            [
                {
                    "when": {
                        "all": [
                            {"field": "$steps.a.output.score", "op": "gte", "value": 70},
                            {"field": "$input.region", "op": "in", "value": ["eu", "us"]},
                        ]
                    },
                    "next": "hot",
                },
                {
                    "when": {
                        "any": [
                            {"field": "$steps.a.output.score", "op": "lt", "value": 10},
                            {"field": "$input.spam", "op": "exists"},
                        ]
                    },
                    "next": "drop",
                },
            ],
            default="nurture",
        ),
        agent("hot"),
        agent("drop"),
        agent("nurture"),
    ]
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({"region": "eu"}, 90, "hot"),
        ({"region": "asia"}, 90, "nurture"),
        ({"spam": 1}, 50, "drop"),
        ({}, 5, "drop"),
    ]
    for data, score, chosen in cases:
        run = Run(steps, input=data)
        run.result("a", output={"score": score})
        assert run.state.steps["route"].output == {"next": chosen}
        assert run.status(chosen) is StepStatus.SCHEDULED
        assert [s for s in ("hot", "drop", "nurture") if run.status(s) is not StepStatus.PENDING] == [chosen]


def test_a_condition_with_a_catastrophic_pattern_routes_and_the_execution_proceeds() -> None:
    """``(a+)+$`` on 27 a's and a '!' kept Python's backtracking re busy for about 9 s (doubling per character); RE2
    answers at once, so the run finishes as part of this test's ordinary run."""
    steps = [
        condition([{"when": {"field": "$input.s", "op": "matches", "value": "(a+)+$"}, "next": "hit"}], "miss"),
        agent("hit"),
        agent("miss"),
    ]
    for text, chosen in (("a" * 40 + "!", "miss"), ("a" * 40, "hit")):
        run = Run(steps, start="route", input={"s": text})
        assert run.state.steps["route"].output == {"next": chosen}
        run.result(chosen)
        assert run.state.status is ExecutionStatus.COMPLETED


def test_condition_without_a_matching_branch_or_default_ends_the_path() -> None:
    run = Run(
        [
            agent("a", "route"),
            condition([{"when": {"field": "$steps.a.output.ok", "op": "eq", "value": True}, "next": "b"}]),
            agent("b"),
        ]
    )
    run.result("a", output={"ok": False})
    assert run.state.status is ExecutionStatus.COMPLETED


def test_parallel_branches_meet_at_the_join() -> None:
    run = Run(
        [
            {"id": "a", "kind": "parallel", "branches": ["b", "c"], "join": "j"},
            agent("b", "j"),
            agent("c", "c2"),
            agent("c2", "j"),
            {"id": "j", "kind": "join", "next": "d"},
            agent("d", input={"b": "$steps.b.output", "c": "$steps.c2.output"}),
        ]
    )
    assert run.status("b") is run.status("c") is StepStatus.SCHEDULED
    run.result("c", output=1)
    run.result("b", output=2)
    assert run.status("j") is StepStatus.WAITING
    assert run.status("d") is StepStatus.PENDING
    run.result("c2", output=3)
    assert run.status("j") is StepStatus.SUCCEEDED
    assert run.state.steps["d"].input == {"b": 2, "c": 3}
    run.result("d")
    assert run.state.status is ExecutionStatus.COMPLETED


def test_delay_step_waits_for_its_timer() -> None:
    run = Run([{"id": "a", "kind": "delay", "seconds": 60, "next": "b"}, agent("b")])
    assert run.state.steps["a"].wake_at == (T0 + timedelta(seconds=60)).isoformat()
    assert run.status("a") is StepStatus.WAITING
    run.tick(60)
    run.timer("a", "delay")
    assert run.status("b") is StepStatus.SCHEDULED
    assert run.timer("a", "delay") == []


def test_webhook_step_is_scheduled_with_its_rendered_body() -> None:
    run = Run([{"id": "a", "kind": "webhook", "url": "http://h/x", "body": {"id": "$input.id"}}], input={"id": 7})
    assert run.state.steps["a"].input == {"id": 7}
    run.result("a", output={"status": 200})
    assert run.state.output == {"a": {"status": 200}}


def approval_run() -> Run:
    return Run([{"id": "a", "kind": "approval", "next": "yes", "on_reject": "no"}, agent("yes"), agent("no")])


def test_approval_approve_and_reject_paths() -> None:
    run = approval_run()
    assert run.status("a") is StepStatus.WAITING
    run.apply(ex.decide_approval(run.state, DecideApproval(execution_id="e1", step_id="a", approved=True), run.now))
    assert (run.status("yes"), run.status("no")) == (StepStatus.SCHEDULED, StepStatus.PENDING)

    run = approval_run()
    run.apply(
        ex.decide_approval(
            run.state, DecideApproval(execution_id="e1", step_id="a", approved=False, comment="no budget"), run.now
        )
    )
    assert (run.status("yes"), run.status("no")) == (StepStatus.PENDING, StepStatus.SCHEDULED)
    assert run.state.steps["a"].output == {"approved": False, "comment": "no budget"}
    with pytest.raises(ex.InvalidTransition):
        ex.decide_approval(run.state, DecideApproval(execution_id="e1", step_id="a", approved=True), run.now)


def test_rejection_without_a_reject_path_fails_the_execution() -> None:
    run = Run([{"id": "a", "kind": "approval", "next": "b"}, agent("b")])
    run.apply(ex.decide_approval(run.state, DecideApproval(execution_id="e1", step_id="a", approved=False), run.now))
    assert run.state.status is ExecutionStatus.FAILED


def test_pause_defers_new_steps_until_resume() -> None:
    run = Run([agent("a", "b"), agent("b")])
    run.apply(ex.pause(run.state, PauseExecution(execution_id="e1"), run.now))
    run.result("a", output=1)
    assert (run.state.status, run.status("b"), run.state.queued) == (
        ExecutionStatus.PAUSED,
        StepStatus.PENDING,
        (("b", 1, True),),
    )
    events = run.apply(ex.resume(run.state, ResumeExecution(execution_id="e1"), run.now))
    assert any(isinstance(e, StepScheduled) and e.step_id == "b" for e in events)
    run.result("b")
    assert run.state.status is ExecutionStatus.COMPLETED


LIFECYCLE = {
    "pause": lambda s, now: ex.pause(s, PauseExecution(execution_id="e1"), now),
    "resume": lambda s, now: ex.resume(s, ResumeExecution(execution_id="e1"), now),
    "cancel": lambda s, now: ex.cancel(s, CancelExecution(execution_id="e1"), now),
    "retry": lambda s, now: ex.retry(s, RetryExecution(execution_id="e1"), now),
}
ALLOWED = {
    ExecutionStatus.RUNNING: {"pause", "cancel"},
    ExecutionStatus.PAUSED: {"resume", "cancel"},
    ExecutionStatus.COMPLETED: set(),
    ExecutionStatus.FAILED: {"retry"},
    ExecutionStatus.CANCELLED: set(),
}


def in_state(status: ExecutionStatus) -> Run:
    run = Run([agent("a")])
    if status is ExecutionStatus.PAUSED:
        run.apply(LIFECYCLE["pause"](run.state, run.now))
    elif status is ExecutionStatus.COMPLETED:
        run.result("a")
    elif status is ExecutionStatus.FAILED:
        run.result("a", ok=False)
    elif status is ExecutionStatus.CANCELLED:
        run.apply(LIFECYCLE["cancel"](run.state, run.now))
    assert run.state.status is status
    return run


@pytest.mark.parametrize("status", list(ExecutionStatus))
@pytest.mark.parametrize("action", list(LIFECYCLE))
def test_lifecycle_transitions_from_every_state(status: ExecutionStatus, action: str) -> None:
    run = in_state(status)
    if action in ALLOWED[status]:
        assert run.apply(LIFECYCLE[action](run.state, run.now))
    else:
        with pytest.raises(ex.InvalidTransition):
            LIFECYCLE[action](run.state, run.now)


def test_cancel_ignores_later_results_and_timers() -> None:
    run = Run([agent("a", "b"), agent("b")])
    run.apply(ex.cancel(run.state, CancelExecution(execution_id="e1", reason="stop"), run.now))
    assert run.status("a") is StepStatus.CANCELLED
    assert (
        ex.record_result(run.state, RecordTaskResult(execution_id="e1", step_id="a", attempt=1, ok=True), run.now) == []
    )
    assert run.timer("a", "timeout") == []


def test_render_keeps_literals_and_nulls_missing_values() -> None:
    assert render({"a": "$input.x", "b": "text", "c": {"d": "$input.y.z"}}, {"input": {"x": 1}, "steps": {}}) == {
        "a": 1,
        "b": "text",
        "c": {"d": None},
    }


def test_unknown_execution_is_a_domain_error() -> None:
    with pytest.raises(ex.ExecutionNotFound):
        ex.pause(ex.Execution(), PauseExecution(execution_id="nope"), T0)


def test_retry_after_a_rejection_without_a_reject_path_asks_for_the_approval_again() -> None:
    run = Run([{"id": "a", "kind": "approval", "next": "b"}, agent("b")])
    run.apply(ex.decide_approval(run.state, DecideApproval(execution_id="e1", step_id="a", approved=False), run.now))
    assert run.state.status is ExecutionStatus.FAILED
    run.apply(ex.retry(run.state, RetryExecution(execution_id="e1"), run.now))
    assert (run.state.status, run.status("a")) == (ExecutionStatus.RUNNING, StepStatus.WAITING)


def test_steps_queued_while_paused_start_when_a_failed_execution_is_retried() -> None:
    run = Run(
        [
            {"id": "p", "kind": "parallel", "branches": ["a", "b"], "join": "j"},
            agent("a", "j", timeout_s=10),
            agent("b", "c"),
            agent("c", "j"),
            {"id": "j", "kind": "join"},
        ],
        start="p",
    )
    run.apply(ex.pause(run.state, PauseExecution(execution_id="e1"), run.now))
    run.result("b")  # c would start now, but the execution is paused: it is queued
    run.tick(10)
    run.timer("a", "timeout")  # a timeout still fails a paused execution's step
    failed = run.state
    assert failed.status is ExecutionStatus.FAILED
    assert failed.queued == (("c", 1, True),)
    run.apply(ex.retry(run.state, RetryExecution(execution_id="e1"), run.now))
    assert (run.status("a"), run.status("c"), run.state.queued) == (StepStatus.SCHEDULED, StepStatus.SCHEDULED, ())
    run.result("a")
    run.result("c")
    done = run.state
    assert done.status is ExecutionStatus.COMPLETED


def test_render_lists_at_any_depth() -> None:
    context = {"input": {"q": "x", "n": 2}, "steps": {}}
    assert render({"items": ["$input.q", {"n": "$input.n"}, 3]}, context) == {"items": ["x", {"n": 2}, 3]}
