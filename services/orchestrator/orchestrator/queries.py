"""Queries answered from the orchestrator's read models and the runtime's records."""

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from contracts.agents import (
    AgentAvailability,
    AgentState,
    AgentStatus,
    AgentView,
    GetAgent,
    GetAvailability,
    GetUsage,
    ListAgents,
    UsageReport,
    can_take,
)
from contracts.budgets import MICROS_PER_USD
from contracts.delegations import GetDelegation, ListDelegations
from contracts.team_runs import RUN_ENDS, GetTeamRun, ListTeamRuns, TeamRunStatus
from contracts.teams import GetTeam, GetTeamStatus, ListTeams, ListTeamTemplates
from orchestrator.delegation_projection import DelegationsProjection
from orchestrator.domain import team_run
from orchestrator.domain.agent import AgentNotFound
from orchestrator.domain.delegation import DelegationNotFound
from orchestrator.domain.team import TeamNotFound
from orchestrator.domain.team_run import TeamRunNotFound
from orchestrator.domain.team_templates import TEAM_TEMPLATES
from orchestrator.projections import AgentsProjection, TeamsProjection, WorkspaceBudgetsProjection, spec_of
from orchestrator.run_projection import TeamRunsProjection
from orchestrator.runtime.budgets import Budgets
from orchestrator.runtime.ledger import UsageLedger
from orchestrator.runtime.slots import Slots
from orchestrator.runtime.workers import Workers
from servicekit.queries import QueryRouter

Document = dict[str, Any]


def status_of(doc: Document, in_flight: int, online: bool) -> AgentStatus:
    """An agent's availability, derived: retired, paused (by a person), offline (no runtime worker alive), busy (at
    its concurrency limit) or available."""
    if doc.get("retired"):
        return AgentStatus.RETIRED
    if doc.get("state") == AgentState.PAUSED.value:
        return AgentStatus.PAUSED
    if not online:
        return AgentStatus.OFFLINE
    return AgentStatus.BUSY if in_flight >= int(doc.get("concurrency_limit", 4)) else AgentStatus.AVAILABLE


def run_line(doc: Document) -> Document:
    """A run as a list shows it: where it stands, not its outputs."""
    plan = doc.get("plan", [])
    done = sum(1 for step in plan if step.get("status") == "succeeded")
    keep = ("run_id", "kind", "team_ids", "objective", "status", "lead", "created_at", "updated_at", "ended_at")
    return {**{k: doc.get(k) for k in keep}, "steps": len(plan), "steps_done": done}


