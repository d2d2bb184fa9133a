"""The issue's phrasings and natural variants of them (other wordings, word order, missing articles, lower case),
with no model configured, each checked by the state it leaves through the real gateway and services: each variant
runs in a workspace of its own, so what it made is what the check finds."""

from collections.abc import AsyncIterator
from typing import Any

import pytest

from conftest import Api, Infra
from servicekit.testing import eventually
from tests.support.neptune_process import Neptune, conversation, neptune_platform, readable, say, teams


@pytest.fixture
async def neptune(infra: Infra, env_name: str) -> AsyncIterator[Neptune]:
    async with neptune_platform(infra, env_name) as running:
        yield running


async def fresh(neptune: Neptune) -> tuple[Api, str]:
    api = Api(neptune.platform, await neptune.platform.new_workspace())
    return api, await conversation(api)


async def team_from(api: Api, template: str) -> dict[str, Any]:
    await api.post("/api/v1/teams", {"from_template": {"template": template}}, expect=201)
    (team,) = await teams(api, 1)
    return team


@pytest.mark.parametrize(
    "text",
    [
        "Create a sales team with lead qualifier and proposal writer",
        "create sales team with lead qualifier and proposal writer",
        "please make a sales team with a lead qualifier and a proposal writer",
        "can you set up a new sales team: lead qualifier, proposal writer",
        "I need a sales team with a proposal writer and a lead qualifier",
    ],
)
async def test_create_a_team_by_its_roles(neptune: Neptune, text: str) -> None:
    api, talk = await fresh(neptune)
    await say(api, talk, text)
    (team,) = await teams(api, 1)
    assert (team["department"], sorted(m["role"] for m in team["members"])) == (
        "sales",
        ["lead qualifier", "proposal writer"],
    )


@pytest.mark.parametrize(
    "text",
    [
        "Run the marketing team to create this week's social content",
        "run marketing team to create this week's social content",
        "have the marketing team create this week's social content",
        "get the marketing team working on this week's social content",
        "marketing team, create this week's social content",
    ],
)
async def test_run_a_team_on_an_objective(neptune: Neptune, text: str) -> None:
    api, talk = await fresh(neptune)
    team = await team_from(api, "marketing")
    await say(api, talk, text)

    async def started() -> list[dict[str, Any]] | None:
        items: list[dict[str, Any]] = (await api.get(f"/api/v1/teams/{team['team_id']}/runs"))["items"]
        return items or None

    (run,) = await eventually(started, 10)
    assert "social content" in run["objective"]


@pytest.mark.parametrize(
    "text",
    [
        "Set up a workflow for handling support tickets",
        "set up workflow for support tickets",
        "create a workflow that handles support tickets",
        "build me a support ticket workflow",
    ],
)
async def test_set_up_a_workflow(neptune: Neptune, text: str) -> None:
    api, talk = await fresh(neptune)
    await say(api, talk, text)

    async def saved() -> list[dict[str, Any]] | None:
        items: list[dict[str, Any]] = (await api.get("/api/v1/workflows"))["items"]
        return items or None

    (workflow,) = await eventually(saved, 10)
    assert "ticket" in workflow["name"].lower()


@pytest.mark.parametrize(
    "text",
    [
        "What's the status of the support ticket workflow?",
        "whats the status of support ticket workflow",
        "how is the support ticket workflow doing?",
        "status of the support ticket workflow please",
    ],
)
async def test_the_status_of_a_workflow(neptune: Neptune, text: str) -> None:
    api, talk = await fresh(neptune)
    created = await api.post("/api/v1/workflows", {"template": "support-ticket"}, expect=201)
    turn = await say(api, talk, text)
    assert turn.tools == ["get_workflow_status"]
    assert turn.result()["workflow_id"] == created["resource_ids"]["workflow_id"]


@pytest.mark.parametrize("text", ["Which agents are available?", "who is available", "any agents free right now?"])
async def test_which_agents_are_available(neptune: Neptune, text: str) -> None:
    api, talk = await fresh(neptune)
    turn = await say(api, talk, text)
    assert turn.tools == ["check_agent_availability"]
    assert turn.result()["agents"] == []  # a fresh workspace: none, said plainly


@pytest.mark.parametrize(
    "text",
    [
        "Delegate the Initech renewal quote to Quinn",
        "delegate the initech renewal quote to quinn",
        "ask Quinn to write the Initech renewal quote",
    ],
)
async def test_delegate_a_task_to_an_agent(neptune: Neptune, text: str) -> None:
    api, talk = await fresh(neptune)
    body = {"name": "Quinn", "role": "proposal writer", "model": {"provider": "local"}}
    agent_id = (await api.post("/api/v1/agents", body, expect=201))["resource_ids"]["agent_id"]
    turn = await say(api, talk, text)
    delegation_id = turn.result()["delegation_id"]
    found = await eventually(lambda: readable(api, f"/api/v1/delegations/{delegation_id}"))
    assert found["agent_id"] == agent_id
    assert "initech renewal quote" in found["task"].lower()


@pytest.mark.parametrize(
    "text",
    [
        "Remember that Initech prefers annual billing for the sales team",
        "remember initech prefers annual billing for sales team",
        "for the sales team, remember that Initech prefers annual billing",
    ],
)
async def test_remember_a_fact_for_a_team_and_recall_it(neptune: Neptune, text: str) -> None:
    api, talk = await fresh(neptune)
    team = await team_from(api, "sales")
    noted = await say(api, talk, text)
    assert noted.result()["tags"] == [team["team_id"]]

    async def recalled() -> str | None:
        answer = (await say(api, talk, "What do we know about Initech?")).answer
        return answer if "annual billing" in answer.lower() else None

    await eventually(recalled, 15)


@pytest.mark.parametrize("text", ["List my teams", "list teams", "show me our teams", "what teams do we have?"])
async def test_list_the_teams(neptune: Neptune, text: str) -> None:
    api, talk = await fresh(neptune)
    team = await team_from(api, "support")
    turn = await say(api, talk, text)
    assert team["name"] in turn.answer


async def waiting_lead_run(api: Api) -> str:
    created = await api.post("/api/v1/workflows", {"template": "lead-to-customer"}, expect=201)
    lead = {"lead": {"company": "Initech", "employees": 450, "notes": "enterprise, budget approved"}}
    path = f"/api/v1/workflows/{created['resource_ids']['workflow_id']}/executions"
    execution_id = str((await api.post(path, {"input": lead}, expect=201))["resource_ids"]["execution_id"])

    async def waiting() -> bool:
        found = await readable(api, f"/api/v1/workflows/executions/{execution_id}")
        return found is not None and any(s["status"] == "waiting" for s in found["steps"])

    await eventually(waiting, 30)
    return execution_id


@pytest.mark.parametrize(
    ("text", "status"),
    [
        ("Pause the lead to customer workflow", "paused"),
        ("pause lead to customer workflow", "paused"),
        ("put the lead to customer workflow on hold", "paused"),
        ("Cancel the lead to customer workflow", "cancelled"),
        ("stop the lead to customer workflow", "cancelled"),
    ],
)
async def test_pause_or_cancel_a_workflow(neptune: Neptune, text: str, status: str) -> None:
    api, talk = await fresh(neptune)
    execution_id = await waiting_lead_run(api)
    await say(api, talk, text)

    async def reached() -> bool:
        found = await readable(api, f"/api/v1/workflows/executions/{execution_id}")
        return found is not None and found["status"] == status

    await eventually(reached, 15)
