"""Durable timers: retry backoffs, step timeouts and delays.

A loop fires due timers by sending a FireTimer command whose id is the timer's id: the broker de-duplicates a timer
fired twice by two replicas or across a crash, and the execution ignores a timer that no longer matches its step.
A timer is kept in one of two ways, both written before anything waits on it:

- Most ride in the commit whose event starts them, as alarms (``carried_alarms``): a step's five-minute timeout
  costs no write of its own. The loop reads the commits whose alarm has come, in time order, from a watermark it
  saves after each pass; alarms of commits older than their execution's end are passed over. Nothing marks an
  alarm fired, so an alarm must be readable before the loop's clock reaches it: only timers due at least
  ``carry_after`` (30 s by default) after their decision ride in commits (a commit is written, and replicas'
  clocks agree, well within that).
- Timers due sooner, and a webhook's timeout, which is also the once-only claim of its call, are documents written
  by the executor when it acts on the commit, fired and marked by the loop, and dropped when the execution ends.
"""

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pymongo import ASCENDING
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError

from contracts import Actor, Event
from contracts.workflows import DelayStep, FireTimer, WebhookStep, WorkflowSpec
from servicekit.batching import InsertBatcher
from servicekit.bus import Bus
from servicekit.commands import envelope_for, publish_command
from servicekit.eventstore import Alarm, AlarmedCommit, EventStore
from workflow_engine.domain.execution import Execution, timers_started
from workflow_engine.projections import ExecutionsProjection

log = logging.getLogger(__name__)
Document = dict[str, Any]
Purpose = Literal["retry", "timeout", "delay"]
SERVICE = "workflow-engine"
PENDING, FIRED = "pending", "fired"
CARRY_AFTER = timedelta(seconds=30)  # by default, a timer due this long after its decision rides in the commit
ALARM_PAGE = 200
SAVE_WATERMARK_EVERY = timedelta(seconds=5)  # and whenever an alarm was fired; after a crash, at most this is re-read
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def timer_id(workspace_id: str, execution_id: str, step_id: str, attempt: int, purpose: Purpose) -> str:
    return f"{workspace_id}:{execution_id}:{step_id}:{attempt}:{purpose}"


def carried_alarms(
    workspace_id: str,
    execution_id: str,
    spec: WorkflowSpec | None,
    events: Sequence[Event],
    now: datetime,
    carry_after: timedelta = CARRY_AFTER,
) -> list[Alarm]:
    """The timers ``events`` start that ride in their commit: those due ``carry_after`` or later (not a webhook's)."""
    return [
        Alarm(
            timer_id(workspace_id, execution_id, timer.step_id, timer.attempt, timer.purpose),
            timer.at,
            {"step_id": timer.step_id, "attempt": timer.attempt, "purpose": timer.purpose},
        )
        for timer in timers_started(spec, events)
        if not timer.claims_call and timer.at - now >= carry_after
    ]


def may_have_timer_documents(state: Execution | None, carry_after: timedelta = CARRY_AFTER) -> bool:
    """Whether any timer of this execution may have been written as a document (so its end has some to drop):
    a webhook's claim, or a timeout, delay or retry backoff shorter than ``carry_after``. True when unsure."""
    if state is None or state.spec is None:
        return True
    far = carry_after.total_seconds()
    for step_id, run in state.steps.items():
        if run.attempt < 1:
            continue
        step = state.spec.step(step_id)
        lead = step.seconds if isinstance(step, DelayStep) else step.timeout_s
        if isinstance(step, WebhookStep) or lead < far:
            return True
        if any(step.retry.delay(failed) < far for failed in range(1, run.attempt)):  # the backoffs before each retry
            return True
    return False


