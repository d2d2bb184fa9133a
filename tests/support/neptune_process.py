"""The neptune service in this process, pointed at a gateway served on a real socket (Neptune's tool calls are
HTTP requests to it), and the conversation helpers its tests share."""

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from conftest import Api, Infra, Platform, running_platform
from neptune.main import build_app
from neptune.settings import NeptuneSettings
from orchestrator.settings import RuntimeSettings
from servicekit.testing import eventually, served
from tests.support.sse import read_events


@asynccontextmanager
async def neptune_process(infra: Infra, env_name: str, gateway_url: str, **settings_: Any) -> AsyncIterator[None]:
    """``settings_``: more of Neptune's settings (a model endpoint, its budgets)."""
    settings = NeptuneSettings(
        platform_env=env_name,
        nats_url=infra.nats_url,
        mongodb_url=infra.mongodb_url,
        gateway_url=gateway_url,
        relay_poll_interval_s=0.2,
        **settings_,
    )
    app = build_app(settings)
    async with app.router.lifespan_context(app):
        yield


@dataclass
class Neptune:
    platform: Platform
    url: str
    infra: Infra
    env_name: str
    running: AsyncExitStack | None = None

    async def start(self) -> None:
        self.running = AsyncExitStack()
        await self.running.enter_async_context(self.process())

    async def stop(self) -> None:
        if self.running is not None:
            await self.running.aclose()
            self.running = None

    settings: dict[str, Any] = field(default_factory=dict)

    def process(self) -> AbstractAsyncContextManager[None]:
        return neptune_process(self.infra, self.env_name, self.url, **self.settings)


@dataclass
class Turn:
    events: list[tuple[str, dict[str, Any]]]

    @property
    def answer(self) -> str:
        return str(next(data["content"] for kind, data in self.events if kind == "message"))

    @property
    def tools(self) -> list[str]:
        return [data["name"] for kind, data in self.events if kind == "tool_call"]

    def result(self, index: int = 0) -> dict[str, Any]:
        results = [data for kind, data in self.events if kind == "tool_result"]
        return dict(results[index]["result"])


async def conversation(api: Api) -> str:
    created = await api.post("/api/v1/neptune/conversations", {"title": "Ops"}, expect=201)
    return str(created["resource_ids"]["conversation_id"])


async def say(api: Api, conversation_id: str, content: str, **headers: str) -> Turn:
    path = f"/api/v1/neptune/conversations/{conversation_id}/messages"
    async with api.client.stream(
        "POST", path, json={"content": content}, headers={**api.headers, **headers}, timeout=60
    ) as resp:
        assert resp.status_code == 200, await resp.aread()
        events = await read_events(resp)
    assert events, "the stream ended with no event"
    assert events[-1][0] == "message", events
    return Turn(events)


async def readable(api: Api, path: str) -> dict[str, Any] | None:
    """The resource once the read model has it (404 until then)."""
    resp = await api.client.get(path, headers=api.headers)
    return dict(resp.json()) if resp.status_code == 200 else None


async def teams(api: Api, at_least: int = 0) -> list[dict[str, Any]]:
    """The workspace's teams, once the read model shows ``at_least`` of them."""

    async def listed() -> list[dict[str, Any]] | None:
        items: list[dict[str, Any]] = (await api.get("/api/v1/teams"))["items"]
        return items if len(items) >= at_least else None

    return await eventually(listed, 10)


@asynccontextmanager
async def neptune_platform(infra: Infra, env_name: str, **settings: Any) -> AsyncIterator[Neptune]:
    """Every service (the agent runtime with the local provider, memory), the gateway on a real socket, and Neptune
    (``settings``: more of its settings) pointed at it."""
    runtime = RuntimeSettings(heartbeat_s=0.5)
    async with (
        running_platform(infra, env_name, behaviour=None, memory=True, runtime=runtime) as platform,
        served(platform.gateway, platform.settings) as url,
    ):
        found = Neptune(platform, url, infra, env_name, settings=settings)
        await found.start()
        try:
            yield found
        finally:
            await found.stop()
