"""Delegations through the gateway, on the real NATS and database: the orchestrator, the workflow engine and the
agent runtime with the local provider. A delegation runs to its result; routing by capability never picks an
agent at its concurrency limit (its slots are held through the runtime's Slots, as tasks at work would hold them);
a loop, a chain too deep, a retired or unknown target and another workspace's delegation are refused."""

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from conftest import Api, Infra, Platform, running_platform
from orchestrator.runtime.slots import Slots
from orchestrator.settings import OrchestratorSettings, RuntimeSettings
from servicekit.testing import eventually

Document = dict[str, Any]
LOCAL = {"provider": "local"}


@pytest.fixture
async def platform(infra: Infra, env_name: str) -> AsyncIterator[Platform]:
    settings = RuntimeSettings(heartbeat_s=0.5)
    async with running_platform(infra, env_name, behaviour=None, runtime=settings) as running:
        yield running


@pytest.fixture
async def api(platform: Platform) -> Api:
    return Api(platform, await platform.new_workspace())


@pytest.fixture
def slots(mongo: AsyncMongoClient[Document], env_name: str) -> Slots:
    """The runtime's concurrency slots, in the orchestrator's database of this test's environment."""
    database = OrchestratorSettings(platform_env=env_name).database_name
    return Slots(mongo[database]["slots"], lease_s=600)


async def new_agent(api: Api, name: str, **spec: Any) -> str:
    body = {"name": name, "role": spec.pop("role", "assistant"), "model": LOCAL, **spec}
    agent_id = str((await api.post("/api/v1/agents", body, expect=201))["resource_ids"]["agent_id"])

    async def seen() -> bool:  # in the read model, with a runtime worker alive
        resp = await api.client.get(f"/api/v1/agents/{agent_id}", headers=api.headers)
        return resp.status_code == 200 and resp.json()["status"] == "available"

    await eventually(seen, 15)
    return agent_id


async def delegate(api: Api, expect: int = 201, **body: Any) -> dict[str, Any]:
    resp = await api.client.post("/api/v1/delegations", json={"task": "Draft the reply", **body}, headers=api.headers)
    assert resp.status_code == expect, resp.text
    answer: dict[str, Any] = resp.json()
    if expect == 201:
        assert resp.headers["location"] == f"/api/v1/delegations/{answer['resource_ids']['delegation_id']}"
    return answer


async def seen(api: Api, delegation_id: str, *, ended: bool = False, timeout_s: float = 30) -> dict[str, Any]:
    """The delegation's view once it is in the read model (an accepted one may not be yet), or once it ``ended``."""

    async def probe() -> dict[str, Any] | None:
        resp = await api.client.get(f"/api/v1/delegations/{delegation_id}", headers=api.headers)
        if resp.status_code == 404:  # accepted, and not in the read model yet
            return None
        assert resp.status_code == 200, resp.text
        view: dict[str, Any] = resp.json()
        return view if not ended or view["status"] in {"succeeded", "failed"} else None

    return await eventually(probe, timeout_s)


async def ended(api: Api, delegation_id: str, timeout_s: float = 30) -> dict[str, Any]:
    return await seen(api, delegation_id, ended=True, timeout_s=timeout_s)


async def test_a_delegation_to_a_named_agent_runs_to_its_result(api: Api) -> None:
    writer = await new_agent(api, "Writer", capabilities=["replies"])
    answer = await delegate(api, agent_id=writer, input={"ticket": "T-1"}, deadline_s=60, budget={"tokens": 50_000})
    ids = answer["resource_ids"]
    assert ids["agent_id"] == writer
    assert ids["execution_id"] == f"dg-{ids['delegation_id']}"
    view = await ended(api, ids["delegation_id"])
    assert view["status"] == "succeeded", view
    assert view["output"] is not None
    assert (view["agent_id"], view["routed"], view["chain"], view["depth"]) == (writer, False, [], 1)
    assert view["task"] == "Draft the reply"
    assert view["input"] == {"ticket": "T-1"}
    assert view["budget"] == {"tokens": 50_000, "cost_usd": None}
    assert view["error"] is None
    assert view["created_at"] <= view["started_at"] <= view["ended_at"] < view["deadline_at"]
    assert view["usage"]["calls"] == 1
    execution = await api.execution(view["execution_id"])  # the engine's execution behind it
    assert execution["status"] == "completed"
    assert [step["id"] for step in execution["steps"]] == ["work"]
    listed = await api.get(f"/api/v1/delegations?agent_id={writer}&status=succeeded")
    assert [line["delegation_id"] for line in listed["items"]] == [ids["delegation_id"]]
    assert (await api.get("/api/v1/delegations?status=failed"))["items"] == []


