"""The public events of an execution: every internal event is either mapped to one or kept internal on purpose."""

from datetime import UTC, datetime
from typing import Any

import pytest

from contracts import REGISTRY, Actor, Event, EventRecord
from contracts.public_events import INTERNAL_ONLY, PUBLIC_EVENTS, TERMINAL, public_event
from contracts.workflows import EXECUTION_AGGREGATE, EXECUTION_ENDS

AT = "2026-01-01T00:00:00+00:00"
SPEC = {"name": "w", "start": "a", "steps": [{"id": "a", "kind": "agent", "role": "r"}]}
SAMPLES: dict[str, dict[str, Any]] = {
    "ExecutionStarted": {
        "execution_id": "e1",
        "workflow_id": "wf",
        "workflow_version": 2,
        "spec": SPEC,
        "input": {"lead": "x"},
        "started_at": AT,
    },
    "StepScheduled": {"step_id": "a", "attempt": 1, "key": "e1:a:1", "input": {"q": 1}, "at": AT, "timeout_at": AT},
    "StepSucceeded": {"step_id": "a", "attempt": 1, "output": {"ok": True}, "at": AT},
    "StepFailed": {"step_id": "a", "attempt": 1, "error": "boom", "error_kind": "timeout", "at": AT},
    "RetryScheduled": {"step_id": "a", "attempt": 2, "due_at": AT},
    "StepQueued": {"step_id": "a", "attempt": 1},
    "BranchArrived": {"step_id": "j", "from_step": "a"},
    "ApprovalDecided": {"step_id": "a", "approved": True, "comment": "ok", "at": AT},
    "ExecutionPaused": {"at": AT},
    "ExecutionResumed": {"at": AT},
    "ExecutionCancelled": {"reason": "no", "at": AT},
    "ExecutionRetried": {"steps": ["a"], "at": AT},
    "ExecutionCompleted": {"output": {"a": 1}, "at": AT},
    "ExecutionFailed": {"step_id": "a", "error": "boom", "at": AT},
}
EXECUTION_EVENTS = sorted(
    cls.type_name for cls in REGISTRY if issubclass(cls, Event) and cls.aggregate == EXECUTION_AGGREGATE
)


def record(type_name: str, data: dict[str, Any], version: int = 7, aggregate: str = EXECUTION_AGGREGATE) -> EventRecord:
    return EventRecord(
        event_id="ev",
        type=type_name,
        schema_version=1,
        data=data,
        occurred_at=datetime(2026, 1, 1, tzinfo=UTC),
        correlation_id="c",
        actor=Actor(kind="system", id="t"),
        stream_id=f"ws/{aggregate}/e1",
        aggregate=aggregate,
        aggregate_id="e1",
        workspace_id="ws",
        version=version,
    )


@pytest.mark.parametrize("type_name", EXECUTION_EVENTS)
def test_every_internal_execution_event_is_mapped_or_kept_internal_on_purpose(type_name: str) -> None:
    public = public_event(record(type_name, SAMPLES[type_name]))
    if type_name in INTERNAL_ONLY:
        assert public is None
        return
    assert public is not None
    assert public.version == 7
    model = next(cls for cls in PUBLIC_EVENTS if cls.type_name == public.type)
    model.model_validate(public.data)  # what is sent is what the documented schema says


def test_the_public_start_carries_no_definition_and_the_ends_are_terminal() -> None:
    started = public_event(record("ExecutionStarted", SAMPLES["ExecutionStarted"]))
    assert started is not None
    assert started.model_dump() == {
        "version": 7,
        "type": "execution.started",
        "data": {"workflow_id": "wf", "workflow_version": 2, "input": {"lead": "x"}, "at": AT},
    }
    ends = [public_event(record(name, SAMPLES[name])) for name in sorted(EXECUTION_ENDS)]
    assert {end.type for end in ends if end is not None} == TERMINAL


def test_other_aggregates_and_unknown_types_are_not_public() -> None:
    assert public_event(record("AgentStatusChanged", {}, aggregate="agent")) is None
    assert public_event(record("StepTeleported", {"step_id": "a"})) is None
