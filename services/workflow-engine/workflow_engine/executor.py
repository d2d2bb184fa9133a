"""Carries out what execution events ask for: agent tasks on the TASKS stream, webhook calls, durable timers.

It reacts to the engine's own commits inside the relay (``Relay.add_reactor``): a commit is marked published only
after the executor has acted on it, so a commit written just before a crash is acted on by the relay's sweep after
the restart, and nothing waits for a round trip through the EVENTS stream. It needs no replay: the definition
comes with ExecutionStarted (or from the stream's first commit after a restart), and every effect is keyed by the
step attempt, so acting on a superseded attempt is harmless (its result is ignored). Each effect runs once per
step attempt: an agent task's timeout timer is written first, as the attempt's claim, and only the writer of the
claim sends the task (Nats-Msg-Id = the attempt's key); a webhook call is claimed the same way.
"""

import asyncio
import logging
from collections import OrderedDict
from datetime import datetime
from typing import Any

import httpx

from contracts import Actor, EventRecord
from contracts.workflows import (
    AgentStep,
    AgentTask,
    DelayStep,
    ExecutionCancelled,
    ExecutionCompleted,
    ExecutionFailed,
    ExecutionStarted,
    RecordTaskResult,
    RetryScheduled,
    StepScheduled,
    WebhookStep,
    WorkflowSpec,
)
from servicekit.bus import Bus
from servicekit.commands import envelope_for, publish_command
from servicekit.eventstore import Commit, EventStore, decode
from workflow_engine.domain.execution import AGGREGATE
from workflow_engine.handlers import execution_stream
from workflow_engine.timers import SERVICE, Timers

log = logging.getLogger(__name__)
Document = dict[str, Any]
MAX_WEBHOOK_TIMEOUT_S = 120.0
SPEC_CACHE_SIZE = 10_000
REACTS_TO = frozenset(
    {
        "ExecutionStarted",
        "StepScheduled",
        "RetryScheduled",
        "ExecutionCompleted",
        "ExecutionFailed",
        "ExecutionCancelled",
    }
)


