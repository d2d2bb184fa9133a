"""The shared query wiring against the real NATS server: queries are answered concurrently, and every service
answers a ping."""

import asyncio
from collections.abc import AsyncIterator

import pytest
from nats.aio.client import Client

from conftest import Infra
from contracts import REGISTRY, Query, QueryReply
from servicekit.queries import QueryRouter, ping, serve_queries
from servicekit.runtime import Runtime
from servicekit.settings import ServiceSettings

SERVICE = "probe"


@REGISTRY.register
class HoldOn(Query):
    """Answered once a LetGo has been answered."""

    service = SERVICE


@REGISTRY.register
class LetGo(Query):
    service = SERVICE


@pytest.fixture
async def runtime(infra: Infra, env_name: str) -> AsyncIterator[Runtime]:
    settings = ServiceSettings(
        service_name=SERVICE, platform_env=env_name, nats_url=infra.nats_url, mongodb_url=infra.mongodb_url
    )
    runtime = Runtime(settings)
    await runtime.open()
    yield runtime
    await runtime.stop()


async def ask(nc: Client, runtime: Runtime, query: Query, timeout_s: float) -> QueryReply:
    subject = runtime.subjects.query(SERVICE, "ws_1", query.type_name)
    return QueryReply.model_validate_json((await nc.request(subject, b"{}", timeout=timeout_s)).data)


async def test_a_slow_query_does_not_hold_up_the_queries_after_it(runtime: Runtime) -> None:
    entered, released = asyncio.Event(), asyncio.Event()
    router = QueryRouter()

    @router.register(HoldOn)
    async def hold_on(query: HoldOn, workspace_id: str) -> str:
        entered.set()
        await asyncio.wait_for(released.wait(), 10)
        return "held"

    @router.register(LetGo)
    async def let_go(query: LetGo, workspace_id: str) -> str:
        released.set()
        return "released"

    serve_queries(runtime.bus, SERVICE, router, workers=4)
    await runtime.start()
    nc = runtime.bus.nc
    slow = asyncio.create_task(ask(nc, runtime, HoldOn(), 15))
    await asyncio.wait_for(entered.wait(), 10)

    assert await ping(runtime.bus, SERVICE, 5), "a ping is answered while a query is in progress"
    fast = await ask(nc, runtime, LetGo(), 5)  # answered one at a time, it would wait for HoldOn, which waits for it
    assert (fast.ok, fast.result) == (True, "released")
    held = await slow
    assert (held.ok, held.result) == (True, "held")


async def test_every_router_answers_a_ping_and_a_missing_service_does_not(runtime: Runtime) -> None:
    serve_queries(runtime.bus, SERVICE, QueryRouter(), workers=1)
    await runtime.start()
    assert await ping(runtime.bus, SERVICE, 5)
    assert not await ping(runtime.bus, "absent", 1)
