"""kill -9 the agent runtime (a real process) in the middle of a model call: after a restart the task and its
execution complete, the model was called at most twice for the attempt, no answered call is counted twice, and no
reservation or slot is left behind."""

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from conftest import Api, Infra, running_platform
from servicekit.testing import eventually
from tests.support.openai_server import Hold, OpenAICompatibleServer, Reply
from tests.support.processes import ServiceProcess

pytestmark = pytest.mark.system
Document = dict[str, Any]


@pytest.fixture
async def server() -> AsyncIterator[OpenAICompatibleServer]:
    async with OpenAICompatibleServer() as running:
        yield running


@pytest.fixture
def runtime(service_env: dict[str, str], tmp_path: Path, server: OpenAICompatibleServer) -> Iterator[ServiceProcess]:
    env = {
        **service_env,
        "OPENAI_BASE_URL": server.base_url,
        "OPENAI_API_KEY": "test",
        "OPENAI_MAX_RETRIES": "0",
        "COMMAND_ACK_WAIT_S": "3",  # a task whose worker died is delivered again after this
        "SLOT_LEASE_S": "3",
        "HEARTBEAT_S": "0.5",
    }
    process = ServiceProcess("orchestrator.runtime", env, tmp_path / "runtime.log")
    process.start()
    yield process
    process.stop()


@pytest.fixture
async def api(infra: Infra, env_name: str, runtime: ServiceProcess) -> AsyncIterator[Api]:
    async with running_platform(infra, env_name, behaviour=None) as platform:
        yield Api(platform, await platform.new_workspace())


async def test_a_runtime_killed_mid_call_completes_the_task_after_restart_without_double_counting(
    api: Api, server: OpenAICompatibleServer, runtime: ServiceProcess, mongo: AsyncMongoClient[Document], env_name: str
) -> None:
    server.behave("held", Hold(Reply('{"summary": "answered"}', prompt_tokens=40, completion_tokens=10)))
    agent = {
        "name": "Held",
        "role": "analyst",
        "model": {"provider": "openai", "model": "held", "max_output_tokens": 50},
    }
    await api.post("/api/v1/agents", agent, expect=201)
    spec = {"name": "One", "start": "a", "steps": [{"id": "a", "kind": "agent", "role": "analyst", "timeout_s": 60}]}
    workflow_id = await api.workflow(spec)
    started = await api.post(f"/api/v1/workflows/{workflow_id}/executions", {"budget": {"tokens": 100_000}}, expect=201)
    run = started["resource_ids"]["execution_id"]

    await server.wait_until(lambda: server.in_flight == 1, timeout_s=30)  # the model is working on it
    runtime.kill()
    await server.wait_until(lambda: server.in_flight == 0)  # the server saw its client go: that call is never answered
    server.release()  # the next call is answered at once
    runtime.start()

    done = await api.wait_for(run, "completed", "failed", timeout_s=60)
    assert done["status"] == "completed", done
    assert done["steps"][0]["output"] == {"summary": "answered"}
    assert 1 <= len(server.requests_for("held")) <= 2  # at most twice for the attempt, crash included
    assert server.answered.completions == 1

    usage = (await api.get(f"/api/v1/usage?execution_id={run}"))["total"]
    assert (usage["calls"], usage["prompt_tokens"], usage["completion_tokens"]) == (1, 40, 10)
    db = mongo[f"{env_name}_orchestrator"]

    async def nothing_held() -> bool:
        budgets = [doc async for doc in db["budgets"].find({})]
        slots = [doc async for doc in db["slots"].find({"holder": {"$ne": None}})]
        return bool(budgets) and all(doc["held_count"] == 0 for doc in budgets) and not slots

    await eventually(nothing_held)
    budget = await db["budgets"].find_one({"_id": {"$regex": ":execution:"}})
    assert budget is not None
    assert budget["used_tokens"] == 50
