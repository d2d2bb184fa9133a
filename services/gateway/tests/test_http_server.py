"""The gateway served by uvicorn on a real socket, as in production: what an error does to the connection, request
ids, and the transport limits, seen by raw sockets, Python's urllib and httpx with a pooled connection."""

import asyncio
import json
import socket
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

import httpx
import pytest

from conftest import Infra, Platform, running_platform
from contracts import Query
from contracts.agents import RegisterAgent
from gateway.workspaces import Principal
from servicekit.bus import ConsumerPolicy
from servicekit.commands import CommandContext, CommandRouter, serve_commands
from servicekit.runtime import Runtime
from servicekit.settings import ServiceSettings
from servicekit.testing import served

SECRET = "MongoDB can only handle up to 8-byte ints"
MAX_BODY = 1_048_576


@dataclass
class Served:
    url: str
    platform: Platform
    headers: dict[str, str]

    @property
    def address(self) -> tuple[str, int]:
        parsed = urlparse(self.url)
        return parsed.hostname or "127.0.0.1", parsed.port or 80


@pytest.fixture
async def gateway(infra: Infra, env_name: str) -> AsyncIterator[Served]:
    async with running_platform(
        infra,
        env_name,
        engine=False,
        behaviour=None,
        max_body_bytes=MAX_BODY,
        body_read_timeout_s=1.0,
        http_header_timeout_s=1.0,
    ) as platform:
        ws = await platform.new_workspace()
        async with served(platform.gateway, platform.settings) as url:
            yield Served(url, platform, platform.auth(ws))


class FailingQueries:
    """A query client whose every answer fails the way a bug would (a fake behind the gateway's query port)."""

    async def ask(self, principal: Principal, query: Query) -> Any:
        raise OverflowError(SECRET)


def _connection(resp: httpx.Response) -> object:
    """The connection (httpcore's network stream) that carried ``resp``."""
    stream: object = resp.extensions["network_stream"]
    return stream


