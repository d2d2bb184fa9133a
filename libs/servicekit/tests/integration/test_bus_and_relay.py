"""Commands, relay and dead letters against the real NATS JetStream and MongoDB-compatible server."""

import asyncio
import random
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

import pytest
from nats.js.errors import NotFoundError
from pymongo.errors import DuplicateKeyError

from conftest import Infra
from contracts import (
    REGISTRY,
    Actor,
    Command,
    CommandOutcome,
    Envelope,
    ErrorCode,
    Event,
    EventRecord,
    OutcomeStatus,
    new_id,
)
from contracts.errors import DomainError
from servicekit.bus import ConsumerPolicy, ensure_streams
from servicekit.commands import CommandContext, CommandRouter, publish_command, send_and_wait, serve_commands
from servicekit.eventstore import Commit, EventStore, Metadata, StreamRef, load_state, utcnow
from servicekit.projections import StreamProjection, serve_projection
from servicekit.relay import Relay
from servicekit.runtime import Runtime
from servicekit.settings import ServiceSettings
from servicekit.testing import eventually

SERVICE = "kit"
META = Metadata(correlation_id="c", actor=Actor(kind="system", id="t"))


@REGISTRY.register
class Bump(Command):
    service: ClassVar[str] = SERVICE
    counter_id: str
    by: int


@REGISTRY.register
class Bumped(Event):
    aggregate: ClassVar[str] = "bumpcounter"
    by: int


def total(state: int, event: Event) -> int:
    assert isinstance(event, Bumped)
    return state + event.by


class RecordingProjection(StreamProjection):
    """Keeps positions in memory and records every event it applies, to count deliveries."""

    aggregate = "bumpcounter"
    name = "recording"

    def __init__(self) -> None:
        self.applied: list[str] = []
        self.positions: dict[str, int] = {}

    async def position(self, record: EventRecord) -> int:
        return self.positions.get(record.stream_id, 0)

    async def apply(self, record: EventRecord) -> bool:
        if self.positions.get(record.stream_id, 0) != record.version - 1:
            return False
        self.applied.append(record.event_id)
        self.positions[record.stream_id] = record.version
        return True


@pytest.fixture
def settings(infra: Infra, env_name: str) -> ServiceSettings:
    return ServiceSettings(
        service_name=SERVICE,
        platform_env=env_name,
        nats_url=infra.nats_url,
        mongodb_url=infra.mongodb_url,
        command_max_deliver=3,
        relay_poll_interval_s=0.2,
    )


@pytest.fixture
async def runtime(settings: ServiceSettings) -> AsyncIterator[Runtime]:
    rt = Runtime(settings, event_store=True)
    await rt.open()
    yield rt
    await rt.stop()


def envelope(command: Command, workspace_id: str = "ws1") -> Envelope:
    return Envelope(
        message_id=new_id(),
        type=command.type_name,
        workspace_id=workspace_id,
        correlation_id="corr",
        actor=Actor(kind="system", id="test"),
        occurred_at=datetime.now(UTC),
        payload=command.model_dump(mode="json"),
    )


async def send(runtime: Runtime, env: Envelope) -> bool:
    s = runtime.subjects
    return await runtime.bus.publish(
        s.command(SERVICE, env.workspace_id, env.type),
        env.model_dump_json().encode(),
        msg_id=env.message_id,
        stream=s.commands_stream,
    )


async def last_message(runtime: Runtime, stream: str, subject: str) -> Any:
    try:
        return await runtime.bus.js.get_last_msg(stream, subject)
    except NotFoundError:
        return None


async def outcome_of(runtime: Runtime, env: Envelope) -> CommandOutcome:
    msg = await eventually(
        lambda: last_message(
            runtime, runtime.subjects.outcomes_stream, runtime.subjects.outcome(env.workspace_id, env.message_id)
        )
    )
    return CommandOutcome.model_validate_json(msg.data)


