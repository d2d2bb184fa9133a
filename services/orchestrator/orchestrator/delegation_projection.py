"""The read model of delegations: one row per delegation, with its agent, chain, execution, result and timings."""

from typing import Any

from pymongo import ASCENDING, DESCENDING

from contracts import EventRecord
from contracts.delegations import (
    DelegationFailed,
    DelegationRequested,
    DelegationStarted,
    DelegationStatus,
    DelegationSucceeded,
)
from orchestrator.domain import delegation
from servicekit.eventstore import decode
from servicekit.projections import RowProjection

Document = dict[str, Any]
LINE_FIELDS = ("delegation_id", "task", "agent_id", "from_agent_id", "parent_delegation_id", "depth", "status")


class DelegationsProjection(RowProjection):
    aggregate = delegation.AGGREGATE
    name = "delegations"

    async def ensure_indexes(self) -> None:
        await self.collection.create_index([("workspace_id", ASCENDING), ("delegation_id", ASCENDING)], unique=True)
        await self.collection.create_index(
            [("workspace_id", ASCENDING), ("agent_id", ASCENDING), ("created_at", DESCENDING)]
        )
        await self.collection.create_index([("workspace_id", ASCENDING), ("created_at", DESCENDING)])

    async def apply(self, record: EventRecord) -> bool:
        event = decode(record)
        match event:
            case DelegationRequested(request=request):
                row = {
                    **request.model_dump(mode="json", exclude={"agent_id"}),
                    "delegation_id": event.delegation_id,
                    "agent_id": event.agent_id,
                    "routed": event.routed,
                    "chain": event.chain,
                    "depth": event.depth,
                    "execution_id": event.execution_id,
                    "status": DelegationStatus.REQUESTED.value,
                    "attempt": 0,
                    "output": None,
                    "error": None,
                    "error_kind": None,
                    "created_at": event.at,
                    "deadline_at": event.deadline_at,
                    "started_at": None,
                    "ended_at": None,
                    "updated_at": event.at,
                }
                return await self.insert_row(record, row)
            case DelegationStarted(attempt=attempt, at=at):
                changes: Document = {"status": DelegationStatus.RUNNING.value, "attempt": attempt}
                if attempt == 1:
                    changes["started_at"] = at
            case DelegationSucceeded(output=output, at=at):
                changes = {"status": DelegationStatus.SUCCEEDED.value, "output": output, "ended_at": at}
            case DelegationFailed(error=error, error_kind=kind, at=at):
                changes = {"status": DelegationStatus.FAILED.value, "error": error, "error_kind": kind, "ended_at": at}
            case _:
                return await self.update_row(record, {})
        return await self.update_row(record, {**changes, "updated_at": at})

    async def get(self, workspace_id: str, delegation_id: str) -> Document | None:
        return await self.collection.find_one(
            {"workspace_id": workspace_id, "delegation_id": delegation_id}, {"_id": 0}
        )

    async def list(self, workspace_id: str, agent_id: str | None, status: str | None, limit: int) -> list[Document]:
        """Newest first; ``agent_id`` finds the delegations to that agent and those it made."""
        query: Document = {"workspace_id": workspace_id}
        if agent_id is not None:
            query["$or"] = [{"agent_id": agent_id}, {"from_agent_id": agent_id}]
        if status is not None:
            query["status"] = status
        projection = {"_id": 0, **dict.fromkeys((*LINE_FIELDS, "created_at", "ended_at"), 1)}
        cursor = self.collection.find(query, projection, sort=[("created_at", DESCENDING)], limit=limit)
        return [doc async for doc in cursor]
