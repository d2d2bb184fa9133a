"""The neptune service in this process, pointed at a gateway served on a real socket (Neptune's tool calls are
HTTP requests to it)."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from conftest import Infra
from neptune.main import build_app
from neptune.settings import NeptuneSettings


@asynccontextmanager
async def neptune_process(infra: Infra, env_name: str, gateway_url: str) -> AsyncIterator[None]:
    settings = NeptuneSettings(
        platform_env=env_name,
        nats_url=infra.nats_url,
        mongodb_url=infra.mongodb_url,
        gateway_url=gateway_url,
        relay_poll_interval_s=0.2,
    )
    app = build_app(settings)
    async with app.router.lifespan_context(app):
        yield
