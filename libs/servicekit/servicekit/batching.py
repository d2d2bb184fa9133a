"""Group commit: single-document writes that share one round trip when they arrive together.

A write path under load makes many small writes at once (one commit per command, one row per projected event).
Sent one by one, each pays a full round trip and the server's per-command cost; sent together in one unordered
command, they cost little more than one. The batch forms by itself: a write that arrives while none is being
written goes out at once (no added latency when idle), and whatever arrives while a write is on the wire goes out
together in the next one. Each caller still gets its own document's result: a duplicate key (the
optimistic-concurrency and idempotency signal of the event store) is raised to that caller alone.
"""

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

from pymongo import UpdateMany, UpdateOne
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import BulkWriteError, DuplicateKeyError, WriteConcernError, WriteError

Document = dict[str, Any]
DUPLICATE_KEY = 11000
T = TypeVar("T")
R = TypeVar("R")


class _GroupWriter(ABC, Generic[T, R]):
    def __init__(self, collection: AsyncCollection[Document], *, max_batch: int = 128) -> None:
        self._collection = collection
        self._max_batch = max_batch
        self._queue: list[tuple[T, asyncio.Future[R]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def _submit(self, item: T) -> R:
        done: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queue.append((item, done))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_queued(), name="group-writer")
        return await done

    async def _write_queued(self) -> None:
        while self._queue:
            batch, self._queue = self._queue[: self._max_batch], self._queue[self._max_batch :]
            try:
                outcomes = await self._write([item for item, _ in batch])
            except Exception as exc:  # noqa: BLE001 - the write failed as a whole: every caller hears it
                outcomes = [exc] * len(batch)
            except BaseException:  # cancelled: nobody may be left waiting
                for _, done in batch + self._queue:
                    done.cancel()
                self._queue = []
                raise
            for (_, done), outcome in zip(batch, outcomes, strict=True):
                if not done.done():
                    if isinstance(outcome, Exception):
                        done.set_exception(outcome)
                    else:
                        done.set_result(outcome)

    @abstractmethod
    async def _write(self, items: list[T]) -> list[R | Exception]:
        """Write ``items`` in one command; returns each one's result or error, in order."""


class InsertBatcher(_GroupWriter[Document, None]):
    async def insert(self, document: Document) -> None:
        """Insert ``document`` (with its ``_id``); raises DuplicateKeyError, like ``insert_one``, for it alone."""
        await self._submit(document)

    async def _write(self, items: list[Document]) -> list[Exception | None]:
        try:
            await self._collection.insert_many(items, ordered=False)
        except BulkWriteError as exc:
            return _each_error(exc, len(items))
        return [None] * len(items)


def _each_error(exc: BulkWriteError, count: int) -> list[Exception | None]:
    """Each write's own error in an unordered bulk write that failed in part (None for those that were written)."""
    outcomes: list[Exception | None] = [None] * count
    for error in exc.details.get("writeErrors", []):
        kind = DuplicateKeyError if error.get("code") == DUPLICATE_KEY else WriteError
        outcomes[int(error["index"])] = kind(error.get("errmsg", ""), error.get("code"), error)
    if exc.details.get("writeConcernErrors"):
        concern = WriteConcernError("write concern not satisfied", None, exc.details)
        outcomes = [outcome or concern for outcome in outcomes]
    return outcomes


class UpdateBatcher(_GroupWriter[tuple[Document, Document], bool | None]):
    async def update(self, query: Document, change: Document) -> bool | None:
        """Apply ``change`` to the one document ``query`` matches (a compare-and-set, say). True when it changed a
        document; None when its batch changed fewer documents than it had updates, as a bulk write does not tell
        which ones did: the caller checks its own."""
        return await self._submit((query, change))

    async def _write(self, items: list[tuple[Document, Document]]) -> list[bool | Exception | None]:
        try:
            result = await self._collection.bulk_write(
                [UpdateOne(query, change) for query, change in items], ordered=False
            )
        except BulkWriteError as exc:  # each failed update's caller hears its own error; the others must look
            failed: list[bool | Exception | None] = [*_each_error(exc, len(items))]
            return failed
        every = result.modified_count == len(items)
        return [True if every else None] * len(items)


class UpsertBatcher(_GroupWriter[tuple[Document, Document], None]):
    """Conditional upserts, "take it if you may", made together in one write, each with its own yes or no. A query
    names a document by ``_id`` and adds a condition; where the document exists but misses the condition, the
    server refuses the insert the upsert would make instead, and that caller alone hears the DuplicateKeyError (as
    ``update_one(..., upsert=True)`` would raise it). Writes to one document in a batch apply one after another,
    each against what the one before left."""

    async def upsert(self, query: Document, change: Document) -> None:
        await self._submit((query, change))

    async def _write(self, items: list[tuple[Document, Document]]) -> list[Exception | None]:
        return await _bulk(self._collection, [UpdateOne(q, c, upsert=True) for q, c in items])


class UpdateManyBatcher(_GroupWriter[tuple[Document, Document], None]):
    """Updates of every document a query matches (``update_many``), made together in one write; what they changed
    is not told (for changes whose effect the caller does not need, such as a release)."""

    async def update_many(self, query: Document, change: Document) -> None:
        await self._submit((query, change))

    async def _write(self, items: list[tuple[Document, Document]]) -> list[Exception | None]:
        return await _bulk(self._collection, [UpdateMany(q, c) for q, c in items])


async def _bulk(
    collection: AsyncCollection[Document], operations: list[UpdateOne | UpdateMany]
) -> list[Exception | None]:
    """An unordered bulk write whose callers hear their own write's error (None for those that were written)."""
    try:
        await collection.bulk_write(operations, ordered=False)
    except BulkWriteError as exc:
        return _each_error(exc, len(operations))
    return [None] * len(operations)


class ReadCoalescer(Generic[T, R]):
    """Identical reads that overlap share one round trip, without ever answering a caller with what was read before
    it asked: a read asked for while the same read is running waits for that one to end and shares the next one,
    begun after every one of its callers asked. (Many executions of one workflow start at once; each must see the
    definition as of its own command, not as of a read already on the wire.)"""

    def __init__(self) -> None:
        self._running: dict[T, asyncio.Task[R]] = {}
        self._queued: dict[T, asyncio.Task[R]] = {}

    async def read(self, key: T, read: Callable[[], Awaitable[R]]) -> R:
        task = self._queued.get(key)
        if task is None:
            task = self._start(key, read, self._running.get(key))
        return await asyncio.shield(task)  # one caller cancelled does not cancel the others' read

    def _start(self, key: T, read: Callable[[], Awaitable[R]], after: asyncio.Task[R] | None) -> asyncio.Task[R]:
        async def run() -> R:
            if after is not None:
                await asyncio.wait([after])  # its outcome is not ours
            if self._queued.get(key) is task:
                del self._queued[key]
            self._running[key] = task
            try:
                return await read()
            finally:
                if self._running.get(key) is task:
                    del self._running[key]

        task = asyncio.create_task(run(), name="coalesced-read")
        if after is not None:
            self._queued[key] = task
        else:
            self._running[key] = task
        return task
