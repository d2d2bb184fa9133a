"""A real model with no network (the LOCAL_LLM profile): SmolLM2 135M in llama-cpp-python's OpenAI-compatible
server, reached by the agent runtime through its ``openai`` provider, runs the support-ticket template end to end.

The profile is installed into the checkout's .venv-llm by the code ``make up`` uses (the first time, that compiles
llama.cpp: about 10 minutes; then pip's wheel cache makes it quick). The test is skipped only when those packages
cannot be installed here; any other failure fails it. A 135M model writes weak content, so the test asserts the
structure: every step ran on the model, the outputs meet the template's schemas, and the branch follows the triage.
"""

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from conftest import Api, Infra, running_platform
from contracts.workflows import AgentStep
from orchestrator.settings import RuntimeSettings
from servicekit import local_llm
from servicekit.testing import eventually
from workflow_engine.templates import SUPPORT_TICKET

pytestmark = [pytest.mark.system, pytest.mark.llm, pytest.mark.timeout(local_llm.INSTALL_TIMEOUT_S + 900)]

MAX_OUTPUT_TOKENS = 128  # short answers keep the test quick: about 20 tokens/s on two shared cores
TICKET = {"subject": "Cannot log in", "body": "Since this morning the login page says my password is wrong."}


@pytest.fixture(scope="module")
def llm_server(repo_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[local_llm.LlmServer]:
    logs = tmp_path_factory.mktemp("llm-logs")
    try:
        with local_llm.running(repo_root, local_llm.SMOLLM2, logs, say=print) as server:
            yield server
    except local_llm.LlmUnavailable as exc:  # raised by the install, before the server starts
        pytest.skip(f"the LOCAL_LLM profile's packages cannot be installed here: {exc}")


@pytest.fixture
async def api(
    infra: Infra, env_name: str, llm_server: local_llm.LlmServer, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Api]:
    for key, value in llm_server.runtime_env().items():  # what `make up` gives the agent runtime
        monkeypatch.setenv(key, value)
    settings = RuntimeSettings(heartbeat_s=0.5)
    assert settings.openai_base_url == llm_server.base_url
    async with running_platform(infra, env_name, behaviour=None, memory=True, runtime=settings) as platform:
        yield Api(platform, await platform.new_workspace())


async def keep_answers_short(api: Api, agent_ids: list[str]) -> None:
    """The staffed agents, with the role instructions staffing wrote, get a small output limit (a new version)."""
    for agent_id in agent_ids:

        async def shown(agent_id: str = agent_id) -> dict[str, Any] | None:
            resp = await api.client.get(f"/api/v1/agents/{agent_id}", headers=api.headers)
            return resp.json() if resp.status_code == 200 else None  # the read model may not show it yet

        agent = await eventually(shown)
        spec = {
            "name": agent["name"],
            "role": agent["role"],
            "instructions": agent["instructions"],
            "capabilities": agent["capabilities"],
            "model": {**agent["model"], "max_output_tokens": MAX_OUTPUT_TOKENS},
        }
        resp = await api.client.put(f"/api/v1/agents/{agent_id}", json=spec, headers=api.headers)
        assert resp.status_code == 200, resp.text

        async def updated(agent_id: str = agent_id) -> dict[str, Any] | None:
            found: dict[str, Any] = await api.get(f"/api/v1/agents/{agent_id}")
            return found if found["model"]["max_output_tokens"] == MAX_OUTPUT_TOKENS else None

        await eventually(updated)


async def test_the_support_template_runs_end_to_end_on_a_real_model(api: Api, llm_server: local_llm.LlmServer) -> None:
    created = await api.post("/api/v1/workflows", {"template": "support-ticket"}, expect=201)
    await keep_answers_short(api, [agent["agent_id"] for agent in created["staffed_agents"]])

    run = await api.execute(created["resource_ids"]["workflow_id"], {"ticket": TICKET})
    done = await api.wait_for(run, "completed", "failed", timeout_s=600)

    assert done["status"] == "completed", done
    steps = {step["id"]: step for step in done["steps"]}
    triage = steps["triage"]["output"]
    step = next(s for s in SUPPORT_TICKET.spec.steps if s.id == "triage")
    assert isinstance(step, AgentStep)
    assert step.output_schema is not None
    jsonschema.validate(triage, step.output_schema)  # the model's answer, constrained by the server, meets the schema
    escalated = triage["priority"] == "urgent" or triage["sentiment"] == "angry"
    taken, skipped = ("escalate", "respond") if escalated else ("respond", "escalate")
    assert steps[taken]["status"] == "succeeded"
    assert steps[skipped]["status"] == "pending"
    assert steps["close"]["status"] == "succeeded"
    for step_id in ("triage", taken, "close"):
        assert isinstance(steps[step_id]["output"], dict), steps[step_id]

    usage = await api.get(f"/api/v1/usage?execution_id={run}&group_by=model")
    assert set(usage["groups"]) == {llm_server.model}  # every call went to the model, none to the local stand-in
    by_model = usage["groups"][llm_server.model]
    assert by_model["calls"] >= 3
    assert by_model["completion_tokens"] > 0
    assert by_model["prompt_tokens"] > 0
    assert by_model["estimated_calls"] == 0  # the server reports its token counts
