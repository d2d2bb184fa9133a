"""Command handlers: rebuild the agent from its stream, decide, append."""

from contracts.agents import ChangeAgentStatus, RegisterAgent
from orchestrator.domain import agent
from servicekit.commands import CommandContext, CommandRouter
from servicekit.eventstore import StreamRef

router = CommandRouter()


def _stream(ctx: CommandContext, agent_id: str) -> StreamRef:
    return StreamRef(ctx.workspace_id, agent.AGGREGATE, agent_id)


@router.register(RegisterAgent)
async def register_agent(command: RegisterAgent, ctx: CommandContext) -> dict[str, str]:
    await ctx.execute(
        _stream(ctx, command.agent_id),
        agent.Agent(),
        agent.evolve,
        lambda s: agent.decide_register(s, command),
        new_stream=True,
    )
    return {"agent_id": command.agent_id}


@router.register(ChangeAgentStatus)
async def change_status(command: ChangeAgentStatus, ctx: CommandContext) -> dict[str, str]:
    await ctx.execute(
        _stream(ctx, command.agent_id), agent.Agent(), agent.evolve, lambda s: agent.decide_status(s, command)
    )
    return {"agent_id": command.agent_id}
