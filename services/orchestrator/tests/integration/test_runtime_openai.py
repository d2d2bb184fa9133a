"""The agent runtime against a real OpenAI-compatible HTTP server (the test server), through the openai provider:
concurrency limits and availability, exact usage sums, invalid structured output."""

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from conftest import Api, Infra, running_platform
from orchestrator.settings import RuntimeSettings
from servicekit.testing import eventually
from tests.support.openai_server import Fail, Hold, OpenAICompatibleServer, Reply, reply_json


@pytest.fixture
async def server() -> AsyncIterator[OpenAICompatibleServer]:
    async with OpenAICompatibleServer(default=Reply('{"summary": "done"}', delay_s=0.05)) as running:
        yield running


@pytest.fixture
async def api(infra: Infra, env_name: str, server: OpenAICompatibleServer) -> AsyncIterator[Api]:
    settings = RuntimeSettings(
        openai_base_url=server.base_url, openai_api_key="test", openai_max_retries=0, heartbeat_s=0.5
    )
    async with running_platform(infra, env_name, behaviour=None, runtime=settings) as platform:
        yield Api(platform, await platform.new_workspace())


def openai_agent(model: str, limit: int, **extra: Any) -> dict[str, Any]:
    return {
        "name": model,
        "role": "analyst",
        "concurrency_limit": limit,
        "model": {"provider": "openai", "model": model, "max_output_tokens": 100},
        **extra,
    }


ONE_STEP = {"name": "One", "start": "a", "steps": [{"id": "a", "kind": "agent", "role": "analyst"}]}


async def availability(api: Api) -> dict[str, Any]:
    items: list[dict[str, Any]] = (await api.get("/api/v1/agents/availability?role=analyst"))["items"]
    assert len(items) == 1
    return items[0]


async def test_availability_moves_available_busy_available_as_a_task_starts_and_ends(
    api: Api, server: OpenAICompatibleServer
) -> None:
    server.behave("held", Hold(Reply('{"summary": "finally"}')))
    await api.post("/api/v1/agents", openai_agent("held", 1), expect=201)

    async def status_is(status: str) -> dict[str, Any] | None:
        found = await availability(api)
        return found if found["status"] == status else None

    assert (await eventually(lambda: status_is("available")))["in_flight"] == 0
    run = await api.execute(await api.workflow(ONE_STEP))
    await server.wait_until(lambda: server.in_flight == 1)
    busy = await eventually(lambda: status_is("busy"))
    assert (busy["in_flight"], busy["limit"]) == (1, 1)
    server.release()
    done = await api.wait_for(run, "completed", timeout_s=20)
    assert done["steps"][0]["output"] == {"summary": "finally"}
    assert (await eventually(lambda: status_is("available")))["in_flight"] == 0


async def test_fifty_tasks_to_an_agent_with_limit_three_never_have_more_than_three_in_flight(
    api: Api, server: OpenAICompatibleServer
) -> None:
    await api.post("/api/v1/agents", openai_agent("limited", 3), expect=201)
    workflow_id = await api.workflow(ONE_STEP)
    runs = await asyncio.gather(*(api.execute(workflow_id) for _ in range(50)))
    for run in runs:
        await api.wait_for(run, "completed", timeout_s=60)
    assert server.max_in_flight_by_model["limited"] == 3  # the limit was reached, and never passed
    assert len(server.requests_for("limited")) == 50

    usage = (await api.get("/api/v1/usage"))["total"]  # what the runtime recorded is what the server answered
    assert usage["calls"] == server.answered.completions == 50
    assert usage["prompt_tokens"] == server.answered.prompt_tokens
    assert usage["completion_tokens"] == server.answered.completion_tokens
    assert usage["estimated_calls"] == 0
    by_task = (await api.get("/api/v1/usage?group_by=task"))["groups"]
    assert len(by_task) == 50
    assert sum(group["total_tokens"] for group in by_task.values()) == server.answered.total_tokens


