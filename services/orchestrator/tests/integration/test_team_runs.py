"""Team runs and coordinations through the gateway, on the real NATS and database: the orchestrator, the workflow
engine, the memory service and the agent runtime (the local provider, and the openai provider against the tests'
OpenAI-compatible server where a test needs a slow or scripted model)."""

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from conftest import Api, Infra, Platform
from servicekit.testing import eventually
from tests.support.openai_server import FunctionCall, Hold, OpenAICompatibleServer, Reply, reply_json
from tests.support.runtime_platform import with_runtime

ENDS = ("completed", "failed", "budget_exceeded", "cancelled")


@pytest.fixture
async def server() -> AsyncIterator[OpenAICompatibleServer]:
    async with OpenAICompatibleServer(default=Reply('{"summary": "done"}')) as running:
        yield running


@pytest.fixture
async def platform(infra: Infra, env_name: str, server: OpenAICompatibleServer) -> AsyncIterator[Platform]:
    async with with_runtime(infra, env_name, server, max_body_bytes=65536) as running:
        yield running


@pytest.fixture
async def api(platform: Platform) -> Api:
    return Api(platform, await platform.new_workspace())


LOCAL = {"provider": "local"}  # the runtime here has an openai endpoint (the test server) too


async def template_team(api: Api, slug: str, **request: Any) -> dict[str, Any]:
    request = {"template": slug, "model": LOCAL, **request}
    created = await api.post("/api/v1/teams", {"from_template": request}, expect=201)
    team_id = created["resource_ids"]["team_id"]

    async def ready() -> dict[str, Any] | None:
        resp = await api.client.get(f"/api/v1/teams/{team_id}/status", headers=api.headers)
        if resp.status_code != 200:
            return None
        status: dict[str, Any] = resp.json()
        return status["team"] if all(m["status"] == "available" for m in status["members"]) else None

    return await eventually(ready, 15)


async def run_team(api: Api, team_id: str, objective: str, **extra: Any) -> str:
    started = await api.post(f"/api/v1/teams/{team_id}/runs", {"objective": objective, **extra}, expect=201)
    return str(started["resource_ids"]["run_id"])


async def run_ended(api: Api, run_id: str, *statuses: str, timeout_s: float = 30) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        resp = await api.client.get(f"/api/v1/team-runs/{run_id}", headers=api.headers)
        if resp.status_code != 200:
            return None
        view: dict[str, Any] = resp.json()
        return view if view["status"] in (statuses or ENDS) else None

    return await eventually(probe, timeout_s)


async def events_of(api: Api, run_id: str, last_event_id: int | None = None) -> list[dict[str, Any]]:
    """The run's live stream, read to its end (the run has ended, so the stream does too)."""
    headers = {**api.headers, **({"Last-Event-ID": str(last_event_id)} if last_event_id else {})}
    events = []
    async with api.client.stream("GET", f"/api/v1/team-runs/{run_id}/events", headers=headers) as resp:
        assert resp.status_code == 200
        async for line in resp.aiter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line.removeprefix("data: ")))
    return events


OBJECTIVES = {
    "sales": "Handle all new leads today: qualify them, write proposals and follow up",
    "marketing": "Create this week's social content for the product launch",
    "support": "Work through the ticket backlog: triage, resolve, escalate the angry ones",
    "operations": "Report on last week's delivery delays and schedule the fixes",
}


