"""Memory through the gateway: each tier's lifecycle, versioned shared context, retrieval, isolation, import."""

import asyncio
import json
import random
from collections.abc import AsyncIterator
from typing import Any

import pytest

from conftest import Infra, Platform, running_platform
from servicekit.testing import eventually


@pytest.fixture
async def platform(infra: Infra, env_name: str) -> AsyncIterator[Platform]:
    async with running_platform(
        infra, env_name, memory=True, engine=False, behaviour=None, max_body_bytes=1_000_000
    ) as running:
        yield running


class Api:
    def __init__(self, platform: Platform, workspace: dict[str, str]) -> None:
        self.client = platform.client
        self.headers = platform.auth(workspace)

    async def call(self, method: str, path: str, body: Any = None, expect: int | None = None) -> Any:
        resp = await self.client.request(method, f"/api/v1/memory{path}", json=body, headers=self.headers)
        if expect is not None:
            assert resp.status_code == expect, resp.text
        return resp.json()

    async def until(self, path: str, check: Any) -> Any:
        async def probe() -> Any:
            resp = await self.client.get(f"/api/v1/memory{path}", headers=self.headers)
            body = resp.json() if resp.status_code == 200 else None
            return body if body is not None and check(body) else None

        return await eventually(probe)


@pytest.fixture
async def api(platform: Platform) -> Api:
    return Api(platform, await platform.new_workspace())


EXECUTION = {"kind": "execution", "id": "ex_1"}
NDJSON = "application/x-ndjson"


async def test_short_term_lifecycle_with_expiry_and_promotion(api: Api) -> None:
    kept = await api.call("POST", "/short-term", {"scope": EXECUTION, "content": "Customer prefers email"}, 201)
    entry_id = kept["resource_ids"]["entry_id"]
    fleeting = await api.call("POST", "/short-term", {"scope": EXECUTION, "content": "temp note", "ttl_s": 0.5}, 201)
    fleeting_id = fleeting["resource_ids"]["entry_id"]

    entry = await api.until(f"/short-term/{entry_id}", lambda b: True)
    assert (entry["content"], entry["scope_kind"], entry["scope_id"]) == ("Customer prefers email", "execution", "ex_1")
    await api.until("/short-term?scope_kind=execution&scope_id=ex_1", lambda b: len(b["items"]) == 2)
    await api.until("/short-term?scope_kind=execution&scope_id=ex_1", lambda b: len(b["items"]) == 1)
    gone = await api.client.get(f"/api/v1/memory/short-term/{fleeting_id}", headers=api.headers)
    assert (gone.status_code, gone.json()["code"]) == (404, "memory_not_found"), "expired entries are never returned"
    expired = await api.call("POST", f"/short-term/{fleeting_id}/promote", {}, 404)
    assert expired["code"] == "memory_not_found"
    missing = await api.call("POST", "/short-term/stm_nothing/promote", {}, 404)
    assert missing["code"] == "memory_not_found"

    promoted = await api.call(
        "POST", f"/short-term/{entry_id}/promote", {"tags": ["preferences"], "importance": 0.9}, 201
    )
    long_id = promoted["resource_ids"]["entry_id"]
    long_entry = await api.until(f"/long-term/{long_id}", lambda b: True)
    assert (long_entry["content"], long_entry["tags"], long_entry["source"]) == (
        "Customer prefers email",
        ["preferences"],
        "execution:ex_1",
    )
    assert long_entry["promoted_from"] == entry_id
    again = await api.call("POST", f"/short-term/{entry_id}/promote", {}, 409)
    assert again["code"] == "conflict"

    other = await api.call("POST", "/short-term", {"scope": EXECUTION, "content": "delete me"}, 201)
    other_id = other["resource_ids"]["entry_id"]
    await api.until(f"/short-term/{other_id}", lambda b: True)
    await api.call("DELETE", f"/short-term/{other_id}", expect=200)
    await api.until("/short-term?scope_kind=execution&scope_id=ex_1", lambda b: len(b["items"]) == 1)
    assert (await api.call("DELETE", f"/short-term/{other_id}", expect=404))["code"] == "memory_not_found"

    await api.call("DELETE", "/short-term/execution/ex_1", expect=200)
    await api.until("/short-term?scope_kind=execution&scope_id=ex_1", lambda b: b["items"] == [])
    bad_scope = await api.call("POST", "/short-term", {"scope": {"kind": "team", "id": "t1"}, "content": "x"}, 422)
    assert bad_scope["code"] == "validation_failed"


