"""Team runs in the orchestrator: their command handlers, the reactor that starts and cancels their executions, and
the owner of the ``tr-`` executions the orchestrator follows.

- ``RunTeam`` reads the teams and their agents from the event store (not a read model: a team made a moment ago by
  a template is there already) and starts the run with the closed list of its members.
- The reactor acts on the run's own commits inside the relay (``Relay.add_reactor``): a started run gets its
  planning execution, a planned one its work execution, a summarising one the lead's summary, a cancelled one a
  CancelExecution for what was running. Each is an ExecuteWorkflow (an inline definition with the run as its
  origin) or CancelExecution over NATS, with a command id derived from the run and phase, so acting on a commit
  again is de-duplicated by the broker and by the engine.
- The engine's events of those executions come back through ``following``; each becomes a NoteRunExecution
  handled here at once, its command id taken from the event's id, so a redelivered event changes nothing.
"""

import logging
from collections.abc import Callable
from datetime import datetime

from contracts import Actor, ErrorCode, Event, EventRecord
from contracts.agents import AgentState
from contracts.budgets import Budget
from contracts.envelope import Envelope
from contracts.team_runs import (
    CancelTeamRun,
    NoteRunExecution,
    RecordHandoff,
    RunMember,
    RunTeam,
    TeamRunCancelled,
    TeamRunPlanned,
    TeamRunStarted,
    TeamRunSummarizing,
)
from contracts.workflows import CancelExecution, ExecuteWorkflow, Origin, StepScheduled, WorkflowSpec
from orchestrator.domain import agent, team, team_run
from orchestrator.domain.run_plans import plan_spec, summary_spec, work_spec
from servicekit.bus import Bus
from servicekit.commands import CommandContext, CommandRouter, envelope_for, publish_command
from servicekit.eventstore import Commit, EventStore, StreamRef, decode, load_state

log = logging.getLogger(__name__)
SERVICE = "orchestrator"
ACTOR = Actor(kind="service", id=SERVICE)
Clock = Callable[[], datetime]


def run_stream(workspace_id: str, run_id: str) -> StreamRef:
    return StreamRef(workspace_id, team_run.AGGREGATE, run_id)


class NoRunnableMember(team.InvalidTeam):
    code = ErrorCode.NO_RUNNABLE_MEMBER


async def run_members(ctx: CommandContext, team_ids: list[str]) -> tuple[list[RunMember], str]:
    """The members a run may plan with (each agent once, retired and paused ones left out) and its lead: the first
    team's lead, who must be able to work."""
    members: list[RunMember] = []
    lead: str | None = None
    for index, team_id in enumerate(team_ids):
        loaded = await load_state(
            ctx.store, StreamRef(ctx.workspace_id, team.AGGREGATE, team_id), team.Team(), team.evolve
        )
        state = loaded.state
        if not state.exists:
            raise team.TeamNotFound(f"team {team_id} not found")
        if state.archived:
            raise team.TeamIsArchived(f"team {team_id} is archived")
        for member in state.members:
            if any(m.agent_id == member.agent_id for m in members):
                continue
            found = await load_state(
                ctx.store, StreamRef(ctx.workspace_id, agent.AGGREGATE, member.agent_id), agent.Agent(), agent.evolve
            )
            spec = found.state.spec
            usable = spec is not None and not found.state.retired and found.state.state is AgentState.ACTIVE
            if index == 0 and member.lead:
                if not usable:
                    raise NoRunnableMember(f"the lead of team {team_id} ({member.agent_id}) is retired or paused")
                lead = member.agent_id
            if spec is None or not usable:
                continue
            members.append(
                RunMember(
                    agent_id=member.agent_id,
                    name=spec.name,
                    role=member.role,
                    team_id=team_id,
                    capabilities=list(spec.capabilities),
                    lead=index == 0 and member.lead,
                )
            )
    if lead is None:
        raise NoRunnableMember(f"team {team_ids[0]} has no lead")
    return members, lead


