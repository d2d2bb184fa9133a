"""The agents read model: one document per agent, carrying the version of the last event applied."""

from typing import Any

from pymongo import ASCENDING

from contracts import EventRecord
from contracts.agents import AgentRegistered, AgentStatus, AgentStatusChanged, AgentView
from orchestrator.domain.agent import AGGREGATE
from servicekit.eventstore import decode
from servicekit.projections import RowProjection

Document = dict[str, Any]


class AgentsProjection(RowProjection):
    aggregate = AGGREGATE
    name = "agents"

    async def ensure_indexes(self) -> None:
        await self.collection.create_index([("workspace_id", ASCENDING), ("agent_id", ASCENDING)], unique=True)
        await self.collection.create_index([("workspace_id", ASCENDING), ("status", ASCENDING)])

    async def apply(self, record: EventRecord) -> bool:
        event = decode(record)
        stamp = record.occurred_at.isoformat()
        match event:
            case AgentRegistered(agent_id=agent_id, spec=spec):
                return await self.insert_row(
                    record,
                    {
                        "agent_id": agent_id,
                        **spec.model_dump(mode="json"),
                        "status": AgentStatus.AVAILABLE.value,
                        "created_at": stamp,
                        "updated_at": stamp,
                    },
                )
            case AgentStatusChanged(status=status):
                return await self.update_row(record, {"status": status.value, "updated_at": stamp})
            case _:
                return await self.update_row(record, {"updated_at": stamp})

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
