from datetime import UTC, datetime
from typing import Any, ClassVar

import pytest
from pydantic import ValidationError

from contracts import REGISTRY, Actor, Envelope, Event, Registry, Subjects, UnknownMessageType
from contracts.agents import AgentRegistered, AgentSpec, RegisterAgent
from contracts.schema_export import export


def test_messages_are_frozen_and_forbid_unknown_fields() -> None:
    spec = AgentSpec(name="Lead qualifier", role="sales")
    with pytest.raises(ValidationError):
        RegisterAgent.model_validate({"agent_id": "a1", "spec": spec.model_dump(), "extra": 1})
    command = RegisterAgent(agent_id="a1", spec=spec)
    with pytest.raises(ValidationError):
        command.agent_id = "other"  # type: ignore[misc]


def test_registry_round_trips_by_type_name() -> None:
    event = AgentRegistered(agent_id="a1", spec=AgentSpec(name="n", role="r"))
    loaded = REGISTRY.load("AgentRegistered", 1, event.model_dump(mode="json"))
    assert loaded == event
    with pytest.raises(UnknownMessageType):
        REGISTRY.get("NoSuchThing")


def test_old_schema_versions_are_upcast_on_read() -> None:
    registry = Registry()

    @registry.register
    class NoteTaken(Event):
        aggregate: ClassVar[str] = "note"
        schema_version: ClassVar[int] = 3
        text: str
        tags: list[str]
        importance: int

    @registry.upcaster("NoteTaken", 1)
    def v1_to_v2(data: dict[str, Any]) -> dict[str, Any]:
        return {**data, "tags": []}

    @registry.upcaster("NoteTaken", 2)
    def v2_to_v3(data: dict[str, Any]) -> dict[str, Any]:
        return {**data, "importance": 1}

    stored_v1 = {"text": "call back Monday"}
    note = registry.load("NoteTaken", 1, stored_v1)
    assert note == NoteTaken(text="call back Monday", tags=[], importance=1)
    assert stored_v1 == {"text": "call back Monday"}, "the stored payload is never rewritten"
    with pytest.raises(UnknownMessageType):
        Registry().upcast("NoteTaken", 1, stored_v1)


def test_registering_two_classes_under_one_name_fails() -> None:
    registry = Registry()

    class Thing(Event):
        pass

    registry.register(Thing)
    other = type("Thing", (Event,), {"__module__": __name__})
    with pytest.raises(ValueError, match="registered twice"):
        registry.register(other)


def test_subjects_carry_environment_and_workspace() -> None:
    s = Subjects("ci")
    assert s.command("orchestrator", "ws1", "RegisterAgent") == "ci.cmd.orchestrator.ws1.RegisterAgent"
    assert s.event("agent", "ws1", "a1", "AgentRegistered") == "ci.evt.agent.ws1.a1.AgentRegistered"
    assert s.dead_letter("ci.cmd.orchestrator.ws1.X") == "ci.dlq.cmd.orchestrator.ws1.X"
    assert s.commands_stream == "ci_COMMANDS"
    assert s.database("workflow-engine") == "ci_workflow_engine"


def test_a_command_subject_reads_back_into_its_parts() -> None:
    s = Subjects("ci")
    assert s.command_parts(s.command("orchestrator", "ws1", "RegisterAgent")) == (
        "orchestrator",
        "ws1",
        "RegisterAgent",
    )
    assert s.command_parts(s.event("agent", "ws1", "a1", "AgentRegistered")) is None
    assert s.command_parts(Subjects("other").command("orchestrator", "ws1", "RegisterAgent")) is None


def test_envelope_requires_workspace_and_actor() -> None:
    with pytest.raises(ValidationError):
        Envelope.model_validate({"message_id": "m", "type": "RegisterAgent", "payload": {}})
    env = Envelope(
        message_id="m",
        type="RegisterAgent",
        workspace_id="ws",
        correlation_id="c",
        actor=Actor(kind="api_key", id="k"),
        occurred_at=datetime.now(UTC),
        payload={},
    )
    assert Envelope.model_validate_json(env.model_dump_json()) == env


def test_schema_export_writes_every_message(tmp_path: Any) -> None:
    written = {p.name for p in export(tmp_path)}
    assert "command.RegisterAgent.json" in written
    assert "event.AgentRegistered.json" in written
    assert "query.GetAgent.json" in written
    assert "Envelope.json" in written
