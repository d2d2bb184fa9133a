"""Queries answered from the agents read model."""

from typing import Any

from contracts.agents import GetAgent, ListAgents
from orchestrator.domain.agent import AgentNotFound
from orchestrator.projections import AgentsProjection
from servicekit.queries import QueryRouter


def build_queries(agents: AgentsProjection) -> QueryRouter:
    router = QueryRouter()

    @router.register(GetAgent)
    async def get_agent(query: GetAgent, workspace_id: str) -> dict[str, Any]:
        view = await agents.get(workspace_id, query.agent_id)
        if view is None:
            raise AgentNotFound(f"agent {query.agent_id} not found")
        return view.model_dump(mode="json")

    @router.register(ListAgents)
    async def list_agents(query: ListAgents, workspace_id: str) -> list[dict[str, Any]]:
        return [v.model_dump(mode="json") for v in await agents.list(workspace_id, query.status, query.limit)]

    return router
