"""Concurrency slots: how many tasks an agent works on at once, held as leases in MongoDB.

An agent with limit N has N slot documents (``<workspace>/<agent>/<i>``); a task takes one by a single atomic
update of a slot that is free (no holder, or a lease that ran out), and keeps it by renewing the lease while it
works. So the limit holds across every replica of the runtime, and a worker that dies mid-task leaks nothing: its
lease runs out (``lease_s``) and the slot is free again, or the task's redelivery takes back the slot it held.
"""

import contextlib
from datetime import datetime, timedelta
from typing import Any

from pymongo import ASCENDING
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import BulkWriteError

Document = dict[str, Any]


class Slots:
    def __init__(self, collection: AsyncCollection[Document], lease_s: float = 30.0) -> None:
        self.collection = collection
        self.lease = timedelta(seconds=lease_s)

    async def ensure_indexes(self) -> None:
        await self.collection.create_index([("workspace_id", ASCENDING), ("holder", ASCENDING)])

    @staticmethod
    def _ids(ws: str, agent_id: str, limit: int) -> list[str]:
        return [f"{ws}/{agent_id}/{i}" for i in range(limit)]

    async def acquire(self, ws: str, agent_id: str, limit: int, key: str, worker: str, now: datetime) -> bool:
        """Take a free slot of the agent for the task ``key`` (or keep the one it holds already)."""
        ids = self._ids(ws, agent_id, limit)
        lease = {"holder": key, "worker": worker, "until": now + self.lease}
        kept = await self.collection.update_one({"_id": {"$in": ids}, "holder": key}, {"$set": lease})
        if kept.matched_count:
            return True
        free = {"_id": {"$in": ids}, "$or": [{"holder": None}, {"until": {"$lt": now}}]}
        if await self.collection.find_one_and_update(free, {"$set": lease}, projection={"_id": 1}):
            return True
        missing = set(ids) - {d["_id"] async for d in self.collection.find({"_id": {"$in": ids}}, {"_id": 1})}
        if not missing:
            return False
        blank = [{"_id": i, "workspace_id": ws, "agent_id": agent_id, "holder": None} for i in sorted(missing)]
        with contextlib.suppress(BulkWriteError):  # another worker created some of them first
            await self.collection.insert_many(blank, ordered=False)
        return await self.collection.find_one_and_update(free, {"$set": lease}, projection={"_id": 1}) is not None

    async def renew(self, ws: str, key: str, now: datetime) -> None:
        await self.collection.update_many({"workspace_id": ws, "holder": key}, {"$set": {"until": now + self.lease}})

    async def release(self, ws: str, key: str) -> None:
        """Free every slot the task ``key`` holds, of whichever agent (a redelivery may have been routed anew)."""
        await self.collection.update_many(
            {"workspace_id": ws, "holder": key}, {"$set": {"holder": None, "until": None}}
        )

    async def in_flight(self, ws: str, now: datetime) -> dict[str, int]:
        """Tasks each agent of the workspace holds a live lease for."""
        pipeline: list[Document] = [
            {"$match": {"workspace_id": ws, "holder": {"$ne": None}, "until": {"$gt": now}}},
            {"$group": {"_id": "$agent_id", "n": {"$sum": 1}}},
        ]
        return {d["_id"]: int(d["n"]) async for d in await self.collection.aggregate(pipeline)}
