"""Read models for listing workflows and executions. Details are served by replaying the stream itself."""

from collections.abc import Sequence
from typing import Any

from pymongo import ASCENDING, DESCENDING
from pymongo.asynchronous.collection import AsyncCollection

from contracts import Event, EventRecord
from contracts.workflows import (
    ExecutionCancelled,
    ExecutionCompleted,
    ExecutionFailed,
    ExecutionPaused,
    ExecutionResumed,
    ExecutionRetried,
    ExecutionStarted,
    ExecutionStatus,
    WorkflowArchived,
    WorkflowCreated,
    WorkflowUpdated,
)
from servicekit.batching import UpdateBatcher
from servicekit.eventstore import EventStore, decode
from servicekit.projections import RowProjection
from workflow_engine.domain import definition, execution

Document = dict[str, Any]


class WorkflowsProjection(RowProjection):
    aggregate = definition.AGGREGATE
    name = "workflows"

    async def ensure_indexes(self) -> None:
        await self.collection.create_index([("workspace_id", ASCENDING), ("created_at", ASCENDING)])

    async def apply(self, record: EventRecord) -> bool:
        event = decode(record)
        at = record.occurred_at.isoformat()
        match event:
            case WorkflowCreated():
                return await self.insert_row(
                    record,
                    {
                        "workflow_id": event.workflow_id,
                        "name": event.spec.name,
                        "description": event.spec.description,
                        "workflow_version": event.version,
                        "template": event.template,
                        "archived": False,
                        "created_at": at,
                        "updated_at": at,
                    },
                )
            case WorkflowUpdated():
                changes = {"name": event.spec.name, "description": event.spec.description}
                return await self.update_row(record, {**changes, "workflow_version": event.version, "updated_at": at})
            case WorkflowArchived():
                return await self.update_row(record, {"archived": True, "updated_at": at})
        return await self.update_row(record, {})

    async def list(self, workspace_id: str, include_archived: bool, limit: int) -> list[Document]:
        query: Document = {"workspace_id": workspace_id}
        if not include_archived:
            query["archived"] = False
        cursor = self.collection.find(query, {"_id": 0, "version": 0}, sort=[("created_at", ASCENDING)], limit=limit)
        return await cursor.to_list(None)


STATUS_OF: dict[type[Event], ExecutionStatus] = {
    ExecutionPaused: ExecutionStatus.PAUSED,
    ExecutionResumed: ExecutionStatus.RUNNING,
    ExecutionRetried: ExecutionStatus.RUNNING,
    ExecutionCancelled: ExecutionStatus.CANCELLED,
    ExecutionCompleted: ExecutionStatus.COMPLETED,
    ExecutionFailed: ExecutionStatus.FAILED,
}
STATUS_EVENTS = frozenset(cls.type_name for cls in STATUS_OF)


class ExecutionsProjection(RowProjection):
    """Execution summaries for listing. Only the start and status changes are written: each status event is applied
    if it is newer than the last one applied (``version`` below it), so duplicates and late arrivals are skipped
    and the latest status wins, whatever the order."""

    aggregate = execution.AGGREGATE
    name = "executions"
    ordered = False  # a row is created by its start and takes the newest status: any order, any concurrency

    def __init__(self, collection: AsyncCollection[Document]) -> None:
        super().__init__(collection)
        self._updates = UpdateBatcher(collection)  # status changes that arrive together share a round trip

    async def ensure_indexes(self) -> None:
        await self.collection.create_index(
            [("workspace_id", ASCENDING), ("workflow_id", ASCENDING), ("status", ASCENDING), ("started_at", DESCENDING)]
        )
        await self.collection.create_index(
            [("workspace_id", ASCENDING), ("status", ASCENDING), ("started_at", DESCENDING)]
        )

    async def handle(self, record: EventRecord, store: EventStore) -> int:
        if record.type != ExecutionStarted.type_name and record.type not in STATUS_EVENTS:
            return 0
        if await self.apply(record):
            return 1
        if await self.position(record) < record.version:
            # Not applied, and the row is not past it: there was no row when it was tried (its start had not
            # arrived; it may have landed since, so a row below this version is no proof of a duplicate). Try
            # again, catching up from the stream.
            return await super().handle(record, store)
        return 0  # the row is at or past this event (the summary takes the latest status; types arrive unordered)

    async def apply(self, record: EventRecord) -> bool:
        event = decode(record)
        at = record.occurred_at.isoformat()
        if isinstance(event, ExecutionStarted):
            return await self.insert_row(
                record,
                {
                    "execution_id": event.execution_id,
                    "workflow_id": event.workflow_id,
                    "workflow_version": event.workflow_version,
                    "status": ExecutionStatus.RUNNING.value,
                    "started_at": event.started_at,
                    "updated_at": at,
                    "finished_at": None,
                },
            )
        status = STATUS_OF.get(type(event))
        if status is None:
            return False
        terminal = status in {ExecutionStatus.COMPLETED, ExecutionStatus.FAILED, ExecutionStatus.CANCELLED}
        changed = await self._updates.update(
            {"_id": record.stream_id, "version": {"$lt": record.version}},
            {
                "$set": {
                    "status": status.value,
                    "updated_at": at,
                    "finished_at": at if terminal else None,
                    "version": record.version,
                }
            },
        )
        if changed is None:  # its batch did not change every row: is this one at (or past) the event?
            return await self.position(record) >= record.version
        return changed

    async def ended(self, stream_ids: Sequence[str]) -> dict[str, int]:
        """Which of these executions have ended, as far as the summaries know (they may lag, never lead): the
        version each one's summary is at."""
        query = {"_id": {"$in": list(stream_ids)}, "finished_at": {"$ne": None}}
        return {doc["_id"]: int(doc["version"]) async for doc in self.collection.find(query, {"version": 1})}

    async def list(
        self, workspace_id: str, workflow_id: str | None, status: ExecutionStatus | None, limit: int
    ) -> list[Document]:
        query: Document = {"workspace_id": workspace_id}
        if workflow_id is not None:
            query["workflow_id"] = workflow_id
        if status is not None:
            query["status"] = status.value
        cursor = self.collection.find(query, {"_id": 0}, sort=[("started_at", DESCENDING)], limit=limit)
        return await cursor.to_list(None)
