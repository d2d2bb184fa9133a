"""Messaging in the orchestrator: PostMessage's handler and the reactor that delivers posted messages live.

- ``PostMessage`` reads its addressees from the event store (an agent must be one of the workspace's and not
  retired; a team's members are read as they are now), then decides on the thread (pure ``domain.thread``).
- The inbox reactor acts on the thread's commits inside the relay (``Relay.add_reactor``): each MessagePosted is
  published on ``agent.<workspace>.<agent id>.inbox`` of every recipient, over core NATS (the message's id in its
  Nats-Msg-Id header). Delivery is live and at least once: a listener may see a message twice after a crash and
  tells repeats by that id; one that was not listening reads the thread from the store.
"""

from collections.abc import Callable
from datetime import datetime

from contracts import ErrorCode
from contracts.errors import DomainError
from contracts.mail import InboxMessage, MessagePosted, MessageView, Participant, PostMessage
from orchestrator.domain import agent, team, thread
from orchestrator.domain.agent import AgentNotFound
from servicekit.bus import MSG_ID, Bus
from servicekit.commands import CommandContext, CommandRouter
from servicekit.eventstore import Commit, StreamRef, decode, load_state

Clock = Callable[[], datetime]


def thread_stream(workspace_id: str, thread_id: str) -> StreamRef:
    return StreamRef(workspace_id, thread.AGGREGATE, thread_id)


async def _agent(ctx: CommandContext, agent_id: str) -> agent.Agent:
    loaded = await load_state(
        ctx.store, StreamRef(ctx.workspace_id, agent.AGGREGATE, agent_id), agent.Agent(), agent.evolve
    )
    if not loaded.state.exists:
        raise AgentNotFound(f"agent {agent_id} not found")
    return loaded.state


async def _reached(ctx: CommandContext, to: list[Participant]) -> list[str]:
    """The agents the addressees reach: an agent itself (not a retired one), a team's members."""
    reached: list[str] = []
    for participant in to:
        if participant.kind == "agent":
            if (await _agent(ctx, participant.id)).retired:
                raise DomainError(f"agent {participant.id} is retired", code=ErrorCode.AGENT_RETIRED)
            reached.append(participant.id)
        elif participant.kind == "team":
            ref = StreamRef(ctx.workspace_id, team.AGGREGATE, participant.id)
            found = (await load_state(ctx.store, ref, team.Team(), team.evolve)).state
            if not found.exists:
                raise team.TeamNotFound(f"team {participant.id} not found")
            reached.extend(m.agent_id for m in found.members)
    return list(dict.fromkeys(reached))


def register_mail(router: CommandRouter, clock: Clock) -> None:
    @router.register(PostMessage)
    async def post(command: PostMessage, ctx: CommandContext) -> dict[str, str]:
        if command.from_agent_id is not None:
            await _agent(ctx, command.from_agent_id)
            sender = Participant(kind="agent", id=command.from_agent_id)
        else:
            actor = ctx.envelope.actor
            sender = Participant(kind="agent" if actor.kind == "agent" else "person", id=actor.id)
        stream = thread_stream(ctx.workspace_id, command.thread_id)
        state = (await load_state(ctx.store, stream, thread.Thread(), thread.evolve)).state
        to = thread.addressees(state, command, sender)
        recipients = [a for a in await _reached(ctx, to) if not (sender.kind == "agent" and a == sender.id)]
        at = clock().isoformat()
        await ctx.execute(
            stream,
            thread.Thread(),
            thread.evolve,
            lambda s: thread.decide_post(s, command, sender, to, recipients, at),
            new_stream=command.new_thread,
        )
        return {"thread_id": command.thread_id, "message_id": command.message_id}


def view_of(event: MessagePosted) -> MessageView:
    return MessageView(
        message_id=event.message_id,
        thread_id=event.thread_id,
        sender=event.sender,
        to=event.to,
        recipients=event.recipients,
        body=event.body,
        run_id=event.run_id,
        posted_at=event.at,
    )


class InboxReactor:
    """Delivers each posted message to its recipients' inbox subjects."""

    def __init__(self, bus: Bus) -> None:
        self._bus = bus

    async def react(self, commit: Commit) -> None:
        if commit.stream.aggregate != thread.AGGREGATE:
            return
        ws = commit.stream.workspace_id
        for record in commit.events:
            event = decode(record)
            if not isinstance(event, MessagePosted):
                continue
            message = view_of(event)
            for agent_id in event.recipients:
                body = InboxMessage(workspace_id=ws, agent_id=agent_id, message=message).model_dump_json()
                subject = self._bus.subjects.inbox(ws, agent_id)
                await self._bus.nc.publish(subject, body.encode(), headers={MSG_ID: event.message_id})
            await self._bus.nc.flush(timeout=max(1, round(self._bus.timeout_s)))