async def test_short_term_is_cleared_when_its_execution_ends(infra: Infra, env_name: str) -> None:
    async with running_platform(infra, env_name, memory=True) as platform:
        api = Api(platform, await platform.new_workspace())
        spec = {"name": "Gate", "start": "gate", "steps": [{"id": "gate", "kind": "approval", "next": None}]}
        wf = (await platform.client.post("/api/v1/workflows", json={"spec": spec}, headers=api.headers)).json()
        started = await platform.client.post(
            f"/api/v1/workflows/{wf['resource_ids']['workflow_id']}/executions", json={}, headers=api.headers
        )
        execution_id = started.json()["resource_ids"]["execution_id"]
        scope = {"kind": "execution", "id": execution_id}
        await api.call("POST", "/short-term", {"scope": scope, "content": "draft in progress"}, 201)
        listing = f"/short-term?scope_kind=execution&scope_id={execution_id}"
        await api.until(listing, lambda b: len(b["items"]) == 1)

        async def waiting() -> bool:
            found = await platform.client.get(f"/api/v1/workflows/executions/{execution_id}", headers=api.headers)
            return bool(found.json()["steps"][0]["status"] == "waiting")

        await eventually(waiting)
        await platform.client.post(
            f"/api/v1/workflows/executions/{execution_id}/approvals/gate", json={"approved": True}, headers=api.headers
        )
        await api.until(listing, lambda b: b["items"] == [])


async def test_working_memory_is_versioned_and_refuses_stale_writes(api: Api) -> None:
    path = "/working/team_run/run_1/proposal.status"
    first = await api.call("PUT", path, {"value": "drafting", "expected_version": 0}, 200)
    assert first["resource_ids"]["version"] == "1"
    second = await api.call("PUT", path, {"value": {"state": "review", "by": "ana"}, "expected_version": 1}, 200)
    assert second["resource_ids"]["version"] == "2"
    stale = await api.call("PUT", path, {"value": "overwrite", "expected_version": 1}, 409)
    assert stale["code"] == "version_conflict"
    create_twice = await api.call("PUT", path, {"value": "x", "expected_version": 0}, 409)
    assert create_twice["code"] == "version_conflict"

    current = await api.until(path, lambda b: b["version"] == 2)
    assert current["value"] == {"state": "review", "by": "ana"}
    history = await api.call("GET", f"{path}/history", expect=200)
    assert [(h["version"], h["value"]) for h in history["items"]] == [
        (1, "drafting"),
        (2, {"state": "review", "by": "ana"}),
    ]
    await api.call("PUT", "/working/team_run/run_1/owner", {"value": "ana"}, 200)
    writes = await asyncio.gather(*(api.call("PUT", "/working/team_run/run_1/counter", {"value": i}) for i in range(8)))
    assert sorted(int(w["resource_ids"]["version"]) for w in writes) == list(range(1, 9)), (
        "each writer learns its version"
    )
    await api.until("/working/team_run/run_1", lambda b: len(b["items"]) == 3)
    await api.call("DELETE", f"{path}?expected_version=1", expect=409)
    await api.call("DELETE", f"{path}?expected_version=2", expect=200)
    await api.until("/working/team_run/run_1", lambda b: sorted(i["key"] for i in b["items"]) == ["counter", "owner"])


async def test_long_term_edit_delete_and_limits(api: Api, platform: Platform) -> None:
    created = await api.call("POST", "/long-term", {"content": "Acme renews in March", "tags": ["acme"]}, 201)
    entry_id = created["resource_ids"]["entry_id"]
    await api.until(f"/long-term/{entry_id}", lambda b: True)
    await api.call("PATCH", f"/long-term/{entry_id}", {"content": "Acme renews in April", "importance": 0.8}, 200)
    edited = await api.until(f"/long-term/{entry_id}", lambda b: b["content"] == "Acme renews in April")
    assert (edited["importance"], edited["tags"]) == (0.8, ["acme"])
    assert [e["entry_id"] for e in (await api.call("GET", "/long-term?tag=acme", expect=200))["items"]] == [entry_id]
    await api.call("DELETE", f"/long-term/{entry_id}", expect=200)
    await api.until("/long-term", lambda b: b["items"] == [])
    assert (await api.call("DELETE", f"/long-term/{entry_id}", expect=404))["code"] == "memory_not_found"

    too_big = "x" * (platform.settings.memory_max_entry_chars + 1)
    assert (await api.call("POST", "/long-term", {"content": too_big}, 413))["code"] == "entry_too_large"
    long_query = "q" * (platform.settings.memory_max_query_chars + 1)
    assert (await api.call("POST", "/retrieve", {"query": long_query}, 422))["code"] == "query_too_long"
    unknown = await api.call("POST", "/long-term", {"content": "x", "colour": "red"}, 422)
    assert unknown["code"] == "unknown_field"


