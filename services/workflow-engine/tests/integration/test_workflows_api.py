"""Workflows through the gateway, run by the engine with a deterministic agent worker on the real TASKS stream."""

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from conftest import Api, Infra, Platform, running_platform
from contracts import Actor
from contracts.workflows import AgentTask, ExecuteWorkflow, Origin, StepScheduled, WorkflowSpec
from servicekit.commands import envelope_for, publish_command
from servicekit.eventstore import EventStore, Metadata, StreamRef
from servicekit.testing import eventually
from workflow_engine.domain import execution
from workflow_engine.main import build_app as build_engine
from workflow_engine.settings import WorkflowEngineSettings

Script = dict[str, Any]
META = Metadata(correlation_id="c", actor=Actor(kind="system", id="test"))
ACTOR = Actor(kind="service", id="orchestrator")


def scripted(script: Script) -> Any:
    """A worker behaviour: per step id, a list of (ok, output) answers by attempt, or a single output."""

    async def behave(task: AgentTask) -> tuple[bool, Any]:
        answer = script.get(task.step_id, {"done": task.step_id})
        if isinstance(answer, list):
            ok, output = answer[min(task.attempt, len(answer)) - 1]
            return ok, output
        return True, answer

    return behave


@pytest.fixture
def script() -> Script:
    return {}


LOCAL_HOOKS = {"webhook_allowed_hosts": ["127.0.0.1"]}  # the tests' webhook servers listen on loopback


@pytest.fixture
async def platform(infra: Infra, env_name: str, script: Script) -> AsyncIterator[Platform]:
    async with running_platform(infra, env_name, behaviour=scripted(script), engine_settings=LOCAL_HOOKS) as running:
        yield running


@pytest.fixture
async def api(platform: Platform) -> Api:
    return Api(platform, await platform.new_workspace())


def agent(step_id: str, next_step: str | None = None, **extra: Any) -> dict[str, Any]:
    return {"id": step_id, "kind": "agent", "role": "analyst", "next": next_step, **extra}


def steps_by_id(execution: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["id"]: s for s in execution["steps"]}


async def test_a_three_step_workflow_runs_to_completion_with_mapped_data(api: Api, script: Script) -> None:
    script["a"] = {"score": 90}
    workflow_id = await api.workflow(
        {
            "name": "Chain",
            "start": "a",
            "steps": [
                agent("a", "b", input={"lead": "$input.lead"}),
                agent("b", "c", input={"score": "$steps.a.output.score"}),
                agent("c"),
            ],
        }
    )
    execution_id = await api.execute(workflow_id, {"lead": "ada@example.com"})
    done = await api.wait_for(execution_id, "completed")
    steps = steps_by_id(done)
    assert [steps[s]["status"] for s in "abc"] == ["succeeded"] * 3
    assert steps["a"]["input"] == {"lead": "ada@example.com"}
    assert steps["b"]["input"] == {"score": 90}
    assert steps["a"]["attempts"][0]["finished_at"] is not None
    assert done["output"]["a"] == {"score": 90}

    async def listed() -> list[str] | None:  # the list is a read model: it follows shortly after
        found = await api.get(f"/api/v1/workflows/executions?workflow_id={workflow_id}&status=completed")
        return [e["execution_id"] for e in found["items"]] or None

    assert await eventually(listed) == [execution_id]


async def test_invalid_definitions_answer_422_naming_the_step(api: Api) -> None:
    bad = {"name": "Bad", "start": "a", "steps": [agent("a", "ghost"), agent("lonely")]}
    resp = await api.client.post("/api/v1/workflows", json={"spec": bad}, headers=api.headers)
    assert resp.status_code == 422
    body = resp.json()
    assert body["code"] == "invalid_workflow"
    assert {"step": "a", "message": "refers to unknown step 'ghost'"} in body["errors"]
    shape = await api.client.post("/api/v1/workflows", json={"spec": {"name": "x"}}, headers=api.headers)
    assert (shape.status_code, shape.json()["code"]) == (422, "validation_failed")
    neither = await api.client.post("/api/v1/workflows", json={}, headers=api.headers)
    assert (neither.status_code, neither.json()["code"]) == (422, "validation_failed")


