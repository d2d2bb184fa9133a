"""Publishes stored commits to the EVENTS stream.

MongoDB is the truth and NATS the transport: a commit is written with ``published: false``; the relay publishes
each of its events (Nats-Msg-Id = event id, so a republish after a crash is de-duplicated by the broker) and
then marks the commit. A commit written by this process is handed over at once (no read back); a sweep on start
and on every poll interval publishes whatever else is unpublished, e.g. what a crashed process left behind.
A commit that keeps failing because of what it holds (a subject or a size the broker refuses) is parked after a
few sweeps (kept, with the reason) so it cannot block the commits behind it; any other failure is retried.

Reactors are a service's in-process reactions to its own commits (the workflow engine's dispatch of tasks and
timers). They run beside the publishing, with its guarantee: a commit is marked only once its events are
published and every reactor has returned, so a crash or a failure runs them again on a later sweep (at least
once; a reactor makes that harmless, e.g. with a claim). This spares the service a round trip through the
broker and a consumer for what it wrote itself; other services still learn of the events from the stream.
"""

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta

import nats.errors
import nats.js.errors
from opentelemetry import propagate, trace
from opentelemetry.trace import Tracer

from servicekit.bus import Bus
from servicekit.eventstore import Commit, EventStore

log = logging.getLogger(__name__)
MAX_FAILURES = 5
MARK_DELAY_S = 0.1
PUBLISH_WINDOW = 64
# What is wrong with a commit itself, so that publishing it again cannot help. Anything else (the broker or the
# database away, restarting or slow; a reactor's own trouble) is retried on every sweep and never parks a commit.
PERMANENT = (
    nats.errors.BadSubjectError,
    nats.errors.BadHeaderError,
    nats.errors.MaxPayloadError,
    nats.js.errors.BadRequestError,
    ValueError,  # includes pydantic's ValidationError
    TypeError,
)
Reactor = Callable[[Commit], Awaitable[None]]


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
        self._reactors: list[Reactor] = []

    def add_reactor(self, reactor: Reactor) -> None:
        """Run ``reactor`` on every commit of this service's store, at least once (see the module docstring)."""
        self._reactors.append(reactor)

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
        """Publish ``commits`` pipelined: every event is sent before any ack is awaited, in commit order on the one
        connection (so the stream keeps that order), and PUBLISH_WINDOW commits at a time. Reactors see each
        stream's commits in order, while different streams are handled concurrently."""
        for start in range(0, len(commits), PUBLISH_WINDOW):
            window = commits[start : start + PUBLISH_WINDOW]
            by_stream: dict[str, list[Commit]] = {}
            for commit in window:
                by_stream.setdefault(commit.stream.stream_id, []).append(commit)
            published, reacted = await asyncio.gather(
                asyncio.gather(*(self._publish(commit) for commit in window), return_exceptions=True),
                asyncio.gather(*(self._react_in_order(stream_commits) for stream_commits in by_stream.values())),
            )
            unacted = {commit_id: exc for failures in reacted for commit_id, exc in failures.items()}
            retry: BaseException | None = None
            for commit, publishing in zip(window, published, strict=True):
                result = publishing if publishing is not None else unacted.get(commit.commit_id)
                if result is None:
                    self._unmarked.append(commit.commit_id)  # marked in batches: a republish is de-duplicated
                    self._failures.pop(commit.commit_id, None)
                elif isinstance(result, PERMANENT):
                    await self._count_failure(commit, result)  # one bad commit must not hold up the others
                else:
                    retry = retry or result  # the next sweep tries again (or we are cancelled)
            if retry is not None:
                raise retry

    async def _react_in_order(self, commits: list[Commit]) -> dict[str, Exception]:
        """Run the reactors on one stream's commits in order; a failure stops the stream there (the commit and those
        after it are acted on again later). Returns the failure of each commit left unacted, by commit id."""
        if not self._reactors:
            return {}
        for position, commit in enumerate(commits):
            try:
                with self._tracer.start_as_current_span("relay reaction", context=propagate.extract(commit.trace)):
                    for react in self._reactors:
                        await react(commit)
            except Exception as exc:  # noqa: BLE001 - classified by the caller, per commit
                return {later.commit_id: exc for later in commits[position:]}
        return {}

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
            await asyncio.gather(
                *(
                    self._bus.publish(
                        subjects.event(record.aggregate, record.workspace_id, record.aggregate_id, record.type),
                        record.model_dump_json().encode(),
                        msg_id=record.event_id,
                        stream=subjects.events_stream,
                    )
                    for record in commit.events
                )
            )
