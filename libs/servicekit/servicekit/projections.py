"""Read models fed from the EVENTS stream.

A projection stores, with every row it maintains, the version of the last event it applied to it. An event at or
below that version is a duplicate and is skipped; an event beyond the next version means the broker lost or
reordered something, and the projection catches up from the event store, which is the truth.
"""

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from typing import Any

from pydantic import ValidationError
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError

from contracts import EventRecord
from servicekit.batching import InsertBatcher
from servicekit.bus import Bus, ConsumerPolicy, PermanentFailure
from servicekit.eventstore import EventStore, StreamRef

Document = dict[str, Any]


class StreamProjection(ABC):
    """One read model over one aggregate type."""

    aggregate: str
    name: str
    ordered = True  # events are applied one at a time, in the order they arrive; False when order does not matter

    @abstractmethod
    async def position(self, record: EventRecord) -> int:
        """Version of the last event applied for ``record``'s stream (0 when none)."""

    @abstractmethod
    async def apply(self, record: EventRecord) -> bool:
        """Apply one event if its row is at the version just before it (or, for version 1, absent); record
        ``record.version`` atomically with the change. Returns whether it applied."""

    async def handle(self, record: EventRecord, store: EventStore) -> int:
        """Apply ``record`` and anything missed before it; returns how many events were applied."""
        if await self.apply(record):
            return 1  # the common case: the next event, in one write
        current = await self.position(record)
        if record.version <= current:
            return 0  # a duplicate
        stream = StreamRef(record.workspace_id, record.aggregate, record.aggregate_id)
        applied = 0
        for item in await store.load(stream, after_version=current):
            applied += await self.apply(item)
        return applied


class RowProjection(StreamProjection):
    """A read model with one row per stream, ``_id`` = stream id, guarded by the row's ``version``."""

    def __init__(self, collection: AsyncCollection[Document]) -> None:
        self.collection = collection
        self._inserts = InsertBatcher(collection)  # rows created together share a round trip (unordered projections)

    async def position(self, record: EventRecord) -> int:
        doc = await self.collection.find_one({"_id": record.stream_id}, {"version": 1})
        return 0 if doc is None else int(doc["version"])

    async def insert_row(self, record: EventRecord, row: Document) -> bool:
        """The stream's first event: create its row (False when it exists already)."""
        try:
            await self._inserts.insert(
                {"_id": record.stream_id, "workspace_id": record.workspace_id, **row, "version": record.version}
            )
        except DuplicateKeyError:
            return False
        return True

    async def update_row(self, record: EventRecord, changes: Document) -> bool:
        """A later event: change the row only if it is at the version just before (compare-and-set)."""
        result = await self.collection.update_one(
            {"_id": record.stream_id, "version": record.version - 1}, {"$set": {**changes, "version": record.version}}
        )
        return result.modified_count == 1


def serve_events(
    bus: Bus,
    service: str,
    aggregate: str,
    purpose: str,
    handle: Callable[[EventRecord], Awaitable[object]],
    policy: ConsumerPolicy,
    types: Sequence[str] | None = None,
) -> None:
    """Feed the events of ``aggregate`` to ``handle`` through durable consumers named for ``purpose``: one for all
    of them, or, with ``types``, one per event type (so a reaction is not even sent the events it ignores; their
    relative order is then not kept)."""
    subjects = bus.subjects

    async def on_event(body: bytes, headers: dict[str, str]) -> None:
        try:
            record = EventRecord.model_validate_json(body)
        except ValidationError as exc:
            raise PermanentFailure(f"malformed event: {exc.error_count()} errors") from exc
        await handle(record)

    selected: Sequence[str | None] = list(types) if types else [None]
    for event_type in selected:
        bus.consume(
            subject=subjects.events_of(aggregate, event_type),
            stream=subjects.events_stream,
            durable=subjects.durable(service, f"{purpose}_{event_type}" if event_type else purpose),
            handler=on_event,
            policy=policy,
        )


def serve_projection(
    bus: Bus,
    service: str,
    projection: StreamProjection,
    store: EventStore,
    policy: ConsumerPolicy,
    types: Sequence[str] | None = None,
) -> None:
    async def apply(record: EventRecord) -> int:
        return await projection.handle(record, store)

    if projection.ordered:
        policy = replace(policy, max_workers=1)  # events arrive and apply in stream order
    serve_events(bus, service, projection.aggregate, f"projection_{projection.name}", apply, policy, types)