async def test_a_pattern_re2_cannot_take_is_refused_on_save_and_a_catastrophic_one_runs(api: Api) -> None:
    def routing(pattern: str) -> dict[str, Any]:
        when = {"field": "$input.s", "op": "matches", "value": pattern}
        return {
            "name": "Route",
            "start": "route",
            "steps": [
                {"id": "route", "kind": "condition", "branches": [{"when": when, "next": "hit"}], "default": "miss"},
                agent("hit"),
                agent("miss"),
            ],
        }

    resp = await api.client.post("/api/v1/workflows", json={"spec": routing(r"(\w)\1")}, headers=api.headers)
    assert (resp.status_code, resp.json()["code"]) == (422, "invalid_workflow")
    assert [(e["step"], "no backreferences or lookaround" in e["message"]) for e in resp.json()["errors"]] == [
        ("route", True)
    ]
    # Over a minute of backtracking for Python's re (9 s at 27 characters, doubling with each): RE2 answers at once.
    workflow_id = await api.workflow(routing("(a+)+$"))
    done = await api.wait_for(await api.execute(workflow_id, {"s": "a" * 30 + "!"}), "completed")
    assert steps_by_id(done)["route"]["output"] == {"next": "miss"}
    assert steps_by_id(done)["miss"]["status"] == "succeeded"


async def test_retry_succeeds_on_the_second_attempt(api: Api, script: Script) -> None:
    script["a"] = [(False, "flaky upstream"), (True, {"ok": True})]
    workflow_id = await api.workflow(
        {"name": "Flaky", "start": "a", "steps": [agent("a", retry={"max_attempts": 3, "backoff_s": 0.2})]}
    )
    done = await api.wait_for(await api.execute(workflow_id), "completed")
    step = steps_by_id(done)["a"]
    assert [a["status"] for a in step["attempts"]] == ["failed", "succeeded"]
    assert step["attempts"][0]["error"] == "flaky upstream"


async def test_exhausted_retries_fail_the_execution_then_retry_from_the_failed_step(api: Api, script: Script) -> None:
    script["b"] = [(False, "no"), (False, "still no"), (True, {"finally": True})]
    workflow_id = await api.workflow(
        {
            "name": "Doomed",
            "start": "a",
            "steps": [agent("a", "b"), agent("b", retry={"max_attempts": 2, "backoff_s": 0})],
        }
    )
    execution_id = await api.execute(workflow_id)
    failed = await api.wait_for(execution_id, "failed")
    assert (failed["failed_step"], failed["error"]) == ("b", "still no")
    assert steps_by_id(failed)["b"]["error"] == "still no"
    await api.post(f"/api/v1/workflows/executions/{execution_id}/retry", expect=200)
    done = await api.wait_for(execution_id, "completed")
    assert steps_by_id(done)["b"]["attempt"] == 3
    assert steps_by_id(done)["a"]["attempt"] == 1, "steps that had succeeded are not run again"


