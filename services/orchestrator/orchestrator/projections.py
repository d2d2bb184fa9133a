"""The agents read model: one document per agent, carrying the version of the last event applied."""

from typing import Any

from pymongo import ASCENDING
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError

from contracts import EventRecord
from contracts.agents import AgentRegistered, AgentStatus, AgentStatusChanged, AgentView
from orchestrator.domain.agent import AGGREGATE
from servicekit.eventstore import decode
from servicekit.projections import StreamProjection

Document = dict[str, Any]


class AgentsProjection(StreamProjection):
    aggregate = AGGREGATE
    name = "agents"

    def __init__(self, collection: AsyncCollection[Document]) -> None:
        self.collection = collection

    async def ensure_indexes(self) -> None:
        await self.collection.create_index([("workspace_id", ASCENDING), ("agent_id", ASCENDING)], unique=True)
        await self.collection.create_index([("workspace_id", ASCENDING), ("status", ASCENDING)])

    async def position(self, record: EventRecord) -> int:
        doc = await self.collection.find_one({"_id": record.stream_id}, {"version": 1})
        return 0 if doc is None else int(doc["version"])

    async def apply(self, record: EventRecord) -> bool:
        event = decode(record)
        stamp = record.occurred_at.isoformat()
        match event:
            case AgentRegistered(agent_id=agent_id, spec=spec):
                try:
                    await self.collection.insert_one(
                        {
                            "_id": record.stream_id,
                            "workspace_id": record.workspace_id,
                            "agent_id": agent_id,
                            **spec.model_dump(mode="json"),
                            "status": AgentStatus.AVAILABLE.value,
                            "version": record.version,
                            "created_at": stamp,
                            "updated_at": stamp,
                        }
                    )
                except DuplicateKeyError:
                    return False
                return True
            case AgentStatusChanged(status=status):
                return await self._update(record, {"status": status.value, "updated_at": stamp})
            case _:
                return await self._update(record, {"updated_at": stamp})

    async def _update(self, record: EventRecord, changes: Document) -> bool:
        result = await self.collection.update_one(
            {"_id": record.stream_id, "version": record.version - 1},
            {"$set": {**changes, "version": record.version}},
        )
        return result.modified_count == 1

    async def get(self, workspace_id: str, agent_id: str) -> AgentView | None:
        doc = await self.collection.find_one({"workspace_id": workspace_id, "agent_id": agent_id})
        return None if doc is None else _view(doc)

    async def list(self, workspace_id: str, status: AgentStatus | None, limit: int) -> list[AgentView]:
        query: Document = {"workspace_id": workspace_id}
        if status is not None:
            query["status"] = status.value
        cursor = self.collection.find(query, sort=[("created_at", ASCENDING), ("agent_id", ASCENDING)], limit=limit)
        return [_view(doc) async for doc in cursor]


def _view(doc: Document) -> AgentView:
    return AgentView.model_validate({k: v for k, v in doc.items() if k != "_id"})
