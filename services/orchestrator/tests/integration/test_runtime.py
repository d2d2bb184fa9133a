"""The agent runtime on the real TASKS stream, with the local provider: templates run to their end, routing,
staffing and structured output, driven through the gateway."""

from collections.abc import AsyncIterator
from typing import Any

import pytest

from conftest import Api, Infra, Platform, running_platform
from orchestrator.settings import RuntimeSettings
from servicekit.testing import eventually

HOT_LEAD = {"company": "Initech", "employees": 450, "notes": "enterprise, budget approved, wants a demo"}
COLD_LEAD = {"company": "Solo", "employees": 1, "notes": "student, just browsing, no budget"}


@pytest.fixture
async def platform(infra: Infra, env_name: str) -> AsyncIterator[Platform]:
    settings = RuntimeSettings(no_agent_grace_s=0.5, heartbeat_s=0.5)
    async with running_platform(infra, env_name, behaviour=None, memory=True, runtime=settings) as running:
        yield running


@pytest.fixture
async def api(platform: Platform) -> Api:
    return Api(platform, await platform.new_workspace())


def steps_by_id(execution: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {step["id"]: step for step in execution["steps"]}


async def from_template(api: Api, slug: str) -> dict[str, Any]:
    return await api.post("/api/v1/workflows", {"template": slug}, expect=201)


async def test_a_fresh_workspace_runs_the_support_template_and_the_branch_follows_the_ticket(api: Api) -> None:
    created = await from_template(api, "support-ticket")
    roles = sorted(agent["role"] for agent in created["staffed_agents"])
    assert roles == ["senior support", "support agent", "support triage"]  # one agent per missing role
    assert created["unstaffed_steps"] == []
    workflow_id = created["resource_ids"]["workflow_id"]

    urgent = await api.execute(workflow_id, {"ticket": {"subject": "Cannot log in", "body": "Site is down!!!"}})
    calm = await api.execute(workflow_id, {"ticket": {"subject": "Question", "body": "How do I export a report?"}})
    done_urgent = await api.wait_for(urgent, "completed", "failed", timeout_s=30)
    done_calm = await api.wait_for(calm, "completed", "failed", timeout_s=30)

    assert done_urgent["status"] == done_calm["status"] == "completed"
    urgent_steps, calm_steps = steps_by_id(done_urgent), steps_by_id(done_calm)
    assert urgent_steps["triage"]["output"]["priority"] == "urgent"
    assert urgent_steps["escalate"]["status"] == "succeeded"
    assert urgent_steps["respond"]["status"] == "pending"
    assert calm_steps["triage"]["output"]["priority"] == "low"
    assert calm_steps["respond"]["status"] == "succeeded"
    assert calm_steps["escalate"]["status"] == "pending"

    again = await from_template(api, "support-ticket")  # the agents exist now: nothing more is created
    assert again["staffed_agents"] == []


async def test_hot_and_cold_leads_take_different_paths_to_completion(api: Api) -> None:
    workflow_id = (await from_template(api, "lead-to-customer"))["resource_ids"]["workflow_id"]
    hot = await api.execute(workflow_id, {"lead": HOT_LEAD})
    cold = await api.execute(workflow_id, {"lead": COLD_LEAD})

    waiting = await api.wait_step(hot, "approve", "waiting")
    assert steps_by_id(waiting)["qualify"]["output"]["score"] >= 70
    await api.post(f"/api/v1/workflows/executions/{hot}/approvals/approve", {"approved": True}, expect=200)
    done_hot = await api.wait_for(hot, "completed", "failed", timeout_s=30)
    done_cold = await api.wait_for(cold, "completed", "failed", timeout_s=30)

    assert done_hot["status"] == done_cold["status"] == "completed"
    assert steps_by_id(done_hot)["onboard"]["status"] == "succeeded"
    assert steps_by_id(done_cold)["qualify"]["output"]["score"] < 70
    assert steps_by_id(done_cold)["nurture"]["status"] == "succeeded"
    assert steps_by_id(done_cold)["proposal"]["status"] == "pending"


async def test_the_content_campaign_runs_its_parallel_branches_to_completion(api: Api) -> None:
    workflow_id = (await from_template(api, "content-campaign"))["resource_ids"]["workflow_id"]
    run = await api.execute(workflow_id, {"topic": "Agent teams for support desks", "audience": "support leads"})
    done = await api.wait_for(run, "completed", "failed", timeout_s=30)
    assert done["status"] == "completed", done
    steps = steps_by_id(done)
    assert steps["blog"]["status"] == steps["social"]["status"] == steps["publish"]["status"] == "succeeded"
    assert "draft" in steps["blog"]["output"]


async def test_a_step_no_agent_can_take_fails_at_once_with_no_agent_and_retries_once_one_exists(api: Api) -> None:
    spec = {"name": "Audit", "start": "audit", "steps": [{"id": "audit", "kind": "agent", "role": "auditor"}]}
    created = await api.post("/api/v1/workflows", {"spec": spec}, expect=201)
    assert created["unstaffed_steps"] == ["audit"]
    run = await api.execute(created["resource_ids"]["workflow_id"])
    failed = await api.wait_for(run, "failed", "completed", timeout_s=20)
    assert failed["status"] == "failed"
    assert steps_by_id(failed)["audit"]["error_kind"] == "no_agent"

    await api.post("/api/v1/agents", {"name": "Auditor", "role": "auditor"}, expect=201)
    await api.post(f"/api/v1/workflows/executions/{run}/retry", expect=200)
    done = await api.wait_for(run, "completed", timeout_s=20)
    assert steps_by_id(done)["audit"]["output"]["done"] is True


async def test_an_output_that_breaks_the_step_schema_is_retried_then_fails_invalid_output(api: Api) -> None:
    await api.post("/api/v1/agents", {"name": "Writer", "role": "copywriter"}, expect=201)
    # A schema no answer can meet (it requires a property it forbids): whatever the model says is invalid.
    schema = {"type": "object", "required": ["approved_by"], "properties": {}, "additionalProperties": False}
    step = {"id": "w", "kind": "agent", "role": "copywriter", "output_schema": schema, "retry": {"max_attempts": 2}}
    workflow_id = await api.workflow({"name": "Strict", "start": "w", "steps": [step]})
    run = await api.execute(workflow_id, {"topic": "x"})
    failed = await api.wait_for(run, "failed", "completed", timeout_s=20)
    step_run = steps_by_id(failed)["w"]
    assert step_run["error_kind"] == "invalid_output"
    assert len(step_run["attempts"]) == 2


async def test_a_schema_that_is_not_json_schema_is_refused_on_save(api: Api) -> None:
    step = {"id": "a", "kind": "agent", "role": "x", "output_schema": {"type": 3}}
    bad = {"name": "Bad", "start": "a", "steps": [step]}
    resp = await api.client.post("/api/v1/workflows", json={"spec": bad}, headers=api.headers)
    assert resp.status_code == 422, resp.text
    assert "output_schema" in resp.text


def fan_out(n: int) -> dict[str, Any]:
    branches = [f"b{i}" for i in range(n)]
    steps: list[dict[str, Any]] = [{"id": "fan", "kind": "parallel", "branches": branches, "join": "j"}]
    steps += [{"id": b, "kind": "agent", "role": "analyst", "input": {"part": b}, "next": "j"} for b in branches]
    steps.append({"id": "j", "kind": "join"})
    return {"name": "Fan out", "start": "fan", "steps": steps}


ANALYST = {"name": "Analyst", "role": "analyst", "concurrency_limit": 10, "model": {"max_output_tokens": 64}}


async def test_an_execution_budget_holds_against_ten_steps_racing_for_it(api: Api) -> None:
    await api.post("/api/v1/agents", ANALYST, expect=201)
    workflow_id = await api.workflow(fan_out(10))
    probe = await api.execute(workflow_id)  # what one branch costs, with no budget
    done = await api.wait_for(probe, "completed", timeout_s=30)
    per_call = (await api.get(f"/api/v1/usage?execution_id={probe}"))["total"]["total_tokens"] / 10
    assert steps_by_id(done)["b0"]["status"] == "succeeded"

    budget = int(per_call * 4.5)  # the calls' worst cases fit fewer times than that
    started = await api.post(f"/api/v1/workflows/{workflow_id}/executions", {"budget": {"tokens": budget}}, expect=201)
    run = started["resource_ids"]["execution_id"]
    failed = await api.wait_for(run, "failed", "completed", timeout_s=30)
    assert failed["status"] == "failed"
    kinds = [steps_by_id(failed)[f"b{i}"]["error_kind"] for i in range(10)]
    assert "budget_exceeded" in kinds
    used = (await api.get(f"/api/v1/usage?execution_id={run}"))["total"]
    assert 0 < used["total_tokens"] <= budget
    assert 0 < used["calls"] < 10  # a call that does not fit is not made


async def test_the_workspace_cap_stops_every_call(api: Api) -> None:
    await api.post("/api/v1/agents", ANALYST, expect=201)
    resp = await api.client.put("/api/v1/workspace/budget", json={"budget": {"tokens": 5}}, headers=api.headers)
    assert resp.status_code == 200, resp.text
    workflow_id = await api.workflow(fan_out(2))

    async def cap_applies() -> dict[str, Any] | None:
        report: dict[str, Any] = await api.get("/api/v1/usage")
        return report if report["budget"] is not None else None

    report = await eventually(cap_applies)
    assert report["budget"]["tokens"] == 5
    run = await api.execute(workflow_id)
    failed = await api.wait_for(run, "failed", timeout_s=20)
    stopped = [step for step in failed["steps"] if step["error_kind"] is not None]
    assert stopped  # the first branch to fail ends the execution
    assert {step["error_kind"] for step in stopped} == {"budget_exceeded"}
    assert "monthly" in stopped[0]["error"]
    assert (await api.get("/api/v1/usage"))["total"]["calls"] == 0


async def test_a_cap_set_or_an_agent_retired_after_the_runtime_read_them_holds_for_the_next_task(api: Api) -> None:
    """The runtime keeps the workspace's agents and cap in the process (its directory); the events that change
    them reach it, so the next task sees the change as soon as the read model does."""
    created = await api.post("/api/v1/agents", ANALYST, expect=201)
    workflow_id = await api.workflow(fan_out(2))
    warm = await api.execute(workflow_id)  # the runtime reads the agents and the (absent) cap for it
    assert (await api.wait_for(warm, "completed", timeout_s=20))["status"] == "completed"

    resp = await api.client.put("/api/v1/workspace/budget", json={"budget": {"tokens": 5}}, headers=api.headers)
    assert resp.status_code == 200, resp.text

    async def cap_applies() -> bool:
        return (await api.get("/api/v1/usage"))["budget"] is not None

    await eventually(cap_applies)
    capped = await api.wait_for(await api.execute(workflow_id), "failed", "completed", timeout_s=20)
    assert {s["error_kind"] for s in capped["steps"] if s["error_kind"]} == {"budget_exceeded"}

    resp = await api.client.put("/api/v1/workspace/budget", json={"budget": None}, headers=api.headers)
    assert resp.status_code == 200, resp.text

    async def cap_lifted() -> bool:
        return (await api.get("/api/v1/usage"))["budget"] is None

    await eventually(cap_lifted)
    agent_id = created["resource_ids"]["agent_id"]
    await api.post(f"/api/v1/agents/{agent_id}/retire", expect=200)

    async def retired() -> bool:
        return bool((await api.get(f"/api/v1/agents/{agent_id}"))["status"] == "retired")

    await eventually(retired)
    orphaned = await api.wait_for(await api.execute(workflow_id), "failed", "completed", timeout_s=20)
    assert {s["error_kind"] for s in orphaned["steps"] if s["error_kind"]} == {"no_agent"}


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"name": "A", "role": "r", "model": {"provider": "nope"}}, 422),
        ({"name": "A", "role": "r", "concurrency_limit": 0}, 422),
        ({"name": "A", "role": "r", "budget": {"tokens": 0}}, 422),
    ],
)
async def test_bad_agent_settings_get_422(api: Api, body: dict[str, Any], status: int) -> None:
    resp = await api.client.post("/api/v1/agents", json=body, headers=api.headers)
    assert resp.status_code == status, resp.text