async def test_a_redelivered_command_has_one_effect(runtime: Runtime) -> None:
    router = CommandRouter()
    calls: list[int] = []

    @router.register(Bump)
    async def bump(command: Bump, ctx: CommandContext) -> dict[str, str]:
        stream = StreamRef(ctx.workspace_id, "bumpcounter", command.counter_id)
        await ctx.execute(stream, 0, total, lambda _: [Bumped(by=command.by)])
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("crashed after the write, before the ack")
        return {"counter_id": command.counter_id}

    serve_commands(runtime.bus, SERVICE, router, runtime.store, ConsumerPolicy(max_deliver=3, base_delay_s=0.05))
    await runtime.start()

    env = envelope(Bump(counter_id="c1", by=5))
    assert await send(runtime, env) is True
    assert await send(runtime, env) is False, "a resubmit with the same id is de-duplicated by the broker"

    outcome = await outcome_of(runtime, env)
    assert outcome.status is OutcomeStatus.ACCEPTED
    assert outcome.resource_ids == {"counter_id": "c1"}
    assert len(calls) == 2
    loaded = await load_state(runtime.store, StreamRef("ws1", "bumpcounter", "c1"), 0, total)
    assert (loaded.state, loaded.version) == (5, 1)


async def test_poison_and_hopeless_messages_end_in_the_dead_letter_subject(runtime: Runtime) -> None:
    router = CommandRouter()
    attempts: list[str] = []

    @router.register(Bump)
    async def always_fails(command: Bump, ctx: CommandContext) -> dict[str, str]:
        attempts.append(ctx.command_id)
        raise RuntimeError("downstream is broken")

    serve_commands(runtime.bus, SERVICE, router, runtime.store, ConsumerPolicy(max_deliver=3, base_delay_s=0.05))
    await runtime.start()
    s = runtime.subjects

    poison_subject = s.command(SERVICE, "ws1", "Bump")
    await runtime.bus.publish(poison_subject, b"{not json", msg_id="poison-1", stream=s.commands_stream)
    dead = await eventually(lambda: last_message(runtime, s.dead_letter_stream, s.dead_letter(poison_subject)))
    assert dead.data == b"{not json"
    assert "malformed command envelope" in dead.headers["X-Failure-Reason"]
    assert dead.headers["X-Original-Subject"] == poison_subject
    assert dead.headers["X-Original-Msg-Id"] == "poison-1"
    poison = await eventually(lambda: last_message(runtime, s.outcomes_stream, s.outcome("ws1", "poison-1")))
    told_poison = CommandOutcome.model_validate_json(poison.data)
    assert (told_poison.status, told_poison.command_type) == (OutcomeStatus.REJECTED, "Bump"), "answered from headers"

    hopeless = envelope(Bump(counter_id="c2", by=1), workspace_id="ws2")
    await send(runtime, hopeless)
    hopeless_subject = s.command(SERVICE, "ws2", "Bump")
    dead = await eventually(lambda: last_message(runtime, s.dead_letter_stream, s.dead_letter(hopeless_subject)))
    assert Envelope.model_validate_json(dead.data) == hopeless
    assert dead.headers["X-Deliveries"] == "3"
    assert attempts == [hopeless.message_id] * 3
    told = await outcome_of(runtime, hopeless)
    assert (told.status, told.error_code) == (OutcomeStatus.REJECTED, ErrorCode.INTERNAL_ERROR), "never left pending"

    unknown = Envelope.model_validate({**envelope(Bump(counter_id="c3", by=1)).model_dump(), "type": "Teleport"})
    await runtime.bus.publish(
        s.command(SERVICE, "ws1", "Teleport"), unknown.model_dump_json().encode(), msg_id="u1", stream=s.commands_stream
    )
    assert (await outcome_of(runtime, unknown)).error_code is ErrorCode.UNKNOWN_COMMAND