def _problem(resp: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = resp.json()
    assert (body["status"], body["code"]) == (status, code)
    return body


def _raw(address: tuple[str, int], request: bytes) -> tuple[bytes, bool]:
    """Send ``request`` on a new connection and read until the server closes it (or 10 s pass); returns what was
    read and whether the server closed the connection."""
    with socket.create_connection(address, timeout=10) as sock:
        sock.sendall(request)
        received = b""
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except TimeoutError:
            return received, False
        return received, True


def _status_of(raw: bytes) -> tuple[int, dict[str, str], dict[str, Any]]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, json.loads(body)


def _urlopen(request: urllib.request.Request) -> tuple[int, dict[str, str], dict[str, Any]]:
    """What urllib (which sends the whole request before it reads) sees: status, headers, problem document."""
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return resp.status, dict(resp.headers), json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, {k.lower(): v for k, v in err.headers.items()}, json.loads(err.read())


# Errors keep the connection usable; 5xx say nothing of the internals and carry the request id --------------------


async def test_after_an_unexpected_error_the_pooled_connection_keeps_working(
    gateway: Served, caplog: pytest.LogCaptureFixture
) -> None:
    gateway.platform.gateway.state.queries = FailingQueries()
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    ids: list[str] = []
    connections: set[object] = set()
    async with httpx.AsyncClient(base_url=gateway.url, headers=gateway.headers, limits=limits) as client:
        with caplog.at_level("ERROR"):
            for _ in range(20):
                failed = await client.get("/api/v1/agents")
                follow_up = await client.get("/healthz")
                assert follow_up.status_code == 200
                connections.add(_connection(failed))
                connections.add(_connection(follow_up))
                body = _problem(failed, 500, "internal_error")
                assert failed.headers.get("connection") != "close"
                assert failed.headers["x-request-id"] == body["request_id"]
                ids.append(body["request_id"])
                for internal in (SECRET, "OverflowError", "Traceback"):
                    assert internal not in failed.text

    assert len(connections) == 1, "every request went over the one pooled connection: no 500 closed it"
    assert len(set(ids)) == 20, "each request has its own id"
    logged = [r for r in caplog.records if ids[0] in r.getMessage()]
    assert any(r.exc_info and isinstance(r.exc_info[1], OverflowError) for r in logged), "the details are logged"


async def test_every_response_carries_a_request_id_and_a_sane_one_sent_is_kept(gateway: Served) -> None:
    async with httpx.AsyncClient(base_url=gateway.url, headers=gateway.headers) as client:
        minted = await client.get("/api/v1/workspace")
        assert minted.status_code == 200
        assert len(minted.headers["x-request-id"]) >= 16
        kept = await client.get("/api/v1/nowhere", headers={"X-Request-ID": "trace-42.a:b"})
        _problem(kept, 404, "not_found")
        assert kept.headers["x-request-id"] == "trace-42.a:b"
        for insane in (b"no spaces please", b"x" * 200, "caf\u00e9".encode("latin-1"), b"a\x7fb"):
            resp = await client.get("/healthz", headers={b"X-Request-ID": insane})
            assert resp.headers["x-request-id"].encode() != insane
            assert resp.headers["x-request-id"].isalnum()


async def test_a_service_that_is_not_there_is_a_503_with_a_request_id(gateway: Served) -> None:
    async with httpx.AsyncClient(base_url=gateway.url, headers=gateway.headers) as client:
        resp = await client.get("/api/v1/workflows")  # no workflow engine runs in this test
        body = _problem(resp, 503, "service_unavailable")
        assert body["request_id"] == resp.headers["x-request-id"]
        assert (await client.get("/healthz")).status_code == 200


class BrokenOrchestrator:
    """A stand-in orchestrator whose RegisterAgent handler fails the way a bug would, so that the command goes
    through the real dead-letter path."""

    def __init__(self, infra: Infra, env_name: str) -> None:
        settings = ServiceSettings(
            service_name="orchestrator",
            platform_env=env_name,
            nats_url=infra.nats_url,
            mongodb_url=infra.mongodb_url,
            shutdown_grace_s=0,
        )
        self.runtime = Runtime(settings, event_store=True)
        self.router = CommandRouter()

        @self.router.register(RegisterAgent)
        async def overflow(command: RegisterAgent, ctx: CommandContext) -> dict[str, str]:
            raise OverflowError(SECRET)

    async def __aenter__(self) -> "BrokenOrchestrator":
        await self.runtime.open()
        policy = ConsumerPolicy(max_deliver=2, base_delay_s=0.05)
        serve_commands(self.runtime.bus, "orchestrator", self.router, self.runtime.store, policy)
        await self.runtime.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.runtime.stop()


async def test_a_command_that_fails_inside_a_service_is_a_500_naming_its_ids_and_nothing_internal(
    infra: Infra, env_name: str
) -> None:
    async with (
        BrokenOrchestrator(infra, env_name),
        running_platform(infra, env_name, orchestrator=False, engine=False, behaviour=None) as platform,
    ):
        headers = platform.auth(await platform.new_workspace())
        resp = await platform.client.post("/api/v1/agents", json={"name": "A", "role": "r"}, headers=headers)
        body = _problem(resp, 500, "internal_error")
        assert body["command_id"] in body["detail"], "the id under which the service logged the failure"
        assert body["request_id"] == resp.headers["x-request-id"]
        for internal in (SECRET, "OverflowError", "Traceback"):
            assert internal not in resp.text
        status = await platform.client.get(f"/api/v1/commands/{body['command_id']}", headers=headers)
        assert (status.json()["status"], status.json()["error_code"]) == ("rejected", "internal_error")
        assert SECRET not in status.text


# Transport limits ----------------------------------------------------------------------------------------------


async def test_urllib_sees_413_for_a_body_over_the_limit(gateway: Served) -> None:
    for size in (4 * MAX_BODY, 2 * MAX_BODY):
        request = urllib.request.Request(
            f"{gateway.url}/api/v1/agents",
            data=b"x" * size,
            method="POST",
            headers={**gateway.headers, "Content-Type": "application/json"},
        )
        status, headers, body = await asyncio.to_thread(_urlopen, request)
        assert (status, body["code"]) == (413, "body_too_large")
        assert headers["connection"] == "close"
        assert headers["content-type"].startswith("application/problem+json")


async def test_a_streamed_body_over_the_limit_gets_413_on_a_raw_socket(gateway: Served) -> None:
    chunk = b"x" * 65536
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(2 * MAX_BODY // len(chunk)))
    request = (
        b"POST /api/v1/agents HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n" + chunks + b"0\r\n\r\n"
    )
    received, closed = await asyncio.to_thread(_raw, gateway.address, request)
    status, headers, body = _status_of(received)
    assert (status, body["code"], headers["connection"]) == (413, "body_too_large", "close")
    assert closed


async def test_a_body_that_never_finishes_gets_408_and_the_connection_closes(gateway: Served) -> None:
    request = (
        b"POST /api/v1/agents HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n"
        b"Authorization: " + gateway.headers["Authorization"].encode() + b'\r\nContent-Length: 100\r\n\r\n{"na'
    )
    received, closed = await asyncio.to_thread(_raw, gateway.address, request)
    status, headers, body = _status_of(received)
    assert (status, body["code"], headers["connection"]) == (408, "request_timeout", "close")
    assert headers["x-request-id"]
    assert closed, "the connection is not kept"


async def test_a_head_that_never_finishes_gets_408(gateway: Served) -> None:
    received, closed = await asyncio.to_thread(_raw, gateway.address, b"GET /healthz HTTP/1.1\r\nHost: gw\r\n")
    status, _, body = _status_of(received)
    assert (status, body["code"]) == (408, "request_timeout")
    assert closed


@pytest.mark.parametrize(
    "headers",
    [
        {"X-Big": "a" * (8 * 1_048_576)},  # an 8 MiB header field
        {f"X-H{i}": "v" for i in range(16_000)},  # 16,000 fields (far over the size limit)
        {f"X{i}": "" for i in range(150)},  # 150 small fields (under the size limit, over the count)
    ],
    ids=["8MiB-field", "16000-fields", "150-small-fields"],
)
async def test_oversized_request_heads_get_431_that_urllib_can_read(gateway: Served, headers: dict[str, str]) -> None:
    request = urllib.request.Request(f"{gateway.url}/api/v1/workspace", headers=headers)
    status, got, body = await asyncio.to_thread(_urlopen, request)
    assert (status, body["code"]) == (431, "headers_too_large")
    assert got["connection"] == "close"
    assert got["x-request-id"] == body["request_id"]
    async with httpx.AsyncClient(base_url=gateway.url) as client:
        assert (await client.get("/healthz")).status_code == 200, "the server carries on"


async def test_a_request_that_is_not_http_gets_a_400_problem(gateway: Served) -> None:
    received, closed = await asyncio.to_thread(_raw, gateway.address, b"GARBAGE\x00 / HTTP/9\r\n\r\n")
    status, _, body = _status_of(received)
    assert (status, body["code"]) == (400, "bad_request")
    assert closed
