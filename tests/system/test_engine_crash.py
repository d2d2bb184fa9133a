"""kill -9 the workflow engine (a real process) mid-run: timers still fire once, runs finish, no task twice."""

import asyncio
import collections
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pymongo import AsyncMongoClient

from conftest import Infra, Platform, running_platform
from contracts.workflows import AgentTask, StepSucceeded
from servicekit.eventstore import EventStore, StreamRef, decode
from servicekit.testing import eventually
from tests.support.processes import ServiceProcess

pytestmark = pytest.mark.system
Document = dict[str, Any]


@pytest.fixture
def engine(service_env: dict[str, str], tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[ServiceProcess]:
    # "carried": timers due a second or more ahead ride in their commit (carried timers); by default only those 30 s
    # ahead do.
    carried = {"TIMER_CARRY_AFTER_S": "1"} if getattr(request, "param", None) == "carried" else {}
    fast = {"TIMER_POLL_S": "0.1", "RELAY_POLL_INTERVAL_S": "0.2"}
    process = ServiceProcess("workflow_engine", {**service_env, **fast, **carried}, tmp_path / "engine.log")
    process.start()
    yield process
    process.stop()


async def slow_agent(task: AgentTask) -> tuple[bool, Any]:
    await asyncio.sleep(0.2)
    return True, {"step": task.step_id}


@pytest.fixture
async def platform(infra: Infra, env_name: str, engine: ServiceProcess) -> AsyncIterator[Platform]:
    async with running_platform(infra, env_name, engine=False, behaviour=slow_agent) as running:
        yield running


async def _execution(client: httpx.AsyncClient, headers: dict[str, str], execution_id: str) -> dict[str, Any]:
    resp = await client.get(f"/api/v1/workflows/executions/{execution_id}", headers=headers)
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    return body


async def _start(platform: Platform, headers: dict[str, str], spec: dict[str, Any], runs: int = 1) -> list[str]:
    created = await platform.client.post("/api/v1/workflows", json={"spec": spec}, headers=headers)
    assert created.status_code == 201, created.text
    workflow_id = created.json()["resource_ids"]["workflow_id"]
    ids = []
    for _ in range(runs):
        started = await platform.client.post(f"/api/v1/workflows/{workflow_id}/executions", json={}, headers=headers)
        assert started.status_code == 201, started.text
        ids.append(started.json()["resource_ids"]["execution_id"])
    return ids


async def _until(
    platform: Platform, headers: dict[str, str], execution_id: str, check: Any, timeout_s: float = 30
) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        try:
            found = await _execution(platform.client, headers, execution_id)
        except AssertionError:
            return None  # the engine is down or restarting
        return found if check(found) else None

    return await eventually(probe, timeout_s, every_s=0.1)


def _step(execution: dict[str, Any], step_id: str) -> dict[str, Any]:
    return next(s for s in execution["steps"] if s["id"] == step_id)


async def _succeeded_steps(mongo: AsyncMongoClient[Document], env_name: str, ws: str, execution_id: str) -> list[str]:
    store = EventStore(mongo[f"{env_name}_workflow_engine"])
    records = await store.load(StreamRef(ws, "execution", execution_id))
    return [e.step_id for e in map(decode, records) if isinstance(e, StepSucceeded)]


@pytest.mark.parametrize("engine", ["document", "carried"], indirect=True)
async def test_a_pending_timer_fires_once_after_kill_9(
    platform: Platform, engine: ServiceProcess, mongo: AsyncMongoClient[Document], env_name: str, request: Any
) -> None:
    ws = await platform.new_workspace()
    headers = platform.auth(ws)
    spec = {
        "name": "Wait then work",
        "start": "wait",
        "steps": [
            {"id": "wait", "kind": "delay", "seconds": 2, "next": "a"},
            {"id": "a", "kind": "agent", "role": "r"},
        ],
    }
    [execution_id] = await _start(platform, headers, spec)
    await _until(platform, headers, execution_id, lambda e: _step(e, "wait")["status"] == "waiting")
    await asyncio.sleep(0.5)  # let the executor write the durable timer (a document, unless the commit carries it)
    db = mongo[f"{env_name}_workflow_engine"]
    documents = await db["timers"].count_documents({"execution_id": execution_id})
    in_commits = await db["commits"].count_documents(
        {"aggregate_id": execution_id, "carried.next_timer_at": {"$type": "date"}}
    )
    carried = request.node.callspec.params["engine"] == "carried"
    assert (documents, in_commits) == ((0, 1) if carried else (1, 0))
    engine.kill()
    await asyncio.sleep(2.5)  # the timer comes due while the engine is dead
    engine.start()
    done = await _until(platform, headers, execution_id, lambda e: e["status"] == "completed")
    assert _step(done, "a")["status"] == "succeeded"
    succeeded = await _succeeded_steps(mongo, env_name, ws["workspace_id"], execution_id)
    assert succeeded.count("wait") == 1, "the timer fired exactly once"


async def test_kill_9_mid_run_every_execution_completes_and_no_task_runs_twice(
    platform: Platform, engine: ServiceProcess, mongo: AsyncMongoClient[Document], env_name: str
) -> None:
    ws = await platform.new_workspace()
    headers = platform.auth(ws)
    steps = [f"s{i}" for i in range(5)]
    spec = {
        "name": "Long chain",
        "start": steps[0],
        "steps": [
            {"id": s, "kind": "agent", "role": "r", "next": steps[i + 1] if i + 1 < len(steps) else None}
            for i, s in enumerate(steps)
        ],
    }
    execution_ids = await _start(platform, headers, spec, runs=4)
    await _until(platform, headers, execution_ids[0], lambda e: _step(e, "s1")["status"] != "pending")
    engine.kill()
    await asyncio.sleep(0.5)
    engine.start()
    for execution_id in execution_ids:
        done = await _until(platform, headers, execution_id, lambda e: e["status"] == "completed", timeout_s=60)
        assert [(s["status"], s["attempt"]) for s in done["steps"]] == [("succeeded", 1)] * len(steps)
        assert sorted(await _succeeded_steps(mongo, env_name, ws["workspace_id"], execution_id)) == steps
    assert platform.worker is not None
    counts = collections.Counter(platform.worker.received)
    assert len(counts) == len(execution_ids) * len(steps)
    assert set(counts.values()) == {1}, "no task was dispatched twice for the same attempt"
