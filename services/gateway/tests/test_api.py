"""The gateway through HTTP: authentication, workspace scoping, errors, idempotency and the agent slice."""

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from conftest import Infra, Platform, running_platform
from orchestrator.main import build_app as build_orchestrator
from orchestrator.settings import OrchestratorSettings
from servicekit.testing import eventually

AGENT = {"name": "Lead qualifier", "role": "sales", "capabilities": ["qualification"]}


async def _get_when_projected(platform: Platform, path: str, headers: dict[str, str]) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        resp = await platform.client.get(path, headers=headers)
        return resp.json() if resp.status_code == 200 else None

    return await eventually(probe)


def _problem(resp: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = resp.json()
    assert body["code"] == code
    assert body["status"] == status
    return body


async def test_create_agent_travels_the_whole_path_and_reads_back(platform: Platform) -> None:
    ws = await platform.new_workspace()
    headers = platform.auth(ws)

    created = await platform.client.post("/api/v1/agents", json=AGENT, headers=headers)
    assert created.status_code == 201, created.text
    body = created.json()
    agent_id = body["resource_ids"]["agent_id"]
    assert body["status"] == "accepted"
    assert created.headers["Location"] == f"/api/v1/agents/{agent_id}"

    agent = await _get_when_projected(platform, f"/api/v1/agents/{agent_id}", headers)
    assert agent["name"] == "Lead qualifier"
    assert agent["status"] == "offline"  # no agent runtime runs here: availability is derived, never set
    assert agent["workspace_id"] == ws["workspace_id"]

    paused = await platform.client.post(f"/api/v1/agents/{agent_id}/status", json={"status": "paused"}, headers=headers)
    assert paused.status_code == 200, paused.text

    async def is_paused() -> bool:
        resp = await platform.client.get(f"/api/v1/agents/{agent_id}", headers=headers)
        return bool(resp.json()["status"] == "paused")

    await eventually(is_paused)
    listed = await platform.client.get("/api/v1/agents", params={"status": "paused"}, headers=headers)
    assert [a["agent_id"] for a in listed.json()["items"]] == [agent_id]

    again = await platform.client.post(f"/api/v1/agents/{agent_id}/status", json={"status": "paused"}, headers=headers)
    _problem(again, 409, "invalid_transition")
    by_hand = await platform.client.post(f"/api/v1/agents/{agent_id}/status", json={"status": "busy"}, headers=headers)
    assert by_hand.status_code == 422  # busy, available and offline are the runtime's to say

    status = await platform.client.get(f"/api/v1/commands/{body['command_id']}", headers=headers)
    assert status.status_code == 200
    assert status.json()["status"] == "accepted"


async def test_requests_without_a_valid_key_get_401(platform: Platform) -> None:
    _problem(await platform.client.get("/api/v1/agents"), 401, "unauthorized")
    _problem(await platform.client.get("/api/v1/agents", headers={"Authorization": "Basic x"}), 401, "unauthorized")
    resp = await platform.client.get("/api/v1/agents", headers={"Authorization": "Bearer apk_nope_nope"})
    _problem(resp, 401, "unauthorized")
    assert resp.headers["WWW-Authenticate"] == "Bearer"


async def test_another_workspaces_resources_answer_404(platform: Platform) -> None:
    acme, globex = await platform.new_workspace("Acme"), await platform.new_workspace("Globex")
    created = await platform.client.post("/api/v1/agents", json=AGENT, headers=platform.auth(acme))
    agent_id = created.json()["resource_ids"]["agent_id"]
    command_id = created.json()["command_id"]
    await _get_when_projected(platform, f"/api/v1/agents/{agent_id}", platform.auth(acme))

    other = platform.auth(globex)
    _problem(await platform.client.get(f"/api/v1/agents/{agent_id}", headers=other), 404, "agent_not_found")
    _problem(await platform.client.get(f"/api/v1/commands/{command_id}", headers=other), 404, "not_found")
    change = await platform.client.post(f"/api/v1/agents/{agent_id}/status", json={"status": "paused"}, headers=other)
    _problem(change, 404, "agent_not_found")
    assert (await platform.client.get("/api/v1/agents", headers=other)).json() == {"items": []}


@pytest.mark.parametrize(
    ("content", "headers", "status", "code"),
    [
        (b'{"name": "x", "role": ', {"content-type": "application/json"}, 400, "malformed_json"),
        (b'{"name": 5, "role": ["sales"]}', {"content-type": "application/json"}, 422, "validation_failed"),
        (b'{"name": "x", "role": "y", "colour": "red"}', {"content-type": "application/json"}, 422, "unknown_field"),
        (b'{"role": "y"}', {"content-type": "application/json"}, 422, "validation_failed"),
        (b"[1, 2]", {"content-type": "application/json"}, 422, "validation_failed"),
        (b'{"name": "' + b"x" * 5000 + b'", "role": "y"}', {"content-type": "application/json"}, 413, "body_too_large"),
    ],
    ids=["malformed", "wrong-types", "unknown-field", "missing-field", "not-an-object", "oversized"],
)
async def test_bad_input_gets_a_4xx_with_a_code(
    platform: Platform, content: bytes, headers: dict[str, str], status: int, code: str
) -> None:
    ws = await platform.new_workspace()
    resp = await platform.client.post("/api/v1/agents", content=content, headers={**headers, **platform.auth(ws)})
    _problem(resp, status, code)


async def test_other_bad_requests_are_4xx(platform: Platform) -> None:
    ws = await platform.new_workspace()
    auth = platform.auth(ws)
    _problem(await platform.client.get("/api/v1/nowhere", headers=auth), 404, "not_found")
    _problem(await platform.client.delete("/api/v1/agents", headers=auth), 405, "method_not_allowed")
    _problem(
        await platform.client.get("/api/v1/agents", params={"limit": "lots"}, headers=auth), 422, "validation_failed"
    )
    _problem(await platform.client.get("/api/v1/agents/bad$id", headers=auth), 422, "validation_failed")

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(8):
            yield b"x" * 1024

    streamed = platform.client.post(
        "/api/v1/agents", content=chunks(), headers={**auth, "content-type": "application/json"}
    )
    _problem(await streamed, 413, "body_too_large")


async def test_idempotency_key_sent_twice_has_one_effect(platform: Platform) -> None:
    ws = await platform.new_workspace()
    headers = {**platform.auth(ws), "Idempotency-Key": "create-lead-qualifier-1"}

    first = await platform.client.post("/api/v1/agents", json=AGENT, headers=headers)
    second = await platform.client.post("/api/v1/agents", json=AGENT, headers=headers)
    assert first.status_code == second.status_code == 201
    assert first.json()["command_id"] == second.json()["command_id"]
    assert first.json()["resource_ids"] == second.json()["resource_ids"]

    agent_id = first.json()["resource_ids"]["agent_id"]
    await _get_when_projected(platform, f"/api/v1/agents/{agent_id}", platform.auth(ws))
    listed = (await platform.client.get("/api/v1/agents", headers=platform.auth(ws))).json()["items"]
    assert [a["agent_id"] for a in listed] == [agent_id]

    reused = await platform.client.post("/api/v1/agents", json={**AGENT, "name": "Other"}, headers=headers)
    _problem(reused, 422, "idempotency_key_reused")


async def test_health_and_readiness(platform: Platform) -> None:
    assert (await platform.client.get("/healthz")).json() == {"status": "ok"}
    ready = await platform.client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"nats": True, "mongodb": True, "orchestrator": True, "workflow-engine": True}
    assert ready.json()["failing"] == []