async def test_updating_or_retiring_an_unknown_or_retired_agent_is_refused(api: Api) -> None:
    created = await api.post("/api/v1/agents", {"name": "A", "role": "r"}, expect=201)
    agent_id = created["resource_ids"]["agent_id"]
    spec = {"name": "A2", "role": "r", "instructions": "New instructions"}
    updated = await api.client.put(f"/api/v1/agents/{agent_id}", json=spec, headers=api.headers)
    assert updated.status_code == 200, updated.text
    unknown = await api.client.put("/api/v1/agents/agt_nope", json=spec, headers=api.headers)
    assert unknown.status_code == 404
    assert unknown.json()["code"] == "agent_not_found"
    await api.post(f"/api/v1/agents/{agent_id}/retire", expect=200)
    again = await api.client.post(f"/api/v1/agents/{agent_id}/retire", headers=api.headers)
    assert again.status_code == 409
    assert again.json()["code"] == "agent_retired"

    async def retired() -> dict[str, Any] | None:
        view: dict[str, Any] = await api.get(f"/api/v1/agents/{agent_id}")
        return view if view["status"] == "retired" else None

    view = await eventually(retired)
    assert view["name"] == "A2"  # its history stays readable
    assert view["spec_version"] == 2


async def test_staffing_replaces_a_staffed_agent_that_was_retired(api: Api) -> None:
    first = await from_template(api, "support-ticket")
    triage = next(a for a in first["staffed_agents"] if a["role"] == "support triage")
    await api.post(f"/api/v1/agents/{triage['agent_id']}/retire", expect=200)

    async def retired() -> bool:
        return bool((await api.get(f"/api/v1/agents/{triage['agent_id']}"))["status"] == "retired")

    await eventually(retired)
    again = await from_template(api, "support-ticket")
    assert [a["role"] for a in again["staffed_agents"]] == ["support triage"]
    assert again["staffed_agents"][0]["agent_id"] != triage["agent_id"]
