"""`make up`'s launcher started as a process: every service answers /readyz, the slice works over HTTP, the admin
command finds the running stack by itself, and a killed service is restarted while the gateway's /readyz says it
is gone."""

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from typing import Any

import httpx
import pytest

from servicekit.devstack import SERVICES
from tests.support.sse import read_events
from tests.support.stack import Launcher

pytestmark = pytest.mark.system
BACKENDS = {"orchestrator", "workflow-engine", "memory", "neptune", "agent-runtime"}


async def test_every_service_is_ready_and_the_slice_works_over_http(stack: Launcher) -> None:
    gateway, base = stack.gateway, stack.base
    headers = {"Authorization": f"Bearer {stack.key}"}
    async with httpx.AsyncClient(timeout=10) as client:
        for i, svc in enumerate(SERVICES):
            ready = await client.get(f"http://127.0.0.1:{base + i}/readyz")
            assert ready.status_code == 200, f"{svc.name}: {ready.text}"
            backends = BACKENDS if svc.name == "gateway" else set()
            assert ready.json()["checks"] == {"nats": True, "mongodb": True, **dict.fromkeys(backends, True)}

        created = await client.post(
            f"{gateway}/api/v1/agents", json={"name": "Proposal writer", "role": "sales"}, headers=headers
        )
        assert created.status_code == 201, created.text
        agent_url = gateway + created.headers["Location"]
        deadline = time.monotonic() + 10
        while (resp := await client.get(agent_url, headers=headers)).status_code == 404:
            assert time.monotonic() < deadline, "the agent never reached the read model"
            await client.get(f"{gateway}/healthz")
        assert resp.status_code == 200
        assert resp.json()["name"] == "Proposal writer"

        spec = await client.get(f"{gateway}/openapi.json")
        assert "/api/v1/agents" in spec.json()["paths"]


async def _settled(
    client: httpx.AsyncClient, url: str, headers: dict[str, str], approvals: frozenset[str]
) -> dict[str, Any]:
    """The execution once it has ended or one of its approval steps waits (a join waits too, for its branches)."""
    deadline = time.monotonic() + 60
    while True:
        resp = await client.get(url, headers=headers)
        body: dict[str, Any] = resp.json() if resp.status_code == 200 else {"status": "unknown", "steps": []}
        if body["status"] in {"completed", "failed"} or _waiting(body, approvals):
            return body
        assert time.monotonic() < deadline, f"{url} never settled: {resp.text}"
        await asyncio.sleep(0.2)


def _waiting(run: dict[str, Any], approvals: frozenset[str]) -> list[str]:
    return [s["id"] for s in run["steps"] if s["status"] == "waiting" and s["id"] in approvals]


async def test_every_template_runs_to_completion_on_make_up_alone(stack: Launcher) -> None:
    """What the README shows a new user, on the processes make up starts and nothing else: each workflow template,
    created on a fresh workspace (its agents are staffed), runs to ``completed`` with the local provider, and the
    branch taken follows the input."""
    gateway = stack.gateway
    headers = {"Authorization": f"Bearer {stack.key}"}
    inputs: dict[str, list[dict[str, Any]]] = {
        "support-ticket": [{"ticket": {"subject": "Cannot log in"}}, {"ticket": {"subject": "A question on exports"}}],
        "lead-to-customer": [
            {"lead": {"company": "Initech", "employees": 450, "notes": "enterprise, budget approved"}},
            {"lead": {"company": "Solo", "employees": 1, "notes": "student, just browsing"}},
        ],
        "content-campaign": [{"topic": "Agent teams for support desks", "audience": "support leads"}],
    }
    async with httpx.AsyncClient(timeout=10) as client:
        taken: dict[str, list[set[str]]] = {}
        for slug, cases in inputs.items():
            created = await client.post(f"{gateway}/api/v1/workflows", json={"template": slug}, headers=headers)
            assert created.status_code == 201, created.text
            workflow_id = created.json()["resource_ids"]["workflow_id"]
            saved = await client.get(f"{gateway}/api/v1/workflows/{workflow_id}", headers=headers)
            assert saved.status_code == 200, saved.text
            approvals = frozenset(s["id"] for s in saved.json()["spec"]["steps"] if s["kind"] == "approval")
            for case in cases:
                started = await client.post(
                    f"{gateway}/api/v1/workflows/{workflow_id}/executions", json={"input": case}, headers=headers
                )
                assert started.status_code == 201, started.text
                url = f"{gateway}/api/v1/workflows/executions/{started.json()['resource_ids']['execution_id']}"
                undecided = approvals
                run = await _settled(client, url, headers, undecided)
                while waiting := _waiting(run, undecided):
                    decided = await client.post(
                        f"{url}/approvals/{waiting[0]}", json={"approved": True}, headers=headers
                    )
                    assert decided.status_code == 200, decided.text
                    undecided -= {waiting[0]}
                    run = await _settled(client, url, headers, undecided)
                assert run["status"] == "completed", run
                taken.setdefault(slug, []).append({s["id"] for s in run["steps"] if s["status"] == "succeeded"})
        assert "escalate" in taken["support-ticket"][0]
        assert "respond" in taken["support-ticket"][1]
        assert "proposal" in taken["lead-to-customer"][0]
        assert "nurture" in taken["lead-to-customer"][1]


