"""Which timers a decision starts, and which of them ride in its commit."""

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from contracts import Event
from contracts.workflows import ExecuteWorkflow, RetryScheduled, WorkflowSpec
from workflow_engine.domain import execution
from workflow_engine.timers import carried_timers, may_have_timer_documents

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def started(*steps: dict[str, object]) -> list[Event]:
    spec = WorkflowSpec.model_validate({"name": "T", "start": "a", "steps": list(steps)})
    return execution.start(ExecuteWorkflow(workflow_id="wf", execution_id="ex"), spec, 1, T0)


def test_each_kind_of_step_starts_its_timer() -> None:
    agent = started({"id": "a", "kind": "agent", "role": "r", "timeout_s": 45})
    delay = started({"id": "a", "kind": "delay", "seconds": 60})
    webhook = started({"id": "a", "kind": "webhook", "url": "http://h/x", "timeout_s": 40})
    retry: list[Event] = [RetryScheduled(step_id="a", attempt=2, due_at=(T0 + timedelta(seconds=5)).isoformat())]

    found = {
        name: [(t.purpose, t.at - T0, t.claims_call) for t in execution.timers_started(None, events)]
        for name, events in {"agent": agent, "delay": delay, "webhook": webhook, "retry": retry}.items()
    }

    assert found == {
        "agent": [("timeout", timedelta(seconds=45), False)],
        "delay": [("delay", timedelta(seconds=60), False)],
        "webhook": [("timeout", timedelta(seconds=40), True)],
        "retry": [("retry", timedelta(seconds=5), False)],
    }


def test_timers_due_far_enough_ahead_ride_in_the_commit_but_not_a_webhooks_claim() -> None:
    def carried(events: list[Event]) -> list[str]:
        return [timer.timer_id for timer in carried_timers("ws", "ex", None, events, T0)]

    assert carried(started({"id": "a", "kind": "agent", "role": "r"})) == ["ws:ex:a:1:timeout"]  # 300 s ahead
    assert carried(started({"id": "a", "kind": "agent", "role": "r", "timeout_s": 5})) == []  # a document instead
    assert carried(started({"id": "a", "kind": "delay", "seconds": 3600})) == ["ws:ex:a:1:delay"]
    assert carried(started({"id": "a", "kind": "webhook", "url": "http://h/x"})) == []  # the claim is a document


def test_an_end_looks_for_timer_documents_only_where_some_may_have_been_written() -> None:
    def state(*steps: dict[str, object]) -> execution.Execution:
        return execution.replay(started(*steps))

    plain = state({"id": "a", "kind": "agent", "role": "r"})
    retried = replace(plain, steps={"a": replace(plain.steps["a"], attempt=2)})  # after a backoff of 1 s
    assert not may_have_timer_documents(plain)  # its timeout rode in the commit
    assert may_have_timer_documents(retried)
    assert may_have_timer_documents(state({"id": "a", "kind": "agent", "role": "r", "timeout_s": 5}))
    assert may_have_timer_documents(state({"id": "a", "kind": "webhook", "url": "http://h/x"}))
    assert may_have_timer_documents(None)  # not known here: look
