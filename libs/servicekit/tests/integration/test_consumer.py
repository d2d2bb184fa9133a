"""The continuous pull consumer against the real NATS JetStream server."""

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import nats
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import RetentionPolicy, StreamConfig
from opentelemetry import trace

from conftest import Infra
from servicekit.consumer import PullConsumer, consumer_config
from servicekit.testing import eventually


@pytest.fixture
async def nc(infra: Infra) -> AsyncIterator[Client]:
    client = await nats.connect(infra.nats_url)
    yield client
    await client.close()


@pytest.fixture
async def stream(nc: Client, env_name: str) -> AsyncIterator[str]:
    name = f"{env_name}_CONSUMER"
    js = nc.jetstream()
    await js.add_stream(StreamConfig(name=name, subjects=[f"{env_name}.work.>"], retention=RetentionPolicy.WORK_QUEUE))
    yield name
    await js.delete_stream(name)


def consumer(
    nc: Client,
    stream: str,
    handler: Callable[[Msg], Awaitable[None]],
    *,
    workers: int = 4,
    buffer: int = 8,
    ack_wait_s: float = 30.0,
    expires_s: float = 5.0,
) -> PullConsumer:
    prefix = stream.removesuffix("_CONSUMER")
    return PullConsumer(
        nc,
        nc.jetstream(),
        stream=stream,
        config=consumer_config(
            f"{prefix}_workers", f"{prefix}.work.>", ack_wait_s=ack_wait_s, max_deliver=3, max_ack_pending=1000
        ),
        handler=handler,
        workers=workers,
        buffer=buffer,
        tracer=trace.get_tracer(__name__),
        expires_s=expires_s,
    )


async def publish(js: JetStreamContext, stream: str, count: int) -> list[str]:
    prefix = stream.removesuffix("_CONSUMER")
    bodies = [f"m{i}" for i in range(count)]
    for body in bodies:
        await js.publish(f"{prefix}.work.x", body.encode(), stream=stream)
    return bodies


async def test_replicas_sharing_a_durable_handle_each_message_once(nc: Client, stream: str) -> None:
    handled: dict[str, list[str]] = {"a": [], "b": []}

    def recorder(name: str) -> Callable[[Msg], Awaitable[None]]:
        async def handle(msg: Msg) -> None:
            handled[name].append(msg.data.decode())
            await asyncio.sleep(0.001)
            await msg.ack()

        return handle

    replicas = [consumer(nc, stream, recorder("a")), consumer(nc, stream, recorder("b"))]
    for replica in replicas:
        await replica.start()
    try:
        sent = await publish(nc.jetstream(), stream, 200)
        await eventually(lambda: _true(len(handled["a"]) + len(handled["b"]) >= 200))
        await asyncio.sleep(0.2)  # anything handled twice would show up by now
    finally:
        for replica in replicas:
            await replica.stop()
    assert sorted(handled["a"] + handled["b"]) == sorted(sent)
    assert handled["a"], "the server handed work to both replicas"
    assert handled["b"], "the server handed work to both replicas"


async def test_one_worker_handles_messages_one_at_a_time_in_delivery_order(nc: Client, stream: str) -> None:
    handled: list[str] = []
    busy = 0
    most_busy = 0

    async def handle(msg: Msg) -> None:
        nonlocal busy, most_busy
        busy += 1
        most_busy = max(most_busy, busy)
        await asyncio.sleep(0.002)
        handled.append(msg.data.decode())
        busy -= 1
        await msg.ack()

    single = consumer(nc, stream, handle, workers=1)
    await single.start()
    try:
        sent = await publish(nc.jetstream(), stream, 50)
        await eventually(lambda: _true(len(handled) == 50))
    finally:
        await single.stop()
    assert handled == sent
    assert most_busy == 1


def gated(release: asyncio.Event, handled: list[str]) -> Callable[[Msg], Awaitable[None]]:
    """A handler that waits for ``release``, then records and acks."""

    async def handle(msg: Msg) -> None:
        await release.wait()
        handled.append(msg.data.decode())
        await msg.ack()

    return handle


