"""A stream recorded from a real run (retry, condition, parallel/join, approval) replays to the same state."""

import json
from pathlib import Path

from contracts import REGISTRY, Event
from contracts.workflows import ExecutionStatus, StepStatus
from workflow_engine.domain.execution import replay

RECORDING = Path(__file__).with_name("recorded_execution.json")


def recorded_events() -> list[Event]:
    events = []
    for item in json.loads(RECORDING.read_text()):
        event = REGISTRY.load(item["type"], item["schema_version"], item["data"])
        assert isinstance(event, Event)
        events.append(event)
    return events


def test_replaying_the_recorded_stream_gives_the_final_state_every_time() -> None:
    first, second = replay(recorded_events()), replay(recorded_events())
    assert first == second
    assert first.status is ExecutionStatus.COMPLETED
    statuses = {sid: run.status for sid, run in first.steps.items()}
    assert statuses == {
        "qualify": StepStatus.SUCCEEDED,
        "route": StepStatus.SUCCEEDED,
        "both": StepStatus.SUCCEEDED,
        "proposal": StepStatus.SUCCEEDED,
        "notify": StepStatus.SUCCEEDED,
        "joined": StepStatus.SUCCEEDED,
        "approve": StepStatus.SUCCEEDED,
        "nurture": StepStatus.PENDING,
    }
    qualify = first.steps["qualify"]
    assert [(a.attempt, a.status, a.error) for a in qualify.attempts] == [
        (1, StepStatus.FAILED, "model overloaded"),
        (2, StepStatus.SUCCEEDED, None),
    ]
    assert first.steps["route"].output == {"next": "both"}
    assert first.steps["approve"].output == {"approved": True, "comment": "go"}
    assert first.output is not None
    assert first.output["qualify"] == {"score": 88}


def test_every_prefix_of_the_stream_replays_deterministically() -> None:
    events = recorded_events()
    for end in range(1, len(events) + 1):
        assert replay(events[:end]) == replay(list(events[:end]))