async def test_pause_resume_cancel_and_illegal_transitions(api: Api, platform: Platform, script: Script) -> None:
    workflow_id = await api.workflow(
        {"name": "Gated", "start": "gate", "steps": [{"id": "gate", "kind": "approval", "next": "a"}, agent("a")]}
    )
    execution_id = await api.execute(workflow_id)
    base = f"/api/v1/workflows/executions/{execution_id}"
    await api.wait_step(execution_id, "gate", "waiting")
    resume_running = await api.client.post(f"{base}/resume", headers=api.headers)
    assert (resume_running.status_code, resume_running.json()["code"]) == (409, "invalid_transition")
    await api.post(f"{base}/pause", expect=200)
    assert (await api.execution(execution_id))["status"] == "paused"
    again = await api.client.post(f"{base}/pause", headers=api.headers)
    assert (again.status_code, again.json()["code"]) == (409, "invalid_transition")
    await api.post(f"{base}/approvals/gate", {"approved": True}, expect=200)
    paused = await api.execution(execution_id)
    assert steps_by_id(paused)["a"]["status"] == "pending", "nothing new starts while paused"
    await api.post(f"{base}/resume", expect=200)
    await api.wait_for(execution_id, "completed")
    for action in ("pause", "resume", "cancel"):
        late = await api.client.post(f"{base}/{action}", headers=api.headers)
        assert (late.status_code, late.json()["code"]) == (409, "invalid_transition")

    second = await api.execute(workflow_id)
    await api.wait_step(second, "gate", "waiting")
    await api.post(f"/api/v1/workflows/executions/{second}/cancel", {"reason": "no longer needed"}, expect=200)
    cancelled = await api.execution(second)
    assert (cancelled["status"], steps_by_id(cancelled)["gate"]["status"]) == ("cancelled", "cancelled")
    retry = await api.client.post(f"/api/v1/workflows/executions/{second}/retry", headers=api.headers)
    assert retry.status_code == 409


async def test_approval_reject_path(api: Api) -> None:
    workflow_id = await api.workflow(
        {
            "name": "Approve",
            "start": "gate",
            "steps": [{"id": "gate", "kind": "approval", "next": "yes", "on_reject": "no"}, agent("yes"), agent("no")],
        }
    )
    execution_id = await api.execute(workflow_id)
    await api.wait_step(execution_id, "gate", "waiting")
    not_waiting = await api.client.post(
        f"/api/v1/workflows/executions/{execution_id}/approvals/yes", json={"approved": True}, headers=api.headers
    )
    assert not_waiting.status_code == 409
    await api.post(
        f"/api/v1/workflows/executions/{execution_id}/approvals/gate", {"approved": False, "comment": "too pricey"}, 200
    )
    done = await api.wait_for(execution_id, "completed")
    steps = steps_by_id(done)
    assert (steps["yes"]["status"], steps["no"]["status"]) == ("pending", "succeeded")
    assert steps["gate"]["output"] == {"approved": False, "comment": "too pricey"}


async def test_parallel_delay_and_condition_steps(api: Api, script: Script) -> None:
    script["score"] = {"value": 3}
    workflow_id = await api.workflow(
        {
            "name": "Shapes",
            "start": "fan",
            "steps": [
                {"id": "fan", "kind": "parallel", "branches": ["score", "wait"], "join": "meet"},
                agent("score", "meet"),
                {"id": "wait", "kind": "delay", "seconds": 0.5, "next": "meet"},
                {"id": "meet", "kind": "join", "next": "route"},
                {
                    "id": "route",
                    "kind": "condition",
                    "branches": [
                        {"when": {"field": "$steps.score.output.value", "op": "gt", "value": 5}, "next": "high"},
                        {"when": {"field": "$steps.score.output.value", "op": "lte", "value": 5}, "next": "low"},
                    ],
                },
                agent("high"),
                agent("low"),
            ],
        }
    )
    done = await api.wait_for(await api.execute(workflow_id), "completed")
    steps = steps_by_id(done)
    assert steps["route"]["output"] == {"next": "low"}
    assert (steps["high"]["status"], steps["low"]["status"]) == ("pending", "succeeded")
    assert steps["wait"]["status"] == steps["meet"]["status"] == "succeeded"


async def _http_server(status: int, body: dict[str, Any]) -> tuple[asyncio.Server, str, list[bytes]]:
    seen: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(
            (int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")), 0
        )
        seen.append(await reader.readexactly(length))
        payload = json.dumps(body).encode()
        writer.write(
            f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
            "Connection: close\r\n\r\n".encode()
            + payload
        )
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}/hook", seen


