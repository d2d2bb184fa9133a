"""Durable timers: retry backoffs, step timeouts and delays.

A loop fires due timers by sending a FireTimer command whose id is the timer's id: the broker de-duplicates a timer
fired twice by two replicas or across a crash, and the execution ignores a timer that no longer matches its step.
A timer is kept in one of two ways, both written before anything waits on it:

- Carried timers ride in the commit whose event starts them (``carried_timers``, stored in the commit's
  ``carried``): a step's five-minute timeout costs no write of its own. The loop reads the commits whose next
  carried timer has come, in time order, from a watermark it saves after each pass; the timers of commits older
  than their execution's end are passed over. Nothing marks a carried timer fired, so it must be readable before
  the loop's clock reaches it: only timers due at least ``carry_after`` (30 s by default) after their decision are
  carried (a commit is written, and replicas' clocks agree, well within that).
- Timer documents, for timers due sooner and for a webhook's timeout (which is also the once-only claim of its
  call), are written by the executor when it acts on the commit, fired and marked by the loop, and dropped when the
  execution ends.
"""

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
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
from servicekit.eventstore import Commit, EventStore, StreamRef
from servicekit.loops import Every
from workflow_engine.domain.execution import Execution, timers_started
from workflow_engine.projections import ExecutionsProjection

log = logging.getLogger(__name__)
Document = dict[str, Any]
Purpose = Literal["retry", "timeout", "delay"]
SERVICE = "workflow-engine"
PENDING, FIRED = "pending", "fired"
CARRY_AFTER = timedelta(seconds=30)  # by default, a timer due this long after its decision is carried by the commit
CARRIED_PAGE = 200
SAVE_WATERMARK_EVERY = timedelta(seconds=5)  # and whenever a timer was fired; after a crash, at most this is re-read
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def timer_id(workspace_id: str, execution_id: str, step_id: str, attempt: int, purpose: Purpose) -> str:
    return f"{workspace_id}:{execution_id}:{step_id}:{attempt}:{purpose}"


@dataclass(frozen=True, slots=True)
class CarriedTimer:
    """A timer that rides in the commit that starts it, due ``at``."""

    timer_id: str
    at: datetime
    step_id: str
    attempt: int
    purpose: Purpose


def carried_timers(
    workspace_id: str,
    execution_id: str,
    spec: WorkflowSpec | None,
    events: Sequence[Event],
    now: datetime,
    carry_after: timedelta = CARRY_AFTER,
) -> list[CarriedTimer]:
    """The timers ``events`` start that ride in their commit: those due ``carry_after`` or later (not a webhook's)."""
    return [
        CarriedTimer(
            timer_id(workspace_id, execution_id, timer.step_id, timer.attempt, timer.purpose),
            timer.at,
            timer.step_id,
            timer.attempt,
            timer.purpose,
        )
        for timer in timers_started(spec, events)
        if not timer.claims_call and timer.at - now >= carry_after
    ]


def carry(timers: Sequence[CarriedTimer]) -> Document:
    """What a commit carries for ``timers`` (``EventStore.append(carried=...)``): the timers, and when the next is
    due (indexed). Nothing when there are none, so that the index holds only commits with timers."""
    if not timers:
        return {}
    stored = [
        {"id": t.timer_id, "at": t.at, "data": {"step_id": t.step_id, "attempt": t.attempt, "purpose": t.purpose}}
        for t in timers
    ]
    return {"timers": stored, "next_timer_at": min(t.at for t in timers)}


def _timers_in(carried: Mapping[str, Any]) -> list[CarriedTimer]:
    return [
        CarriedTimer(t["id"], t["at"], t["data"]["step_id"], t["data"]["attempt"], t["data"]["purpose"])
        for t in carried.get("timers", [])
    ]


def carried_by(commit: Commit) -> list[CarriedTimer]:
    """The timers ``commit`` carries."""
    return _timers_in(commit.carried)


@dataclass(frozen=True, slots=True)
class CommitTimers:
    """What the loop reads of a commit with carried timers: which stream, how far it goes, and its timers."""

    commit_id: str
    stream: StreamRef
    last_version: int
    next_at: datetime
    timers: list[CarriedTimer]


