"""Queries of the memory service: retrieval, lists, single entries and working-entry history."""

from collections.abc import Callable
from datetime import datetime
from typing import Any

from pymongo import DESCENDING
from pymongo.asynchronous.collection import AsyncCollection

from contracts.memory import (
    GetMemory,
    GetWorkingHistory,
    ListMemory,
    RecallForTask,
    RetrieveMemory,
    Tier,
    WorkingEntryWritten,
)
from memory.domain import entries as d
from memory.retrieval import Retriever
from servicekit.eventstore import EventStore, StreamRef, decode
from servicekit.queries import QueryRouter

Document = dict[str, Any]
HIDDEN = {"_id": 0, "embedding": 0}
ENTRY_STREAMS = {Tier.SHORT_TERM: d.SHORT_TERM, Tier.LONG_TERM: d.LONG_TERM}  # one stream per entry id


def view(row: Document) -> Document:
    out = {k: v for k, v in row.items() if k not in {"_id", "embedding", "deleted"}}
    for key in ("created_at", "updated_at", "expires_at"):
        if isinstance(out.get(key), datetime):
            out[key] = out[key].isoformat()
    return out


def build_queries(
    store: EventStore, rows: AsyncCollection[Document], retriever: Retriever, clock: Callable[[], datetime]
) -> QueryRouter:
    router = QueryRouter()

    def live(workspace_id: str, tier: Tier) -> Document:
        query: Document = {"workspace_id": workspace_id, "tier": tier.value, "deleted": False}
        if tier is Tier.SHORT_TERM:
            query["expires_at"] = {"$gt": clock()}
        return query

    def is_live(row: Document, workspace_id: str, tier: Tier) -> bool:
        """What ``live`` asks of a row, asked of one in hand."""
        expires_at = row.get("expires_at")
        return (
            row.get("workspace_id") == workspace_id
            and row.get("tier") == tier.value
            and row.get("deleted") is False
            and (tier is not Tier.SHORT_TERM or (expires_at is not None and expires_at > clock()))
        )

    @router.register(RetrieveMemory)
    async def retrieve(query: RetrieveMemory, workspace_id: str) -> list[Document]:
        return await retriever.retrieve(workspace_id, query, clock())

    @router.register(RecallForTask)
    async def recall_for_task(query: RecallForTask, workspace_id: str) -> Document:
        recalled, shared = await retriever.recall_for_task(workspace_id, query, clock())
        return {"recalled": recalled, "shared": [view(row) for row in shared]}

    @router.register(ListMemory)
    async def list_entries(query: ListMemory, workspace_id: str) -> list[Document]:
        filters = live(workspace_id, query.tier)
        if query.scope is not None:
            filters.update(scope_kind=query.scope.kind.value, scope_id=query.scope.id)
        if query.tag is not None:
            filters["tags"] = query.tag
        if query.key is not None:
            filters["key"] = query.key
        cursor = rows.find(filters, HIDDEN, sort=[("updated_at", DESCENDING)], limit=query.limit)
        return [view(row) async for row in cursor]

    @router.register(GetMemory)
    async def get_entry(query: GetMemory, workspace_id: str) -> Document:
        aggregate = ENTRY_STREAMS.get(query.tier)
        if aggregate is None:
            row = await rows.find_one({**live(workspace_id, query.tier), "entry_id": query.entry_id}, HIDDEN)
        else:
            # A row's _id is its stream's id, within the workspace by construction. Looked up by _id alone: with more
            # fields beside it SecantusDB scans the collection (1.2 s at 10,000 entries); the rest is checked here.
            row = await rows.find_one({"_id": StreamRef(workspace_id, aggregate, query.entry_id).stream_id}, HIDDEN)
            if row is not None and not is_live(row, workspace_id, query.tier):
                row = None
        if row is None:
            raise d.MemoryNotFound(f"{query.tier.value} memory {query.entry_id} not found")
        return view(row)

    @router.register(GetWorkingHistory)
    async def history(query: GetWorkingHistory, workspace_id: str) -> list[Document]:
        stream = StreamRef(workspace_id, d.WORKING, d.working_id(query.scope, query.key))
        records = await store.load(stream)
        if not records:
            raise d.MemoryNotFound(f"working entry {query.key!r} not found")
        return [
            {
                "version": r.version,
                "type": r.type,
                "value": event.value if isinstance(event, WorkingEntryWritten) else None,
                "at": r.occurred_at.isoformat(),
                "actor": r.actor.model_dump(),
            }
            for r in records
            for event in [decode(r)]
        ]

    return router