async def test_a_consumer_holds_no_more_than_its_workers_and_buffer(nc: Client, stream: str) -> None:
    release = asyncio.Event()
    handled: list[str] = []
    handle = gated(release, handled)

    small = consumer(nc, stream, handle, workers=2, buffer=3)
    await small.start()
    try:
        await publish(nc.jetstream(), stream, 20)
        await eventually(lambda: _true(small.held == 5))
        await asyncio.sleep(0.3)  # time enough for more to arrive, were they asked for
        info = await nc.jetstream().consumer_info(stream, small.durable)
        assert (small.held, small.asked, info.num_ack_pending) == (5, 0, 5)
        release.set()
        await eventually(lambda: _true(len(handled) == 20))
    finally:
        release.set()
        await small.stop()


async def test_requests_filled_in_turn_and_expired_part_filled_never_make_it_hold_too_much(
    nc: Client, stream: str
) -> None:
    release = asyncio.Event()
    handled: list[str] = []
    handle = gated(release, handled)

    small = consumer(nc, stream, handle, workers=1, buffer=3, expires_s=0.3)
    await small.start()
    js = nc.jetstream()
    try:
        for _ in range(3):  # several requests open at once, filled in turn, then expiring part filled
            await publish(js, stream, 2)
            await eventually(lambda: _true(small.held == 2))
            release.set()
            await eventually(lambda: _true(small.held == 0))
            release.clear()
            await asyncio.sleep(0.5)
        await publish(js, stream, 12)
        await eventually(lambda: _true(small.held == 4))
        await asyncio.sleep(0.8)  # more would have come by now, were more asked for
        info = await js.consumer_info(stream, small.durable)
        assert (small.held, info.num_ack_pending) == (4, 4)
        release.set()
        await eventually(lambda: _true(len(handled) == 18))
    finally:
        release.set()
        await small.stop()


async def test_an_idle_consumer_keeps_asking_as_its_requests_expire(nc: Client, stream: str) -> None:
    handled: list[str] = []

    async def handle(msg: Msg) -> None:
        handled.append(msg.data.decode())
        await msg.ack()

    idle = consumer(nc, stream, handle, expires_s=0.2)
    await idle.start()
    try:
        await asyncio.sleep(1.0)  # several requests expire meanwhile
        assert idle.asked <= 12  # the expired ones were forgotten, not piled up
        await publish(nc.jetstream(), stream, 1)
        await eventually(lambda: _true(handled == ["m0"]), timeout_s=5)
    finally:
        await idle.stop()


async def test_stopping_gives_back_buffered_messages_to_the_other_replicas_at_once(nc: Client, stream: str) -> None:
    release = asyncio.Event()
    first: list[str] = []
    second: list[str] = []

    async def slow(msg: Msg) -> None:
        await release.wait()
        first.append(msg.data.decode())
        await msg.ack()

    async def fast(msg: Msg) -> None:
        second.append(msg.data.decode())
        await msg.ack()

    stopping = consumer(nc, stream, slow, workers=1, buffer=5, ack_wait_s=30)
    await stopping.start()
    await publish(nc.jetstream(), stream, 6)
    await eventually(lambda: _true(stopping.held == 6))
    stop = asyncio.create_task(stopping.stop())
    await asyncio.sleep(0.1)
    assert not stop.done()  # it waits for the message in hand
    release.set()
    await stop
    assert first == ["m0"]
    other = consumer(nc, stream, fast, ack_wait_s=30)
    await other.start()
    try:
        # Given back with a nak, not left to the 30 s ack wait.
        await eventually(lambda: _true(sorted(second) == ["m1", "m2", "m3", "m4", "m5"]), timeout_s=5)
    finally:
        await other.stop()


async def test_a_message_still_in_hand_after_the_grace_period_is_given_back(nc: Client, stream: str) -> None:
    again: list[str] = []

    async def never_done(msg: Msg) -> None:
        await asyncio.sleep(3600)

    async def done(msg: Msg) -> None:
        again.append(msg.data.decode())
        await msg.ack()

    stuck = consumer(nc, stream, never_done, workers=1, ack_wait_s=30)
    await stuck.start()
    await publish(nc.jetstream(), stream, 1)
    await eventually(lambda: _true(stuck.held == 1))
    await asyncio.wait_for(stuck.stop(grace_s=0.2), 5)
    other = consumer(nc, stream, done, ack_wait_s=30)
    await other.start()
    try:
        await eventually(lambda: _true(again == ["m0"]), timeout_s=5)  # not after the 30 s ack wait
    finally:
        await other.stop()


async def _true(condition: bool) -> bool:
    return condition