def register_team_runs(router: CommandRouter, clock: Clock) -> None:
    async def on_run(
        ctx: CommandContext, run_id: str, decide: Callable[[team_run.TeamRun], list[Event]]
    ) -> dict[str, str]:
        await ctx.execute(run_stream(ctx.workspace_id, run_id), team_run.TeamRun(), team_run.evolve, decide)
        return {"run_id": run_id}

    @router.register(RunTeam)
    async def run(command: RunTeam, ctx: CommandContext) -> dict[str, str]:
        members, lead = await run_members(ctx, list(command.team_ids))
        now = clock()
        await ctx.execute(
            run_stream(ctx.workspace_id, command.run_id),
            team_run.TeamRun(),
            team_run.evolve,
            lambda s: team_run.decide_start(s, command, members, lead, now),
            new_stream=True,
        )
        return {"run_id": command.run_id, "execution_id": team_run.execution_id(command.run_id, "plan")}

    @router.register(CancelTeamRun)
    async def cancel(command: CancelTeamRun, ctx: CommandContext) -> dict[str, str]:
        now = clock()
        return await on_run(ctx, command.run_id, lambda s: team_run.decide_cancel(s, command, now))

    @router.register(NoteRunExecution)
    async def note(command: NoteRunExecution, ctx: CommandContext) -> dict[str, str]:
        now = clock()
        return await on_run(ctx, command.run_id, lambda s: team_run.decide_note(s, command, now))

    @router.register(RecordHandoff)
    async def handoff(command: RecordHandoff, ctx: CommandContext) -> dict[str, str]:
        now = clock()
        return await on_run(ctx, command.run_id, lambda s: team_run.decide_handoff(s, command, now))


class TeamRunReactor:
    """Starts and cancels a run's executions from its commits; notes the executions' events on the run."""

    def __init__(self, store: EventStore, bus: Bus, router: CommandRouter) -> None:
        self._store = store
        self._bus = bus
        self._router = router

    async def react(self, commit: Commit) -> None:
        if commit.stream.aggregate != team_run.AGGREGATE:
            return
        ws, run_id = commit.stream.workspace_id, commit.stream.aggregate_id
        for record in commit.events:
            event = decode(record)
            match event:
                case TeamRunStarted():
                    work_budget, _ = team_run.budgets(event.budget)
                    await self._execute(ws, run_id, "plan", plan_spec(event), event, work_budget)
                case TeamRunPlanned() | TeamRunSummarizing():
                    stream = run_stream(ws, run_id)
                    # The router's state of the run holds this commit when it made it: then nothing is read.
                    loaded = await load_state(
                        self._store,
                        stream,
                        team_run.TeamRun(),
                        team_run.evolve,
                        self._router.cache,
                        at_least=commit.last_version,
                    )
                    state = loaded.state
                    started = state.started
                    assert started is not None
                    work_budget, summary_budget = team_run.budgets(started.budget)
                    if isinstance(event, TeamRunPlanned):
                        await self._execute(ws, run_id, "work", work_spec(state), started, work_budget)
                    else:
                        await self._execute(ws, run_id, "sum", summary_spec(state), started, summary_budget)
                case TeamRunCancelled(execution_id=execution_id, reason=reason) if execution_id:
                    cancel = CancelExecution(execution_id=execution_id, reason=f"the team run was cancelled: {reason}")
                    await self._send("workflow-engine", ws, f"cancel-{execution_id}", cancel)

    async def _execute(
        self,
        ws: str,
        run_id: str,
        phase: team_run.Phase,
        spec: WorkflowSpec,
        started: TeamRunStarted,
        budget: Budget | None,
    ) -> None:
        execution_id = team_run.execution_id(run_id, phase)
        origin = Origin(
            kind="team_run",
            id=run_id,
            team_id=started.team_ids[0],
            objective=started.objective,
            since=datetime.fromisoformat(started.at),
        )
        command = ExecuteWorkflow(
            workflow_id="team-run",
            execution_id=execution_id,
            input=started.input,
            budget=budget,
            spec=spec,
            origin=origin,
        )
        await self._send("workflow-engine", ws, f"start-{execution_id}", command)

    async def _send(self, service: str, ws: str, command_id: str, command: ExecuteWorkflow | CancelExecution) -> None:
        envelope = envelope_for(command, workspace_id=ws, command_id=command_id, actor=ACTOR)
        await publish_command(self._bus, service, envelope)

    async def follow(self, record: EventRecord) -> None:
        """An event of one of a run's executions: noted on the run at once (a repeat is recognised by its id)."""
        parsed = team_run.parse_execution_id(record.aggregate_id)
        if parsed is None or record.type == StepScheduled.type_name:
            return  # a step's start is its handoff, which the runtime records as the member begins
        if not team_run.noted(parsed[1], record.type):
            return  # a plan's or a summary's step: its execution's end says it all
        note = NoteRunExecution(
            run_id=parsed[0], execution_id=record.aggregate_id, event_type=record.type, data=record.data
        )
        envelope: Envelope = envelope_for(
            note, workspace_id=record.workspace_id, command_id=f"note-{record.event_id}", actor=ACTOR
        )
        outcome = await self._router.handle(envelope, self._store)
        if outcome.error_code is not None:
            log.warning("team run %s did not take %s: %s", parsed[0], record.type, outcome.error_message)
