"""What a task of a team run gets beyond a plain step's: the run's shared context, and a record of its handoff.

The shared context is the run's working memory (scope ``team_run``), kept by the memory service and reached over
NATS only: every member reads it in its prompt (the worker asks for it with its recall, in one query), and each
member's output is added to it under its step's id when its step succeeds, confirmed by memory (committed) before
the result goes on. What a member was given (the handoff:
objective, task, inputs, constraints, the shared context keys it could read) is sent to the orchestrator as a
RecordHandoff, keyed by the attempt, so it is recorded once with its size however often the task is delivered.
"""

import logging
from typing import Any

from contracts import Actor, OutcomeStatus
from contracts.mail import ListMessages
from contracts.memory import PutWorkingEntry, Scope, ScopeKind
from contracts.team_runs import Handoff, RecordHandoff
from contracts.workflows import AgentTask
from servicekit.bus import Bus
from servicekit.commands import envelope_for, publish_command, send_and_wait
from servicekit.queries import QueryFailed, ask

log = logging.getLogger(__name__)
MAX_SHARED_ENTRIES = 50  # of a run's shared context, in a member's prompt
MAX_RECEIVED = 20


def run_scope(task: AgentTask) -> Scope | None:
    """The working-memory scope of the task's team run; None for a task of any other execution."""
    if task.origin is None or task.origin.kind != "team_run":
        return None
    return Scope(kind=ScopeKind.TEAM_RUN, id=task.origin.id)


class RunContext:
    def __init__(self, bus: Bus, timeout_s: float) -> None:
        self._bus = bus
        self._timeout_s = timeout_s

    async def received(self, task: AgentTask, agent_id: str) -> list[dict[str, Any]]:
        """The messages the agent received since its run (or delegation) started, oldest first (at most
        MAX_RECEIVED, the latest); empty for a task of a plain execution, and (with a warning) if none can be read."""
        if task.origin is None or task.origin.since is None:
            return []
        query = ListMessages(agent_id=agent_id, since=task.origin.since, limit=500)
        try:
            rows = await ask(self._bus, task.workspace_id, query, self._timeout_s)
        except QueryFailed as exc:
            log.warning("the messages to %s could not be read for %s: %s", agent_id, task.key, exc)
            return []
        return [row for row in rows if isinstance(row, dict)][-MAX_RECEIVED:]

    async def record_handoff(
        self, task: AgentTask, agent_id: str, shared_keys: list[str], message_ids: list[str] | None = None
    ) -> None:
        scope = run_scope(task)
        if scope is None:
            return
        given = task.input if isinstance(task.input, dict) else {"input": task.input}
        handoff = Handoff(
            objective=task.origin.objective if task.origin else "",
            task=str(given.get("task") or task.instructions or task.step_name or task.step_id)[:2000],
            produces=str(given.get("produces") or "")[:500],
            inputs={k: v for k, v in given.items() if k not in {"kind", "objective", "task", "produces"}},
            constraints={
                "deadline": task.deadline,
                "output_schema": task.output_schema is not None,
                "budget": task.budget.model_dump(mode="json") if task.budget else None,
                "max_output_tokens": task.max_output_tokens,
            },
            references=shared_keys,
            messages=message_ids or [],
        )
        command = RecordHandoff(
            run_id=scope.id, step_id=task.step_id, attempt=task.attempt, agent_id=agent_id, handoff=handoff
        )
        await self._publish(task, "orchestrator", "handoff-" + task.key.replace(":", "-"), command, agent_id)

    async def share_output(self, task: AgentTask, agent_id: str, output: Any) -> None:
        """Add a member's recorded output to the run's shared context, under its step's id."""
        scope = run_scope(task)
        if scope is None:
            return
        command = PutWorkingEntry(scope=scope, key=task.step_id, value=output)
        command_id = "share-" + task.key.replace(":", "-")
        envelope = envelope_for(
            command, workspace_id=task.workspace_id, command_id=command_id, actor=Actor(kind="agent", id=agent_id)
        )
        # Taken by memory before the result goes on (waited for up to the memory timeout; it is in the stream
        # anyway): memory's write is then done before the engine hands the result on, and the next member's read,
        # from memory's read model, which follows its commit, nearly always finds it.
        outcome = await send_and_wait(self._bus, "memory", envelope, self._timeout_s)
        if outcome is None:
            log.warning("memory did not confirm the shared output of %s in time", task.key)
        elif outcome.status is not OutcomeStatus.ACCEPTED:
            log.warning("memory refused the shared output of %s: %s", task.key, outcome.error_message)

    async def _publish(
        self, task: AgentTask, service: str, command_id: str, command: RecordHandoff | PutWorkingEntry, agent_id: str
    ) -> None:
        envelope = envelope_for(
            command, workspace_id=task.workspace_id, command_id=command_id, actor=Actor(kind="agent", id=agent_id)
        )
        await publish_command(self._bus, service, envelope)