async def test_readiness_names_a_backend_service_that_does_not_answer(infra: Infra, env_name: str) -> None:
    async with running_platform(
        infra, env_name, engine=False, behaviour=None, backend_services="orchestrator,workflow-engine"
    ) as platform:
        ready = await platform.client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["status"] == "unavailable"
        assert ready.json()["checks"] == {"nats": True, "mongodb": True, "orchestrator": True, "workflow-engine": False}
        assert ready.json()["failing"] == ["workflow-engine"]
        assert (await platform.client.get("/healthz")).status_code == 200, "liveness does not depend on backends"


async def test_a_slow_outcome_answers_202_and_the_command_can_be_polled(infra: Infra, env_name: str) -> None:
    async with running_platform(
        infra, env_name, engine=False, orchestrator=False, behaviour=None, command_wait_s=0.3
    ) as platform:
        ws = await platform.new_workspace()
        headers = platform.auth(ws)
        resp = await platform.client.post("/api/v1/agents", json=AGENT, headers=headers)
        assert resp.status_code == 202, resp.text
        assert resp.json()["status"] == "pending"
        location = resp.headers["Location"]
        assert location == f"/api/v1/commands/{resp.json()['command_id']}"
        assert (await platform.client.get(location, headers=headers)).json()["status"] == "pending"

        orchestrator = build_orchestrator(
            OrchestratorSettings(platform_env=env_name, nats_url=infra.nats_url, mongodb_url=infra.mongodb_url)
        )
        async with orchestrator.router.lifespan_context(orchestrator):

            async def finished() -> dict[str, Any] | None:
                body: dict[str, Any] = (await platform.client.get(location, headers=headers)).json()
                return body if body["status"] != "pending" else None

            done = await eventually(finished)
        assert done["status"] == "accepted"
        assert done["resource_ids"]["agent_id"].startswith("agt_")


async def test_concurrent_requests_with_one_idempotency_key_have_one_effect(platform: Platform) -> None:
    ws = await platform.new_workspace()
    headers = {**platform.auth(ws), "Idempotency-Key": "burst"}
    answers = await asyncio.gather(
        *(platform.client.post("/api/v1/agents", json=AGENT, headers=headers) for _ in range(5))
    )
    assert {r.status_code for r in answers} <= {201, 202}
    assert len({r.json()["command_id"] for r in answers}) == 1
    agent_id = f"agt_{answers[0].json()['command_id'][:24]}"
    await _get_when_projected(platform, f"/api/v1/agents/{agent_id}", platform.auth(ws))
    await asyncio.sleep(0.5)
    listed = (await platform.client.get("/api/v1/agents", headers=platform.auth(ws))).json()["items"]
    assert [a["agent_id"] for a in listed] == [agent_id]


async def test_a_body_that_is_not_utf8_is_malformed_json(platform: Platform) -> None:
    ws = await platform.new_workspace()
    auth = {**platform.auth(ws), "content-type": "application/json"}
    _problem(await platform.client.post("/api/v1/agents", content=b"\xff\xfe\x00", headers=auth), 400, "malformed_json")