@pytest.mark.parametrize("slug", sorted(OBJECTIVES))
async def test_a_run_of_each_template_plans_hands_off_shares_context_and_summarises(api: Api, slug: str) -> None:
    team = await template_team(api, slug)
    members = {m["agent_id"] for m in team["members"]}
    run_id = await run_team(api, team["team_id"], OBJECTIVES[slug], input={"account": "Initech"})
    view = await run_ended(api, run_id)
    assert view["status"] == "completed", (view["error"], view["summary"], view["plan"])
    assert view["lead"] == team["lead"]
    plan = view["plan"]
    assert 1 <= len(plan) <= 6
    assert {step["agent_id"] for step in plan} <= members
    assert all(step["status"] == "succeeded" and step["output"] is not None for step in plan), plan
    assert all(step["scheduled_at"] and step["finished_at"] for step in plan)

    # Every step's member got a typed handoff, recorded with its size: the previous member's output, the input.
    handoffs = {h["step_id"]: h for h in view["handoffs"]}
    assert {"plan", "summary", *(s["id"] for s in plan)} <= set(handoffs)
    for index, step in enumerate(plan):
        handoff = handoffs[step["id"]]
        assert handoff["agent_id"] == step["agent_id"]
        assert handoff["size_bytes"] > 0
        assert handoff["handoff"]["objective"] == OBJECTIVES[slug]
        assert handoff["handoff"]["task"] == step["task"]
        assert handoff["handoff"]["inputs"]["input"] == {"account": "Initech"}
        previous = plan[index - 1]["output"] if index else None
        assert handoff["handoff"]["inputs"]["previous"] == previous
    last = handoffs[plan[-1]["id"]]["handoff"]
    assert set(last["references"]) >= {"plan", *(s["id"] for s in plan[:-1])}  # it could read what came before

    # The shared context is the run's working memory: the plan and each member's output, under its step.
    assert set(view["shared_context"]) >= {"plan", *(s["id"] for s in plan)}
    entry = await api.get(f"/api/v1/memory/working/team_run/{run_id}/{plan[0]['id']}")
    assert entry["value"] == plan[0]["output"]

    assert view["summary_by"] == "lead"
    assert f"{len(plan)} of {len(plan)} planned step(s) done" in view["summary"]
    assert view["usage"]["total"]["calls"] == len(plan) + 2
    assert set(view["usage"]["by_phase"]) == {"plan", "work", "summary"}
    work = await api.execution(view["executions"]["work"])  # the engine's execution behind it
    assert work["status"] == "completed"
    assert [s["id"] for s in work["steps"]] == [s["id"] for s in plan]

    events = await events_of(api, run_id)
    types = [e["type"] for e in events]
    assert types[0] == "team_run.started"
    assert types[-1] == "team_run.ended"
    assert types.count("team_run.step_succeeded") == len(plan)
    assert types.count("team_run.handoff") == len(plan) + 2
    assert [e["version"] for e in events] == sorted(e["version"] for e in events)
    resumed = await events_of(api, run_id, last_event_id=events[-2]["version"])
    assert [e["type"] for e in resumed] == ["team_run.ended"]

    listed = await api.get(f"/api/v1/teams/{team['team_id']}/runs")
    assert [r["run_id"] for r in listed["items"]] == [run_id]
    assert listed["items"][0]["steps_done"] == len(plan)
    status = await api.get(f"/api/v1/teams/{team['team_id']}/status")
    assert [r["run_id"] for r in status["recent_runs"]] == [run_id]
    assert status["active_runs"] == []


async def test_the_lead_plans_only_the_members_the_objective_needs(api: Api) -> None:
    team = await template_team(api, "sales")
    roles = {m["agent_id"]: m["role"] for m in team["members"]}
    view = await run_ended(api, await run_team(api, team["team_id"], "Qualify the new leads and write a proposal"))
    assert view["status"] == "completed"
    assert [roles[s["agent_id"]] for s in view["plan"]] == ["lead qualifier", "proposal writer"]


async def openai_member(api: Api, name: str, model: str) -> str:
    body = {"name": name, "role": name, "model": {"provider": "openai", "model": model, "max_output_tokens": 100}}
    return str((await api.post("/api/v1/agents", body, expect=201))["resource_ids"]["agent_id"])


async def local_agent(api: Api, name: str, role: str) -> str:
    body = {"name": name, "role": role, "model": LOCAL}
    return str((await api.post("/api/v1/agents", body, expect=201))["resource_ids"]["agent_id"])