async def test_an_answer_that_breaks_the_schema_is_retried_then_fails_invalid_output(
    api: Api, server: OpenAICompatibleServer
) -> None:
    server.behave("sloppy", reply_json({"score": "high"}))
    await api.post("/api/v1/agents", openai_agent("sloppy", 2), expect=201)
    schema = {"type": "object", "required": ["score"], "properties": {"score": {"type": "integer"}}}
    step = {"id": "a", "kind": "agent", "role": "analyst", "output_schema": schema, "retry": {"max_attempts": 3}}
    run = await api.execute(await api.workflow({"name": "Typed", "start": "a", "steps": [step]}))
    failed = await api.wait_for(run, "failed", timeout_s=30)
    assert failed["steps"][0]["error_kind"] == "invalid_output"
    assert "score" in failed["steps"][0]["error"]
    assert len(failed["steps"][0]["attempts"]) == 3
    assert len(server.requests_for("sloppy")) == 3
    sent = server.requests_for("sloppy")[0].body
    assert sent["response_format"]["json_schema"]["schema"] == schema


async def test_a_task_waits_for_a_busy_agent_never_takes_a_retired_one_and_ends_no_agent_at_its_deadline(
    api: Api, server: OpenAICompatibleServer
) -> None:
    server.behave("held", Hold(Reply('{"summary": "late"}')))
    await api.post("/api/v1/agents", openai_agent("held", 1), expect=201)
    retired = await api.post("/api/v1/agents", openai_agent("retired", 5), expect=201)
    await api.post(f"/api/v1/agents/{retired['resource_ids']['agent_id']}/retire", expect=200)

    async def retired_seen() -> bool:
        items = (await api.get("/api/v1/agents?status=retired"))["items"]
        return len(items) == 1

    await eventually(retired_seen)
    first = await api.execute(await api.workflow(ONE_STEP))
    await server.wait_until(lambda: server.in_flight == 1)
    short = {"name": "Short", "start": "a", "steps": [{"id": "a", "kind": "agent", "role": "analyst", "timeout_s": 3}]}
    second = await api.execute(await api.workflow(short))
    failed = await api.wait_for(second, "failed", timeout_s=20)
    assert failed["steps"][0]["error_kind"] == "no_agent"
    assert "busy" in failed["steps"][0]["error"]
    assert server.requests_for("retired") == []  # waiting, it never went to the retired agent
    server.release()
    done = await api.wait_for(first, "completed", timeout_s=20)
    assert done["steps"][0]["output"]["summary"] == "late"


async def test_a_provider_outage_is_retried_per_the_step_policy_with_the_error_on_the_step(
    api: Api, server: OpenAICompatibleServer
) -> None:
    server.script(Fail(500), Fail(503), model="flaky")
    server.behave("flaky", Reply('{"summary": "back"}'))
    await api.post("/api/v1/agents", openai_agent("flaky", 2), expect=201)
    retry = {"max_attempts": 3, "backoff_s": 0.1}
    step = {"id": "a", "kind": "agent", "role": "analyst", "retry": retry}
    run = await api.execute(await api.workflow({"name": "Flaky", "start": "a", "steps": [step]}))
    done = await api.wait_for(run, "completed", "failed", timeout_s=30)
    assert done["status"] == "completed"
    attempts = done["steps"][0]["attempts"]
    assert [a["status"] for a in attempts] == ["failed", "failed", "succeeded"]
    assert "500" in attempts[0]["error"]
    assert len(server.requests_for("flaky")) == 3


async def test_an_answer_mongodb_cannot_store_fails_invalid_output_once(
    api: Api, server: OpenAICompatibleServer
) -> None:
    server.behave("unstorable", reply_json({"$where": "sleep(1000)", "n": 2**70}))
    await api.post("/api/v1/agents", openai_agent("unstorable", 2), expect=201)
    run = await api.execute(await api.workflow(ONE_STEP))
    failed = await api.wait_for(run, "failed", timeout_s=20)
    assert failed["steps"][0]["error_kind"] == "invalid_output"
    assert len(server.requests_for("unstorable")) == 1  # concluded once: the model is not asked again


async def test_a_money_budget_is_not_kept_on_a_model_without_a_price(api: Api, server: OpenAICompatibleServer) -> None:
    await api.post("/api/v1/agents", openai_agent("unpriced", 2), expect=201)
    workflow_id = await api.workflow(ONE_STEP)
    started = await api.post(f"/api/v1/workflows/{workflow_id}/executions", {"budget": {"cost_usd": 1.0}}, expect=201)
    failed = await api.wait_for(started["resource_ids"]["execution_id"], "failed", timeout_s=20)
    assert failed["steps"][0]["error_kind"] == "budget_exceeded"
    assert "MODEL_PRICES" in failed["steps"][0]["error"]
    assert server.requests_for("unpriced") == []
