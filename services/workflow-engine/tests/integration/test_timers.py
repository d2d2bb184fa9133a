"""Durable timers against the real MongoDB-compatible server."""

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from conftest import Infra
from contracts import Actor, Envelope
from contracts.workflows import ExecutionPaused, FireTimer
from servicekit.eventstore import Metadata, StreamRef
from servicekit.runtime import Runtime
from servicekit.settings import ServiceSettings
from workflow_engine import timers as timers_module
from workflow_engine.projections import ExecutionsProjection
from workflow_engine.timers import SERVICE, CarriedTimer, CarriedTimers, TimerDocuments, TimerLoop, carry, timer_id

Document = dict[str, Any]
NOW = datetime(2026, 1, 1, tzinfo=UTC)
META = Metadata(correlation_id="c", actor=Actor(kind="system", id="test"))


async def test_an_end_drops_only_the_timers_scheduled_before_it(
    mongo: AsyncMongoClient[Document], env_name: str
) -> None:
    timers = TimerDocuments(mongo[f"{env_name}_timers"]["timers"])
    await timers.ensure_indexes()

    async def schedule(attempt: int, purpose: Any, version: int) -> bool:
        return await timers.schedule(
            workspace_id="ws",
            execution_id="e1",
            step_id="a",
            attempt=attempt,
            purpose=purpose,
            due_at=NOW,
            version=version,
        )

    assert await schedule(1, "timeout", 3)
    assert not await schedule(1, "timeout", 3), "a timer is also a once-only claim"
    assert await schedule(2, "retry", 7)
    await timers.cancel_before("ws", "e1", 5)  # an ExecutionFailed at version 5, handled after the retry's timer
    assert [t["attempt"] for t in await timers.due(NOW)] == [2]


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
async def runtime(infra: Infra, env_name: str) -> AsyncIterator[Runtime]:
    settings = ServiceSettings(
        service_name=SERVICE, platform_env=env_name, nats_url=infra.nats_url, mongodb_url=infra.mongodb_url
    )
    rt = Runtime(settings, event_store=True)
    await rt.open()  # not started: the FireTimer commands stay in the stream, to be counted
    yield rt
    await rt.stop()


async def loop_of(runtime: Runtime, clock: Clock) -> TimerLoop:
    timers = TimerDocuments(runtime.db["timers"])
    carried = CarriedTimers(runtime.store)
    executions = ExecutionsProjection(runtime.db["executions"])
    await timers.ensure_indexes()
    await carried.ensure_indexes()
    return TimerLoop(timers, carried, runtime.bus, clock, 1.0, executions)


async def carrying(runtime: Runtime, execution_id: str, *timers: tuple[str, datetime], after: int = 0) -> None:
    """Append a commit to ``execution_id`` (after version ``after``) carrying a timeout per (step, due time)."""
    carried = [
        CarriedTimer(timer_id("ws", execution_id, step, 1, "timeout"), at, step, 1, "timeout") for step, at in timers
    ]
    event = ExecutionPaused(at=NOW.isoformat())  # any event: the carried timers are what is looked at
    await runtime.store.append(StreamRef("ws", "execution", execution_id), after, [event], META, carried=carry(carried))


async def fired(runtime: Runtime) -> list[str]:
    """The ids of the FireTimer commands sent (the commands stream keeps them: nothing consumes it here)."""
    js = runtime.bus.js
    info = await js.stream_info(runtime.subjects.commands_stream)
    ids = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        msg = await js.get_msg(runtime.subjects.commands_stream, seq)
        ids.append(FireTimer.model_validate(Envelope.model_validate_json(msg.data or b"").payload).step_id)
    return ids


async def test_a_timer_carried_by_a_commit_fires_once_when_due_and_not_again_after_a_restart(
    runtime: Runtime,
) -> None:
    clock = Clock(NOW)
    loop = await loop_of(runtime, clock)
    await carrying(runtime, "e1", ("a", NOW + timedelta(minutes=5)))

    assert await loop.fire_due() == 0
    clock.now = NOW + timedelta(minutes=5, seconds=1)
    assert await loop.fire_due() == 1
    assert await loop.fire_due() == 0
    restarted = await loop_of(runtime, clock)  # its watermark comes from the database
    assert await restarted.fire_due() == 0
    assert await fired(runtime) == ["a"]


