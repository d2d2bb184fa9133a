"""The relay's writer checkpoints: how far each writer's commits are published, and whether it is alive.

Collection ``relay_writers``, one document per writer (an event store instance, one per process):
``{_id: writer, done_before, alive_at, taken_by, taken_at}``. Everything the writer recorded before
``done_before`` is published and acted on; ``alive_at`` is its relay's last sign of life. The work of a writer that
gives none for a while is claimed by another relay (``taken_by``, renewed in ``taken_at``), which publishes it from
``done_before`` on and then deletes the checkpoint.
"""

from datetime import UTC, datetime
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase

from servicekit.eventstore import EventStore

Document = dict[str, Any]
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
LEGACY_WRITER = "legacy-unpublished"
LEGACY_INDEXES = ("legacy_unpublished", "relay_order")


class WriterCheckpoints:
    def __init__(self, db: AsyncDatabase[Document], writer: str) -> None:
        self._writers = db["relay_writers"]
        self.writer = writer  # the writer whose checkpoint this relay keeps, and the id it claims others' work by

    async def save(self, done_before: datetime, alive_at: datetime) -> None:
        """This writer's commits recorded before ``done_before`` are all published; it is alive at ``alive_at``."""
        await self._writers.update_one(
            {"_id": self.writer}, {"$set": {"done_before": done_before, "alive_at": alive_at}}, upsert=True
        )

    async def forget(self, writer: str) -> None:
        await self._writers.delete_one({"_id": writer})

    async def take_over(self, writer: str, stale_before: datetime, now: datetime) -> datetime | None:
        """Claim the work left by ``writer`` if it is dead (no sign of life since ``stale_before``) and no other
        relay holds it (or the one that does stopped renewing its claim); returns where its unpublished commits may
        begin, or None."""
        claimed = await self._writers.find_one_and_update(
            {
                "_id": writer,
                "alive_at": {"$lt": stale_before},
                "$or": [{"taken_at": None}, {"taken_at": {"$lt": stale_before}}, {"taken_by": self.writer}],
            },
            {"$set": {"taken_by": self.writer, "taken_at": now}},
        )
        return None if claimed is None else claimed["done_before"]

    async def dead(self, stale_before: datetime, limit: int = 100) -> list[str]:
        """Writers other than this one without a sign of life since ``stale_before``."""
        cursor = self._writers.find({"alive_at": {"$lt": stale_before}}, {"_id": 1}, limit=limit)
        return [doc["_id"] async for doc in cursor if doc["_id"] != self.writer]

    async def advance_taken_over(self, writer: str, done_before: datetime, now: datetime) -> None:
        await self._writers.update_one(
            {"_id": writer, "taken_by": self.writer}, {"$set": {"done_before": done_before, "taken_at": now}}
        )

    async def adopt_legacy_commits(self, store: EventStore) -> int:
        """One-off migration, at start-up: commits stored before commits named their writer were flagged
        ``published: false`` until published (with an index of their own). Those left become the work of a dead
        writer, so the relays' ordinary take-over publishes them; then the flag's indexes go, which ends this for
        good. Returns how many commits were adopted."""
        commits = store.collection
        names = {index["name"] async for index in await commits.list_indexes()}
        if not names & set(LEGACY_INDEXES):
            return 0
        # The checkpoint first: should this stop half way, what was adopted is already someone's work.
        await self._writers.update_one(
            {"_id": LEGACY_WRITER}, {"$setOnInsert": {"done_before": EPOCH, "alive_at": EPOCH}}, upsert=True
        )
        adopted = await commits.update_many(
            {"published": False}, {"$set": {"writer": LEGACY_WRITER}, "$unset": {"published": ""}}
        )
        for name in LEGACY_INDEXES:
            if name in names:
                await commits.drop_index(name)
        return adopted.modified_count
