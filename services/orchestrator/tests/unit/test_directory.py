"""The runtime's directory of agents and caps: kept until an event is heard, and never kept behind an event the
read model has not applied yet (fakes of the read models stand in for MongoDB here)."""

import json
from typing import Any

from contracts.agents import AgentSpec
from orchestrator.domain.agent import AGGREGATE as AGENT
from orchestrator.domain.budget import AGGREGATE as BUDGET
from orchestrator.runtime.directory import Directory

Document = dict[str, Any]
WS = "ws_1"


class FakeAgents:
    def __init__(self) -> None:
        self.docs: list[Document] = []
        self.reads = 0

    async def rows(self, workspace_id: str, *, retired: bool | None = None, limit: int = 1000) -> list[Document]:
        self.reads += 1
        return [
            dict(d)
            for d in self.docs
            if d["workspace_id"] == workspace_id and (retired is None or bool(d.get("retired")) == retired)
        ]

    async def versions(self, workspace_id: str, stream_ids: list[str]) -> dict[str, int]:
        return {
            d["_id"]: d["version"] for d in self.docs if d["workspace_id"] == workspace_id and d["_id"] in stream_ids
        }

    def put(self, agent_id: str, version: int, **changes: Any) -> None:
        spec = AgentSpec(name=agent_id, role="analyst").model_dump(mode="json")
        doc = {"_id": f"agent-{agent_id}", "workspace_id": WS, "agent_id": agent_id, **spec, "version": version}
        doc.update(changes)
        self.docs = [d for d in self.docs if d["_id"] != doc["_id"]] + [doc]


class FakeCaps:
    def __init__(self) -> None:
        self.doc: Document | None = None
        self.reads = 0

    async def row(self, workspace_id: str) -> Document | None:
        self.reads += 1
        return self.doc


def event(aggregate: str, stream_id: str, version: int, ws: str = WS) -> bytes:
    return json.dumps({"aggregate": aggregate, "workspace_id": ws, "stream_id": stream_id, "version": version}).encode()


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_agents_are_read_once_until_an_event_of_theirs_is_heard() -> None:
    agents, caps = FakeAgents(), FakeCaps()
    agents.put("a1", 1)
    directory = Directory(agents, caps)
    for _ in range(3):
        assert [c.agent_id for c in await directory.candidates(WS, {})] == ["a1"]
    assert agents.reads == 1
    directory.heard(event(BUDGET, "budget-ws_1", 1))  # another aggregate's event leaves the agents kept
    await directory.candidates(WS, {})
    assert agents.reads == 1
    directory.heard(event(AGENT, "agent-a1", 2, ws="ws_other"))  # and so does another workspace's
    await directory.candidates(WS, {})
    assert agents.reads == 1
    agents.put("a1", 2, retired=True)
    directory.heard(event(AGENT, "agent-a1", 2))
    assert await directory.candidates(WS, {}) == []
    assert agents.reads == 2


async def test_an_event_heard_before_the_read_model_applied_it_keeps_nothing_stale() -> None:
    agents, caps = FakeAgents(), FakeCaps()
    agents.put("a1", 1)
    directory = Directory(agents, caps)
    await directory.candidates(WS, {})
    directory.heard(event(AGENT, "agent-a1", 2))  # the read model is still at version 1
    directory.heard(event(AGENT, "agent-a2", 1))  # and does not have the new agent yet
    await directory.candidates(WS, {})
    await directory.candidates(WS, {})
    assert agents.reads == 3  # read for each task until it catches up
    agents.put("a1", 2, state="paused")
    agents.put("a2", 1)
    found = await directory.candidates(WS, {"a2": 1})
    assert {c.agent_id: (c.state.value, c.in_flight) for c in found} == {"a1": ("paused", 0), "a2": ("active", 1)}
    await directory.candidates(WS, {})
    assert agents.reads == 4  # caught up: kept again


async def test_a_cap_is_kept_and_follows_its_events_and_fresh_or_old_readings_are_read_again() -> None:
    agents, caps, clock = FakeAgents(), FakeCaps(), Clock()
    directory = Directory(agents, caps, ttl_s=10, clock=clock)
    assert await directory.cap(WS) is None
    assert await directory.cap(WS) is None
    assert caps.reads == 1
    caps.doc = {"_id": "budget-ws_1", "workspace_id": WS, "budget": {"tokens": 5}, "version": 1}
    directory.heard(event(BUDGET, "budget-ws_1", 1))
    cap = await directory.cap(WS)
    assert cap is not None
    assert cap.tokens == 5
    await directory.candidates(WS, {})
    await directory.candidates(WS, {}, fresh=True)
    assert agents.reads == 2
    clock.now = 11.0
    await directory.cap(WS)
    assert caps.reads == 3
    directory.heard(b"not json")
    await directory.cap(WS)
    assert caps.reads == 4