async def test_a_run_of_each_team_template_completes_on_make_up_alone(stack: Launcher) -> None:
    """The README's team run: a team from each department template, run on an objective, plans, works through the
    plan, shares context and ends with the lead's summary, on the processes make up starts; a coordination too."""
    gateway = stack.gateway
    headers = {"Authorization": f"Bearer {stack.key}"}

    async def ended(client: httpx.AsyncClient, url: str) -> dict[str, Any]:
        deadline = time.monotonic() + 60
        while True:
            resp = await client.get(url, headers=headers)
            if resp.status_code == 200 and resp.json()["status"] not in {"planning", "running", "summarizing"}:
                return dict(resp.json())
            assert time.monotonic() < deadline, f"{url} never ended: {resp.text}"
            await asyncio.sleep(0.2)

    async with httpx.AsyncClient(timeout=10) as client:
        teams = []
        for slug in ("sales", "marketing", "support", "operations"):
            body = {"from_template": {"template": slug}}
            created = await client.post(f"{gateway}/api/v1/teams", json=body, headers=headers)
            assert created.status_code == 201, created.text
            teams.append(created.json()["resource_ids"]["team_id"])
            started = await client.post(
                f"{gateway}/api/v1/teams/{teams[-1]}/runs",
                json={"objective": "Handle all new leads today"},
                headers=headers,
            )
            assert started.status_code == 201, started.text
            run = await ended(client, gateway + started.headers["Location"])
            assert run["status"] == "completed", run
            assert run["plan"]
            assert all(step["status"] == "succeeded" for step in run["plan"])
            assert len(run["handoffs"]) == len(run["plan"]) + 2
            assert set(run["shared_context"]) >= {step["id"] for step in run["plan"]}
            assert run["summary_by"] == "lead"
        together: dict[str, Any] = {"team_ids": teams[:2], "objective": "Launch the campaign, qualify its leads"}
        started = await client.post(f"{gateway}/api/v1/coordinations", json=together, headers=headers)
        assert started.status_code == 201, started.text
        coordination = await ended(client, gateway + started.headers["Location"])
        assert coordination["status"] == "completed", coordination

        # The README's messages: to a team, a person's reply into the thread, the thread listed.
        note = {"to": {"team_id": teams[0]}, "subject": "Priorities", "body": "Enterprise leads first this week."}
        sent = await client.post(f"{gateway}/api/v1/messages", json=note, headers=headers)
        assert sent.status_code == 201, sent.text
        thread_id = sent.json()["resource_ids"]["thread_id"]
        reply = {"body": "And reply to Initech today."}
        answered = await client.post(f"{gateway}/api/v1/threads/{thread_id}/messages", json=reply, headers=headers)
        assert answered.status_code == 201, answered.text
        deadline = time.monotonic() + 30
        while (
            len(
                (listed := await client.get(f"{gateway}/api/v1/messages?thread_id={thread_id}", headers=headers))
                .json()
                .get("items", [])
            )
            < 2
        ):
            assert time.monotonic() < deadline, listed.text
            await asyncio.sleep(0.2)
        assert [m["body"] for m in listed.json()["items"]] == [note["body"], reply["body"]]


async def test_the_readmes_delegation_runs_on_make_up_alone(stack: Launcher) -> None:
    """The README's delegation: to the agent its first example creates, routed by capability, followed to its
    result, on the processes make up starts."""
    gateway, headers = stack.gateway, {"Authorization": f"Bearer {stack.key}"}
    agent = {"name": "Lead qualifier", "role": "sales", "capabilities": ["qualification"]}
    task = "Qualify the lead Initech (450 employees, budget approved)"
    body = {"task": task, "capability": "qualification", "input": {"company": "Initech"}, "budget": {"tokens": 5000}}

    async def until(client: httpx.AsyncClient, path: str, *statuses: str) -> dict[str, Any]:
        deadline = time.monotonic() + 60
        while (view := dict((await client.get(gateway + path, headers=headers)).json())).get("status") not in statuses:
            assert time.monotonic() < deadline, f"{path} never became {statuses}: {view}"
            await asyncio.sleep(0.2)
        return view

    async with httpx.AsyncClient(timeout=10) as client:
        created = await client.post(f"{gateway}/api/v1/agents", json=agent, headers=headers)
        assert created.status_code == 201, created.text
        await until(client, created.headers["Location"], "available")
        started = await client.post(f"{gateway}/api/v1/delegations", json={**body, "deadline_s": 120}, headers=headers)
        assert started.status_code == 201, started.text
        assert started.json()["resource_ids"]["agent_id"] == created.json()["resource_ids"]["agent_id"]
        view = await until(client, started.headers["Location"], "succeeded", "failed")
        assert view["status"] == "succeeded", view
        assert view["output"] is not None
        listed = await client.get(f"{gateway}/api/v1/delegations?status=succeeded", headers=headers)
        assert [d["delegation_id"] for d in listed.json()["items"]] == [view["delegation_id"]]