async def test_a_command_that_fails_inside_is_rejected_in_general_terms_and_logged_under_its_id(
    runtime: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    router = CommandRouter()

    @router.register(Bump)
    async def overflows(command: Bump, ctx: CommandContext) -> dict[str, str]:
        raise OverflowError("MongoDB can only handle up to 8-byte ints")

    serve_commands(runtime.bus, SERVICE, router, runtime.store, ConsumerPolicy(max_deliver=2, base_delay_s=0.05))
    await runtime.start()
    failing = envelope(Bump(counter_id="c4", by=1))
    with caplog.at_level("ERROR", logger="servicekit"):
        await send(runtime, failing)
        told = await outcome_of(runtime, failing)

    assert (told.status, told.error_code) == (OutcomeStatus.REJECTED, ErrorCode.INTERNAL_ERROR)
    message = told.error_message or ""
    assert failing.message_id in message, "the id that finds the details in the logs"
    for internal in ("OverflowError", "8-byte", "Traceback"):
        assert internal not in message
    logged = [r for r in caplog.records if failing.message_id in r.getMessage()]
    assert any("8-byte ints" in r.getMessage() for r in logged), "the details are logged under the command id"


async def test_a_dead_letter_whose_sender_could_not_be_told_is_delivered_again_until_it_is(
    runtime: Runtime,
) -> None:
    serve_commands(runtime.bus, SERVICE, CommandRouter(), runtime.store, ConsumerPolicy(max_deliver=2, max_delay_s=0.2))
    s = runtime.subjects
    await runtime.bus.js.delete_stream(s.outcomes_stream)  # nowhere to tell the sender: the publish fails
    await runtime.start()
    subject = s.command(SERVICE, "ws1", "Bump")
    await runtime.bus.publish(subject, b"{not json", msg_id="poison-told", stream=s.commands_stream)
    await eventually(lambda: last_message(runtime, s.dead_letter_stream, s.dead_letter(subject)))

    await ensure_streams(runtime.bus.js, s)
    told = await eventually(lambda: last_message(runtime, s.outcomes_stream, s.outcome("ws1", "poison-told")))
    assert CommandOutcome.model_validate_json(told.data).status is OutcomeStatus.REJECTED


async def test_relay_publishes_what_a_crash_left_unpublished_exactly_once(runtime: Runtime) -> None:
    # Another process (its own writer) published this commit, and its checkpoint moved past it.
    crashed = EventStore(runtime.db, writer="crashed")
    done = await crashed.append(StreamRef("ws1", "bumpcounter", "done"), 0, [Bumped(by=5)], META)
    await Relay(crashed, runtime.bus)._publish(done)
    await asyncio.sleep(0.01)
    checkpoint = utcnow()
    # Then it wrote these and was killed before its relay published them...
    for i in range(3):
        await crashed.append(StreamRef("ws1", "bumpcounter", f"k{i}"), 0, [Bumped(by=i), Bumped(by=1)], META)
    # ...and this one, which it published but had not yet counted in its checkpoint.
    half_done = await crashed.append(StreamRef("ws1", "bumpcounter", "half"), 0, [Bumped(by=9)], META)
    await Relay(crashed, runtime.bus)._publish(half_done)
    gone = utcnow() - timedelta(hours=1)
    await runtime.db["relay_writers"].insert_one({"_id": "crashed", "done_before": checkpoint, "alive_at": gone})

    projection = RecordingProjection()
    serve_projection(runtime.bus, SERVICE, projection, runtime.store, runtime.policy)
    await runtime.start()  # starts consumers and a fresh relay, which takes over the dead writer's work

    await eventually(lambda: _gone(runtime, "crashed"))
    all_ids = {r.event_id for r in await runtime.store.read_workspace("ws1")}
    await eventually(lambda: _equal(len(projection.applied), len(all_ids)))
    info = await runtime.bus.js.stream_info(runtime.subjects.events_stream)
    assert info.state.messages == len(all_ids) == 8
    assert sorted(projection.applied) == sorted(all_ids), "every event delivered to the projection exactly once"


async def test_the_work_of_a_writer_that_is_alive_is_left_to_it(runtime: Runtime) -> None:
    busy = EventStore(runtime.db, writer="busy")
    await runtime.db["relay_writers"].insert_one(
        {"_id": "busy", "done_before": utcnow() - timedelta(hours=1), "alive_at": utcnow()}
    )
    await busy.append(StreamRef("ws1", "bumpcounter", "theirs"), 0, [Bumped(by=1)], META)
    relay = Relay(runtime.store, runtime.bus)
    assert await relay.sweep() == 0
    info = await runtime.bus.js.stream_info(runtime.subjects.events_stream)
    assert info.state.messages == 0
    assert not await _gone(runtime, "busy")


async def test_a_relay_keeps_its_writers_checkpoint_and_drops_it_on_a_clean_stop(runtime: Runtime) -> None:
    store = runtime.store
    await runtime.start()
    commit = await store.append(StreamRef("ws1", "bumpcounter", "mine"), 0, [Bumped(by=1)], META)

    async def past_it() -> bool:
        doc = await runtime.db["relay_writers"].find_one({"_id": store.writer})
        return doc is not None and doc["done_before"] > commit.recorded_at

    await eventually(past_it)
    assert runtime.relay is not None
    await runtime.relay.stop()
    assert await _gone(runtime, store.writer), "nothing was left to take over"


async def _gone(runtime: Runtime, writer: str) -> bool:
    return await runtime.db["relay_writers"].find_one({"_id": writer}) is None


async def test_commits_from_before_writers_were_recorded_are_published_once_after_a_one_off_migration(
    runtime: Runtime,
) -> None:
    """They were stored ``published: false`` (with an index of their own) until the relay's sweep marked them; that
    path is gone: at start-up they become a dead writer's work, which the ordinary take-over publishes."""
    old = EventStore(runtime.db, writer="unused")
    commits = runtime.db["commits"]
    await commits.create_index(
        [("published", 1), ("recorded_at", 1)], partialFilterExpression={"published": False}, name="legacy_unpublished"
    )
    left = [await old.append(StreamRef("ws1", "bumpcounter", f"old{i}"), 0, [Bumped(by=i)], META) for i in range(3)]
    await commits.update_many({}, {"$unset": {"writer": ""}, "$set": {"published": False}})
    await commits.update_one({"_id": left[0].commit_id}, {"$set": {"published": True}})  # published and marked

    assert runtime.relay is not None
    await runtime.relay.register()  # as at start-up
    await runtime.start()

    async def published() -> bool:
        info = await runtime.bus.js.stream_info(runtime.subjects.events_stream)
        return info.state.messages == 2 and await _gone(runtime, "legacy-unpublished")

    await eventually(published)
    assert "legacy_unpublished" not in {index["name"] async for index in await commits.list_indexes()}
    assert await commits.count_documents({"published": False}) == 0
    await runtime.relay.register()  # a later start-up finds nothing to do
    assert await runtime.db["relay_writers"].find_one({"_id": "legacy-unpublished"}) is None


async def test_projection_catches_up_from_the_store_when_the_broker_lost_an_event(runtime: Runtime) -> None:
    store = runtime.store
    stream = StreamRef("ws1", "bumpcounter", "gap")
    first = await store.append(stream, 0, [Bumped(by=1)], META)
    second = await store.append(stream, 1, [Bumped(by=2)], META)
    projection = RecordingProjection()
    # Only the second event reaches the projection: it must fetch the first from the store.
    assert await projection.handle(second.events[0], store) == 2
    assert projection.applied == [first.events[0].event_id, second.events[0].event_id]
    assert await projection.handle(first.events[0], store) == 0


async def test_a_commit_that_cannot_be_published_is_parked_without_blocking_the_rest(runtime: Runtime) -> None:
    crashed = EventStore(runtime.db, writer="crashed")
    good = await crashed.append(StreamRef("ws1", "bumpcounter", "fine"), 0, [Bumped(by=1)], META)
    gone = utcnow() - timedelta(hours=1)
    await runtime.db["relay_writers"].insert_one({"_id": "crashed", "done_before": gone, "alive_at": gone})
    # A corrupt commit whose id cannot be a subject, recorded before the good one.
    await runtime.db["commits"].insert_one(
        {
            "_id": "corrupt",
            "stream_id": "ws1/bumpcounter/bad id",
            "workspace_id": "ws1",
            "aggregate": "bumpcounter",
            "aggregate_id": "bad id",
            "first_version": 1,
            "last_version": 1,
            "events": [
                {
                    **good.events[0].model_dump(exclude={"stream_id", "aggregate", "aggregate_id", "workspace_id"}),
                    "event_id": "e-bad",
                }
            ],
            "command_id": None,
            "recorded_at": good.recorded_at - timedelta(seconds=1),
            "trace": {},
            "writer": "crashed",
        }
    )
    relay = Relay(runtime.store, runtime.bus)
    for _ in range(5):
        await relay.sweep()
    parked = await runtime.db["commits"].find_one({"_id": "corrupt"})
    assert parked is not None
    assert "BadSubject" in parked["parked"]
    assert await _gone(runtime, "crashed")
    info = await runtime.bus.js.stream_info(runtime.subjects.events_stream)
    assert info.state.messages == 1, "the good commit was published despite the corrupt one before it"


async def test_concurrent_deliveries_never_apply_an_event_twice(runtime: Runtime) -> None:
    store = runtime.store
    stream = StreamRef("ws1", "bumpcounter", "busy")
    records = []
    for version in range(10):
        commit = await store.append(stream, version, [Bumped(by=version)], META)
        records.extend(commit.events)
    projection = MongoCountingProjection(runtime.db["counting"])
    deliveries = records * 3
    random.Random(7).shuffle(deliveries)
    await asyncio.gather(*(projection.handle(r, store) for r in deliveries))
    row = await runtime.db["counting"].find_one({"_id": stream.stream_id})
    assert row is not None
    assert (row["version"], row["total"]) == (10, sum(range(10)))
    assert sorted(projection.applied) == sorted(r.event_id for r in records), "each event applied exactly once"


class MongoCountingProjection(StreamProjection):
    """Sums the counter in MongoDB with a compare-and-set write, recording which events it applied."""

    aggregate = "bumpcounter"
    name = "counting"

    def __init__(self, collection: Any) -> None:
        self.collection = collection
        self.applied: list[str] = []

    async def position(self, record: EventRecord) -> int:
        doc = await self.collection.find_one({"_id": record.stream_id})
        return 0 if doc is None else int(doc["version"])

    async def apply(self, record: EventRecord) -> bool:
        by = int(record.data["by"])
        if record.version == 1:
            try:
                await self.collection.insert_one({"_id": record.stream_id, "version": 1, "total": by})
            except DuplicateKeyError:
                return False
        else:
            result = await self.collection.update_one(
                {"_id": record.stream_id, "version": record.version - 1},
                {"$set": {"version": record.version}, "$inc": {"total": by}},
            )
            if result.modified_count != 1:
                return False
        self.applied.append(record.event_id)
        return True


async def _all_published(runtime: Runtime) -> bool:
    assert runtime.relay is not None
    return runtime.relay.backlog == 0


async def _equal(a: int, b: int) -> bool:
    return a == b


async def test_two_replicas_with_their_own_caches_never_decide_on_stale_state(runtime: Runtime) -> None:
    def build() -> CommandRouter:
        router = CommandRouter()

        @router.register(Bump)
        async def bump(command: Bump, ctx: CommandContext) -> dict[str, str]:
            def decide(total: int) -> list[Event]:
                if total + command.by > 3:
                    raise DomainError(f"{total} + {command.by} is over the limit")
                return [Bumped(by=command.by)]

            await ctx.execute(StreamRef(ctx.workspace_id, "bumpcounter", command.counter_id), 0, total, decide)
            return {}

        return router

    replica_a, replica_b = build(), build()
    first = await replica_a.handle(envelope(Bump(counter_id="shared", by=1)), runtime.store)
    second = await replica_b.handle(envelope(Bump(counter_id="shared", by=1)), runtime.store)
    assert first.status is second.status is OutcomeStatus.ACCEPTED
    # Replica A still remembers a total of 1, where it is 2: on its cache this would pass (1 + 2 <= 3).
    third = await replica_a.handle(envelope(Bump(counter_id="shared", by=2)), runtime.store)
    assert (third.status, third.error_code) == (OutcomeStatus.REJECTED, ErrorCode.CONFLICT)
    loaded = await load_state(runtime.store, StreamRef("ws1", "bumpcounter", "shared"), 0, total)
    assert (loaded.state, loaded.version) == (2, 2)


async def test_a_reactor_runs_on_each_commit_and_again_until_it_succeeds(runtime: Runtime) -> None:
    store = runtime.store
    seen: list[str] = []
    failures = {"flaky": 2}

    async def react(commit: Commit) -> None:
        seen.append(commit.stream.aggregate_id)
        if failures.get(commit.stream.aggregate_id, 0) > 0:
            failures[commit.stream.aggregate_id] -= 1
            raise RuntimeError("not yet")

    assert runtime.relay is not None
    runtime.relay.add_reactor(react)
    await runtime.start()
    await store.append(StreamRef("ws1", "bumpcounter", "steady"), 0, [Bumped(by=1)], META)
    await store.append(StreamRef("ws1", "bumpcounter", "flaky"), 0, [Bumped(by=2)], META)

    await eventually(lambda: _all_published(runtime))
    assert seen.count("steady") == 1, "a fresh commit is acted on at once, in the process that wrote it"
    assert seen.count("flaky") == 3, "a failed reaction leaves its commit in hand, for the next poll to retry"
    info = await runtime.bus.js.stream_info(runtime.subjects.events_stream)
    assert info.state.messages == 2, "the retries republished nothing the broker kept twice"
    assert runtime.relay.backlog == 0


async def test_reactors_see_a_streams_commits_in_order_and_other_streams_meanwhile(runtime: Runtime) -> None:
    store = runtime.store
    ordered = StreamRef("ws1", "bumpcounter", "ordered")
    # Written before the relay started, so it hands them to the reactor together.
    first = await store.append(ordered, 0, [Bumped(by=1)], META)
    second = await store.append(ordered, 1, [Bumped(by=2)], META)
    other = await store.append(StreamRef("ws1", "bumpcounter", "other"), 0, [Bumped(by=3)], META)
    acted: list[str] = []

    async def react(commit: Commit) -> None:
        if commit.commit_id == first.commit_id:
            await asyncio.sleep(0.3)  # a slow reaction must not let the stream's next commit overtake it
        acted.append(commit.commit_id)

    assert runtime.relay is not None
    runtime.relay.add_reactor(react)
    await runtime.start()
    await eventually(lambda: _all_published(runtime))
    assert acted.index(first.commit_id) < acted.index(second.commit_id)
    assert acted.index(other.commit_id) < acted.index(first.commit_id), "another stream is not held up"


async def test_a_reactor_that_can_never_act_on_a_commit_gives_up_on_it_visibly_and_no_commit_is_parked(
    runtime: Runtime,
) -> None:
    """A validation error inside a reactor used to count as the publishing's permanent failure: the commit was
    parked after five polls and nobody heard of it. Now the reactor's give_up is told, and the commit is done."""
    store = runtime.store
    tries: dict[str, int] = {}
    given_up: list[tuple[str, str]] = []
    away = {"waiting": 8}  # the database away for longer than the failures a reactor may have: never given up

    async def react(commit: Commit) -> None:
        name = commit.stream.aggregate_id
        tries[name] = tries.get(name, 0) + 1
        if name == "hopeless" and commit.first_version == 1:
            raise ValueError("this commit makes no sense to the reactor")
        if away.get(name, 0) > 0:
            away[name] -= 1
            raise ConnectionError("the database is away")

    async def give_up(commit: Commit, error: Exception) -> None:
        given_up.append((commit.stream.aggregate_id, repr(error)))

    assert runtime.relay is not None
    runtime.relay.add_reactor(react, give_up)
    await runtime.start()
    hopeless = await store.append(StreamRef("ws1", "bumpcounter", "hopeless"), 0, [Bumped(by=1)], META)
    after = await store.append(StreamRef("ws1", "bumpcounter", "hopeless"), 1, [Bumped(by=2)], META)
    await store.append(StreamRef("ws1", "bumpcounter", "waiting"), 0, [Bumped(by=3)], META)

    await eventually(lambda: _all_published(runtime))
    assert given_up == [("hopeless", "ValueError('this commit makes no sense to the reactor')")]
    assert tries["hopeless"] == 5 + 1, "five failures of the first commit, then the stream's next commit"
    assert tries["waiting"] == 9, "a reactor waiting for the database is retried until it is back, not given up"
    for commit in (hopeless, after):
        stored = await runtime.db["commits"].find_one({"_id": commit.commit_id})
        assert stored is not None
        assert "parked" not in stored
    info = await runtime.bus.js.stream_info(runtime.subjects.events_stream)
    assert info.state.messages == 3


async def test_an_agent_that_asks_for_its_commands_outcome_waits_for_its_handler_and_others_get_none(
    runtime: Runtime,
) -> None:
    router = CommandRouter()

    @router.register(Bump)
    async def bump(command: Bump, ctx: CommandContext) -> dict[str, str]:
        stream = StreamRef(ctx.workspace_id, "bumpcounter", command.counter_id)
        await ctx.execute(stream, 0, total, lambda _: [Bumped(by=command.by)])
        return {"counter_id": command.counter_id}

    serve_commands(runtime.bus, SERVICE, router, runtime.store, ConsumerPolicy(max_deliver=3, base_delay_s=0.05))
    await runtime.start()
    agent = Actor(kind="agent", id="agt_1")

    asked = envelope(Bump(counter_id="c9", by=2)).model_copy(update={"actor": agent})
    outcome = await send_and_wait(runtime.bus, SERVICE, asked, timeout_s=10)
    assert outcome is not None
    assert outcome.status is OutcomeStatus.ACCEPTED
    loaded = await load_state(runtime.store, StreamRef("ws1", "bumpcounter", "c9"), 0, total)
    assert loaded.state == 2  # its handler has run by the time the outcome comes
    again = await send_and_wait(runtime.bus, SERVICE, asked, timeout_s=10)  # a repeat: the outcome recorded
    assert again is not None
    assert (again.command_id, again.status) == (asked.message_id, OutcomeStatus.ACCEPTED)

    quiet = envelope(Bump(counter_id="c9", by=1)).model_copy(update={"actor": agent})
    assert await publish_command(runtime.bus, SERVICE, quiet)

    async def applied() -> bool:
        return (await load_state(runtime.store, StreamRef("ws1", "bumpcounter", "c9"), 0, total)).state == 3

    await eventually(applied)
    subject = runtime.subjects.outcome("ws1", quiet.message_id)
    assert await last_message(runtime, runtime.subjects.outcomes_stream, subject) is None  # nobody asked
