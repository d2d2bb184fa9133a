"""Append-only event store on MongoDB: the ``commits`` collection.

One command's events for one stream are one ``commits`` document, so they land all or nothing on a single
node without transactions. A unique index on ``(stream_id, first_version)`` turns a competing append into a
duplicate-key error (optimistic concurrency); a unique partial index on ``(stream_id, command_id)`` makes a
command's write idempotent.

Each commit names its ``writer``, the store instance (one per process) that appended it; the relay of that process
publishes it and keeps the writer's checkpoint (``servicekit.checkpoints``), so no commit is marked once published.

A commit may also carry what its service keeps with it beside the events (``carried``: the workflow engine's
carried timers), written in the same document, so that it costs no write of its own; the service reads it with its
own queries and index (``EventStore.collection``).
"""

import re
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Generic, Protocol, TypeVar

from pymongo import ASCENDING
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError, WriteError

from contracts import REGISTRY, Actor, Event, EventRecord, new_id
from servicekit.batching import InsertBatcher, ReadCoalescer

S = TypeVar("S")
Clock = Callable[[], datetime]
IdFactory = Callable[[], str]
Document = dict[str, Any]
ORDER = [("recorded_at", ASCENDING), ("stream_id", ASCENDING), ("first_version", ASCENDING)]


def utcnow() -> datetime:
    return datetime.now(UTC)


ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


@dataclass(frozen=True, slots=True)
class StreamRef:
    """Names one aggregate's stream; the workspace is part of its identity."""

    workspace_id: str
    aggregate: str
    aggregate_id: str

    def check(self) -> None:
        """Every part must be a subject-safe id; checked before anything is written."""
        for part in (self.workspace_id, self.aggregate, self.aggregate_id):
            if not ID.match(part):
                raise ValueError(f"invalid stream name part {part!r}")

    @property
    def stream_id(self) -> str:
        return f"{self.workspace_id}/{self.aggregate}/{self.aggregate_id}"


@dataclass(frozen=True, slots=True)
class Metadata:
    """Why events happened: the message that caused them and who sent it."""

    correlation_id: str
    actor: Actor
    causation_id: str | None = None


@dataclass(frozen=True, slots=True)
class Commit:
    commit_id: str
    stream: StreamRef
    first_version: int
    last_version: int
    events: list[EventRecord]
    command_id: str | None
    recorded_at: datetime
    writer: str | None
    trace: dict[str, str] = field(default_factory=dict)
    carried: Mapping[str, Any] = field(default_factory=dict)  # what the service keeps with it beside the events


class CommitListener(Protocol):
    """Told of every append of a store, around its write (the relay)."""

    def begin(self, commit: Commit) -> None:
        """``commit`` is about to be written."""

    def written(self, commit: Commit) -> None:
        """``commit`` was written."""

    def failed(self, commit: Commit, *, maybe_written: bool) -> None:
        """The write failed; ``maybe_written`` when it may have landed all the same (a timeout, a lost connection)."""


class ConcurrencyError(Exception):
    """Another writer appended to the stream first; reload and decide again."""


class DuplicateCommand(Exception):
    """The command was already applied; ``commit`` is what it wrote then."""

    def __init__(self, commit: Commit) -> None:
        super().__init__(f"command {commit.command_id} already applied")
        self.commit = commit


