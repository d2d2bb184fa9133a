"""Runtime workers' heartbeats: an agent is ``offline`` when no worker has been seen within the offline interval."""

from datetime import datetime, timedelta
from typing import Any

from pymongo.asynchronous.collection import AsyncCollection

Document = dict[str, Any]


class Workers:
    def __init__(self, collection: AsyncCollection[Document]) -> None:
        self.collection = collection

    async def beat(self, worker_id: str, now: datetime) -> None:
        await self.collection.update_one({"_id": worker_id}, {"$set": {"seen_at": now}}, upsert=True)

    async def gone(self, worker_id: str) -> None:
        await self.collection.delete_one({"_id": worker_id})

    async def any_alive(self, now: datetime, within: timedelta) -> bool:
        return await self.collection.find_one({"seen_at": {"$gte": now - within}}, {"_id": 1}) is not None
