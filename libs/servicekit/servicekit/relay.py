"""Publishes stored commits to the EVENTS stream.

MongoDB is the truth and NATS the transport: a commit is written with ``published: false``; the relay publishes
each of its events (Nats-Msg-Id = event id, so a republish after a crash is de-duplicated by the broker) and
then marks the commit. It sweeps on start and on every poll interval, and is woken at once after each append.
"""

import asyncio
import contextlib
import logging

from opentelemetry import propagate, trace
from opentelemetry.trace import Tracer

from servicekit.bus import Bus
from servicekit.eventstore import Commit, EventStore

log = logging.getLogger(__name__)


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

    def notify(self) -> None:
        self._wake.set()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="event-relay")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            try:
                while await self.sweep() == self._batch:
                    pass
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("relay sweep failed; retrying")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self._poll)
            self._wake.clear()

    async def sweep(self) -> int:
        """Publish every unpublished commit, oldest first; returns how many commits were published."""
        commits = await self._store.unpublished(self._batch)
        published: list[str] = []
        try:
            for commit in commits:
                await self._publish(commit)
                published.append(commit.commit_id)
        finally:
            await self._store.mark_published(published)  # one write for the whole batch
        return len(commits)

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