class EventStore:
    def __init__(
        self,
        db: AsyncDatabase[Document],
        *,
        clock: Clock = utcnow,
        ids: IdFactory = new_id,
        writer: str | None = None,
    ) -> None:
        self.db = db
        self._commits = db["commits"]
        self._inserts = InsertBatcher(self._commits)  # concurrent appends share a round trip (group commit)
        self._reads: ReadCoalescer[tuple[str, int], list[Commit]] = ReadCoalescer()
        self.clock = clock
        self._ids = ids
        self.writer = writer or ids()
        self.listener: CommitListener | None = None

    @property
    def collection(self) -> AsyncCollection[Document]:
        """The commits, for a service's own queries over what it carries in them (under ``carried.``)."""
        return self._commits

    async def ensure_indexes(self) -> None:
        await self._commits.create_index(
            [("stream_id", ASCENDING), ("first_version", ASCENDING)], unique=True, name="stream_version"
        )
        await self._commits.create_index(
            [("stream_id", ASCENDING), ("command_id", ASCENDING)],
            unique=True,
            partialFilterExpression={"command_id": {"$type": "string"}},
            name="command_once_per_stream",
        )
        await self._commits.create_index([("writer", ASCENDING), *ORDER], name="writer_order")
        await self._commits.create_index([("workspace_id", ASCENDING), *ORDER], name="workspace_order")

    async def append(
        self,
        stream: StreamRef,
        expected_version: int,
        events: Sequence[Event],
        meta: Metadata,
        *,
        command_id: str | None = None,
        trace: dict[str, str] | None = None,
        carried: Mapping[str, Any] | None = None,
    ) -> Commit:
        """Append ``events`` after ``expected_version``, with what the service ``carried`` with them.

        Raises ConcurrencyError when the stream moved on, DuplicateCommand when ``command_id`` was already applied
        to this stream (a command writes one commit per stream it touches).
        """
        if not events:
            raise ValueError("append needs at least one event")
        stream.check()
        now = self.clock()
        records = [
            EventRecord(
                event_id=self._ids(),
                type=ev.type_name,
                schema_version=ev.schema_version,
                data=ev.model_dump(mode="json"),
                occurred_at=now,
                correlation_id=meta.correlation_id,
                causation_id=meta.causation_id,
                actor=meta.actor,
                stream_id=stream.stream_id,
                aggregate=stream.aggregate,
                aggregate_id=stream.aggregate_id,
                workspace_id=stream.workspace_id,
                version=expected_version + i + 1,
            )
            for i, ev in enumerate(events)
        ]
        commit = Commit(
            commit_id=self._ids(),
            stream=stream,
            first_version=expected_version + 1,
            last_version=expected_version + len(records),
            events=records,
            command_id=command_id,
            recorded_at=now,
            writer=self.writer,
            trace=dict(trace or {}),
            carried=dict(carried or {}),
        )
        listener = self.listener
        if listener is not None:
            listener.begin(commit)
        try:
            await self._inserts.insert(_to_document(commit))
        except DuplicateKeyError:
            if listener is not None:
                listener.failed(commit, maybe_written=False)
            if command_id is not None:
                existing = await self.commit_for_command(stream, command_id)
                if existing is not None:
                    raise DuplicateCommand(existing) from None
            raise ConcurrencyError(f"stream {stream.stream_id} is past version {expected_version}") from None
        except BaseException as exc:
            if listener is not None:
                listener.failed(commit, maybe_written=not isinstance(exc, WriteError))
            raise
        if listener is not None:
            listener.written(commit)
        return commit

    async def load(self, stream: StreamRef, after_version: int = 0) -> list[EventRecord]:
        """Every event of the stream after ``after_version``, in order."""
        cursor = self._commits.find(
            {"stream_id": stream.stream_id, "last_version": {"$gt": after_version}},
            sort=[("first_version", ASCENDING)],
        )
        records: list[EventRecord] = []
        async for doc in cursor:
            records.extend(r for r in _records(doc) if r.version > after_version)
        return records

    async def exists(self, stream: StreamRef) -> bool:
        """Whether the stream has a first event (one indexed read, however long the stream)."""
        found = await self._commits.find_one({"stream_id": stream.stream_id, "first_version": 1}, {"_id": 1})
        return found is not None

    async def load_commits(self, stream: StreamRef, after_version: int = 0) -> list[Commit]:
        """The stream's commits that start after ``after_version``, in order. Identical loads that overlap share a
        read begun after each of them was asked for (a workflow's definition, checked by every execution of it)."""

        async def read() -> list[Commit]:
            cursor = self._commits.find(
                {"stream_id": stream.stream_id, "first_version": {"$gt": after_version}},
                sort=[("first_version", ASCENDING)],
            )
            return [_from_document(doc) async for doc in cursor]

        return list(await self._reads.read((stream.stream_id, after_version), read))

    async def first_event(self, stream: StreamRef) -> EventRecord | None:
        doc = await self._commits.find_one({"stream_id": stream.stream_id, "first_version": 1})
        return None if doc is None else _records(doc)[0]

    async def commit_for_command(self, stream: StreamRef, command_id: str) -> Commit | None:
        doc = await self._commits.find_one({"stream_id": stream.stream_id, "command_id": command_id})
        return None if doc is None else _from_document(doc)

    async def read_workspace(
        self, workspace_id: str, *, since: datetime | None = None, limit: int = 1000
    ) -> list[EventRecord]:
        """A workspace's events in recording order, for projections to rebuild from.

        Ties within a millisecond are broken by stream and version, so a stream's events keep their order as long as
        the writers' clocks agree; projections never rely on it (they check versions and catch up from the stream).
        """
        query: Document = {"workspace_id": workspace_id}
        if since is not None:
            query["recorded_at"] = {"$gte": since}
        cursor = self._commits.find(query, sort=ORDER, limit=limit)
        return [r async for doc in cursor for r in _records(doc)]

    async def commit(self, commit_id: str) -> Commit | None:
        doc = await self._commits.find_one({"_id": commit_id})
        return None if doc is None else _from_document(doc)

    async def park(self, commit_id: str, reason: str) -> None:
        """Take a commit that can never be published out of the relay's way (``written_by``), keeping why."""
        await self._commits.update_one({"_id": commit_id}, {"$set": {"parked": reason[:2000]}})

    async def written_by(self, writer: str, after: "Commit | datetime", limit: int) -> list[Commit]:
        """``writer``'s commits that are not parked, in recording order: from a time on, or after a commit."""
        query: Document = {"writer": writer, "parked": {"$exists": False}}
        if isinstance(after, datetime):
            query["recorded_at"] = {"$gte": after}
        else:
            at, stream_id = after.recorded_at, after.stream.stream_id
            query["$or"] = [
                {"recorded_at": {"$gt": at}},
                {"recorded_at": at, "stream_id": {"$gt": stream_id}},
                {"recorded_at": at, "stream_id": stream_id, "first_version": {"$gt": after.first_version}},
            ]
        cursor = self._commits.find(query, sort=ORDER, limit=limit)
        return [_from_document(doc) async for doc in cursor]


