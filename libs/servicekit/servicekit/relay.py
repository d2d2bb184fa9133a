"""Publishes stored commits to the EVENTS stream.

MongoDB is the truth and NATS the transport: a commit is written with ``published: false``; the relay publishes
each of its events (Nats-Msg-Id = event id, so a republish after a crash is de-duplicated by the broker) and
then marks the commit. A commit written by this process is handed over at once (no read back); a sweep on start
and on every poll interval publishes whatever else is unpublished, e.g. what a crashed process left behind.
A commit that keeps failing for another reason than an absent broker is parked after a few sweeps (kept, with
the reason) so it cannot block the commits behind it.
"""

import asyncio
import contextlib
import logging
from datetime import timedelta

import nats.errors
from opentelemetry import propagate, trace
from opentelemetry.trace import Tracer

from servicekit.bus import Bus
from servicekit.eventstore import Commit, EventStore

log = logging.getLogger(__name__)
MAX_FAILURES = 5
MARK_DELAY_S = 0.1
TRANSIENT = (nats.errors.TimeoutError, nats.errors.ConnectionClosedError, nats.errors.NoServersError, OSError)


class Relay:
    def __init__(
        self,
        store: EventStore,
        bus: Bus,
        *,
        poll_interval_s: float = 1.0,
        batch: int = 500,
        tracer: Tracer | None = None,
    ) -> None:
        self._tracer = tracer or trace.get_tracer(__name__)
        self._store = store
        self._bus = bus
        self._poll = poll_interval_s
        self._batch = batch
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._marker: asyncio.Task[None] | None = None
        self._failures: dict[str, int] = {}
        self._fresh: list[Commit] = []
        self._unmarked: list[str] = []

    def notify(self, commit: Commit) -> None:
        """Hand over a commit this process just wrote, to publish at once without reading it back."""
        self._fresh.append(commit)
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="event-relay")
        self._marker = asyncio.create_task(self._mark_periodically(), name="event-relay-marks")

    async def _mark_periodically(self) -> None:
        """Marks published commits in one write every MARK_DELAY_S, off the publishing path."""
        while True:
            await asyncio.sleep(MARK_DELAY_S)
            if self._unmarked:
                try:
                    await self._flush_marks()
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("marking published commits failed; retrying")

    async def stop(self) -> None:
        for task in (self._task, self._marker):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._task = self._marker = None
        with contextlib.suppress(Exception):
            await self._flush_marks()

    async def _flush_marks(self) -> None:
        marks, self._unmarked = self._unmarked, []
        try:
            await self._store.mark_published(marks)
        except BaseException:
            self._unmarked = marks + self._unmarked
            raise

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        grace: timedelta | None = None  # the first sweep takes everything a previous process left behind
        next_sweep = loop.time()
        while True:
            try:
                fresh, self._fresh = self._fresh, []
                await self._publish_all(fresh)
                if loop.time() >= next_sweep:
                    while await self.sweep(grace) == self._batch:
                        pass
                    grace = timedelta(seconds=max(2.0, 2 * self._poll))
                    next_sweep = loop.time() + self._poll
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("relay failed; retrying")
            if not self._fresh:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=self._poll)
            self._wake.clear()

    async def sweep(self, grace: timedelta | None = None) -> int:
        """Publish unpublished commits, oldest first (only those older than ``grace``, which leaves this process's
        own fresh commits to the hand-over); returns how many commits it found."""
        commits = await self._store.unpublished(self._batch, older_than=grace)
        await self._publish_all(commits)
        await self._flush_marks()
        return len(commits)

    async def _publish_all(self, commits: list[Commit]) -> None:
        published: list[str] = []
        try:
            for commit in commits:
                try:
                    await self._publish(commit)
                except TRANSIENT:
                    raise  # the broker is away: stop here and try again on the next sweep
                except Exception as exc:  # noqa: BLE001 - counted, and parked when it keeps failing
                    await self._count_failure(commit, exc)
                    continue  # one bad commit must not hold up the others
                published.append(commit.commit_id)
        finally:
            self._unmarked.extend(published)  # marked in batches: a republish after a crash is de-duplicated

    async def _count_failure(self, commit: Commit, exc: Exception) -> None:
        failures = self._failures.get(commit.commit_id, 0) + 1
        self._failures[commit.commit_id] = failures
        log.warning("commit %s failed to publish (%d): %r", commit.commit_id, failures, exc)
        if failures >= MAX_FAILURES:
            await self._store.park(commit.commit_id, repr(exc))
            self._failures.pop(commit.commit_id, None)

    async def _publish(self, commit: Commit) -> None:
        subjects = self._bus.subjects
        with self._tracer.start_as_current_span("relay commit", context=propagate.extract(commit.trace)):
            for record in commit.events:
                await self._bus.publish(
                    subjects.event(record.aggregate, record.workspace_id, record.aggregate_id, record.type),
                    record.model_dump_json().encode(),
                    msg_id=record.event_id,
                    stream=subjects.events_stream,
                )