async def test_webhook_step_calls_out_and_retries_on_failure(api: Api) -> None:
    server, url, seen = await _http_server(200, {"accepted": True})
    async with server:
        workflow_id = await api.workflow(
            {
                "name": "Hook",
                "start": "call",
                "steps": [
                    {"id": "call", "kind": "webhook", "url": url, "body": {"lead": "$input.lead"}, "timeout_s": 5}
                ],
            }
        )
        done = await api.wait_for(await api.execute(workflow_id, {"lead": "x"}), "completed")
    assert steps_by_id(done)["call"]["output"] == {"status": 200, "body": {"accepted": True}}
    assert [json.loads(b) for b in seen] == [{"lead": "x"}], "one call for one attempt"

    failing, bad_url, calls = await _http_server(503, {"error": "down"})
    async with failing:
        workflow_id = await api.workflow(
            {
                "name": "Hook down",
                "start": "call",
                "steps": [
                    {"id": "call", "kind": "webhook", "url": bad_url, "retry": {"max_attempts": 2, "backoff_s": 0.1}}
                ],
            }
        )
        failed = await api.wait_for(await api.execute(workflow_id), "failed")
    assert steps_by_id(failed)["call"]["error"] == "webhook answered 503"
    assert len(calls) == 2


async def test_webhooks_reach_no_internal_address_unless_the_deployment_allows_it(infra: Infra, env_name: str) -> None:
    """A literal internal host is refused on save; a name is checked on the address it resolves to when called
    (``127.1`` is 127.0.0.1), and the step fails with ``forbidden_address`` without reaching the server."""
    server, url, seen = await _http_server(200, {"internal": "secret"})
    port = server.sockets[0].getsockname()[1]

    def hook(target: str) -> dict[str, Any]:
        return {"name": "Hook", "start": "call", "steps": [{"id": "call", "kind": "webhook", "url": target}]}

    async with server, running_platform(infra, env_name) as platform:
        api = Api(platform, await platform.new_workspace())
        for literal in (url, f"http://localhost:{port}/openapi.json", f"http://[::ffff:127.0.0.1]:{port}/x"):
            resp = await api.client.post("/api/v1/workflows", json={"spec": hook(literal)}, headers=api.headers)
            assert (resp.status_code, resp.json()["code"]) == (422, "invalid_workflow"), literal
            assert [e["step"] for e in resp.json()["errors"]] == ["call"]
        metadata = await api.client.post(
            "/api/v1/workflows", json={"spec": hook("http://169.254.169.254/latest/meta-data/")}, headers=api.headers
        )
        assert "cloud metadata" in metadata.json()["errors"][0]["message"]

        workflow_id = await api.workflow(hook(f"http://127.1:{port}/hook"))
        failed = await api.wait_for(await api.execute(workflow_id), "failed")
    call = steps_by_id(failed)["call"]
    assert call["error_kind"] == "forbidden_address"
    assert "127.1 resolves to 127.0.0.1, a loopback address" in call["error"]
    assert seen == [], "the internal server was never called"


async def test_step_timeout_is_recorded(platform: Platform, api: Api, script: Script) -> None:
    workflow_id = await api.workflow(
        {"name": "Slow", "start": "a", "steps": [agent("a", agent_id="nobody-listens", timeout_s=0.5)]}
    )
    assert platform.worker is not None
    script["a"] = [(True, "never used")]

    async def ignore(task: AgentTask) -> tuple[bool, Any]:
        await asyncio.sleep(3600)
        return True, None

    platform.worker.behaviour = ignore
    failed = await api.wait_for(await api.execute(workflow_id), "failed")
    assert steps_by_id(failed)["a"]["error_kind"] == "timeout"


