"""Delegations in the orchestrator: the command handlers, the reactor that starts a delegation's execution, and the
owner of the ``dg-`` executions the orchestrator follows.

- ``Delegate`` takes the chain from the parent delegation's stream and a named agent from its own stream (the truth:
  an agent made a moment ago is there already). A delegation by capability/role is routed here, at once: among the
  workspace's agents in the read model, with their in-flight tasks from the runtime's slots and the runtime
  workers' heartbeats (as the availability query sees them), the least loaded free one outside the chain is chosen
  and named in the step, so the runtime cannot route the task back into the chain. When every such agent is busy
  the delegation is refused with ``no_agent`` (see ``domain.delegation`` for why it is not queued).
- The reactor acts on the delegation's own commits inside the relay (``Relay.add_reactor``): a requested delegation
  gets its execution, a one-step inline ExecuteWorkflow with the delegation as its origin and its budget, sent with a
  command id derived from the delegation, so acting on a commit again is de-duplicated by the broker and the engine.
- The engine's events of that execution come back through ``following``; each becomes a NoteDelegationOutcome
  handled here at once, its command id taken from the event's id, so a redelivered event changes nothing.
"""

import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from contracts import Actor, EventRecord
from contracts.agents import AgentState
from contracts.delegations import Delegate, DelegationRequested, NoteDelegationOutcome
from contracts.workflows import ExecuteWorkflow, Origin
from orchestrator.domain import agent
from orchestrator.domain import delegation as dg
from orchestrator.projections import AgentsProjection
from orchestrator.runtime.slots import Slots
from orchestrator.runtime.workers import Workers
from servicekit.bus import Bus
from servicekit.commands import CommandContext, CommandRouter, envelope_for, publish_command
from servicekit.eventstore import Commit, EventStore, StreamRef, decode, load_state

log = logging.getLogger(__name__)
ACTOR = Actor(kind="service", id="orchestrator")
Clock = Callable[[], datetime]


def delegation_stream(workspace_id: str, delegation_id: str) -> StreamRef:
    return StreamRef(workspace_id, dg.AGGREGATE, delegation_id)


def register_delegations(
    router: CommandRouter,
    agents: AgentsProjection,
    slots: Slots,
    workers: Workers,
    *,
    max_depth: int,
    offline_after: timedelta,
    clock: Clock,
) -> None:
    async def target_of(ctx: CommandContext, command: Delegate, chain: list[str]) -> dg.Target:
        request, ws = command.request, ctx.workspace_id
        if request.agent_id is not None:
            stream = StreamRef(ws, agent.AGGREGATE, request.agent_id)
            found = (await load_state(ctx.store, stream, agent.Agent(), agent.evolve)).state
            paused = found.state is AgentState.PAUSED
            return dg.named(request.agent_id, known=found.exists, retired=found.retired, paused=paused)
        now = clock()
        in_flight = await slots.in_flight(ws, now)
        online = await workers.any_alive(now, offline_after)
        candidates = await agents.candidates(ws, in_flight)
        return dg.routed(candidates, request.capability, request.role, chain, online=online)

    @router.register(Delegate)
    async def delegate(command: Delegate, ctx: CommandContext) -> dict[str, str]:
        ws, request = ctx.workspace_id, command.request
        stream = delegation_stream(ws, command.delegation_id)
        existing = (await load_state(ctx.store, stream, dg.Delegation(), dg.evolve, ctx.cache)).state
        if existing.requested is None:
            parent: dg.Delegation | None = None
            if request.parent_delegation_id is not None:
                parent_stream = delegation_stream(ws, request.parent_delegation_id)
                parent = (await load_state(ctx.store, parent_stream, dg.Delegation(), dg.evolve)).state
                if not parent.exists:
                    raise dg.DelegationNotFound(f"delegation {request.parent_delegation_id} not found")
            chain = dg.chain_of(parent, request.from_agent_id)
            target = await target_of(ctx, command, chain)
            now = clock()
            await ctx.execute(
                stream,
                dg.Delegation(),
                dg.evolve,
                lambda s: dg.decide_request(s, command, chain, target, max_depth, now),
                new_stream=True,
            )
            existing = (await load_state(ctx.store, stream, dg.Delegation(), dg.evolve, ctx.cache)).state
        assert existing.requested is not None
        return {
            "delegation_id": command.delegation_id,
            "agent_id": existing.requested.agent_id,
            "execution_id": existing.requested.execution_id,
        }

    @router.register(NoteDelegationOutcome)
    async def note(command: NoteDelegationOutcome, ctx: CommandContext) -> dict[str, str]:
        now = clock()
        stream = delegation_stream(ctx.workspace_id, command.delegation_id)
        await ctx.execute(stream, dg.Delegation(), dg.evolve, lambda s: dg.decide_note(s, command, now))
        return {"delegation_id": command.delegation_id}


class DelegationReactor:
    """Starts a delegation's execution from its commit; notes the execution's events on the delegation."""

    def __init__(self, store: EventStore, bus: Bus, router: CommandRouter) -> None:
        self._store = store
        self._bus = bus
        self._router = router

    async def react(self, commit: Commit) -> None:
        if commit.stream.aggregate != dg.AGGREGATE:
            return
        for record in commit.events:
            event = decode(record)
            if isinstance(event, DelegationRequested):
                origin = Origin(
                    kind="delegation",
                    id=event.delegation_id,
                    objective=event.request.task,
                    since=datetime.fromisoformat(event.at),
                    budget_run_id=event.request.run_id,
                )
                command = ExecuteWorkflow(
                    workflow_id="delegation",
                    execution_id=event.execution_id,
                    input=event.request.input,
                    budget=event.request.budget,
                    spec=dg.delegation_spec(event),
                    origin=origin,
                )
                ws, command_id = commit.stream.workspace_id, f"start-{event.execution_id}"
                envelope = envelope_for(command, workspace_id=ws, command_id=command_id, actor=ACTOR)
                await publish_command(self._bus, "workflow-engine", envelope)

    async def follow(self, record: EventRecord) -> None:
        """An event of a delegation's execution: noted on the delegation at once (a repeat is recognised by its
        id)."""
        delegation_id = dg.parse_execution_id(record.aggregate_id)
        if delegation_id is None:
            return
        note = NoteDelegationOutcome(
            delegation_id=delegation_id, execution_id=record.aggregate_id, event_type=record.type, data=record.data
        )
        envelope = envelope_for(
            note, workspace_id=record.workspace_id, command_id=f"note-{record.event_id}", actor=ACTOR
        )
        outcome = await self._router.handle(envelope, self._store)
        if outcome.error_code is not None:
            log.warning("delegation %s did not take %s: %s", delegation_id, record.type, outcome.error_message)