async def hand_team(api: Api, lead: str, *others: str) -> str:
    members = [{"agent_id": lead, "role": "lead", "lead": True}] + [{"agent_id": a, "role": "member"} for a in others]
    created = await api.post("/api/v1/teams", {"spec": {"name": "Hand", "members": members}}, expect=201)
    team_id = str(created["resource_ids"]["team_id"])

    async def seen() -> bool:
        resp = await api.client.get(f"/api/v1/teams/{team_id}/status", headers=api.headers)
        return resp.status_code == 200 and all(m["status"] == "available" for m in resp.json()["members"])

    await eventually(seen, 15)
    return team_id


async def test_cancel_mid_run_cancels_the_engines_execution(api: Api, server: OpenAICompatibleServer) -> None:
    server.behave("slow", Hold(Reply('{"summary": "too late"}')))
    lead = await local_agent(api, "Lead", "planner")
    worker = await openai_member(api, "Slow worker", "slow")
    team_id = await hand_team(api, lead, worker)
    run_id = await run_team(api, team_id, "Do the slow thing")

    await server.wait_until(lambda: server.in_flight == 1, timeout_s=20)  # the slow member's step is at work
    running = await run_ended(api, run_id, "running")
    held = next(s for s in running["plan"] if s["agent_id"] == worker)
    await api.post(f"/api/v1/team-runs/{run_id}/cancel", {"reason": "changed my mind"}, expect=200)
    view = await run_ended(api, run_id, "cancelled")
    assert view["error"] == "changed my mind"
    work = await api.wait_for(view["executions"]["work"], "cancelled")
    assert next(s for s in work["steps"] if s["id"] == held["id"])["status"] != "succeeded"
    again = await api.client.post(f"/api/v1/team-runs/{run_id}/cancel", json={}, headers=api.headers)
    assert again.status_code == 200  # cancelling a cancelled run changes nothing
    server.release()
    events = await events_of(api, run_id)
    assert events[-1]["type"] == "team_run.cancelled"


async def test_a_coordination_plans_across_two_teams(api: Api) -> None:
    sales = await template_team(api, "sales")
    support = await template_team(api, "support")
    body = {"team_ids": [sales["team_id"], support["team_id"]], "objective": "Win back unhappy customers"}
    started = await api.post("/api/v1/coordinations", body, expect=201)
    run_id = started["resource_ids"]["run_id"]
    view = await run_ended(api, run_id)
    assert view["status"] == "completed"
    assert view["kind"] == "coordination"
    assert view["lead"] == sales["lead"]
    planned_teams = {m["team_id"] for m in view["members"] if m["agent_id"] in {s["agent_id"] for s in view["plan"]}}
    assert planned_teams == {sales["team_id"], support["team_id"]}
    assert len(view["members"]) == 6
    coordinations = await api.get("/api/v1/coordinations")
    assert [c["run_id"] for c in coordinations["items"]] == [run_id]
    assert (await api.get(f"/api/v1/coordinations/{run_id}"))["run_id"] == run_id
    assert (await api.get(f"/api/v1/teams/{support['team_id']}/runs"))["items"][0]["run_id"] == run_id


async def test_a_small_budget_stops_the_run_never_exceeds_it_and_the_lead_still_summarises(api: Api) -> None:
    team = await template_team(api, "support", model={**LOCAL, "max_output_tokens": 200})
    free = await run_ended(api, await run_team(api, team["team_id"], OBJECTIVES["support"]))
    assert free["status"] == "completed"
    assert len(free["plan"]) == 3
    by_phase = free["usage"]["by_phase"]
    # Room for the plan and about one member step, not for three: the run stops in its work.
    budget = int((by_phase["plan"]["total_tokens"] + by_phase["work"]["total_tokens"] * 0.6) / 0.8)
    budget += by_phase["summary"]["total_tokens"]
    run_id = await run_team(api, team["team_id"], OBJECTIVES["support"], budget={"tokens": budget})
    view = await run_ended(api, run_id)
    assert view["status"] == "budget_exceeded", view
    done = [s for s in view["plan"] if s["status"] == "succeeded"]
    stopped = [s for s in view["plan"] if s["status"] == "failed"]
    assert done, "the partial results are kept"
    assert [s["error_kind"] for s in stopped] == ["budget_exceeded"]
    assert view["summary_by"] == "lead"  # the reserve kept room for the lead's last, small call
    assert f"{len(done)} of 3 planned step(s) done" in view["summary"]
    assert view["usage"]["total"]["total_tokens"] <= budget