class Timers:
    def __init__(self, collection: AsyncCollection[Document]) -> None:
        self.collection = collection
        self._inserts = InsertBatcher(collection)  # the claims of steps dispatched together share a round trip

    async def ensure_indexes(self) -> None:
        await self.collection.create_index([("state", ASCENDING), ("due_at", ASCENDING)])
        await self.collection.create_index(
            [("workspace_id", ASCENDING), ("execution_id", ASCENDING), ("version", ASCENDING)]
        )

    async def schedule(
        self,
        *,
        workspace_id: str,
        execution_id: str,
        step_id: str,
        attempt: int,
        purpose: Purpose,
        due_at: datetime,
        version: int,
    ) -> bool:
        """Write the timer; False when it already existed (so it can also serve as a once-only claim)."""
        try:
            await self._inserts.insert(
                {
                    "_id": timer_id(workspace_id, execution_id, step_id, attempt, purpose),
                    "workspace_id": workspace_id,
                    "execution_id": execution_id,
                    "step_id": step_id,
                    "attempt": attempt,
                    "purpose": purpose,
                    "due_at": due_at,
                    "state": PENDING,
                    "version": version,
                }
            )
        except DuplicateKeyError:
            return False
        return True

    async def cancel_before(self, workspace_id: str, execution_id: str, version: int) -> None:
        """Drop the timers an execution's end made pointless: those scheduled by events before ``version``. A timer
        of a later event (a retry that started after the end was decided) is kept, whatever order events arrive
        in. (The filter matches the compound index exactly; SecantusDB scans otherwise.)"""
        await self.collection.delete_many(
            {"workspace_id": workspace_id, "execution_id": execution_id, "version": {"$lt": version}}
        )

    async def due(self, now: datetime, limit: int = 200) -> list[Document]:
        cursor = self.collection.find(
            {"state": PENDING, "due_at": {"$lte": now}}, sort=[("due_at", ASCENDING)], limit=limit
        )
        return await cursor.to_list(None)

    async def mark_fired(self, timer_id: str) -> None:
        await self.collection.update_one({"_id": timer_id, "state": PENDING}, {"$set": {"state": FIRED}})


class TimerLoop:
    def __init__(
        self,
        timers: Timers,
        bus: Bus,
        clock: Callable[[], datetime],
        poll_s: float,
        store: EventStore,
        executions: ExecutionsProjection,
    ) -> None:
        self._timers = timers
        self._bus = bus
        self._clock = clock
        self._poll_s = poll_s
        self._store = store
        self._executions = executions
        self._upto: datetime | None = None  # alarms due by this have been fired
        self._saved: datetime | None = None  # the watermark saved last
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="timers")

    async def stop(self) -> None:
        # The flag as well as the cancellation: in 3.11 a wait_for inside (nats-py's requests) can swallow the latter.
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while not self._stopping:
            try:
                await self.fire_due()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("firing timers failed; retrying")
            await asyncio.sleep(self._poll_s)

    async def fire_due(self) -> int:
        """Fire every timer due by now, of both kinds; returns how many were fired."""
        now = self._clock()
        fired = 0
        for doc in await self._timers.due(now):
            await self._fire(doc["workspace_id"], doc["execution_id"], doc["step_id"], doc["attempt"], doc["purpose"])
            await self._timers.mark_fired(doc["_id"])
            fired += 1
        return fired + await self._ring_alarms(now)

    async def _ring_alarms(self, now: datetime) -> int:
        """Fire the alarms due after the watermark and by ``now``, page by page, then move the watermark to ``now``.
        A failure leaves the watermark where it was: the next pass fires those alarms again (harmlessly)."""
        if self._upto is None:
            self._upto = self._saved = await self._store.alarm_watermark() or EPOCH
        after, after_id, rung = self._upto, None, 0
        while True:
            page = await self._store.alarmed_commits(after, now, after_id=after_id, limit=ALARM_PAGE)
            ended = await self._executions.ended([commit.stream.stream_id for commit in page]) if page else {}
            for commit in page:
                # Passed over only when the end is later than the commit: a retry reopens a failed execution.
                if ended.get(commit.stream.stream_id, 0) < commit.last_version:
                    rung += await self._ring(commit, now)
            if len(page) < ALARM_PAGE:
                break
            after, after_id = page[-1].alarm_at, page[-1].commit_id
        if rung or self._saved is None or now - self._saved >= SAVE_WATERMARK_EVERY:
            await self._store.save_alarm_watermark(now)
            self._saved = now
        self._upto = now
        return rung

    async def _ring(self, commit: AlarmedCommit, now: datetime) -> int:
        due = [alarm for alarm in commit.alarms if commit.alarm_at <= alarm.at <= now]
        for alarm in due:
            data = alarm.data
            ws, execution_id = commit.stream.workspace_id, commit.stream.aggregate_id
            await self._fire(ws, execution_id, data["step_id"], data["attempt"], data["purpose"])
        later = [alarm.at for alarm in commit.alarms if alarm.at > now]
        if later:  # several timers in one commit (a fan-out's steps): the next one keeps the commit in view
            await self._store.move_alarm(commit.commit_id, commit.alarm_at, min(later))
        return len(due)

    async def _fire(self, workspace_id: str, execution_id: str, step_id: str, attempt: int, purpose: Purpose) -> None:
        command = FireTimer(execution_id=execution_id, step_id=step_id, attempt=attempt, purpose=purpose)
        the_id = timer_id(workspace_id, execution_id, step_id, attempt, purpose)
        envelope = envelope_for(
            command,
            workspace_id=workspace_id,
            command_id=f"timer-{the_id}".replace(":", "-"),
            actor=Actor(kind="service", id=SERVICE),
        )
        await publish_command(self._bus, SERVICE, envelope)
