"""Helpers for tests and benchmarks that drive the real services."""

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TypeVar

import uvicorn
from starlette.types import ASGIApp

from servicekit.devstack import free_port
from servicekit.runtime import server_config
from servicekit.settings import ServiceSettings

T = TypeVar("T")


async def eventually(probe: Callable[[], Awaitable[T | None]], timeout_s: float = 10.0, every_s: float = 0.05) -> T:
    """Poll ``probe`` until it returns something other than None (or False); fail after ``timeout_s``."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        result = await probe()
        if result is not None and result is not False:
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout_s}s")
        await asyncio.sleep(every_s)


@asynccontextmanager
async def served(app: ASGIApp, settings: ServiceSettings) -> AsyncIterator[str]:
    """Serve ``app`` (its lifespan already entered by the caller) on a free port of this host, with the server
    configuration of a service (``server_config``), in this event loop; yields the base URL."""
    port = free_port()
    config = server_config(app, settings.model_copy(update={"http_host": "127.0.0.1", "http_port": port}))
    config.lifespan = "off"
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())

    async def started() -> bool:
        if task.done():
            task.result()  # start-up failed: say why
        return server.started

    await eventually(started)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
