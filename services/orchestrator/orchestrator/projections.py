"""The orchestrator's read models: agents and teams (one row each) and the workspaces' monthly budget caps."""

from typing import Any

from pymongo import ASCENDING

from contracts import EventRecord
from contracts.agents import (
    AgentPaused,
    AgentRegistered,
    AgentResumed,
    AgentRetired,
    AgentSpec,
    AgentState,
    AgentStatus,
    AgentStatusChanged,
    AgentUpdated,
)
from contracts.budgets import Budget, WorkspaceBudgetSet
from contracts.teams import (
    TeamArchived,
    TeamCreated,
    TeamMember,
    TeamMemberAdded,
    TeamMemberRemoved,
    TeamUpdated,
    TeamView,
)
from orchestrator.domain.agent import AGGREGATE
from orchestrator.domain.budget import AGGREGATE as BUDGET_AGGREGATE
from orchestrator.domain.routing import Candidate
from orchestrator.domain.team import AGGREGATE as TEAM_AGGREGATE
from servicekit.eventstore import decode
from servicekit.projections import RowProjection

Document = dict[str, Any]
SPEC_FIELDS = tuple(AgentSpec.model_fields)


class AgentsProjection(RowProjection):
    aggregate = AGGREGATE
    name = "agents"

    async def ensure_indexes(self) -> None:
        await self.collection.create_index([("workspace_id", ASCENDING), ("agent_id", ASCENDING)], unique=True)
        await self.collection.create_index([("workspace_id", ASCENDING), ("created_at", ASCENDING)])

    async def apply(self, record: EventRecord) -> bool:
        event = decode(record)
        stamp = record.occurred_at.isoformat()
        match event:
            case AgentRegistered(agent_id=agent_id, spec=spec):
                row = {"agent_id": agent_id, **spec.model_dump(mode="json"), "spec_version": 1}
                row.update(state=AgentState.ACTIVE.value, retired=False, created_at=stamp, updated_at=stamp)
                return await self.insert_row(record, row)
            case AgentUpdated(spec=spec, spec_version=spec_version):
                changes = {**spec.model_dump(mode="json"), "spec_version": spec_version, "updated_at": stamp}
                return await self.update_row(record, changes)
            case AgentPaused():
                return await self.update_row(record, {"state": AgentState.PAUSED.value, "updated_at": stamp})
            case AgentResumed():
                return await self.update_row(record, {"state": AgentState.ACTIVE.value, "updated_at": stamp})
            case AgentRetired():
                return await self.update_row(record, {"retired": True, "updated_at": stamp})
            case AgentStatusChanged(status=status):
                state = AgentState.PAUSED if status is AgentStatus.OFFLINE else AgentState.ACTIVE
                return await self.update_row(record, {"state": state.value, "updated_at": stamp})
            case _:
                return await self.update_row(record, {"updated_at": stamp})

    async def get(self, workspace_id: str, agent_id: str) -> Document | None:
        return await self.collection.find_one({"workspace_id": workspace_id, "agent_id": agent_id})

    async def versions(self, workspace_id: str, stream_ids: list[str]) -> dict[str, int]:
        """The version each of these agents' rows is at (absent: not in the read model yet)."""
        cursor = self.collection.find({"_id": {"$in": stream_ids}, "workspace_id": workspace_id}, {"version": 1})
        return {str(doc["_id"]): int(doc["version"]) async for doc in cursor}

    async def rows(self, workspace_id: str, *, retired: bool | None = None, limit: int = 1000) -> list[Document]:
        query: Document = {"workspace_id": workspace_id}
        if retired is not None:
            query["retired"] = {"$ne": True} if not retired else True
        cursor = self.collection.find(query, sort=[("created_at", ASCENDING), ("agent_id", ASCENDING)], limit=limit)
        return [doc async for doc in cursor]

    async def candidates(self, workspace_id: str, in_flight: dict[str, int]) -> list[Candidate]:
        """The workspace's agents that are not retired, as routing sees them."""
        return [candidate_of(doc, in_flight) for doc in await self.rows(workspace_id, retired=False)]


