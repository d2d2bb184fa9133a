"""Carries out what execution events ask for: agent tasks on the TASKS stream, webhook calls, durable timers.

It reacts to the engine's own commits inside the relay (``Relay.add_reactor``), each stream's in order: a commit
counts as done only after the executor has acted on it, so a commit written just before a crash is acted on again
when another relay takes over the dead writer's work, and nothing waits for a round trip through the EVENTS
stream. It needs no replay: the definition is the one the command handlers just decided with (their state cache),
or comes from the stream's first commit; every effect is keyed by the step attempt, so acting on a superseded
attempt is harmless.

Each attempt's task is sent at most once. It is published with Nats-Msg-Id = the attempt's key, and the TASKS
stream drops a repeat within its de-duplication window; so a commit is (re)sent only while it is well inside that
window (RESEND_WITHIN), and acting on an older one sends nothing: the attempt's timeout fails it if its task never
went out (and retries it, per the step's policy). Most timers are carried by the commit itself (see ``timers``);
one due soon is written as a timer document beside the send, not before it, so the hand-over from one step to the
next waits for no database write of the executor's. A webhook is not de-duplicated by anyone, so its timer is
written first, as a claim, and only the writer of the claim makes the call: a webhook call is never repeated.
"""

import asyncio
import logging
from datetime import timedelta
from typing import Any

import nats.errors
from pydantic import ValidationError

from contracts import Actor, EventRecord
from contracts.workflows import (
    AbandonStep,
    AgentStep,
    AgentTask,
    ExecutionCancelled,
    ExecutionCompleted,
    ExecutionFailed,
    RecordTaskResult,
    RetryScheduled,
    StepScheduled,
    WebhookStep,
    WorkflowSpec,
    result_command_id,
)
from servicekit.bus import TASKS_DUPLICATE_WINDOW_S, Bus
from servicekit.commands import envelope_for, publish_command
from servicekit.eventstore import Commit, EventStore, StateCache, decode, load_state, utcnow
from workflow_engine.domain import execution
from workflow_engine.domain.addresses import DEFAULT_POLICY, AddressPolicy
from workflow_engine.domain.execution import timers_started
from workflow_engine.handlers import execution_stream
from workflow_engine.timers import CARRY_AFTER, SERVICE, TimerDocuments, carried_by, may_have_timer_documents, timer_id
from workflow_engine.webhooks import call_webhook

log = logging.getLogger(__name__)
RESEND_WITHIN = timedelta(seconds=TASKS_DUPLICATE_WINDOW_S / 2)  # well inside the broker's de-duplication
ACTS_ON = frozenset(
    cls.type_name for cls in (StepScheduled, RetryScheduled, ExecutionCompleted, ExecutionFailed, ExecutionCancelled)
)


