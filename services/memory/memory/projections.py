"""The memory read model: one row per entry of every tier, carrying the version of the last event applied."""

from datetime import datetime
from typing import Any

from pymongo import ASCENDING, DESCENDING
from pymongo.asynchronous.collection import AsyncCollection

from contracts import EventRecord, new_id
from contracts.memory import (
    LongTermForgotten,
    LongTermRemembered,
    LongTermUpdated,
    Scope,
    ShortTermCleared,
    ShortTermPromoted,
    ShortTermStored,
    Tier,
    WorkingEntryDeleted,
    WorkingEntryWritten,
)
from memory.domain.entries import LONG_TERM, SHORT_TERM, WORKING
from memory.text import render_value
from servicekit.eventstore import decode
from servicekit.projections import RowProjection

Document = dict[str, Any]


class EntriesProjection(RowProjection):
    """Rows of one aggregate type; three instances (one per tier) share the collection."""

    def __init__(self, aggregate: str, rows: AsyncCollection[Document], stamps: AsyncCollection[Document]) -> None:
        super().__init__(rows)
        self.aggregate = aggregate
        self.name = f"entries_{aggregate}"
        self.stamps = stamps

    async def ensure_indexes(self) -> None:
        await self.collection.create_index(
            [("workspace_id", ASCENDING), ("tier", ASCENDING), ("scope_kind", ASCENDING), ("scope_id", ASCENDING)]
        )
        await self.collection.create_index(
            [("workspace_id", ASCENDING), ("tier", ASCENDING), ("updated_at", DESCENDING)]
        )
        await self.collection.create_index([("expires_at", ASCENDING)], expireAfterSeconds=0)  # expired rows go away

    async def apply(self, record: EventRecord) -> bool:
        event = decode(record)
        at = record.occurred_at
        base = {"workspace_id": record.workspace_id, "created_at": at, "updated_at": at, "deleted": False}
        match event:
            case ShortTermStored():
                return await self.insert_row(
                    record,
                    {
                        **base,
                        "tier": Tier.SHORT_TERM.value,
                        "entry_id": event.entry_id,
                        **_scope(event.scope),
                        "content": event.content,
                        "importance": 0.5,
                        "tags": [],
                        "expires_at": datetime.fromisoformat(event.expires_at),
                    },
                )
            case ShortTermCleared():
                return await self.update_row(record, {"deleted": True, "updated_at": at})
            case ShortTermPromoted():
                return await self.update_row(record, {"promoted_to": event.long_term_id, "updated_at": at})
            case WorkingEntryWritten() if record.version == 1:
                return await self.insert_row(
                    record,
                    {
                        **base,
                        "tier": Tier.WORKING.value,
                        "entry_id": event.key,
                        **_scope(event.scope),
                        "key": event.key,
                        "value": event.value,
                        "content": f"{event.key} {render_value(event.value)}",
                        "importance": 0.5,
                        "tags": [],
                    },
                )
            case WorkingEntryWritten():
                content = f"{event.key} {render_value(event.value)}"
                changes = {"value": event.value, "content": content, "deleted": False, "updated_at": at}
                return await self.update_row(record, changes)
            case WorkingEntryDeleted():
                return await self.update_row(record, {"deleted": True, "updated_at": at})
            case LongTermRemembered():
                row = {**base, "tier": Tier.LONG_TERM.value, "entry_id": event.entry_id, **event.fields.model_dump()}
                return await self._changed(
                    record, await self.insert_row(record, {**row, "promoted_from": event.promoted_from})
                )
            case LongTermUpdated():
                return await self._changed(
                    record, await self.update_row(record, {**event.fields.model_dump(), "updated_at": at})
                )
            case LongTermForgotten():
                return await self._changed(record, await self.update_row(record, {"deleted": True, "updated_at": at}))
        return await self.update_row(record, {})

    async def _changed(self, record: EventRecord, applied: bool) -> bool:
        """A long-term change invalidates the workspace's search index (in every replica). The stamp moves even for
        an event applied before: a crash between the row and the stamp must not leave the index current."""
        await self.stamps.update_one({"_id": record.workspace_id}, {"$set": {"stamp": new_id()}}, upsert=True)
        return applied

    async def short_term_ids(self, workspace_id: str, scope: Scope) -> list[str]:
        cursor = self.collection.find(
            {"workspace_id": workspace_id, "tier": Tier.SHORT_TERM.value, **_scope(scope), "deleted": False},
            {"entry_id": 1},
        )
        return [doc["entry_id"] async for doc in cursor]


def _scope(scope: Scope) -> Document:
    return {"scope_kind": scope.kind.value, "scope_id": scope.id}


AGGREGATES = (SHORT_TERM, WORKING, LONG_TERM)