def build_queries(
    agents: AgentsProjection,
    teams: TeamsProjection,
    caps: WorkspaceBudgetsProjection,
    slots: Slots,
    workers: Workers,
    budgets: Budgets,
    usage: UsageLedger,
    runs: TeamRunsProjection,
    *,
    offline_after: timedelta,
    clock: Callable[[], datetime],
) -> QueryRouter:
    router = QueryRouter()

    async def live(workspace_id: str) -> tuple[dict[str, int], bool]:
        now = clock()
        return await slots.in_flight(workspace_id, now), await workers.any_alive(now, offline_after)

    def view(doc: Document, in_flight: dict[str, int], online: bool) -> AgentView:
        spec = spec_of(doc)
        n = in_flight.get(doc["agent_id"], 0)
        return AgentView(
            agent_id=doc["agent_id"],
            workspace_id=doc["workspace_id"],
            **spec.model_dump(),
            state=AgentState(doc.get("state", AgentState.ACTIVE.value)),
            retired=bool(doc.get("retired", False)),
            spec_version=int(doc.get("spec_version", 1)),
            status=status_of(doc, n, online),
            in_flight=n,
            version=int(doc["version"]),
            created_at=doc["created_at"],
            updated_at=doc["updated_at"],
        )

    @router.register(GetAgent)
    async def get_agent(query: GetAgent, workspace_id: str) -> Document:
        doc = await agents.get(workspace_id, query.agent_id)
        if doc is None:
            raise AgentNotFound(f"agent {query.agent_id} not found")
        return view(doc, *await live(workspace_id)).model_dump(mode="json")

    def matches(doc: Document, role: str | None, capability: str | None) -> bool:
        return (role is None and capability is None) or can_take(spec_of(doc), role, capability)

    @router.register(ListAgents)
    async def list_agents(query: ListAgents, workspace_id: str) -> list[Document]:
        in_flight, online = await live(workspace_id)
        views = [
            view(doc, in_flight, online)
            for doc in await agents.rows(workspace_id)
            if matches(doc, query.role, query.capability)
        ]
        return [v.model_dump(mode="json") for v in views if query.status in {None, v.status}][: query.limit]

    @router.register(GetAvailability)
    async def availability(query: GetAvailability, workspace_id: str) -> list[Document]:
        in_flight, online = await live(workspace_id)
        answer = []
        for doc in await agents.rows(workspace_id, retired=False):
            if not matches(doc, query.role, query.capability):
                continue
            n = in_flight.get(doc["agent_id"], 0)
            answer.append(
                AgentAvailability(
                    agent_id=doc["agent_id"],
                    name=doc["name"],
                    role=doc["role"],
                    capabilities=doc["capabilities"],
                    status=status_of(doc, n, online),
                    in_flight=n,
                    limit=int(doc.get("concurrency_limit", 4)),
                ).model_dump(mode="json")
            )
        return answer

    @router.register(GetTeam)
    async def get_team(query: GetTeam, workspace_id: str) -> Document:
        found = await teams.get(workspace_id, query.team_id)
        if found is None:
            raise TeamNotFound(f"team {query.team_id} not found")
        return found.model_dump(mode="json")

    @router.register(ListTeams)
    async def list_teams(query: ListTeams, workspace_id: str) -> list[Document]:
        department = query.department.value if query.department else None
        found = await teams.list(workspace_id, department, query.include_archived, query.limit)
        return [t.model_dump(mode="json") for t in found]

    @router.register(GetTeamStatus)
    async def team_status(query: GetTeamStatus, workspace_id: str) -> Document:
        found = await teams.get(workspace_id, query.team_id)
        if found is None:
            raise TeamNotFound(f"team {query.team_id} not found")
        in_flight, online = await live(workspace_id)
        members = []
        for member in found.members:
            doc = await agents.get(workspace_id, member.agent_id)
            n = in_flight.get(member.agent_id, 0)
            members.append(
                {
                    **member.model_dump(mode="json"),
                    "name": doc["name"] if doc else None,
                    "status": status_of(doc, n, online).value if doc else AgentStatus.RETIRED.value,
                    "in_flight": n,
                    "limit": int(doc.get("concurrency_limit", 4)) if doc else 0,
                }
            )
        now = clock()
        month_start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        usage_total, _ = await usage.totals(
            workspace_id, since=month_start, agent_ids=[m.agent_id for m in found.members]
        )
        active = [
            run
            for status in (TeamRunStatus.PLANNING, TeamRunStatus.RUNNING, TeamRunStatus.SUMMARIZING)
            for run in await runs.list(workspace_id, query.team_id, None, status.value, 20)
        ]
        recent = [r for r in await runs.list(workspace_id, query.team_id, None, None, 10) if r["status"] in RUN_ENDS]
        return {
            "team": found.model_dump(mode="json"),
            "members": members,
            "active_runs": [run_line(r) for r in active],
            "recent_runs": [run_line(r) for r in recent],
            "usage_this_month": usage_total.model_dump(),
        }

    @router.register(GetTeamRun)
    async def get_run(query: GetTeamRun, workspace_id: str) -> Document:
        doc = await runs.get(workspace_id, query.run_id)
        if doc is None:
            raise TeamRunNotFound(f"team run {query.run_id} not found")
        ids = [team_run.execution_id(query.run_id, phase) for phase in team_run.PHASES]
        total, by_execution = await usage.totals(workspace_id, execution_ids=ids, group_by="execution")
        phases = dict(zip(ids, ("plan", "work", "summary"), strict=True))
        doc["usage"] = {
            "total": total.model_dump(),
            "by_phase": {phases[k]: v.model_dump() for k, v in by_execution.items() if k in phases},
        }
        return doc

    @router.register(ListTeamRuns)
    async def list_runs(query: ListTeamRuns, workspace_id: str) -> list[Document]:
        status = query.status.value if query.status else None
        return [run_line(r) for r in await runs.list(workspace_id, query.team_id, query.kind, status, query.limit)]

    @router.register(ListTeamTemplates)
    async def team_templates(query: ListTeamTemplates, workspace_id: str) -> list[Document]:
        return [t.model_dump(mode="json") for t in TEAM_TEMPLATES.values()]

    @router.register(GetUsage)
    async def get_usage(query: GetUsage, workspace_id: str) -> Document:
        total, groups = await usage.totals(
            workspace_id,
            since=query.since,
            until=query.until,
            agent_id=query.agent_id,
            execution_id=query.execution_id,
            group_by=query.group_by.value if query.group_by else None,
        )
        cap = await caps.cap(workspace_id)
        month: Document | None = None
        if cap is not None:
            used = await budgets.used(f"{workspace_id}:month:{clock():%Y-%m}") or {}
            month = {
                "month": f"{clock():%Y-%m}",
                "tokens": cap.tokens,
                "cost_usd": cap.cost_usd,
                "used_tokens": int(used.get("used_tokens", 0)),
                "used_cost_usd": round(int(used.get("used_micros", 0)) / MICROS_PER_USD, 6),
                "reserved_tokens": int(used.get("held_tokens", 0)),
            }
        report = UsageReport(since=query.since, until=query.until, total=total, groups=groups, budget=month)
        return report.model_dump(mode="json")

    return router


def register_delegation_queries(router: QueryRouter, delegations: DelegationsProjection, usage: UsageLedger) -> None:
    """A delegation with the model usage of its execution; the delegations of the workspace, newest first."""

    @router.register(GetDelegation)
    async def get_delegation(query: GetDelegation, workspace_id: str) -> Document:
        doc = await delegations.get(workspace_id, query.delegation_id)  # another workspace's is not found
        if doc is None:
            raise DelegationNotFound(f"delegation {query.delegation_id} not found")
        total, _ = await usage.totals(workspace_id, execution_ids=[doc["execution_id"]])
        return {**doc, "usage": total.model_dump()}

    @router.register(ListDelegations)
    async def list_delegations(query: ListDelegations, workspace_id: str) -> list[Document]:
        status = query.status.value if query.status else None
        return await delegations.list(workspace_id, query.agent_id, status, query.limit)