class Executor:
    def __init__(
        self,
        store: EventStore,
        bus: Bus,
        timers: TimerDocuments,
        cache: StateCache,
        *,
        webhook_concurrency: int = 32,
        webhook_addresses: AddressPolicy = DEFAULT_POLICY,
        carry_after: timedelta = CARRY_AFTER,
    ) -> None:
        self._store = store
        self._bus = bus
        self._timers = timers
        self._cache = cache
        self._carry_after = carry_after
        self._webhooks = asyncio.Semaphore(webhook_concurrency)
        self._addresses = webhook_addresses
        self._background: set[asyncio.Task[None]] = set()

    async def stop(self) -> None:
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)

    async def react(self, commit: Commit) -> None:
        """Act on the events of one of the engine's commits, in their order."""
        if commit.stream.aggregate != execution.AGGREGATE:
            return
        resend = utcnow() - commit.recorded_at < RESEND_WITHIN
        carried = frozenset(timer.timer_id for timer in carried_by(commit))
        for record in commit.events:
            if record.type in ACTS_ON:
                await self._act(record, resend=resend, carried=carried)

    async def give_up(self, commit: Commit, error: Exception) -> None:
        """The relay's word that acting on ``commit`` failed time after time (not for want of the broker or the
        database): the attempts it starts are abandoned (AbandonStep), so that their execution fails where it can
        be seen instead of waiting for ever. Read from the events' raw data, as decoding them may be what fails. An
        execution's end needs nothing: the timers it would drop are ignored when they fire."""
        if commit.stream.aggregate != execution.AGGREGATE:
            return
        ws, execution_id = commit.stream.workspace_id, commit.stream.aggregate_id
        for record in commit.events:
            data = record.data
            starts = record.type == RetryScheduled.type_name or (
                record.type == StepScheduled.type_name and (data.get("timeout_at") or data.get("wake_at"))
            )
            if not starts:
                continue  # a condition, a fan-out or a join: nothing was left to carry out
            try:
                command = AbandonStep.model_validate(
                    {
                        "execution_id": execution_id,
                        "step_id": data.get("step_id"),
                        "attempt": data.get("attempt"),
                        "error": f"the engine could not carry out this attempt (commit {commit.commit_id})",
                    }
                )
            except ValidationError:
                log.error("cannot abandon the attempt of event %s: it names no valid step attempt", record.event_id)
                continue
            envelope = envelope_for(
                command,
                workspace_id=ws,
                command_id=f"abandon-{record.event_id}",
                actor=Actor(kind="service", id=SERVICE),
            )
            await publish_command(self._bus, SERVICE, envelope)

    async def _act(self, record: EventRecord, *, resend: bool, carried: frozenset[str]) -> None:
        event = decode(record)
        ws, execution_id = record.workspace_id, record.aggregate_id
        match event:
            case StepScheduled():
                await self._on_scheduled(ws, execution_id, event, record.version, resend=resend, carried=carried)
            case RetryScheduled():
                await self._keep_timers(ws, execution_id, None, event, record.version, carried)
            case ExecutionCompleted() | ExecutionFailed() | ExecutionCancelled():
                cached = self._cache.get(execution_stream(ws, execution_id), execution.evolve)
                known = cached.state if cached is not None and cached.version >= record.version else None
                if may_have_timer_documents(known, self._carry_after):
                    await self._timers.cancel_before(ws, execution_id, record.version)

    async def _on_scheduled(
        self, ws: str, execution_id: str, event: StepScheduled, version: int, *, resend: bool, carried: frozenset[str]
    ) -> None:
        if event.timeout_at is None and event.wake_at is None:
            return  # conditions, fan-outs and joins complete within their own decision
        state = await self._execution(ws, execution_id)
        if state is None or state.spec is None:
            return
        spec = state.spec
        step = spec.step(event.step_id)
        timers = self._keep_timers(ws, execution_id, spec, event, version, carried)
        match step:
            case AgentStep() if event.timeout_at:
                if not resend:
                    await timers  # the task may have gone out long ago: the attempt is left to its timeout
                    return
                for outcome in await asyncio.gather(
                    timers, self._dispatch_task(ws, state, step, event), return_exceptions=True
                ):
                    if isinstance(outcome, BaseException):
                        raise outcome  # acted on again later: sent again, and dropped by the broker if it went out
            case WebhookStep() if event.timeout_at:
                if not await timers:  # its timeout is the once-only claim of the call
                    return
                if state.origin is not None and state.origin.kind == "dry_run":  # shown, never called
                    would = {"dry_run": True, "would_call": f"{step.method} {step.url}"}
                    self._spawn(self._record_result(ws, execution_id, step.id, event, ok=True, kind="", output=would))
                else:
                    self._spawn(self._call_webhook(ws, execution_id, step, event))
            case _:
                await timers

    async def _execution(self, ws: str, execution_id: str) -> execution.Execution | None:
        """The execution as the command handlers just decided it (their cached state), else replayed."""
        stream = execution_stream(ws, execution_id)
        cached = self._cache.get(stream, execution.evolve)
        if cached is not None and isinstance(cached.state, execution.Execution) and cached.state.spec is not None:
            return cached.state
        loaded = await load_state(self._store, stream, execution.Execution(), execution.evolve)
        return loaded.state if loaded.state.exists else None

    async def _keep_timers(
        self,
        ws: str,
        execution_id: str,
        spec: WorkflowSpec | None,
        event: StepScheduled | RetryScheduled,
        version: int,
        carried: frozenset[str],
    ) -> bool:
        """Write as timer documents the timers ``event`` starts (``timers_started``) that its commit does not carry;
        False when one was written already (a webhook's claim, held by whoever wrote it first)."""
        claimed = True
        for timer in timers_started(spec, [event]):
            the_id = timer_id(ws, execution_id, timer.step_id, timer.attempt, timer.purpose)
            if the_id not in carried:
                claimed &= await self._timers.schedule(
                    workspace_id=ws,
                    execution_id=execution_id,
                    step_id=timer.step_id,
                    attempt=timer.attempt,
                    purpose=timer.purpose,
                    due_at=timer.at,
                    version=version,
                )
        return claimed

    async def _dispatch_task(self, ws: str, state: execution.Execution, step: AgentStep, event: StepScheduled) -> None:
        execution_id = state.execution_id
        task = AgentTask(
            key=event.key,
            workspace_id=ws,
            execution_id=execution_id,
            step_id=step.id,
            attempt=event.attempt,
            agent_id=step.agent_id,
            role=step.role,
            capability=step.capability,
            instructions=step.instructions,
            input=event.input,
            deadline=event.timeout_at or "",
            workflow_id=state.workflow_id,
            step_name=step.name,
            output_schema=step.output_schema,
            context={sid: run["output"] for sid, run in state.context()["steps"].items() if sid != step.id},
            budget=state.budget,
            origin=state.origin,
            max_output_tokens=step.max_output_tokens,
        )
        subjects = self._bus.subjects
        try:
            await self._bus.publish(
                subjects.task(ws, step.agent_id or "any"),
                task.model_dump_json().encode(),
                msg_id=event.key,
                stream=subjects.tasks_stream,
            )
        except nats.errors.MaxPayloadError:
            # It can never be sent: the attempt fails now rather than waiting for its timeout.
            await self._record_result(
                ws,
                execution_id,
                step.id,
                event,
                ok=False,
                error="the task is larger than a message may be",
                kind="dispatch",
            )

    def _spawn(self, work: Any) -> None:
        task: asyncio.Task[None] = asyncio.create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _call_webhook(self, ws: str, execution_id: str, step: WebhookStep, event: StepScheduled) -> None:
        async with self._webhooks:
            ok, output, error, kind = await call_webhook(
                step.url, step.method, step.headers, event.input, step.timeout_s, self._addresses
            )
        await self._record_result(ws, execution_id, step.id, event, ok=ok, output=output, error=error, kind=kind)

    async def _record_result(
        self,
        ws: str,
        execution_id: str,
        step_id: str,
        event: StepScheduled,
        *,
        ok: bool,
        kind: str,
        output: Any = None,
        error: str | None = None,
    ) -> None:
        result = RecordTaskResult(
            execution_id=execution_id,
            step_id=step_id,
            attempt=event.attempt,
            ok=ok,
            output=output,
            error=error,
            error_kind=kind,
        )
        envelope = envelope_for(
            result,
            workspace_id=ws,
            command_id=result_command_id(event.key),
            actor=Actor(kind="service", id=SERVICE),
        )
        await publish_command(self._bus, SERVICE, envelope)
