"""The read model of messaging: one row per thread (``threads``, guarded by the thread's version) and one per message
(``messages``, by thread, recipient and addressed team), and the queries answered from it."""

from typing import Any

from pymongo import ASCENDING
from pymongo.asynchronous.collection import AsyncCollection

from contracts import EventRecord
from contracts.mail import GetThread, ListMessages, MessagePosted, MessageView, ThreadStarted
from orchestrator.domain import thread
from orchestrator.domain.thread import ThreadNotFound
from orchestrator.mail import view_of
from servicekit.eventstore import decode
from servicekit.projections import RowProjection
from servicekit.queries import QueryRouter

Document = dict[str, Any]
THREAD_MESSAGES_SHOWN = 200


class ThreadsProjection(RowProjection):
    aggregate = thread.AGGREGATE
    name = "threads"

    def __init__(self, collection: AsyncCollection[Document], messages: AsyncCollection[Document]) -> None:
        super().__init__(collection)
        self.messages = messages

    async def ensure_indexes(self) -> None:
        await self.collection.create_index([("workspace_id", ASCENDING), ("thread_id", ASCENDING)], unique=True)
        await self.messages.create_index([("workspace_id", ASCENDING), ("message_id", ASCENDING)], unique=True)
        await self.messages.create_index([("workspace_id", ASCENDING), ("posted", ASCENDING)])
        for field in ("thread_id", "recipients", "team_ids"):
            await self.messages.create_index([("workspace_id", ASCENDING), (field, ASCENDING), ("posted", ASCENDING)])

    async def apply(self, record: EventRecord) -> bool:
        event = decode(record)
        at = record.occurred_at.isoformat()
        match event:
            case ThreadStarted():
                row = {
                    "thread_id": event.thread_id,
                    "subject": event.subject,
                    "started_by": event.started_by.model_dump(mode="json"),
                    "participants": [event.started_by.model_dump(mode="json")],
                    "message_count": 0,
                    "created_at": at,
                    "updated_at": at,
                }
                return await self.insert_row(record, row)
            case MessagePosted():
                doc = await self.collection.find_one({"_id": record.stream_id}, {"participants": 1, "version": 1})
                if doc is None or int(doc["version"]) != record.version - 1:
                    return False  # a duplicate or a gap: ``handle`` sorts it out from the event store
                message = {
                    "workspace_id": record.workspace_id,
                    **view_of(event).model_dump(mode="json"),
                    "team_ids": [p.id for p in event.to if p.kind == "team"],
                    "posted": record.occurred_at,
                }
                # the message first (idempotent by its id), then the thread's row at its next version: an event
                # applied again after a crash between the two writes the message once
                await self.messages.update_one(
                    {"workspace_id": record.workspace_id, "message_id": event.message_id},
                    {"$setOnInsert": message},
                    upsert=True,
                )
                participants = list(doc.get("participants", []))
                for p in (event.sender, *event.to):
                    if (dumped := p.model_dump(mode="json")) not in participants:
                        participants.append(dumped)
                result = await self.collection.update_one(
                    {"_id": record.stream_id, "version": record.version - 1},
                    {
                        "$set": {"participants": participants, "updated_at": at, "version": record.version},
                        "$inc": {"message_count": 1},
                    },
                )
                return result.modified_count == 1
        return await self.update_row(record, {})

    async def get(self, workspace_id: str, thread_id: str) -> Document | None:
        return await self.collection.find_one({"workspace_id": workspace_id, "thread_id": thread_id}, {"_id": 0})

    async def list_messages(self, workspace_id: str, query: ListMessages) -> list[Document]:
        selector: Document = {"workspace_id": workspace_id}
        for field, value in (
            ("thread_id", query.thread_id),
            ("recipients", query.agent_id),
            ("team_ids", query.team_id),
        ):
            if value is not None:
                selector[field] = value
        if query.since is not None:
            selector["posted"] = {"$gte": query.since}
        return await self.messages_of(selector, query.limit, newest=query.since is None)

    async def messages_of(self, selector: Document, limit: int, newest: bool) -> list[Document]:
        """Oldest first: the latest ``limit`` (``newest``) or the first ``limit`` after a point in time."""
        order = -1 if newest else 1
        cursor = self.messages.find(
            selector, {"_id": 0, "workspace_id": 0, "team_ids": 0, "posted": 0}, sort=[("posted", order)], limit=limit
        )
        found = [MessageView.model_validate(doc).model_dump(mode="json") async for doc in cursor]
        return found[::-1] if newest else found


def register_mail_queries(router: QueryRouter, threads: ThreadsProjection) -> None:
    @router.register(ListMessages)
    async def list_messages(query: ListMessages, workspace_id: str) -> list[Document]:
        if query.thread_id is not None and await threads.get(workspace_id, query.thread_id) is None:
            raise ThreadNotFound(f"thread {query.thread_id} not found")
        return await threads.list_messages(workspace_id, query)

    @router.register(GetThread)
    async def get_thread(query: GetThread, workspace_id: str) -> Document:
        doc = await threads.get(workspace_id, query.thread_id)
        if doc is None:
            raise ThreadNotFound(f"thread {query.thread_id} not found")
        selector = {"workspace_id": workspace_id, "thread_id": query.thread_id}
        messages = await threads.messages_of(selector, THREAD_MESSAGES_SHOWN, newest=True)
        keep = ("thread_id", "subject", "started_by", "participants", "message_count", "created_at", "updated_at")
        return {**{k: doc[k] for k in keep}, "messages": messages}
