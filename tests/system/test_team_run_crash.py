"""kill -9 the orchestrator (a real process) in the middle of a team run: after a restart the run completes, each
step's model call was made once, and each handoff and step result is on the run once."""

import collections
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import Api, Infra, running_platform
from orchestrator.settings import RuntimeSettings
from servicekit.testing import eventually
from tests.support.openai_server import OpenAICompatibleServer, Reply
from tests.support.processes import ServiceProcess

pytestmark = pytest.mark.system


@pytest.fixture
async def server() -> AsyncIterator[OpenAICompatibleServer]:
    async with OpenAICompatibleServer(default=Reply('{"summary": "done"}', delay_s=1.5)) as running:
        yield running


@pytest.fixture
def orchestrator(service_env: dict[str, str], tmp_path: Path) -> Iterator[ServiceProcess]:
    process = ServiceProcess("orchestrator", {**service_env, "RELAY_POLL_INTERVAL_S": "0.2"}, tmp_path / "orch.log")
    process.start()
    yield process
    process.stop()


@pytest.fixture
async def api(
    infra: Infra, env_name: str, orchestrator: ServiceProcess, server: OpenAICompatibleServer
) -> AsyncIterator[Api]:
    runtime = RuntimeSettings(
        openai_base_url=server.base_url, openai_api_key="test", openai_max_retries=0, heartbeat_s=0.5
    )
    async with running_platform(
        infra, env_name, behaviour=None, orchestrator=False, memory=True, runtime=runtime
    ) as platform:
        yield Api(platform, await platform.new_workspace())


async def test_kill_9_of_the_orchestrator_mid_run_and_the_run_still_completes_with_each_call_made_once(
    api: Api, server: OpenAICompatibleServer, orchestrator: ServiceProcess
) -> None:
    lead = {"name": "Lead", "role": "planner", "model": {"provider": "local"}}
    ids = [(await api.post("/api/v1/agents", lead, expect=201))["resource_ids"]["agent_id"]]
    for name in ("First", "Second", "Third"):
        body = {"name": name, "role": name.lower(), "model": {"provider": "openai", "model": "slow"}}
        ids.append((await api.post("/api/v1/agents", body, expect=201))["resource_ids"]["agent_id"])
    members = [{"agent_id": ids[0], "role": "lead", "lead": True}] + [{"agent_id": a, "role": "m"} for a in ids[1:]]
    team = await api.post("/api/v1/teams", {"spec": {"name": "Crew", "members": members}}, expect=201)
    team_id = team["resource_ids"]["team_id"]

    async def team_ready() -> bool:
        resp = await api.client.get(f"/api/v1/teams/{team_id}/status", headers=api.headers)
        return resp.status_code == 200 and all(m["status"] == "available" for m in resp.json()["members"])

    await eventually(team_ready, 20)
    started = await api.post(f"/api/v1/teams/{team_id}/runs", {"objective": "Do the work"}, expect=201)
    run_id = started["resource_ids"]["run_id"]

    await server.wait_until(lambda: len(server.requests_for("slow")) == 2, timeout_s=30)  # the second slow step
    orchestrator.kill()
    await server.wait_until(lambda: server.in_flight == 0, timeout_s=10)  # its call ends while the orchestrator is down
    orchestrator.start()

    async def ended() -> dict[str, Any] | None:
        resp = await api.client.get(f"/api/v1/team-runs/{run_id}", headers=api.headers)
        view: dict[str, Any] | None = resp.json() if resp.status_code == 200 else None
        return view if view is not None and view["status"] not in {"planning", "running", "summarizing"} else None

    view = await eventually(ended, 60)
    assert view["status"] == "completed", view
    assert [s["agent_id"] for s in view["plan"]] == ids
    assert all((s["status"], s["attempt"]) == ("succeeded", 1) for s in view["plan"]), view["plan"]
    # The runtime was not killed: each slow step's model call was made once, none twice.
    assert len(server.requests_for("slow")) == 3
    assert collections.Counter(h["step_id"] for h in view["handoffs"]) == dict.fromkeys(
        ["plan", "s1", "s2", "s3", "s4", "summary"], 1
    )
    assert view["usage"]["total"]["calls"] == 6
    assert view["summary_by"] == "lead"
