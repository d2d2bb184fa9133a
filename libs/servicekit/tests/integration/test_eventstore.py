"""The event store against the real MongoDB-compatible server."""

import asyncio
from typing import Any, ClassVar

import pytest
from pymongo import AsyncMongoClient, monitoring
from pymongo.asynchronous.database import AsyncDatabase

from conftest import Infra
from contracts import REGISTRY, Actor, Event
from servicekit.eventstore import (
    ConcurrencyError,
    DuplicateCommand,
    EventStore,
    Metadata,
    StateCache,
    StreamRef,
    decode,
    load_state,
)

Document = dict[str, Any]
META = Metadata(correlation_id="corr", actor=Actor(kind="system", id="test"))


@REGISTRY.register
class CounterIncremented(Event):
    aggregate: ClassVar[str] = "counter"
    by: int


def count(state: int, event: Event) -> int:
    assert isinstance(event, CounterIncremented)
    return state + event.by


@pytest.fixture
async def db(mongo: AsyncMongoClient[Document], env_name: str) -> AsyncDatabase[Document]:
    return mongo[f"{env_name}_store"]


@pytest.fixture
async def store(db: AsyncDatabase[Document]) -> EventStore:
    s = EventStore(db)
    await s.ensure_indexes()
    return s


async def test_append_and_replay_round_trip(store: EventStore) -> None:
    stream = StreamRef("ws1", "counter", "c1")
    first = await store.append(stream, 0, [CounterIncremented(by=1), CounterIncremented(by=2)], META, command_id="k1")
    await store.append(stream, 2, [CounterIncremented(by=4)], META, command_id="k2")

    records = await store.load(stream)
    assert [r.version for r in records] == [1, 2, 3]
    assert [decode(r) for r in records] == [
        CounterIncremented(by=1),
        CounterIncremented(by=2),
        CounterIncremented(by=4),
    ]
    assert records[0].event_id == first.events[0].event_id
    assert {r.workspace_id for r in records} == {"ws1"}
    loaded = await load_state(store, stream, 0, count)
    assert (loaded.state, loaded.version, loaded.commands) == (7, 3, frozenset({"k1", "k2"}))
    assert [r.version for r in await store.load(stream, after_version=2)] == [3]


async def test_a_state_recent_enough_is_taken_from_the_cache_and_an_older_one_is_read_on(store: EventStore) -> None:
    stream = StreamRef("ws1", "counter", "cached")
    cache = StateCache()
    await store.append(stream, 0, [CounterIncremented(by=1)], META, command_id="k1")
    assert (await load_state(store, stream, 0, count, cache)).version == 1
    await store.append(stream, 1, [CounterIncremented(by=10)], META, command_id="k2")

    held = await load_state(store, stream, 0, count, cache, at_least=1)
    assert (held.state, held.version) == (1, 1), "a cached state of the version asked for is not read again"
    newer = await load_state(store, stream, 0, count, cache, at_least=2)
    assert (newer.state, newer.version, newer.commands) == (11, 2, frozenset({"k1", "k2"}))
    assert (await load_state(store, stream, 0, count, StateCache(), at_least=1)).state == 11, "no cache: read"


async def test_concurrent_writers_exactly_one_wins(store: EventStore) -> None:
    stream = StreamRef("ws1", "counter", "race")
    await store.append(stream, 0, [CounterIncremented(by=1)], META)

    results = await asyncio.gather(
        *(store.append(stream, 1, [CounterIncremented(by=10 + i)], META) for i in range(8)),
        return_exceptions=True,
    )
    winners = [r for r in results if not isinstance(r, BaseException)]
    losers = [r for r in results if isinstance(r, BaseException)]
    assert len(winners) == 1
    assert all(isinstance(e, ConcurrencyError) for e in losers)
    assert [r.version for r in await store.load(stream)] == [1, 2]


async def test_a_command_applied_twice_writes_once(store: EventStore) -> None:
    stream = StreamRef("ws1", "counter", "idem")
    commit = await store.append(stream, 0, [CounterIncremented(by=1)], META, command_id="cmd-1")
    with pytest.raises(DuplicateCommand) as dup:
        await store.append(stream, 1, [CounterIncremented(by=1)], META, command_id="cmd-1")
    assert dup.value.commit.commit_id == commit.commit_id
    assert len(await store.load(stream)) == 1


async def test_workspaces_do_not_share_streams_or_reads(store: EventStore) -> None:
    await store.append(StreamRef("ws-a", "counter", "same"), 0, [CounterIncremented(by=1)], META)
    await store.append(StreamRef("ws-b", "counter", "same"), 0, [CounterIncremented(by=2)], META)
    a = await store.read_workspace("ws-a")
    b = await store.read_workspace("ws-b")
    assert [decode(r) for r in a] == [CounterIncremented(by=1)]
    assert [decode(r) for r in b] == [CounterIncremented(by=2)]


class InsertCounter(monitoring.CommandListener):
    def __init__(self) -> None:
        self.inserts = 0

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.command_name == "insert":
            self.inserts += 1

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


async def test_concurrent_appends_share_round_trips_and_each_gets_its_own_answer(infra: Infra, env_name: str) -> None:
    counter = InsertCounter()
    client: AsyncMongoClient[Document] = AsyncMongoClient(infra.mongodb_url, event_listeners=[counter])
    try:
        store = EventStore(client[f"{env_name}_group"])
        await store.ensure_indexes()
        taken = StreamRef("ws1", "counter", "taken")
        await store.append(taken, 0, [CounterIncremented(by=1)], META, command_id="first")
        counter.inserts = 0

        fresh = [
            store.append(StreamRef("ws1", "counter", f"g{i}"), 0, [CounterIncremented(by=i)], META) for i in range(30)
        ]
        conflict = store.append(taken, 0, [CounterIncremented(by=5)], META, command_id="second")
        again = store.append(taken, 0, [CounterIncremented(by=1)], META, command_id="first")
        results = await asyncio.gather(*fresh, conflict, again, return_exceptions=True)

        assert all(not isinstance(r, BaseException) for r in results[:30])
        assert isinstance(results[30], ConcurrencyError)
        assert isinstance(results[31], DuplicateCommand)
        assert counter.inserts < 32, "appends that arrive together are written together"
        for i in range(30):
            assert [decode(r) for r in await store.load(StreamRef("ws1", "counter", f"g{i}"))] == [
                CounterIncremented(by=i)
            ]
        assert len(await store.load(taken)) == 1
    finally:
        await client.close()
