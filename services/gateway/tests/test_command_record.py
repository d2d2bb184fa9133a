"""A command sent without an Idempotency-Key is answered so that the client can tell it went out, even when the
gateway cannot record it: the database is cut off behind a real TCP proxy (the driver and the server are real)."""

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from conftest import Infra, running_platform
from orchestrator.main import build_app as build_orchestrator
from orchestrator.settings import OrchestratorSettings
from servicekit.testing import eventually

AGENT = {"name": "Lead qualifier", "role": "sales", "capabilities": ["qualification"]}


class CuttableProxy:
    """Forwards TCP connections to ``upstream``; ``cut()`` drops every connection and refuses new ones until
    ``restore()``, as a network partition would."""

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self._upstream = (upstream_host, upstream_port)
        self._open = True
        self._writers: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None
        self.port = 0

    async def __aenter__(self) -> "CuttableProxy":
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *_: Any) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()

    def cut(self) -> None:
        self._open = False
        for writer in list(self._writers):
            writer.close()

    def restore(self) -> None:
        self._open = True

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self._open:
            writer.close()
            return
        up_reader, up_writer = await asyncio.open_connection(*self._upstream)
        self._writers |= {writer, up_writer}
        try:
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        finally:
            self._writers -= {writer, up_writer}

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()


@contextlib.asynccontextmanager
async def proxied(url: str) -> AsyncIterator[tuple[CuttableProxy, str]]:
    parts = urlsplit(url)
    async with CuttableProxy(parts.hostname or "127.0.0.1", parts.port or 27017) as proxy:
        query = "&".join(filter(None, [parts.query, "directConnection=true"]))  # stay behind the proxy
        yield proxy, urlunsplit(parts._replace(netloc=f"127.0.0.1:{proxy.port}", query=query))


async def test_a_sent_command_whose_record_failed_is_202_and_found_later(infra: Infra, env_name: str) -> None:
    async with (
        proxied(infra.mongodb_url) as (database_link, gateway_mongodb_url),
        running_platform(
            infra,
            env_name,
            orchestrator=False,
            engine=False,
            behaviour=None,
            command_wait_s=0.2,
            mongodb_url=gateway_mongodb_url,
            mongo_timeout_ms=1000,
        ) as platform,
    ):
        headers = platform.auth(await platform.new_workspace())
        assert (await platform.client.get("/api/v1/workspace", headers=headers)).status_code == 200  # key verified

        database_link.cut()
        resp = await platform.client.post("/api/v1/agents", json=AGENT, headers=headers)
        assert resp.status_code == 202, resp.text  # was 503, for a command that had gone out
        command_id = resp.json()["command_id"]
        assert resp.headers["Location"] == f"/api/v1/commands/{command_id}"

        database_link.restore()

        async def status() -> dict[str, Any] | None:
            answer = await platform.client.get(f"/api/v1/commands/{command_id}", headers=headers)
            return answer.json() if answer.status_code == 200 else None

        assert (await eventually(status))["status"] == "pending", "its record was written once the database was back"

        orchestrator = build_orchestrator(
            OrchestratorSettings(platform_env=env_name, nats_url=infra.nats_url, mongodb_url=infra.mongodb_url)
        )
        async with orchestrator.router.lifespan_context(orchestrator):

            async def accepted() -> dict[str, Any] | None:
                body = await status()
                return body if body is not None and body["status"] == "accepted" else None

            done = await eventually(accepted)
        assert done["resource_ids"]["agent_id"] == f"agt_{command_id[:24]}", "the command that went out was applied"