async def test_templates_are_listed_and_each_runs_to_completion(api: Api, script: Script) -> None:
    script.update(
        qualify={"score": 85},
        blog={"quality": 0.9},
        triage={"priority": "urgent", "sentiment": "calm"},
    )
    templates = (await api.get("/api/v1/workflow-templates"))["items"]
    assert {t["slug"] for t in templates} == {"lead-to-customer", "content-campaign", "support-ticket"}
    assert all(any(s["kind"] == "condition" for s in t["steps"]) for t in templates)

    inputs: dict[str, dict[str, Any]] = {
        "lead-to-customer": {"lead": {"email": "buyer@example.com"}},
        "content-campaign": {"topic": "launch", "audience": "developers"},
        "support-ticket": {"ticket": {"subject": "Down!"}},
    }
    for slug, data in inputs.items():
        created = await api.post("/api/v1/workflows", {"template": slug, "name": f"Our {slug}"}, expect=201)
        workflow_id = created["resource_ids"]["workflow_id"]
        definition = await api.get(f"/api/v1/workflows/{workflow_id}")
        assert (definition["template"], definition["spec"]["name"]) == (slug, f"Our {slug}")
        execution_id = await api.execute(workflow_id, data)
        if slug == "lead-to-customer":
            await api.wait_step(execution_id, "approve", "waiting")
            await api.post(f"/api/v1/workflows/executions/{execution_id}/approvals/approve", {"approved": True}, 200)
        done = await api.wait_for(execution_id, "completed")
        taken = {s["id"] for s in done["steps"] if s["status"] == "succeeded"}
        expected = {
            "lead-to-customer": {"qualify", "route", "proposal", "approve", "onboard"},
            "content-campaign": {"brief", "fan_out", "blog", "social", "drafts", "quality", "publish"},
            "support-ticket": {"triage", "route", "escalate", "close"},
        }[slug]
        assert taken == expected
    missing = await api.client.post("/api/v1/workflows", json={"template": "nope"}, headers=api.headers)
    assert (missing.status_code, missing.json()["code"]) == (404, "template_not_found")


async def test_update_makes_a_new_version_and_running_executions_keep_theirs(api: Api) -> None:
    spec = {"name": "V1", "start": "gate", "steps": [{"id": "gate", "kind": "approval", "next": "a"}, agent("a")]}
    workflow_id = await api.workflow(spec)
    running = await api.execute(workflow_id)
    await api.wait_step(running, "gate", "waiting")
    v2 = {"name": "V2", "start": "only", "steps": [agent("only")]}
    resp = await api.client.put(f"/api/v1/workflows/{workflow_id}", json=v2, headers=api.headers)
    assert resp.status_code == 200, resp.text
    assert (await api.get(f"/api/v1/workflows/{workflow_id}"))["version"] == 2
    assert (await api.get(f"/api/v1/workflows/{workflow_id}?version=1"))["spec"]["name"] == "V1"
    await api.post(f"/api/v1/workflows/executions/{running}/approvals/gate", {"approved": True}, 200)
    old = await api.wait_for(running, "completed")
    assert (old["workflow_version"], [s["id"] for s in old["steps"]]) == (1, ["gate", "a"])
    new = await api.wait_for(await api.execute(workflow_id), "completed")
    assert new["workflow_version"] == 2
    await api.post(f"/api/v1/workflows/{workflow_id}/archive", expect=200)
    archived = await api.client.post(f"/api/v1/workflows/{workflow_id}/executions", json={}, headers=api.headers)
    assert (archived.status_code, archived.json()["code"]) == (409, "workflow_archived")
    listed = await api.get("/api/v1/workflows")
    assert workflow_id not in [w["workflow_id"] for w in listed["items"]]


async def test_executions_of_another_workspace_answer_404(api: Api, platform: Platform) -> None:
    workflow_id = await api.workflow({"name": "Mine", "start": "a", "steps": [agent("a")]})
    execution_id = await api.execute(workflow_id)
    other = Api(platform, await platform.new_workspace("Other"))
    await other.get(f"/api/v1/workflows/executions/{execution_id}", expect=404)
    await other.get(f"/api/v1/workflows/{workflow_id}", expect=404)
    resp = await other.client.post(f"/api/v1/workflows/executions/{execution_id}/pause", headers=other.headers)
    assert (resp.status_code, resp.json()["code"]) == (404, "execution_not_found")
    sse = await other.client.get(f"/api/v1/workflows/executions/{execution_id}/events", headers=other.headers)
    assert sse.status_code == 404


