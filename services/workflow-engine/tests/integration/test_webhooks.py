"""A webhook call reaches only checked addresses: against real local servers and the machine's resolver."""

import asyncio
from collections.abc import Iterable
from typing import Any

import httpcore
import pytest

from workflow_engine.domain.addresses import DEFAULT_POLICY, AddressPolicy
from workflow_engine.webhooks import ForbiddenAddress, GuardedNetwork, call_webhook


class RecordingNetwork(httpcore.AsyncNetworkBackend):
    """The real network, noting where each connection went."""

    def __init__(self) -> None:
        self.inner = httpcore.AnyIOBackend()
        self.connected: list[str] = []

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        self.connected.append(host)
        return await self.inner.connect_tcp(host, port, timeout=timeout)


async def _server(answer: bytes) -> tuple[asyncio.Server, int, list[bytes]]:
    seen: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await reader.readuntil(b"\r\n\r\n"))
        writer.write(answer)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1], seen


async def test_the_connection_goes_to_the_address_that_was_checked_not_to_a_second_lookup() -> None:
    server, port, seen = await _server(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")
    recording = RecordingNetwork()
    network = GuardedNetwork(AddressPolicy.allowing(["127.0.0.0/8", "::1"]), recording)
    async with server:
        pool = httpcore.AsyncConnectionPool(network_backend=network)
        async with pool:
            response = await pool.request("GET", f"http://localhost:{port}/x")
    assert response.status == 204
    assert recording.connected
    assert set(recording.connected) <= {"127.0.0.1", "::1"}, recording.connected
    assert b"Host: localhost:" in seen[0], "the Host header is still the URL's"


async def test_a_name_that_resolves_to_an_internal_address_is_refused_before_connecting() -> None:
    recording = RecordingNetwork()
    network = GuardedNetwork(DEFAULT_POLICY, recording)
    with pytest.raises(ForbiddenAddress, match=r"localhost resolves to .*, a loopback address"):
        await network.connect_tcp("localhost", 80, timeout=5)
    assert recording.connected == []


async def test_a_redirect_is_not_followed() -> None:
    target, target_port, reached = await _server(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}")
    redirect = f"HTTP/1.1 302 Found\r\nLocation: http://127.0.0.2:{target_port}/\r\nContent-Length: 0\r\n\r\n"
    server, port, seen = await _server(redirect.encode())
    async with server, target:
        ok, output, error, kind = await call_webhook(
            f"http://127.0.0.1:{port}/hook", "POST", {}, {"a": 1}, 5, AddressPolicy.allowing(["127.0.0.1"])
        )
    assert (ok, output, error, kind) == (False, None, "webhook answered 302", "http_302")
    assert len(seen) == 1
    assert reached == []


async def test_a_host_the_deployment_allows_is_reached_and_its_answer_returned() -> None:
    body = b'{"ok": true}'
    answer = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    server, port, seen = await _server(answer)
    async with server:
        ok, output, _, _ = await call_webhook(
            f"http://localhost:{port}/hook", "POST", {}, {}, 5, AddressPolicy.allowing(["localhost"])
        )
        refused = await call_webhook(f"http://127.0.0.1:{port}/hook", "POST", {}, {}, 5, DEFAULT_POLICY)
    assert (ok, output) == (True, {"status": 200, "body": {"ok": True}})
    assert refused[2:] == ("webhook refused: 127.0.0.1 is a loopback address", "forbidden_address")
    assert len(seen) == 1