async def test_import_reports_bad_lines_and_imports_the_rest(api: Api) -> None:
    lines = [
        json.dumps({"content": "Globex pays net 30", "tags": ["globex", "billing"]}),
        "{not json",
        json.dumps({"tags": ["no content"]}),
        "",
        json.dumps({"content": "Globex contact is Hank", "importance": 0.7, "source": "crm"}),
        json.dumps({"content": "bad importance", "importance": 7}),
    ]
    resp = await api.client.post(
        "/api/v1/memory/long-term/import",
        content="\n".join(lines).encode(),
        headers={**api.headers, "content-type": "application/x-ndjson"},
    )
    assert resp.status_code == 200, resp.text
    report = resp.json()
    assert report["imported"] == 2
    assert [(e["line"], e["code"]) for e in report["errors"]] == [
        (2, "malformed_json"),
        (3, "validation_failed"),
        (6, "validation_failed"),
    ]
    listed = await api.until("/long-term?tag=globex", lambda b: len(b["items"]) == 1)
    assert listed["items"][0]["content"] == "Globex pays net 30"
    await api.until("/long-term", lambda b: len(b["items"]) == 2)
    nothing = await api.client.post(
        "/api/v1/memory/long-term/import", content=b"{bad\n", headers={**api.headers, "content-type": NDJSON}
    )
    assert (nothing.status_code, nothing.headers["content-type"]) == (422, "application/problem+json")
    assert [(e["line"], e["code"]) for e in nothing.json()["errors"]] == [(1, "malformed_json")]


TOPICS = [
    "pricing",
    "invoice",
    "onboarding",
    "shipping",
    "renewal",
    "support ticket",
    "churn risk",
    "demo",
    "contract",
    "security review",
]
FILLER = [
    "meeting",
    "notes",
    "follow",
    "up",
    "email",
    "call",
    "update",
    "weekly",
    "status",
    "report",
    "customer",
    "team",
    "account",
    "plan",
]


def corpus(seed: int) -> list[dict[str, Any]]:
    """220 entries of plausible noise, plus the one the test looks for."""
    rng = random.Random(seed)
    entries = []
    for i in range(220):
        words = [*rng.sample(FILLER, 6), rng.choice(TOPICS)]
        entries.append({"content": f"Note {i}: " + " ".join(words), "importance": round(rng.random(), 2)})
    entries.append(
        {
            "content": "Initech requires a SOC2 security review before signing the enterprise contract",
            "tags": ["initech"],
        }
    )
    return entries


async def test_retrieval_ranks_the_relevant_entry_above_noise_and_explains_why(api: Api) -> None:
    payload = "\n".join(json.dumps(e) for e in corpus(7)).encode()
    resp = await api.client.post(
        "/api/v1/memory/long-term/import",
        content=payload,
        headers={**api.headers, "content-type": "application/x-ndjson"},
    )
    assert resp.json()["imported"] == 221
    await api.until("/long-term?limit=500", lambda b: len(b["items"]) == 221)
    await api.call("PUT", "/working/execution/ex_9/next_step", {"value": "send Initech the SOC2 report"}, 200)
    await api.call(
        "POST", "/short-term", {"scope": {"kind": "execution", "id": "ex_9"}, "content": "unrelated chatter"}, 201
    )
    await api.until("/working/execution/ex_9", lambda b: len(b["items"]) == 1)

    results = (
        await api.call(
            "POST", "/retrieve", {"query": "Initech SOC2 security review", "agent_id": "agt_1", "limit": 5}, 200
        )
    )["items"]
    assert results[0]["content"].startswith("Initech requires a SOC2")
    assert results[0]["tier"] == "long_term"
    assert set(results[0]["why"]["matched_terms"]) == {"initech", "soc2", "security", "review"}
    assert results[0]["score"] > results[1]["score"]

    scoped = (await api.call("POST", "/retrieve", {"query": "Initech SOC2", "execution_id": "ex_9", "limit": 3}, 200))[
        "items"
    ]
    assert {r["tier"] for r in scoped} == {"long_term", "working"}, (
        "scoped working memory joins, chatter does not match"
    )
    only_working = (
        await api.call("POST", "/retrieve", {"query": "SOC2", "execution_id": "ex_9", "tiers": ["working"]}, 200)
    )["items"]
    assert [r["key"] for r in only_working] == ["next_step"]


async def test_retrieval_never_crosses_workspaces(api: Api, platform: Platform) -> None:
    await api.call("POST", "/long-term", {"content": "Umbrella Corp budget is 2M"}, 201)
    await api.until("/long-term", lambda b: len(b["items"]) == 1)
    other = Api(platform, await platform.new_workspace("Other"))
    assert (await other.call("POST", "/retrieve", {"query": "Umbrella budget"}, 200))["items"] == []
    mine = (await api.call("POST", "/retrieve", {"query": "Umbrella budget"}, 200))["items"]
    assert [r["content"] for r in mine] == ["Umbrella Corp budget is 2M"]
    entry_id = mine[0]["entry_id"]
    assert (await other.call("GET", f"/long-term/{entry_id}", expect=404))["code"] == "memory_not_found"
    assert (await other.call("DELETE", f"/long-term/{entry_id}", expect=404))["code"] == "memory_not_found"