async def _sse(api: Api, execution_id: str, last_event_id: str | None = None) -> list[dict[str, Any]]:
    headers = {**api.headers, **({"Last-Event-ID": last_event_id} if last_event_id else {})}
    events: list[dict[str, Any]] = []
    async with api.client.stream(
        "GET", f"/api/v1/workflows/executions/{execution_id}/events", headers=headers, timeout=20
    ) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        current: dict[str, Any] = {}
        async for line in resp.aiter_lines():
            if line.startswith("id: "):
                current["id"] = int(line[4:])
            elif line.startswith("event: "):
                current["event"] = line[7:]
            elif line.startswith("data: "):
                current["data"] = json.loads(line[6:])
            elif line == "" and current:
                events.append(current)
                current = {}
    return events


async def test_sse_streams_the_public_events_of_a_run_in_order_and_resumes(api: Api) -> None:
    workflow_id = await api.workflow(
        {
            "name": "Watched",
            "start": "gate",
            "steps": [
                {"id": "gate", "kind": "approval", "next": "fan"},
                {"id": "fan", "kind": "parallel", "branches": ["a", "b"], "join": "meet"},
                agent("a", "meet"),
                agent("b", "meet"),
                {"id": "meet", "kind": "join"},
            ],
        }
    )
    execution_id = await api.execute(workflow_id)
    await api.wait_step(execution_id, "gate", "waiting")

    live = asyncio.create_task(_sse(api, execution_id))
    await asyncio.sleep(0.3)
    await api.post(f"/api/v1/workflows/executions/{execution_id}/approvals/gate", {"approved": True}, 200)
    events = await asyncio.wait_for(live, 20)

    final = await api.execution(execution_id)
    ids = [e["id"] for e in events]
    assert ids == sorted(set(ids)), "in order, once"
    assert len(ids) == final["version"] - 2, "every event but the two branches' arrivals at the join (internal)"
    assert {e["event"] for e in events} == {
        "execution.started",
        "step.started",
        "approval.decided",
        "step.succeeded",
        "execution.completed",
    }
    assert events[0]["data"] == {
        "version": 1,
        "type": "execution.started",
        "data": {"workflow_id": workflow_id, "workflow_version": 1, "input": {}, "at": final["started_at"]},
    }, "the public start, without the engine's copy of the definition"
    assert events[-1]["event"] == "execution.completed"
    succeeded = [e["data"]["data"]["step_id"] for e in events if e["event"] == "step.succeeded"]
    assert succeeded[:2] == ["gate", "fan"]
    assert sorted(succeeded[2:]) == ["a", "b", "meet"]

    resumed = await _sse(api, execution_id, last_event_id=str(events[2]["id"]))
    assert [e["id"] for e in resumed] == [e["id"] for e in events[3:]]
    assert await _sse(api, execution_id, last_event_id=str(events[-1]["id"])) == [], "resuming after the end ends"
    bad = await api.client.get(
        f"/api/v1/workflows/executions/{execution_id}/events", headers={**api.headers, "Last-Event-ID": "abc"}
    )
    assert bad.status_code == 422


async def test_unknown_execution_and_bad_input(api: Api) -> None:
    await api.get("/api/v1/workflows/executions/ex_missing", expect=404)
    resp = await api.client.post(
        "/api/v1/workflows/wf_x/executions",
        content=b'{"input": [1]}',
        headers={**api.headers, "content-type": "application/json"},
    )
    assert (resp.status_code, resp.json()["code"]) == (422, "validation_failed")
    missing = await api.client.post("/api/v1/workflows/wf_missing/executions", json={}, headers=api.headers)
    assert (missing.status_code, missing.json()["code"]) == (404, "workflow_not_found")