async def test_neptune_as_the_readme_shows_it_on_make_up_alone(stack: Launcher) -> None:
    """The README's Neptune: a conversation, a team created and run by chat, the turn streamed as SSE."""
    gateway, headers = stack.gateway, {"Authorization": f"Bearer {stack.key}"}
    async with httpx.AsyncClient(timeout=30) as client:
        created = await client.post(
            f"{gateway}/api/v1/neptune/conversations", json={"title": "Sales ops"}, headers=headers
        )
        assert created.status_code == 201, created.text
        conversation_id = created.json()["resource_ids"]["conversation_id"]
        url = f"{gateway}/api/v1/neptune/conversations/{conversation_id}/messages"

        async def say(content: str) -> list[tuple[str, dict[str, Any]]]:
            async with client.stream("POST", url, json={"content": content}, headers=headers) as resp:
                assert resp.status_code == 200, await resp.aread()
                events = await read_events(resp)
            assert [kind for kind, _ in events] == ["tool_call", "tool_result", "message"], events
            return events

        made = await say("Create a sales team with lead qualifier and proposal writer")
        team_id = made[1][1]["result"]["team_id"]
        team = (await client.get(f"{gateway}/api/v1/teams/{team_id}", headers=headers)).json()
        assert sorted(m["role"] for m in team["members"]) == ["lead qualifier", "proposal writer"]
        ran = await say("Have the sales team follow up with all stalled deals")
        run_id = ran[1][1]["result"]["run_id"]
        deadline = time.monotonic() + 60
        while (run := (await client.get(f"{gateway}/api/v1/team-runs/{run_id}", headers=headers)).json())[
            "status"
        ] != "completed":
            assert time.monotonic() < deadline, run
            await asyncio.sleep(0.3)
        view = (await client.get(f"{gateway}/api/v1/neptune/conversations/{conversation_id}", headers=headers)).json()
        assert [t["intent"] for t in view["turns"]] == ["create_team", "run_team"]


def test_the_admin_command_as_documented_uses_the_running_stack(stack: Launcher) -> None:
    # As the README has it: from the checkout, no flags, no MONGODB_URL or NATS_URL; only the stack's environment.
    env = {k: v for k, v in os.environ.items() if k not in {"MONGODB_URL", "NATS_URL"}}
    done = subprocess.run(
        [sys.executable, "-m", "gateway.admin", "create-workspace", "Second team"],
        cwd=stack.root,
        env={**env, "PLATFORM_ENV": stack.env_name},
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()
    created = json.loads(done.stdout)
    resp = httpx.get(f"{stack.gateway}/api/v1/workspace", headers={"Authorization": f"Bearer {created['api_key']}"})
    assert resp.status_code == 200, resp.text
    assert (resp.json()["workspace_id"], resp.json()["name"]) == (created["workspace_id"], "Second team")


def test_a_killed_service_is_restarted_and_the_gateway_reports_it_meanwhile(stack: Launcher) -> None:
    engine = stack.pid_of("workflow-engine")
    os.kill(engine, signal.SIGKILL)
    with httpx.Client(timeout=10) as client:
        deadline = time.monotonic() + 30
        while (ready := client.get(f"{stack.gateway}/readyz")).status_code == 200:
            assert time.monotonic() < deadline, "the gateway's /readyz never noticed the engine was gone"
            time.sleep(0.1)
        assert ready.status_code == 503
        assert ready.json()["failing"] == ["workflow-engine"]
        assert (client.get(f"{stack.gateway}/healthz")).status_code == 200

        lines = stack.read_until("workflow-engine is ready again", 90)
        assert any("workflow-engine killed by SIGKILL" in line for line in lines)
        assert any("workflow-engine restarted (pid" in line for line in lines)
        assert stack.pid_of("workflow-engine") != engine
        deadline = time.monotonic() + 30
        while (ready := client.get(f"{stack.gateway}/readyz")).status_code != 200:
            assert time.monotonic() < deadline, f"the gateway never saw the engine back: {ready.text}"
            time.sleep(0.2)
        assert ready.json()["failing"] == []