async def test_the_timers_from_before_an_executions_end_are_passed_over(runtime: Runtime) -> None:
    clock = Clock(NOW + timedelta(hours=1))
    loop = await loop_of(runtime, clock)
    await carrying(runtime, "e1", ("a", NOW + timedelta(minutes=5)))
    await carrying(runtime, "e2", ("b", NOW + timedelta(minutes=5)))
    await carrying(runtime, "e3", ("c", NOW + timedelta(minutes=5)))
    await carrying(runtime, "e3", ("d", NOW + timedelta(minutes=6)), after=1)  # retried after its end at version 1
    summaries = runtime.db["executions"]
    await summaries.insert_one({"_id": "ws/execution/e1", "finished_at": NOW.isoformat(), "version": 1})
    await summaries.insert_one({"_id": "ws/execution/e2", "finished_at": None, "version": 1})
    await summaries.insert_one({"_id": "ws/execution/e3", "finished_at": NOW.isoformat(), "version": 1})

    assert await loop.fire_due() == 2
    assert sorted(await fired(runtime)) == ["b", "d"]


async def test_each_timer_of_a_commit_fires_at_its_own_time(runtime: Runtime) -> None:
    clock = Clock(NOW)
    loop = await loop_of(runtime, clock)
    await carrying(runtime, "e1", ("a", NOW + timedelta(minutes=1)), ("b", NOW + timedelta(minutes=3)))

    clock.now = NOW + timedelta(minutes=2)
    assert await loop.fire_due() == 1
    clock.now = NOW + timedelta(minutes=4)
    assert await loop.fire_due() == 1
    assert await fired(runtime) == ["a", "b"]


async def test_timers_due_at_the_same_instant_are_all_fired_page_after_page(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(timers_module, "CARRIED_PAGE", 3)
    clock = Clock(NOW + timedelta(hours=1))
    loop = await loop_of(runtime, clock)
    for i in range(7):
        await carrying(runtime, f"e{i}", (f"s{i}", NOW + timedelta(minutes=5)))

    assert await loop.fire_due() == 7
    assert sorted(await fired(runtime)) == [f"s{i}" for i in range(7)]


async def test_timers_stored_as_alarms_are_migrated_once_and_still_fire(runtime: Runtime) -> None:
    """Carried timers used to be stored as ``alarms`` beside the events (``alarm_at`` indexed, the watermark in
    ``alarm_clock``); the engine's start-up moves them to the commit's carried fields once."""
    commits, db = runtime.db["commits"], runtime.db
    await commits.create_index([("alarm_at", 1)], sparse=True, name="alarm_order")
    for step, minutes in (("old", 1), ("due", 10)):
        await carrying(runtime, f"e-{step}", (step, NOW + timedelta(minutes=minutes)))
    async for doc in commits.find({"carried": {"$exists": True}}):
        await commits.update_one(
            {"_id": doc["_id"]},
            {
                "$set": {"alarms": doc["carried"]["timers"], "alarm_at": doc["carried"]["next_timer_at"]},
                "$unset": {"carried": ""},
            },
        )
    await db["alarm_clock"].insert_one({"_id": "watermark", "upto": NOW + timedelta(minutes=5)})  # "old" fired

    clock = Clock(NOW + timedelta(minutes=11))
    loop = await loop_of(runtime, clock)  # ensure_indexes migrates

    assert await loop.fire_due() == 1
    assert await fired(runtime) == ["due"]
    assert await commits.count_documents({"alarm_at": {"$exists": True}}) == 0
    assert "alarm_order" not in {index["name"] async for index in await commits.list_indexes()}
    assert "alarm_clock" not in await db.list_collection_names()
    await loop_of(runtime, clock)  # a later start-up has nothing to migrate