def decode(record: EventRecord) -> Event:
    """The domain event of a stored record, upcast to its current schema version."""
    event = REGISTRY.load(record.type, record.schema_version, record.data)
    if not isinstance(event, Event):
        raise TypeError(f"{record.type} is not an event")
    return event


@dataclass(frozen=True, slots=True)
class Loaded(Generic[S]):
    state: S
    version: int
    commands: frozenset[str]


class StateCache:
    """Recently rebuilt aggregates, so a command on a hot stream replays only what is new since.

    Always safe, even with several replicas: events are immutable and append-only, so a cached state is a correct
    prefix and loading continues from its version; a stale one at worst costs a concurrency retry.
    """

    def __init__(self, size: int = 10_000) -> None:
        self._size = size
        self._entries: OrderedDict[tuple[str, str], Loaded[Any]] = OrderedDict()

    def get(self, stream: StreamRef, evolve: Callable[[Any, Event], Any]) -> "Loaded[Any] | None":
        key = (stream.stream_id, evolve.__qualname__)
        found = self._entries.get(key)
        if found is not None:
            self._entries.move_to_end(key)
        return found

    def put(self, stream: StreamRef, evolve: Callable[[Any, Event], Any], loaded: "Loaded[Any]") -> None:
        key = (stream.stream_id, evolve.__qualname__)
        self._entries[key] = loaded
        self._entries.move_to_end(key)
        while len(self._entries) > self._size:
            self._entries.popitem(last=False)


async def load_state(
    store: EventStore,
    stream: StreamRef,
    initial: S,
    evolve: Callable[[S, Event], S],
    cache: StateCache | None = None,
    *,
    at_least: int | None = None,
) -> Loaded[S]:
    """Rebuild an aggregate by replaying its stream: its state, version and the commands already applied to it.

    With ``at_least``, a state of that version or later is enough (a reaction to a commit needs the state the commit
    made, or a later one): a cached one returns without reading, since events are immutable and append-only."""
    cached = cache.get(stream, evolve) if cache is not None else None
    if cached is not None and at_least is not None and cached.version >= at_least:
        return cached
    state, version, commands = (cached.state, cached.version, set(cached.commands)) if cached else (initial, 0, set())
    for commit in await store.load_commits(stream, after_version=version):
        if commit.command_id is not None:
            commands.add(commit.command_id)
        for record in commit.events:
            state, version = evolve(state, decode(record)), record.version
    loaded = Loaded(state, version, frozenset(commands))
    if cache is not None:
        cache.put(stream, evolve, loaded)
    return loaded


def _to_document(commit: Commit) -> Document:
    doc: Document = {
        "_id": commit.commit_id,
        "stream_id": commit.stream.stream_id,
        "workspace_id": commit.stream.workspace_id,
        "aggregate": commit.stream.aggregate,
        "aggregate_id": commit.stream.aggregate_id,
        "first_version": commit.first_version,
        "last_version": commit.last_version,
        "events": [
            r.model_dump(mode="python", exclude={"stream_id", "aggregate", "aggregate_id", "workspace_id"})
            for r in commit.events
        ],
        "command_id": commit.command_id,
        "recorded_at": commit.recorded_at,
        "writer": commit.writer,
        "trace": commit.trace,
    }
    if commit.carried:
        doc["carried"] = dict(commit.carried)
    return doc


def _records(doc: Document) -> list[EventRecord]:
    shared = {
        "stream_id": doc["stream_id"],
        "aggregate": doc["aggregate"],
        "aggregate_id": doc["aggregate_id"],
        "workspace_id": doc["workspace_id"],
    }
    return [EventRecord.model_validate({**ev, **shared}) for ev in doc["events"]]


def _from_document(doc: Document) -> Commit:
    return Commit(
        commit_id=doc["_id"],
        stream=StreamRef(doc["workspace_id"], doc["aggregate"], doc["aggregate_id"]),
        first_version=doc["first_version"],
        last_version=doc["last_version"],
        events=_records(doc),
        command_id=doc.get("command_id"),
        recorded_at=doc["recorded_at"],
        writer=doc.get("writer"),
        trace=doc.get("trace") or {},
        carried=doc.get("carried") or {},
    )
