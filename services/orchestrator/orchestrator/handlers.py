"""Command handlers: rebuild the aggregate from its stream, decide, append."""

import uuid
from collections.abc import Callable

from contracts import ErrorCode, Event
from contracts.agents import (
    RegisterAgent,
    RetireAgent,
    SetAgentState,
    StaffAgents,
    UpdateAgent,
    fits,
)
from contracts.budgets import SetWorkspaceBudget
from contracts.teams import (
    AddTeamMember,
    ArchiveTeam,
    CreateTeam,
    CreateTeamFromTemplate,
    RemoveTeamMember,
    UpdateTeam,
)
from orchestrator.domain import agent, budget, team
from orchestrator.domain.roles import sheet_for
from orchestrator.domain.team_templates import TEAM_TEMPLATES, instantiate
from orchestrator.projections import AgentsProjection, spec_of
from servicekit.commands import CommandContext, CommandRouter
from servicekit.eventstore import StreamRef, load_state

STAFF_NAMESPACE = uuid.UUID("6f1d7c52-55c1-4b5e-9a57-3f5b7f0c1a2e")


def staff_agent_id(workspace_id: str, role: str | None, capability: str | None, generation: int = 0) -> str:
    """The id of the agent staffing creates for a need: the same need in a workspace names the same agent (its
    next generation once that one is retired), so a redelivered command creates nothing twice."""
    suffix = f"|{generation}" if generation else ""
    return "agt_" + uuid.uuid5(STAFF_NAMESPACE, f"{workspace_id}|{role}|{capability}{suffix}").hex[:24]


def team_agent_id(team_id: str, key: str) -> str:
    """The id of the agent a team template creates for its member ``key``."""
    return "agt_" + uuid.uuid5(STAFF_NAMESPACE, f"team|{team_id}|{key}").hex[:24]


