"""Group commit: single-document inserts that share one round trip when they arrive together.

A write path under load makes many small inserts at once (one commit per command, one claim per task). Sent one
by one, each pays a full round trip and the server's per-command cost; sent together in one unordered
``insert_many``, they cost little more than one. The batch forms by itself: an insert that arrives while none is
being written goes out at once (no added latency when idle), and whatever arrives while a write is on the wire
goes out together in the next one. Each caller still gets its own document's result: a duplicate key (the
optimistic-concurrency and idempotency signal of the event store) is raised to that caller alone.
"""

import asyncio
from typing import Any

from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import BulkWriteError, DuplicateKeyError, WriteConcernError, WriteError

Document = dict[str, Any]
DUPLICATE_KEY = 11000


class InsertBatcher:
    def __init__(self, collection: AsyncCollection[Document], *, max_batch: int = 128) -> None:
        self._collection = collection
        self._max_batch = max_batch
        self._queue: list[tuple[Document, asyncio.Future[None]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def insert(self, document: Document) -> None:
        """Insert ``document`` (with its ``_id``); raises DuplicateKeyError, like ``insert_one``, for it alone."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append((document, done))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_queued(), name="insert-batcher")
        await done

    async def _write_queued(self) -> None:
        while self._queue:
            batch, self._queue = self._queue[: self._max_batch], self._queue[self._max_batch :]
            try:
                failures = await self._write([document for document, _ in batch])
            except Exception as exc:  # noqa: BLE001 - the write failed as a whole: every caller hears it
                failures = dict.fromkeys(range(len(batch)), exc)
            except BaseException:  # cancelled: nobody may be left waiting
                for _, done in batch + self._queue:
                    done.cancel()
                self._queue = []
                raise
            for index, (_, done) in enumerate(batch):
                if not done.done():
                    failure = failures.get(index)
                    if failure is None:
                        done.set_result(None)
                    else:
                        done.set_exception(failure)

    async def _write(self, documents: list[Document]) -> dict[int, Exception]:
        """Insert ``documents``; returns the error of each one that was not inserted, by position."""
        try:
            await self._collection.insert_many(documents, ordered=False)
        except BulkWriteError as exc:
            failures: dict[int, Exception] = {}
            for error in exc.details.get("writeErrors", []):
                kind = DuplicateKeyError if error.get("code") == DUPLICATE_KEY else WriteError
                failures[int(error["index"])] = kind(error.get("errmsg", ""), error.get("code"), error)
            if exc.details.get("writeConcernErrors"):
                concern = WriteConcernError("write concern not satisfied", None, exc.details)
                for index in range(len(documents)):
                    failures.setdefault(index, concern)
            return failures
        return {}