class Executor:
    def __init__(
        self,
        store: EventStore,
        bus: Bus,
        timers: Timers,
        *,
        webhook_concurrency: int = 32,
    ) -> None:
        self._store = store
        self._bus = bus
        self._timers = timers
        self._webhooks = asyncio.Semaphore(webhook_concurrency)
        self._background: set[asyncio.Task[None]] = set()
        self._specs: OrderedDict[str, WorkflowSpec] = OrderedDict()

    async def stop(self) -> None:
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)

    async def react(self, commit: Commit) -> None:
        """Act on the events of one of the engine's commits, in their order."""
        for record in commit.events:
            if record.aggregate == AGGREGATE and record.type in REACTS_TO:
                await self.handle(record)

    async def handle(self, record: EventRecord) -> None:
        event = decode(record)
        ws, execution_id = record.workspace_id, record.aggregate_id
        match event:
            case ExecutionStarted():
                self._remember(f"{ws}/{execution_id}", event.spec)
            case StepScheduled():
                await self._on_scheduled(ws, execution_id, event, record.version)
            case RetryScheduled():
                await self._timers.schedule(
                    workspace_id=ws,
                    execution_id=execution_id,
                    step_id=event.step_id,
                    attempt=event.attempt,
                    purpose="retry",
                    due_at=datetime.fromisoformat(event.due_at),
                    version=record.version,
                )
            case ExecutionCompleted() | ExecutionFailed() | ExecutionCancelled():
                await self._timers.cancel_before(ws, execution_id, record.version)

    async def _on_scheduled(self, ws: str, execution_id: str, event: StepScheduled, version: int) -> None:
        if event.timeout_at is None and event.wake_at is None:
            return  # conditions, fan-outs and joins complete within their own decision
        spec = await self._spec(ws, execution_id)
        if spec is None:
            return
        step = spec.step(event.step_id)
        match step:
            case AgentStep() | WebhookStep() if event.timeout_at:
                # The timeout timer is also the attempt's claim: written first, so a redelivered or republished
                # event never sends the work again. A crash before the send leaves the claim, and the timeout
                # then fails the attempt (and retries it, per the step's policy): at most once per attempt.
                if await self._timer(ws, execution_id, event, "timeout", event.timeout_at, version):
                    if isinstance(step, AgentStep):
                        await self._dispatch_task(ws, execution_id, step, event)
                    else:
                        self._spawn(self._call_webhook(ws, execution_id, step, event))
            case DelayStep() if event.wake_at:
                await self._timer(ws, execution_id, event, "delay", event.wake_at, version)
            case _ if event.timeout_at:
                await self._timer(ws, execution_id, event, "timeout", event.timeout_at, version)

    async def _spec(self, ws: str, execution_id: str) -> WorkflowSpec | None:
        """The execution's definition: remembered from its ExecutionStarted, or read from its first commit."""
        key = f"{ws}/{execution_id}"
        spec = self._specs.get(key)
        if spec is None:
            first = await self._store.first_event(execution_stream(ws, execution_id))
            started = decode(first) if first is not None else None
            if not isinstance(started, ExecutionStarted):
                return None
            spec = self._remember(key, started.spec)
        return spec

    def _remember(self, key: str, spec: WorkflowSpec) -> WorkflowSpec:
        self._specs[key] = spec
        while len(self._specs) > SPEC_CACHE_SIZE:
            self._specs.popitem(last=False)
        return spec

    async def _timer(
        self, ws: str, execution_id: str, event: StepScheduled, purpose: Any, at: str, version: int
    ) -> bool:
        return await self._timers.schedule(
            workspace_id=ws,
            execution_id=execution_id,
            step_id=event.step_id,
            attempt=event.attempt,
            purpose=purpose,
            due_at=datetime.fromisoformat(at),
            version=version,
        )

    async def _dispatch_task(self, ws: str, execution_id: str, step: AgentStep, event: StepScheduled) -> None:
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
        )
        subjects = self._bus.subjects
        try:
            await self._bus.publish(
                subjects.task(ws, step.agent_id or "any"),
                task.model_dump_json().encode(),
                msg_id=event.key,
                stream=subjects.tasks_stream,
            )
        except Exception:
            # Not sent: give the claim back so that the redelivered event sends it.
            await self._timers.release(Timers.timer_id(ws, execution_id, step.id, event.attempt, "timeout"))
            raise

    def _spawn(self, work: Any) -> None:
        task: asyncio.Task[None] = asyncio.create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _call_webhook(self, ws: str, execution_id: str, step: WebhookStep, event: StepScheduled) -> None:
        async with self._webhooks:
            ok, output, error, kind = await call_webhook(step, event.input)
        result = RecordTaskResult(
            execution_id=execution_id,
            step_id=step.id,
            attempt=event.attempt,
            ok=ok,
            output=output,
            error=error,
            error_kind=kind,
        )
        envelope = envelope_for(
            result,
            workspace_id=ws,
            command_id=f"result-{event.key}".replace(":", "-"),
            actor=Actor(kind="service", id=SERVICE),
        )
        await publish_command(self._bus, SERVICE, envelope)


async def call_webhook(step: WebhookStep, body: dict[str, Any]) -> tuple[bool, Any, str | None, str]:
    """Make the step's HTTP call; returns (ok, output, error, error kind)."""
    timeout = min(step.timeout_s, MAX_WEBHOOK_TIMEOUT_S)
    try:
        async with httpx.AsyncClient(timeout=timeout) as client:
            response = await client.request(
                step.method, step.url, headers=step.headers, json=body if step.method != "GET" else None
            )
    except httpx.TimeoutException as exc:
        return False, None, f"webhook timed out: {exc!r}", "timeout"
    except httpx.HTTPError as exc:
        return False, None, f"webhook failed: {exc!r}", "connection"
    try:
        payload: Any = response.json()
    except ValueError:
        payload = response.text[:10_000]
    if response.is_success:
        return True, {"status": response.status_code, "body": payload}, None, ""
    return False, None, f"webhook answered {response.status_code}", f"http_{response.status_code}"