async def test_auto_routing_picks_a_capable_available_agent_and_never_a_busy_one_at_its_limit(
    api: Api, slots: Slots
) -> None:
    # The busy agent fits best (role and capability): only its being at its limit can pass it over.
    busy = await new_agent(api, "Busy", role="proposal writer", capabilities=["proposals"], concurrency_limit=2)
    free = await new_agent(api, "Free", role="assistant", capabilities=["proposals"], concurrency_limit=1)
    await new_agent(api, "Other", role="proposal writer", capabilities=["invoices"])
    now = datetime.now(UTC)
    for n in range(2):
        assert await slots.acquire(api.workspace_id, busy, 2, f"held-{n}", "test", now)
    status = await api.get(f"/api/v1/agents/{busy}")
    assert (status["status"], status["in_flight"]) == ("busy", 2)

    answer = await delegate(api, capability="proposals", role="proposal writer")
    assert answer["resource_ids"]["agent_id"] == free
    view = await ended(api, answer["resource_ids"]["delegation_id"])
    assert (view["status"], view["agent_id"], view["routed"]) == ("succeeded", free, True)

    # Every capable agent busy: refused at once, saying so, rather than queued behind one at its limit.
    # (its own task's slot may be a moment from being released)
    await eventually(lambda: slots.acquire(api.workspace_id, free, 1, "held-free", "test", datetime.now(UTC)))
    refused = await delegate(api, expect=409, capability="proposals")
    assert refused["code"] == "no_agent"
    assert refused["errors"] == [{"reason": "busy", "agents": [busy, free]}]
    await slots.release(api.workspace_id, "held-0")
    answer = await delegate(api, capability="proposals")
    assert answer["resource_ids"]["agent_id"] == busy  # a slot came free


async def test_a_delegation_loop_is_refused_and_a_chain_is_bounded(api: Api) -> None:
    a, b, c, d = [await new_agent(api, name) for name in "ABCD"]
    first = await delegate(api, agent_id=b, from_agent_id=a)  # A -> B
    d1 = first["resource_ids"]["delegation_id"]
    loop = await delegate(api, expect=409, agent_id=a, from_agent_id=b, parent_delegation_id=d1)  # B -> A
    assert loop["code"] == "delegation_loop"
    assert f"{a} -> {b} -> {a}" in loop["detail"]
    itself = await delegate(api, expect=409, agent_id=b, from_agent_id=b)
    assert itself["code"] == "delegation_loop"

    second = await delegate(api, agent_id=c, parent_delegation_id=d1)  # B, at work on d1, delegates to C
    d2 = second["resource_ids"]["delegation_id"]
    view = await seen(api, d2)
    assert (view["chain"], view["depth"], view["parent_delegation_id"]) == ([a, b], 3, d1)
    too_deep = await delegate(api, expect=409, agent_id=d, from_agent_id=c, parent_delegation_id=d2)
    assert too_deep["code"] == "delegation_too_deep"
    unknown_parent = await delegate(api, expect=404, agent_id=c, parent_delegation_id="dg_nope")
    assert unknown_parent["code"] == "delegation_not_found"


async def test_a_retired_unknown_or_incapable_target_is_refused_with_its_code(api: Api) -> None:
    retired = await new_agent(api, "Old", capabilities=["legacy"])
    await api.post(f"/api/v1/agents/{retired}/retire", expect=200)
    assert (await delegate(api, expect=409, agent_id=retired))["code"] == "agent_retired"
    assert (await delegate(api, expect=404, agent_id="agt_nobody"))["code"] == "agent_not_found"
    no_agent = await delegate(api, expect=409, capability="astrology")
    assert no_agent["code"] == "no_agent"
    assert "astrology" in no_agent["detail"]


async def test_another_workspaces_delegation_is_not_found(api: Api, platform: Platform) -> None:
    agent_id = await new_agent(api, "Mine")
    delegation_id = (await delegate(api, agent_id=agent_id))["resource_ids"]["delegation_id"]
    await seen(api, delegation_id)
    other = Api(platform, await platform.new_workspace("Other"))
    found = await other.get(f"/api/v1/delegations/{delegation_id}", expect=404)
    assert found["code"] == "delegation_not_found"
    assert (await other.get("/api/v1/delegations"))["items"] == []
    theirs = await new_agent(other, "Theirs")  # nor does another workspace's delegation continue a chain
    parent = await delegate(other, expect=404, agent_id=theirs, parent_delegation_id=delegation_id)
    assert parent["code"] == "delegation_not_found"


@pytest.mark.parametrize(
    "body",
    [
        {"task": "   ", "agent_id": "agt_1"},
        {"task": "Do it", "agent_id": "agt_1", "capability": "proposals"},
        {"task": "Do it", "agent_id": "agt_1", "role": "writer"},
        {"task": "Do it"},
        {"task": "Do it", "capability": "proposals", "deadline_s": 0},
        {"task": "Do it", "capability": "proposals", "deadline_s": 3601},
        {"task": "Do it", "capability": "proposals", "parent_delegation_id": "dg-1"},
        {"task": "x" * 4001, "capability": "proposals"},
    ],
)
async def test_bad_bodies_get_422(api: Api, body: dict[str, Any]) -> None:
    resp = await api.client.post("/api/v1/delegations", json=body, headers=api.headers)
    assert resp.status_code == 422, resp.text
    assert resp.json()["code"] == "validation_failed"