class CarriedTimers:
    """The carried timers, read by time from the commits (their own sparse index) and a watermark of how far the
    loop has fired them (``timer_clock``)."""

    def __init__(self, store: EventStore) -> None:
        self._commits = store.collection
        self._clock = store.db["timer_clock"]
        self._db = store.db

    async def ensure_indexes(self) -> None:
        """Also the one-off migration of the commits that carried timers as "alarms" (``alarms``, ``alarm_at``
        beside the events, the watermark in ``alarm_clock``)."""
        # Sparse: only commits with carried timers are in it. (SecantusDB does not use a partial index for a range.)
        await self._commits.create_index([("carried.next_timer_at", ASCENDING)], sparse=True, name="carried_timers")
        names = {index["name"] async for index in await self._commits.list_indexes()}
        if "alarm_order" in names:
            await self._migrate_alarms()

    async def _migrate_alarms(self) -> None:
        while True:
            docs = await self._commits.find(
                {"alarm_at": {"$gte": EPOCH}}, {"alarms": 1, "alarm_at": 1}, limit=CARRIED_PAGE
            ).to_list(None)
            for doc in docs:
                carried = {"timers": doc.get("alarms", []), "next_timer_at": doc["alarm_at"]}
                await self._commits.update_one(
                    {"_id": doc["_id"]}, {"$set": {"carried": carried}, "$unset": {"alarms": "", "alarm_at": ""}}
                )
            if len(docs) < CARRIED_PAGE:
                break
        old = await self._db["alarm_clock"].find_one({"_id": "watermark"})
        if old is not None:
            await self.save_watermark(old["upto"])
        await self._commits.drop_index("alarm_order")
        await self._db.drop_collection("alarm_clock")
        log.warning("carried timers moved from the commits' alarms to their carried fields")

    async def due(
        self, after: datetime, upto: datetime, *, after_id: str | None = None, limit: int = CARRIED_PAGE
    ) -> list[CommitTimers]:
        """The commits whose next carried timer falls after ``after`` (after ``(after, after_id)`` when paging on)
        and by ``upto``, in that order. (Two range queries rather than one ``$or``, which SecantusDB answers by
        scanning.)"""
        found: list[Document] = []
        if after_id is not None:
            found = await self._find({"carried.next_timer_at": after, "_id": {"$gt": after_id}}, limit)
        if len(found) < limit:
            found += await self._find({"carried.next_timer_at": {"$gt": after, "$lte": upto}}, limit - len(found))
        return [
            CommitTimers(
                commit_id=doc["_id"],
                stream=StreamRef(doc["workspace_id"], doc["aggregate"], doc["aggregate_id"]),
                last_version=doc["last_version"],
                next_at=doc["carried"]["next_timer_at"],
                timers=_timers_in(doc["carried"]),
            )
            for doc in found
        ]

    async def _find(self, query: Document, limit: int) -> list[Document]:
        cursor = self._commits.find(
            query,
            {"events": 0, "trace": 0},
            sort=[("carried.next_timer_at", ASCENDING), ("_id", ASCENDING)],
            limit=limit,
        )
        return await cursor.to_list(None)

    async def move_next(self, commit_id: str, passed: datetime, next_at: datetime) -> None:
        """Point the commit's next timer past those at ``passed``, to its next one, at ``next_at``."""
        await self._commits.update_one(
            {"_id": commit_id, "carried.next_timer_at": passed}, {"$set": {"carried.next_timer_at": next_at}}
        )

    async def watermark(self) -> datetime | None:
        """How far the carried timers have been fired (None before the first time)."""
        doc = await self._clock.find_one({"_id": "carried"})
        return None if doc is None else doc["upto"]

    async def save_watermark(self, upto: datetime) -> None:
        await self._clock.update_one({"_id": "carried"}, {"$max": {"upto": upto}}, upsert=True)


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


class TimerDocuments:
    """The timers written as documents of their own (collection ``timers``)."""

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
        documents: TimerDocuments,
        carried: CarriedTimers,
        bus: Bus,
        clock: Callable[[], datetime],
        poll_s: float,
        executions: ExecutionsProjection,
    ) -> None:
        self._documents = documents
        self._carried = carried
        self._bus = bus
        self._clock = clock
        self._poll_s = poll_s
        self._executions = executions
        self._upto: datetime | None = None  # carried timers due by this have been fired
        self._saved: datetime | None = None  # the watermark saved last
        self._loop = Every(poll_s, self.fire_due, "timers")

    def start(self) -> None:
        self._loop.start()

    async def stop(self) -> None:
        await self._loop.stop()

    async def fire_due(self) -> int:
        """Fire every timer due by now, of both kinds; returns how many were fired."""
        now = self._clock()
        fired = 0
        for doc in await self._documents.due(now):
            await self._fire(doc["workspace_id"], doc["execution_id"], doc["step_id"], doc["attempt"], doc["purpose"])
            await self._documents.mark_fired(doc["_id"])
            fired += 1
        return fired + await self._fire_carried(now)

    async def _fire_carried(self, now: datetime) -> int:
        """Fire the carried timers due after the watermark and by ``now``, page by page, then move the watermark to
        ``now``. A failure leaves the watermark where it was: the next pass fires those timers again (harmlessly)."""
        if self._upto is None:
            self._upto = self._saved = await self._carried.watermark() or EPOCH
        after, after_id, fired = self._upto, None, 0
        while True:
            page = await self._carried.due(after, now, after_id=after_id, limit=CARRIED_PAGE)
            ended = await self._executions.ended([commit.stream.stream_id for commit in page]) if page else {}
            for commit in page:
                # Passed over only when the end is later than the commit: a retry reopens a failed execution.
                if ended.get(commit.stream.stream_id, 0) < commit.last_version:
                    fired += await self._fire_commit(commit, now)
            if len(page) < CARRIED_PAGE:
                break
            after, after_id = page[-1].next_at, page[-1].commit_id
        if fired or self._saved is None or now - self._saved >= SAVE_WATERMARK_EVERY:
            await self._carried.save_watermark(now)
            self._saved = now
        self._upto = now
        return fired

    async def _fire_commit(self, commit: CommitTimers, now: datetime) -> int:
        due = [timer for timer in commit.timers if commit.next_at <= timer.at <= now]
        ws, execution_id = commit.stream.workspace_id, commit.stream.aggregate_id
        for timer in due:
            await self._fire(ws, execution_id, timer.step_id, timer.attempt, timer.purpose)
        later = [timer.at for timer in commit.timers if timer.at > now]
        if later:  # several timers in one commit (a fan-out's steps): the next one keeps the commit in view
            await self._carried.move_next(commit.commit_id, commit.next_at, min(later))
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