async def test_two_engine_replicas_share_the_work_without_doing_it_twice(
    infra: Infra, env_name: str, api: Api, platform: Platform
) -> None:
    replica = build_engine(
        WorkflowEngineSettings(
            platform_env=env_name, nats_url=infra.nats_url, mongodb_url=infra.mongodb_url, timer_poll_s=0.1
        )
    )
    async with replica.router.lifespan_context(replica):
        workflow_id = await api.workflow(
            {"name": "Shared", "start": "a", "steps": [agent("a", "b"), agent("b", "c"), agent("c")]}
        )
        execution_ids = [await api.execute(workflow_id) for _ in range(10)]
        for execution_id in execution_ids:
            done = await api.wait_for(execution_id, "completed", timeout_s=30)
            assert [s["attempt"] for s in done["steps"]] == [1, 1, 1]
    assert platform.worker is not None
    assert len(platform.worker.received) == len(set(platform.worker.received)) == 30


async def test_a_slow_execution_does_not_block_the_others(api: Api) -> None:
    release = asyncio.Event()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        await release.wait()
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/slow"
    async with server:
        slow_wf = await api.workflow(
            {"name": "Slow", "start": "call", "steps": [{"id": "call", "kind": "webhook", "url": url, "timeout_s": 30}]}
        )
        slow = await api.execute(slow_wf)
        fast_wf = await api.workflow({"name": "Fast", "start": "a", "steps": [agent("a", "b"), agent("b")]})
        fast = [await api.execute(fast_wf) for _ in range(5)]
        for execution_id in fast:
            await api.wait_for(execution_id, "completed")
        assert (await api.execution(slow))["status"] == "running"
        release.set()
        await api.wait_for(slow, "completed")


async def test_a_step_commit_acted_on_again_never_sends_its_task_again(
    api: Api, platform: Platform, env_name: str, mongo: Any
) -> None:
    """As after a crash of the engine that sent a task, long after the broker's de-duplication window: another
    relay takes over the dead writer's commits and runs the executor on them again; the attempt's claim stops a
    second send."""
    assert platform.worker is not None
    sent: list[str] = []

    async def count(msg: Any) -> None:  # a core subscriber sees every publish, even one the stream de-duplicates
        sent.append(AgentTask.model_validate_json(msg.data).key)

    sub = await platform.worker.runtime.bus.nc.subscribe(f"{env_name}.task.>", cb=count)

    async def stall(task: AgentTask) -> tuple[bool, Any]:
        await asyncio.sleep(3600)
        return True, None

    platform.worker.behaviour = stall
    workflow_id = await api.workflow({"name": "Once", "start": "a", "steps": [agent("a")]})
    execution_id = await api.execute(workflow_id)
    await eventually(lambda: _true(len(sent) == 1))

    db = mongo[f"{env_name}_workflow_engine"]
    stream_id = StreamRef(api.workspace_id, "execution", execution_id).stream_id
    scheduled = {"stream_id": stream_id, "events.type": "StepScheduled"}
    long_ago = datetime.now(UTC) - timedelta(hours=1)
    # The commit becomes the work of a writer that died an hour ago, right after writing it.
    await db["commits"].update_one(scheduled, {"$set": {"writer": "dead-writer", "recorded_at": long_ago}})
    await db["relay_writers"].insert_one({"_id": "dead-writer", "done_before": long_ago, "alive_at": long_ago})
    await eventually(lambda: _gone(db["relay_writers"], "dead-writer"))  # taken over: acted on again
    await asyncio.sleep(0.5)
    await sub.unsubscribe()
    assert sent == [f"{execution_id}:a:1"]


async def _true(value: bool) -> bool | None:
    return value or None


async def _gone(collection: Any, doc_id: str) -> bool:
    return await collection.find_one({"_id": doc_id}) is None