def build_router(agents: AgentsProjection) -> CommandRouter:
    router = CommandRouter()

    def stream(ctx: CommandContext, agent_id: str) -> StreamRef:
        return StreamRef(ctx.workspace_id, agent.AGGREGATE, agent_id)

    async def register_once(ctx: CommandContext, register: RegisterAgent) -> None:
        """Create an agent another command implies (staffing, a team template); one that exists is left alone, so
        a redelivered command creates nothing twice."""
        await ctx.execute(
            stream(ctx, register.agent_id),
            agent.Agent(),
            agent.evolve,
            lambda s: [] if s.exists else agent.decide_register(s, register),
            new_stream=True,
        )

    def team_stream(ctx: CommandContext, team_id: str) -> StreamRef:
        return StreamRef(ctx.workspace_id, team.AGGREGATE, team_id)

    async def on_agent(ctx: CommandContext, agent_id: str, decide: Callable[[agent.Agent], list[Event]]) -> int:
        return await ctx.execute(stream(ctx, agent_id), agent.Agent(), agent.evolve, decide)

    async def on_team(ctx: CommandContext, team_id: str, decide: Callable[[team.Team], list[Event]]) -> int:
        return await ctx.execute(team_stream(ctx, team_id), team.Team(), team.evolve, decide)

    @router.register(RegisterAgent)
    async def register_agent(command: RegisterAgent, ctx: CommandContext) -> dict[str, str]:
        await ctx.execute(
            stream(ctx, command.agent_id),
            agent.Agent(),
            agent.evolve,
            lambda s: agent.decide_register(s, command),
            new_stream=True,
        )
        return {"agent_id": command.agent_id}

    @router.register(UpdateAgent)
    async def update_agent(command: UpdateAgent, ctx: CommandContext) -> dict[str, str]:
        version = await on_agent(ctx, command.agent_id, lambda s: agent.decide_update(s, command))
        return {"agent_id": command.agent_id, "version": str(version)}

    @router.register(RetireAgent)
    async def retire_agent(command: RetireAgent, ctx: CommandContext) -> dict[str, str]:
        await on_agent(ctx, command.agent_id, lambda s: agent.decide_retire(s, command))
        return {"agent_id": command.agent_id}

    @router.register(SetAgentState)
    async def set_state(command: SetAgentState, ctx: CommandContext) -> dict[str, str]:
        await on_agent(ctx, command.agent_id, lambda s: agent.decide_state(s, command))
        return {"agent_id": command.agent_id}

    @router.register(StaffAgents)
    async def staff(command: StaffAgents, ctx: CommandContext) -> dict[str, str]:
        """Create an agent for each need no agent of the workspace meets; answers ``{agent id: role}`` of those
        created (or found created by an earlier delivery of this command)."""
        rows = await agents.rows(ctx.workspace_id)
        existing = [(doc["agent_id"], spec_of(doc)) for doc in rows if not doc.get("retired")]
        taken = {doc["agent_id"] for doc in rows}  # ids in use, retired agents' too: a retired one is not revived
        created: dict[str, str] = {}
        for need in command.needs:
            if any(fits(spec, need.role, need.capability) for _, spec in existing):
                continue
            generation = 0
            while (agent_id := staff_agent_id(ctx.workspace_id, need.role, need.capability, generation)) in taken:
                generation += 1
            sheet = sheet_for(need.role, need.capability)
            await register_once(ctx, RegisterAgent(agent_id=agent_id, spec=sheet.spec()))
            existing.append((agent_id, sheet.spec()))
            taken.add(agent_id)
            created[agent_id] = sheet.role
        return created

    async def agents_named(ctx: CommandContext, agent_ids: list[str]) -> dict[str, bool]:
        """Which of ``agent_ids`` are agents of the workspace (from their streams, the truth): id -> retired."""
        found: dict[str, bool] = {}
        for agent_id in agent_ids:
            loaded = await load_state(ctx.store, stream(ctx, agent_id), agent.Agent(), agent.evolve)
            if loaded.state.exists:
                found[agent_id] = loaded.state.retired
        return found

    @router.register(CreateTeam)
    async def create_team(command: CreateTeam, ctx: CommandContext) -> dict[str, str]:
        known = await agents_named(ctx, [m.agent_id for m in command.spec.members])
        await ctx.execute(
            team_stream(ctx, command.team_id),
            team.Team(),
            team.evolve,
            lambda s: team.decide_create(s, command, known),
            new_stream=True,
        )
        return {"team_id": command.team_id}

    @router.register(CreateTeamFromTemplate)
    async def create_team_from_template(command: CreateTeamFromTemplate, ctx: CommandContext) -> dict[str, str]:
        template = TEAM_TEMPLATES.get(command.request.template)
        if template is None:
            raise team.InvalidTeam(f"no team template {command.request.template!r}", code=ErrorCode.TEMPLATE_NOT_FOUND)
        new_agents, spec = instantiate(template, command.request, lambda key: team_agent_id(command.team_id, key))
        for agent_id, agent_spec in new_agents:
            await register_once(ctx, RegisterAgent(agent_id=agent_id, spec=agent_spec))
        create = CreateTeam(team_id=command.team_id, spec=spec)
        known = {agent_id: False for agent_id, _ in new_agents}
        await ctx.execute(
            team_stream(ctx, command.team_id),
            team.Team(),
            team.evolve,
            lambda s: team.decide_create(s, create, known, template=template.slug),
            new_stream=True,
        )
        return {"team_id": command.team_id, **{agent_id: spec.role for agent_id, spec in new_agents}}

    @router.register(UpdateTeam)
    async def update_team(command: UpdateTeam, ctx: CommandContext) -> dict[str, str]:
        await on_team(ctx, command.team_id, lambda s: team.decide_update(s, command))
        return {"team_id": command.team_id}

    @router.register(ArchiveTeam)
    async def archive_team(command: ArchiveTeam, ctx: CommandContext) -> dict[str, str]:
        await on_team(ctx, command.team_id, lambda s: team.decide_archive(s, command))
        return {"team_id": command.team_id}

    @router.register(AddTeamMember)
    async def add_member(command: AddTeamMember, ctx: CommandContext) -> dict[str, str]:
        known = await agents_named(ctx, [command.member.agent_id])
        await on_team(ctx, command.team_id, lambda s: team.decide_add(s, command, known))
        return {"team_id": command.team_id, "agent_id": command.member.agent_id}

    @router.register(RemoveTeamMember)
    async def remove_member(command: RemoveTeamMember, ctx: CommandContext) -> dict[str, str]:
        await on_team(ctx, command.team_id, lambda s: team.decide_remove(s, command))
        return {"team_id": command.team_id, "agent_id": command.agent_id}

    @router.register(SetWorkspaceBudget)
    async def set_budget(command: SetWorkspaceBudget, ctx: CommandContext) -> dict[str, str]:
        await ctx.execute(
            StreamRef(ctx.workspace_id, budget.AGGREGATE, budget.STREAM_ID),
            None,
            budget.evolve,
            lambda s: budget.decide_set(s, command),
        )
        return {}

    return router