async def test_a_plan_naming_a_non_member_fails_the_run_and_nothing_runs(
    api: Api, server: OpenAICompatibleServer
) -> None:
    stranger_plan = {"steps": [{"member": "agt_stranger", "task": "do it", "produces": "x"}]}
    server.behave("bad-lead", reply_json(stranger_plan))
    lead = await openai_member(api, "Bad lead", "bad-lead")
    team_id = await hand_team(api, lead, await local_agent(api, "W", "writer"))
    view = await run_ended(api, await run_team(api, team_id, "Write something"))
    assert view["status"] == "failed"
    assert "plan" in view["error"]
    assert view["plan"] == []
    assert "work" not in view["executions"]
    assert len(server.requests_for("bad-lead")) == 2  # the plan step's two attempts, each refused by the schema


async def test_bad_runs_are_refused_with_a_stable_code_and_other_workspaces_see_nothing(
    api: Api, platform: Platform
) -> None:
    team = await template_team(api, "sales")
    path = f"/api/v1/teams/{team['team_id']}/runs"
    for body, code in (
        ({"objective": ""}, "validation_failed"),
        ({"objective": "   "}, "validation_failed"),
        ({"objective": "x" * 4001}, "validation_failed"),
        ({"objective": "ok", "max_steps": 13}, "validation_failed"),
        ({"objective": "ok", "budget": {"tokens": 0}}, "validation_failed"),
    ):
        resp = await api.client.post(path, json=body, headers=api.headers)
        assert resp.status_code == 422, (body, resp.text)
        assert resp.json()["code"] == code
    unknown = await api.client.post("/api/v1/teams/team_nope/runs", json={"objective": "x"}, headers=api.headers)
    assert (unknown.status_code, unknown.json()["code"]) == (404, "team_not_found")
    one_team = await api.client.post(
        "/api/v1/coordinations", json={"team_ids": [team["team_id"]], "objective": "x"}, headers=api.headers
    )
    assert one_team.status_code == 422

    lead = next(m["agent_id"] for m in team["members"] if m["lead"])
    await api.post(f"/api/v1/agents/{lead}/status", {"status": "paused"}, expect=200)
    paused = await api.client.post(path, json={"objective": "x"}, headers=api.headers)
    assert (paused.status_code, paused.json()["code"]) == (409, "no_runnable_member")
    await api.post(f"/api/v1/agents/{lead}/status", {"status": "active"}, expect=200)

    run_id = await run_team(api, team["team_id"], "Follow up with all stalled deals")
    await run_ended(api, run_id)
    other = Api(platform, await platform.new_workspace("Globex"))
    for probe in (
        f"/api/v1/team-runs/{run_id}",
        f"/api/v1/team-runs/{run_id}/events",
        f"/api/v1/coordinations/{run_id}",
    ):
        resp = await other.client.get(probe, headers=other.headers)
        assert (resp.status_code, resp.json()["code"]) == (404, "team_run_not_found"), probe
    cancel = await other.client.post(f"/api/v1/team-runs/{run_id}/cancel", json={}, headers=other.headers)
    assert cancel.status_code == 404
    assert (await other.get(f"/api/v1/teams/{team['team_id']}/runs", expect=200))["items"] == []
    bad_id = await api.client.get("/api/v1/team-runs/not-a-run", headers=api.headers)
    assert bad_id.status_code == 422


