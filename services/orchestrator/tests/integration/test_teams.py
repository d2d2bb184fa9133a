"""Teams through the gateway: from each department template (with its agents) or by hand, members, status."""

from collections.abc import AsyncIterator
from typing import Any

import pytest

from conftest import Api, Infra, Platform, running_platform
from orchestrator.settings import RuntimeSettings
from servicekit.testing import eventually


@pytest.fixture
async def platform(infra: Infra, env_name: str) -> AsyncIterator[Platform]:
    async with running_platform(infra, env_name, behaviour=None, runtime=RuntimeSettings(heartbeat_s=0.5)) as running:
        yield running


@pytest.fixture
async def api(platform: Platform) -> Api:
    return Api(platform, await platform.new_workspace())


async def projected(api: Api, path: str) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        resp = await api.client.get(path, headers=api.headers)
        return resp.json() if resp.status_code == 200 else None

    return await eventually(probe)


@pytest.mark.parametrize("slug", ["sales", "marketing", "support", "operations"])
async def test_each_template_creates_a_working_team_with_its_agents(api: Api, slug: str) -> None:
    templates = {t["slug"]: t for t in (await api.get("/api/v1/team-templates"))["items"]}
    created = await api.post("/api/v1/teams", {"from_template": {"template": slug}}, expect=201)
    team_id = created["resource_ids"]["team_id"]
    team = await projected(api, f"/api/v1/teams/{team_id}")
    assert [m["role"] for m in team["members"]] == [m["role"] for m in templates[slug]["members"]]
    assert team["department"] == slug
    lead = next(m for m in templates[slug]["members"] if m["lead"])
    assert next(m for m in team["members"] if m["agent_id"] == team["lead"])["role"] == lead["role"]

    async def all_available() -> dict[str, Any] | None:
        status = await api.get(f"/api/v1/teams/{team_id}/status")
        return status if all(m["status"] == "available" for m in status["members"]) else None

    status = await eventually(all_available)
    assert {m["in_flight"] for m in status["members"]} == {0}
    assert status["usage_this_month"]["calls"] == 0
    for member in team["members"]:  # the members are agents of the workspace, with their instructions
        agent = await projected(api, f"/api/v1/agents/{member['agent_id']}")
        assert len(agent["instructions"]) > 40


async def test_a_template_team_can_be_renamed_trimmed_extended_and_given_a_model(api: Api) -> None:
    request = {
        "template": "support",
        "name": "Tier 1",
        "drop": ["resolution-specialist"],
        "change": {"triage": {"name": "Sorter", "budget": {"tokens": 5000}}},
        "add": [{"key": "billing", "name": "Billing", "role": "billing specialist", "capabilities": ["billing"]}],
        "model": {"temperature": 0.0, "max_output_tokens": 200},
    }
    created = await api.post("/api/v1/teams", {"from_template": request}, expect=201)
    team = await projected(api, f"/api/v1/teams/{created['resource_ids']['team_id']}")
    assert team["name"] == "Tier 1"
    assert [m["role"] for m in team["members"]] == ["support triage", "escalation manager", "billing specialist"]
    triage = await projected(api, f"/api/v1/agents/{team['members'][0]['agent_id']}")
    assert triage["name"] == "Sorter"
    assert triage["budget"] == {"tokens": 5000, "cost_usd": None}
    assert triage["model"]["max_output_tokens"] == 200


async def test_a_team_by_hand_checks_its_members_and_keeps_its_lead(api: Api) -> None:
    a = (await api.post("/api/v1/agents", {"name": "A", "role": "qualifier"}, expect=201))["resource_ids"]["agent_id"]
    b = (await api.post("/api/v1/agents", {"name": "B", "role": "writer"}, expect=201))["resource_ids"]["agent_id"]
    members = [{"agent_id": a, "role": "qualifier", "lead": True}]
    stranger = await api.client.post(
        "/api/v1/teams",
        json={"spec": {"name": "T", "members": [*members, {"agent_id": "agt_nobody", "role": "x"}]}},
        headers=api.headers,
    )
    assert stranger.status_code == 422, stranger.text
    assert stranger.json()["code"] == "unknown_member"
    leaderless = await api.client.post(
        "/api/v1/teams", json={"spec": {"name": "T", "members": [{"agent_id": a, "role": "q"}]}}, headers=api.headers
    )
    assert leaderless.status_code == 422

    created = await api.post("/api/v1/teams", {"spec": {"name": "Sales", "members": members}}, expect=201)
    team_id = created["resource_ids"]["team_id"]
    await api.post(f"/api/v1/teams/{team_id}/members", {"agent_id": b, "role": "writer"}, expect=200)
    lead_leaves = await api.client.delete(f"/api/v1/teams/{team_id}/members/{a}", headers=api.headers)
    assert lead_leaves.status_code == 409
    twice = await api.client.post(
        f"/api/v1/teams/{team_id}/members", json={"agent_id": b, "role": "writer"}, headers=api.headers
    )
    assert twice.status_code == 409
    await api.post(f"/api/v1/teams/{team_id}/archive", expect=200)
    archived = await api.client.post(
        f"/api/v1/teams/{team_id}/members", json={"agent_id": b, "role": "x"}, headers=api.headers
    )
    assert archived.status_code == 409
    assert archived.json()["code"] == "team_archived"

    async def gone_from_list() -> bool:
        listed = await api.get("/api/v1/teams")
        return bool(listed["items"] == [])

    await eventually(gone_from_list)
    assert len((await api.get("/api/v1/teams?include_archived=true"))["items"]) == 1


async def test_another_workspaces_team_answers_404(api: Api, platform: Platform) -> None:
    created = await api.post("/api/v1/teams", {"from_template": {"template": "sales"}}, expect=201)
    team_id = created["resource_ids"]["team_id"]
    await projected(api, f"/api/v1/teams/{team_id}")
    other = Api(platform, await platform.new_workspace("Globex"))
    for path in (f"/api/v1/teams/{team_id}", f"/api/v1/teams/{team_id}/status"):
        resp = await other.client.get(path, headers=other.headers)
        assert resp.status_code == 404
        assert resp.json()["code"] == "team_not_found"
    archive = await other.client.post(f"/api/v1/teams/{team_id}/archive", headers=other.headers)
    assert archive.status_code == 404
