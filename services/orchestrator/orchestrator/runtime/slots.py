"""Concurrency slots: how many tasks an agent works on at once, held as leases in MongoDB.

An agent has one slot document (``<workspace>/<agent>``) listing its holders, each a task with a lease. A task takes
a slot by one atomic update that adds it to the list only while the list is shorter than the agent's limit (the
document's ``holders.<limit - 1>`` does not exist yet), and keeps it by renewing its lease while it works. So the
limit holds across every replica of the runtime, and a worker that dies mid-task leaks nothing: its lease runs out
(``lease_s``) and is pulled from the list by the next task that finds the agent full, or the task's redelivery
takes back the place it held. One document per agent keeps a slot to one write of one small document, whatever the
limit (a document per slot made a take scan up to a hundred of them).
"""

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo import ASCENDING
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError

from servicekit.batching import ReadCoalescer, UpdateManyBatcher, UpsertBatcher

Document = dict[str, Any]


MAX_VIEWS = 20_000


@dataclass(slots=True)
class _View:
    read_at: float
    counts: dict[str, int]
    since: dict[str, int] = field(default_factory=dict)


class Slots:
    def __init__(self, collection: AsyncCollection[Document], lease_s: float = 30.0) -> None:
        self.collection = collection
        self.lease = timedelta(seconds=lease_s)
        self._takes = UpsertBatcher(collection)
        self._releases = UpdateManyBatcher(collection)
        self._loads: ReadCoalescer[str, list[Document]] = ReadCoalescer()
        self._views: dict[str, _View] = {}  # the last load read per workspace, with this process's takes since
        self._taken: dict[str, tuple[str, str]] = {}  # task key -> (workspace, agent) this process took a place for

    async def ensure_indexes(self) -> None:
        await self.collection.create_index([("workspace_id", ASCENDING), ("holders.key", ASCENDING)])

    @staticmethod
    def _id(ws: str, agent_id: str) -> str:
        return f"{ws}/{agent_id}"

    async def acquire(self, ws: str, agent_id: str, limit: int, key: str, worker: str, now: datetime) -> bool:
        """Take a place among the agent's holders for the task ``key`` (or keep the one it holds already)."""
        slot = self._id(ws, agent_id)
        holder = {"key": key, "worker": worker, "until": now + self.lease}
        if await self._push(slot, ws, agent_id, limit, holder):
            return True
        kept = await self.collection.update_one(  # a redelivery: the place it held, renewed
            {"_id": slot, "holders.key": key},
            {"$set": {"holders.$.until": holder["until"], "holders.$.worker": worker}},
        )
        if kept.matched_count:
            return True
        # A lease that ran out is pulled, and the push tried once more: it may also have been refused only because
        # another task created the agent's document at the same moment (the server does not retry such an upsert).
        await self.collection.update_one({"_id": slot}, {"$pull": {"holders": {"until": {"$lt": now}}}})
        return await self._push(slot, ws, agent_id, limit, holder)

    async def _push(self, slot: str, ws: str, agent_id: str, limit: int, holder: Document) -> bool:
        """Add ``holder`` while the agent has fewer than ``limit`` holders and not this task already (the document
        is created on the agent's first task; it exists, full or held, when the insert is refused)."""
        try:
            await self._takes.upsert(
                {"_id": slot, "holders.key": {"$ne": holder["key"]}, f"holders.{limit - 1}": {"$exists": False}},
                {"$push": {"holders": holder}, "$setOnInsert": {"workspace_id": ws, "agent_id": agent_id}},
            )
        except DuplicateKeyError:
            return False
        key = holder["key"]
        if key not in self._taken:  # counted in this process's view of the load until it is released
            self._taken[key] = (ws, agent_id)
            if (view := self._views.get(ws)) is not None:
                view.since[agent_id] = view.since.get(agent_id, 0) + 1
        return True

    async def renew(self, ws: str, key: str, now: datetime) -> None:
        await self.collection.update_many(
            {"workspace_id": ws, "holders.key": key}, {"$set": {"holders.$.until": now + self.lease}}
        )

    async def release(self, ws: str, key: str) -> None:
        """Free the place the task ``key`` holds, of whichever agent (a redelivery may have been routed anew)."""
        await self._releases.update_many({"workspace_id": ws, "holders.key": key}, {"$pull": {"holders": {"key": key}}})
        taken = self._taken.pop(key, None)
        if taken is not None and (view := self._views.get(taken[0])) is not None:
            view.since[taken[1]] = view.since.get(taken[1], 0) - 1

    async def recent_in_flight(self, ws: str, now: datetime, max_age_s: float) -> dict[str, int]:
        """Tasks in flight per agent as of a read at most ``max_age_s`` old, with this process's own takes and
        releases since: a load good enough to order routing by (the takes themselves keep the limit)."""
        view = self._views.get(ws)
        if view is None or time.monotonic() - view.read_at > max_age_s:
            return await self.in_flight(ws, now)
        counts = dict(view.counts)
        for agent_id, change in view.since.items():
            counts[agent_id] = max(0, counts.get(agent_id, 0) + change)
        return counts

    async def in_flight(self, ws: str, now: datetime) -> dict[str, int]:
        """Tasks each agent of the workspace holds a live lease for."""
        read_at = time.monotonic()
        counts: dict[str, int] = {}
        for doc in await self._loads.read(ws, lambda: self._busy(ws)):
            live = sum(1 for h in doc.get("holders", []) if _aware(h["until"]) > now)
            if live:
                counts[str(doc["agent_id"])] = live
        if len(self._views) >= MAX_VIEWS:
            self._views.clear()
        self._views[ws] = _View(read_at, counts)
        if len(self._taken) >= MAX_VIEWS:  # takes whose release this process never saw (a crash of a handler)
            self._taken.clear()
        return counts

    async def _busy(self, ws: str) -> list[Document]:
        busy = {"workspace_id": ws, "holders.0": {"$exists": True}}
        return [doc async for doc in self.collection.find(busy, {"agent_id": 1, "holders": 1})]


def _aware(moment: datetime) -> datetime:
    """A datetime read back from MongoDB (naive, UTC, unless the client is tz-aware) comparable with ``now``."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
