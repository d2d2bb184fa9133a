"""Fixtures shared by every test: the real infrastructure and an isolated environment per test.

NATS and the MongoDB-compatible server are real. Each test gets its own environment name, so its streams,
consumers and databases are its own; they are deleted when the test ends.
"""

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import uuid4

import httpx
import pytest
from fastapi import FastAPI
from pymongo import AsyncMongoClient

from contracts import Actor
from contracts.workflows import AgentTask, RecordTaskResult, result_command_id
from gateway.admin import create_workspace
from gateway.main import build_app as build_gateway
from gateway.settings import GatewaySettings
from memory.main import build_app as build_memory
from memory.settings import MemorySettings
from orchestrator.main import build_app as build_orchestrator
from orchestrator.runtime.main import build_app as build_runtime
from orchestrator.settings import OrchestratorSettings, RuntimeSettings
from servicekit import devstack
from servicekit.bus import ConsumerPolicy
from servicekit.commands import envelope_for, publish_command
from servicekit.mongo import connect_mongo
from servicekit.runtime import Runtime
from servicekit.settings import ServiceSettings
from servicekit.testing import eventually
from workflow_engine.main import build_app as build_engine
from workflow_engine.settings import WorkflowEngineSettings

Document = dict[str, Any]


@dataclass(frozen=True)
class Infra:
    nats_url: str
    mongodb_url: str


@pytest.fixture(scope="session")
def infra(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Infra]:
    root = tmp_path_factory.mktemp("infra")
    with (
        devstack.mongodb(root / "mongodb", root / "logs") as mongodb_url,
        devstack.nats(root / "nats", root / "logs") as nats_url,
    ):
        yield Infra(nats_url=nats_url, mongodb_url=mongodb_url)


@pytest.fixture(scope="session")
async def mongo(infra: Infra) -> AsyncIterator[AsyncMongoClient[Document]]:
    client = connect_mongo(infra.mongodb_url, 5000)
    yield client
    await client.close()


@pytest.fixture
async def env_name(infra: Infra, mongo: AsyncMongoClient[Document]) -> AsyncIterator[str]:
    """A fresh environment prefix; its streams and databases are removed afterwards."""
    name = "t" + uuid4().hex[:12]
    yield name
    await devstack.drop_environment(name, mongodb_url=infra.mongodb_url, nats_url=infra.nats_url)