async def test_a_commit_the_engine_can_never_act_on_fails_its_execution_visibly(
    api: Api, env_name: str, mongo: Any
) -> None:
    """The executor fails on a commit whatever it does (here a delay whose wake-up time cannot be read): after a
    few tries the relay gives up on it, and the executor fails the attempt and the execution, rather than leaving
    the commit parked and the execution running for ever."""
    spec = WorkflowSpec.model_validate(
        {"name": "Broken", "start": "wait", "steps": [{"id": "wait", "kind": "delay", "seconds": 60}]}
    )
    started, scheduled = execution.start(
        ExecuteWorkflow(workflow_id="wf", execution_id="ex_broken"), spec, 1, datetime.now(UTC)
    )
    assert isinstance(scheduled, StepScheduled)
    unreadable = scheduled.model_copy(update={"wake_at": "when the cows come home"})
    # Written by an engine that died at once: the running engine takes its work over and acts on it.
    db = mongo[f"{env_name}_workflow_engine"]
    long_ago = datetime.now(UTC) - timedelta(hours=1)
    await db["relay_writers"].insert_one({"_id": "dead-writer", "done_before": long_ago, "alive_at": long_ago})
    dead = EventStore(db, writer="dead-writer")
    await dead.append(StreamRef(api.workspace_id, "execution", "ex_broken"), 0, [started, unreadable], META)

    failed = await api.wait_for("ex_broken", "failed")
    step = steps_by_id(failed)["wait"]
    assert (step["status"], step["error_kind"]) == ("failed", "unactionable")
    assert failed["error"].startswith("the engine could not carry out this attempt")


async def test_an_inline_plan_runs_unsaved_and_its_tasks_carry_their_origin(api: Api, platform: Platform) -> None:
    """Another service (the orchestrator's team runs, delegations) runs a definition of its own, checked like a
    saved one, and every task says what it runs for."""
    seen: list[AgentTask] = []
    assert platform.worker is not None
    behave = platform.worker.behaviour

    async def record(task: AgentTask) -> tuple[bool, Any]:
        seen.append(task)
        return await behave(task)

    platform.worker.behaviour = record
    workspace_id = api.workspace_id
    spec = {"name": "Plan", "start": "a", "steps": [agent("a", "b"), agent("b", input={"x": "$steps.a.output.done"})]}
    origin = Origin(kind="team_run", id="run1", team_id="team1", objective="Handle the leads")
    bus = platform.worker.runtime.bus
    command = ExecuteWorkflow(
        workflow_id="team-run", execution_id="ex-inline", spec=WorkflowSpec.model_validate(spec), origin=origin
    )
    await publish_command(
        bus, "workflow-engine", envelope_for(command, workspace_id=workspace_id, command_id="run-inline", actor=ACTOR)
    )

    async def completed() -> dict[str, Any] | None:  # not in the read model at first: the command is asynchronous
        resp = await api.client.get("/api/v1/workflows/executions/ex-inline", headers=api.headers)
        found: dict[str, Any] | None = resp.json() if resp.status_code == 200 else None
        return found if found is not None and found["status"] == "completed" else None

    done = await eventually(completed)
    assert steps_by_id(done)["b"]["input"] == {"x": "a"}
    assert [task.step_id for task in seen] == ["a", "b"]
    assert {task.origin for task in seen} == {origin}
    assert (await api.get("/api/v1/workflows/team-run", expect=404))["code"] == "workflow_not_found"  # not saved

    broken = {**spec, "start": "nowhere"}
    bad = ExecuteWorkflow(
        workflow_id="team-run", execution_id="ex-broken", spec=WorkflowSpec.model_validate(broken), origin=origin
    )
    envelope = envelope_for(bad, workspace_id=workspace_id, command_id="run-broken", actor=ACTOR)
    await publish_command(bus, "workflow-engine", envelope)

    async def outcome() -> dict[str, Any] | None:
        resp = await api.client.get("/api/v1/commands/run-broken", headers=api.headers)
        if resp.status_code == 404:  # sent past the gateway: known once its outcome is published
            return None
        assert resp.status_code == 200, resp.text
        status: dict[str, Any] = resp.json()
        return status if status["status"] != "pending" else None

    status = await eventually(outcome)
    assert (status["status"], status["error_code"]) == ("rejected", "invalid_workflow")
    assert (await api.get("/api/v1/workflows/executions/ex-broken", expect=404))["code"] == "execution_not_found"