def candidate_of(doc: Document, in_flight: dict[str, int]) -> Candidate:
    """An agent's row as routing sees it, with its tasks in flight."""
    return Candidate(
        agent_id=doc["agent_id"],
        spec=spec_of(doc),
        spec_version=int(doc.get("spec_version", 1)),
        state=AgentState(doc.get("state", AgentState.ACTIVE.value)),
        retired=bool(doc.get("retired", False)),
        in_flight=in_flight.get(doc["agent_id"], 0),
    )


def spec_of(doc: Document) -> AgentSpec:
    return AgentSpec.model_validate({k: doc[k] for k in SPEC_FIELDS if k in doc})


class WorkspaceBudgetsProjection(RowProjection):
    """One row per workspace with its monthly cap (``budget``, or null when none)."""

    aggregate = BUDGET_AGGREGATE
    name = "workspace_budgets"

    async def apply(self, record: EventRecord) -> bool:
        event = decode(record)
        if not isinstance(event, WorkspaceBudgetSet):
            return await self.update_row(record, {})
        row = {"budget": None if event.budget is None else event.budget.model_dump(mode="json")}
        if record.version == 1:
            return await self.insert_row(record, row)
        return await self.update_row(record, row)

    async def row(self, workspace_id: str) -> Document | None:
        """The workspace's row (its ``budget`` and ``version``), or None before a cap was ever set."""
        return await self.collection.find_one({"workspace_id": workspace_id}, {"budget": 1, "version": 1})

    async def cap(self, workspace_id: str) -> Budget | None:
        doc = await self.row(workspace_id)
        return None if doc is None or doc.get("budget") is None else Budget.model_validate(doc["budget"])


class TeamsProjection(RowProjection):
    """One row per team, with its members."""

    aggregate = TEAM_AGGREGATE
    name = "teams"

    async def ensure_indexes(self) -> None:
        await self.collection.create_index([("workspace_id", ASCENDING), ("team_id", ASCENDING)], unique=True)
        await self.collection.create_index([("workspace_id", ASCENDING), ("created_at", ASCENDING)])

    async def apply(self, record: EventRecord) -> bool:
        event = decode(record)
        stamp = record.occurred_at.isoformat()
        if isinstance(event, TeamCreated):
            row = {
                "team_id": event.team_id,
                "name": event.spec.name,
                "department": event.spec.department.value,
                "description": event.spec.description,
                "members": [m.model_dump(mode="json") for m in event.spec.members],
                "template": event.template,
                "archived": False,
                "created_at": stamp,
                "updated_at": stamp,
            }
            return await self.insert_row(record, row)
        doc = await self.collection.find_one({"_id": record.stream_id}, {"members": 1})
        members = [TeamMember.model_validate(m) for m in (doc or {}).get("members", [])]
        changes: Document = {"updated_at": stamp}
        match event:
            case TeamUpdated(details=details):
                changes.update(details.model_dump(mode="json"))
            case TeamArchived():
                changes["archived"] = True
            case TeamMemberAdded(member=member):
                kept = [m.model_copy(update={"lead": False}) if member.lead else m for m in members]
                changes["members"] = [m.model_dump(mode="json") for m in (*kept, member)]
            case TeamMemberRemoved(agent_id=agent_id):
                changes["members"] = [m.model_dump(mode="json") for m in members if m.agent_id != agent_id]
        return await self.update_row(record, changes)

    async def get(self, workspace_id: str, team_id: str) -> TeamView | None:
        doc = await self.collection.find_one({"workspace_id": workspace_id, "team_id": team_id})
        return None if doc is None else team_view(doc)

    async def list(
        self, workspace_id: str, department: str | None, include_archived: bool, limit: int
    ) -> list[TeamView]:
        query: Document = {"workspace_id": workspace_id}
        if department is not None:
            query["department"] = department
        if not include_archived:
            query["archived"] = False
        cursor = self.collection.find(query, sort=[("created_at", ASCENDING), ("team_id", ASCENDING)], limit=limit)
        return [team_view(doc) async for doc in cursor]


def team_view(doc: Document) -> TeamView:
    members = [TeamMember.model_validate(m) for m in doc["members"]]
    fields = {k: v for k, v in doc.items() if k not in {"_id", "members"}}
    lead = next((m.agent_id for m in members if m.lead), "")
    return TeamView.model_validate({**fields, "members": members, "lead": lead})