@pytest.fixture
def service_env(infra: Infra, env_name: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Environment variables that point a service's settings at this test's environment."""
    values = {"NATS_URL": infra.nats_url, "MONGODB_URL": infra.mongodb_url, "PLATFORM_ENV": env_name}
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    return {**os.environ, **values}


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return Path(__file__).resolve().parent


# The platform in this process: gateway, orchestrator and workflow engine, plus a deterministic agent worker. ----


Behaviour = Callable[[AgentTask], Awaitable[tuple[bool, Any]]]


async def echo(task: AgentTask) -> tuple[bool, Any]:
    """The default deterministic agent: succeeds with its step, attempt and input."""
    return True, {"step": task.step_id, "attempt": task.attempt, "input": task.input}


class AgentWorker:
    """A deterministic agent runtime: consumes TASKS like the real one will and reports each result."""

    def __init__(self, settings: ServiceSettings, behaviour: Behaviour = echo) -> None:
        self.runtime = Runtime(settings)
        self.behaviour = behaviour
        self.received: list[str] = []

    async def start(self) -> None:
        await self.runtime.open()
        subjects = self.runtime.subjects
        self.runtime.bus.consume(
            subject=f"{subjects.env}.task.>",
            stream=subjects.tasks_stream,
            durable=subjects.durable("agent-worker", "tasks"),
            handler=self._on_task,
            policy=ConsumerPolicy(max_deliver=3, base_delay_s=0.05),
        )
        await self.runtime.start()

    async def stop(self) -> None:
        await self.runtime.stop()

    async def _on_task(self, body: bytes, headers: dict[str, str]) -> None:
        task = AgentTask.model_validate_json(body)
        self.received.append(task.key)
        ok, output = await self.behaviour(task)
        result = RecordTaskResult(
            execution_id=task.execution_id,
            step_id=task.step_id,
            attempt=task.attempt,
            ok=ok,
            output=output if ok else None,
            error=None if ok else str(output),
            error_kind="error" if ok else "agent_error",
        )
        envelope = envelope_for(
            result,
            workspace_id=task.workspace_id,
            command_id=result_command_id(task.key),
            actor=Actor(kind="agent", id=task.agent_id or "any"),
        )
        await publish_command(self.runtime.bus, "workflow-engine", envelope)


@dataclass
class Platform:
    client: httpx.AsyncClient
    gateway: FastAPI
    settings: GatewaySettings
    worker: AgentWorker | None

    async def new_workspace(self, name: str = "Acme") -> dict[str, str]:
        return await create_workspace(self.settings, name)

    @staticmethod
    def auth(workspace: dict[str, str]) -> dict[str, str]:
        return {"Authorization": f"Bearer {workspace['api_key']}"}


@asynccontextmanager
async def running_platform(
    infra: Infra,
    env_name: str,
    *,
    behaviour: Behaviour | None = echo,
    engine: bool = True,
    orchestrator: bool = True,
    memory: bool = False,
    runtime: RuntimeSettings | None = None,
    engine_settings: dict[str, Any] | None = None,
    **overrides: Any,
) -> AsyncIterator[Platform]:
    """The gateway (``overrides`` go to its settings), the orchestrator and the workflow engine (each unless
    switched off; ``engine_settings`` go to the engine's), the memory service (if asked), and either the agent
    runtime (``runtime``: its settings, whose connection fields are filled in here) or a deterministic agent worker
    (none when ``behaviour`` is None), all in this process."""
    common: dict[str, Any] = {"platform_env": env_name, "nats_url": infra.nats_url, "mongodb_url": infra.mongodb_url}
    fast: dict[str, Any] = {"relay_poll_interval_s": 0.2}
    running = [
        name
        for name, on in (
            ("orchestrator", orchestrator),
            ("workflow-engine", engine),
            ("memory", memory),
            ("agent-runtime", runtime is not None),
        )
        if on
    ]
    defaults = {"max_body_bytes": 4096, "backend_services": ",".join(running)}  # /readyz asks the services run here
    settings = GatewaySettings(**{**defaults, **common, **overrides})
    gateway = build_gateway(settings)
    apps = [build_orchestrator(OrchestratorSettings(**common, **fast))] if orchestrator else []
    if engine:
        apps.append(build_engine(WorkflowEngineSettings(**common, **fast, timer_poll_s=0.1, **(engine_settings or {}))))
    if memory:
        apps.append(build_memory(MemorySettings(**common, **fast)))
    if runtime is not None:
        apps.append(build_runtime(runtime.model_copy(update={**common, "shutdown_grace_s": 0})))
    async with AsyncExitStack() as stack:
        for app in apps:
            await stack.enter_async_context(app.router.lifespan_context(app))
        await stack.enter_async_context(gateway.router.lifespan_context(gateway))
        worker = None
        if behaviour is not None:
            # An agent that never answers (a test of timeouts) is stopped without waiting for it.
            worker = AgentWorker(ServiceSettings(service_name="agent-worker", shutdown_grace_s=0, **common), behaviour)
            await worker.start()
            stack.push_async_callback(worker.stop)
        client = await stack.enter_async_context(
            httpx.AsyncClient(transport=httpx.ASGITransport(app=gateway), base_url="http://gateway")
        )
        yield Platform(client, gateway, settings, worker)


class Api:
    """A workspace's client of the gateway, with the waits tests need."""

    def __init__(self, platform: Platform, workspace: dict[str, str]) -> None:
        self.client = platform.client
        self.headers = platform.auth(workspace)
        self.workspace_id = workspace["workspace_id"]

    async def post(self, path: str, body: Any = None, expect: int | None = None) -> dict[str, Any]:
        resp = await self.client.post(path, json=body, headers=self.headers)
        if expect is not None:
            assert resp.status_code == expect, resp.text
        result: dict[str, Any] = resp.json()
        return result

    async def get(self, path: str, expect: int = 200) -> Any:
        resp = await self.client.get(path, headers=self.headers)
        assert resp.status_code == expect, resp.text
        return resp.json()

    async def workflow(self, spec: dict[str, Any]) -> str:
        created = await self.post("/api/v1/workflows", {"spec": spec}, expect=201)
        return str(created["resource_ids"]["workflow_id"])

    async def execute(self, workflow_id: str, data: dict[str, Any] | None = None) -> str:
        started = await self.post(f"/api/v1/workflows/{workflow_id}/executions", {"input": data or {}}, expect=201)
        return str(started["resource_ids"]["execution_id"])

    async def execution(self, execution_id: str) -> dict[str, Any]:
        result: dict[str, Any] = await self.get(f"/api/v1/workflows/executions/{execution_id}")
        return result

    async def wait_for(self, execution_id: str, *statuses: str, timeout_s: float = 15) -> dict[str, Any]:
        async def probe() -> dict[str, Any] | None:
            found = await self.execution(execution_id)
            return found if found["status"] in statuses else None

        return await eventually(probe, timeout_s)

    async def wait_step(self, execution_id: str, step_id: str, status: str) -> dict[str, Any]:
        async def probe() -> dict[str, Any] | None:
            found = await self.execution(execution_id)
            step = next(s for s in found["steps"] if s["id"] == step_id)
            return found if step["status"] == status else None

        return await eventually(probe)


@pytest.fixture
async def platform(infra: Infra, env_name: str) -> AsyncIterator[Platform]:
    async with running_platform(infra, env_name) as running:
        yield running


async def settle(seconds: float = 0.3) -> None:
    await asyncio.sleep(seconds)