async def test_with_a_tool_calling_model_a_member_reads_and_writes_the_shared_context(
    api: Api, server: OpenAICompatibleServer
) -> None:
    write = FunctionCall("write_shared_context", json.dumps({"key": "findings", "value": {"leads": 3}}))
    read = FunctionCall("read_shared_context", "{}")
    server.script(Reply(None, tool_calls=(write, read)), Reply('{"summary": "three leads noted"}'), model="tooly")
    lead = await local_agent(api, "Lead", "planner")
    member = await openai_member(api, "Tooly", "tooly")
    team_id = await hand_team(api, lead, member)
    view = await run_ended(api, await run_team(api, team_id, "Note the leads"))
    assert view["status"] == "completed", view["error"]
    step = next(s for s in view["plan"] if s["agent_id"] == member)
    assert step["output"] == {"summary": "three leads noted"}

    first, second = server.requests_for("tooly")
    offered = {t["function"]["name"] for t in first.body["tools"]}
    assert offered == {"read_shared_context", "write_shared_context", "retrieve_memory", "send_message", "delegate"}
    answers = [m for m in second.body["messages"] if m["role"] == "tool"]
    assert json.loads(answers[0]["content"]) == {"written": "findings"}
    assert "plan" in json.loads(answers[1]["content"])["entries"]  # what the lead's step added before it

    entry = await eventually(lambda: shared_entry(api, view["run_id"], "findings"))
    assert entry["value"] == {"leads": 3}
    usage = await api.get(f"/api/v1/usage?execution_id={view['executions']['work']}&group_by=agent")
    assert usage["groups"][member]["calls"] == 2  # each turn is a call, reserved and counted


async def test_with_a_tool_calling_model_a_member_delegates_within_the_runs_budget(
    api: Api, server: OpenAICompatibleServer
) -> None:
    delegate = FunctionCall("delegate", json.dumps({"task": "Research Initech", "capability": "research"}))
    loop = FunctionCall("delegate", json.dumps({"task": "Do it yourself", "agent_id": "SELF"}))
    lead = await local_agent(api, "Lead", "planner")
    member = await openai_member(api, "Delegator", "delegator")
    body = {"name": "Researcher", "role": "researcher", "capabilities": ["research"], "model": LOCAL}
    researcher = str((await api.post("/api/v1/agents", body, expect=201))["resource_ids"]["agent_id"])
    loop = FunctionCall("delegate", loop.arguments.replace("SELF", member))
    server.script(Reply(None, tool_calls=(delegate, loop)), Reply('{"summary": "researched"}'), model="delegator")
    team_id = await hand_team(api, lead, member)
    view = await run_ended(api, await run_team(api, team_id, "Research the lead", budget={"tokens": 50000}))
    assert view["status"] == "completed", view["error"]

    first, second = server.requests_for("delegator")
    assert "delegate" in {t["function"]["name"] for t in first.body["tools"]}
    answers = [json.loads(m["content"]) for m in second.body["messages"] if m["role"] == "tool"]
    assert answers[0]["status"] == "succeeded"
    assert answers[0]["agent_id"] == researcher  # routed by capability to the free agent that has it
    assert answers[1]["code"] == "delegation_loop"  # to itself: refused before any model call
    (made,) = (await api.get(f"/api/v1/delegations?agent_id={member}"))["items"]
    found = await api.get(f"/api/v1/delegations/{made['delegation_id']}")
    assert (found["chain"], found["agent_id"], found["status"]) == ([member], researcher, "succeeded")
    assert found["run_id"] == view["run_id"]  # its calls held on the run's budget


async def shared_entry(api: Api, run_id: str, key: str) -> dict[str, Any] | None:
    resp = await api.client.get(f"/api/v1/memory/working/team_run/{run_id}/{key}", headers=api.headers)
    return dict(resp.json()) if resp.status_code == 200 else None
