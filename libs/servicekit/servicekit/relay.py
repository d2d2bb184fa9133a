"""Publishes stored commits to the EVENTS stream.

MongoDB is the truth and NATS the transport. The relay of a process publishes every commit its event store
writes (each event with Nats-Msg-Id = event id, so a republish is de-duplicated by the broker), handed over at
once, without reading it back. It writes no mark on each commit: it keeps one checkpoint for the whole process
(its writer), every poll interval, saying that everything the writer recorded before ``done_before`` is published
and that the writer is alive. When a writer stops giving signs of life for ``dead_after_s`` (a crash, a kill -9),
a surviving relay, or the next process to start, takes over its checkpoint and publishes what it recorded from
``done_before`` on (again, with whatever was published already dropped by the broker), then drops the checkpoint.

A commit that keeps failing because of what it holds (a subject or a size the broker refuses) is parked after a
few tries (kept, with the reason) so it cannot hold up the checkpoint; any other failure is retried every poll.
The checkpoints are ``servicekit.checkpoints``'s; commits stored before writers were recorded are adopted by a dead
writer there once, at start-up, and so published like any other.

Reactors are a service's in-process reactions to its own commits (the workflow engine's dispatch of tasks and
timers). They run beside the publishing, with its guarantee: a commit counts as done only once its events are
published and every reactor has returned, so a crash or a failure runs them again later (at least once; a reactor
makes that harmless, e.g. with a claim). This spares the service a round trip through the broker and a consumer
for what it wrote itself; other services still learn of the events from the stream. A reactor's failures are
classified on their own, never by the publishing's list: the broker or the database away is retried on every poll
for as long as it lasts; any other failure is counted, and after MAX_FAILURES in a row the reactor's ``give_up``
makes the failure visible (the workflow engine fails the execution), after which the commit counts as acted on. A
reaction is never parked, and never left to stop silently.
"""

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

import nats.errors
import nats.js.errors
import pymongo.errors
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Tracer

from servicekit.bus import Bus
from servicekit.checkpoints import WriterCheckpoints
from servicekit.eventstore import Commit, EventStore, utcnow

log = logging.getLogger(__name__)
MAX_FAILURES = 5
PUBLISH_WINDOW = 64
CLOCK_MARGIN = timedelta(seconds=1)  # a checkpoint stays this far behind the clock, should the clock step back
VERIFY_AFTER_S = 5.0  # how long a write of unknown outcome is given to land before it is looked for
# What is wrong with a commit itself, so that publishing it again cannot help. Anything else (the broker or the
# database away, restarting or slow) is retried on every poll and never parks a commit. Not applied to reactors.
PERMANENT = (
    nats.errors.BadSubjectError,
    nats.errors.BadHeaderError,
    nats.errors.MaxPayloadError,
    nats.js.errors.BadRequestError,
    ValueError,  # includes pydantic's ValidationError
    TypeError,
)
# A reactor failing with one of these is waiting for the broker or the database: retried as long as it takes.
AWAY = (
    OSError,  # includes TimeoutError and nats-py's TimeoutError
    nats.errors.ConnectionClosedError,
    nats.errors.ConnectionDrainingError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.FlushTimeoutError,
    nats.errors.NoServersError,
    nats.errors.NoRespondersError,
    nats.errors.OutboundBufferLimitError,
    nats.errors.StaleConnectionError,
    nats.errors.UnexpectedEOF,
    nats.js.errors.ServiceUnavailableError,
    nats.js.errors.NoStreamResponseError,
    pymongo.errors.ConnectionFailure,
    pymongo.errors.ExecutionTimeout,
    pymongo.errors.WriteConcernError,
)
Reactor = Callable[[Commit], Awaitable[None]]
GiveUp = Callable[[Commit, Exception], Awaitable[None]]


class ReactionFailed(Exception):
    """A reactor failed on a commit (``__cause__`` says how); kept apart from the publishing's failures."""


class Relay:
    def __init__(
        self,
        store: EventStore,
        bus: Bus,
        *,
        poll_interval_s: float = 1.0,
        dead_after_s: float | None = None,
        batch: int = 500,
        tracer: Tracer | None = None,
        checkpoints: WriterCheckpoints | None = None,
    ) -> None:
        self._tracer = tracer or trace.get_tracer(__name__)
        self._store = store
        self._checkpoints = checkpoints or WriterCheckpoints(store.db, store.writer)
        self._bus = bus
        self._poll = poll_interval_s
        self._dead_after = timedelta(seconds=dead_after_s or max(3.0, 5 * poll_interval_s))
        self._batch = batch
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._heartbeat: asyncio.Task[None] | None = None
        self._failures: dict[str, int] = {}  # publishing failures, by commit id
        self._reactors: list[tuple[Reactor, GiveUp | None]] = []
        self._reaction_failures: dict[tuple[str, int], int] = {}  # by commit id and reactor
        self._pending: dict[str, datetime] = {}  # this writer's commits not yet done, by id: when recorded
        self._fresh: list[Commit] = []  # written, to publish at once
        self._retry: dict[str, Commit] = {}  # failed, to try again on the next poll
        self._unsure: dict[str, tuple[Commit, float]] = {}  # written or not: look for it after VERIFY_AFTER_S
        self._stopping = False

    def add_reactor(self, reactor: Reactor, give_up: GiveUp | None = None) -> None:
        """Run ``reactor`` on every commit of this service's store, at least once (see the module docstring).
        ``give_up(commit, error)`` is told of a commit the reactor failed on MAX_FAILURES times in a row for another
        reason than the broker or the database being away: it must make that visible (without it, it is logged as
        an error); once it returns, the commit counts as acted on by this reactor."""
        self._reactors.append((reactor, give_up))

    @property
    def backlog(self) -> int:
        """How many of this writer's commits are not yet published and acted on."""
        return len(self._pending)

    # The event store's CommitListener.

    def begin(self, commit: Commit) -> None:
        self._pending[commit.commit_id] = commit.recorded_at

    def written(self, commit: Commit) -> None:
        self._fresh.append(commit)
        self._wake.set()

    def failed(self, commit: Commit, *, maybe_written: bool) -> None:
        if maybe_written:
            self._unsure[commit.commit_id] = (commit, time.monotonic())
        else:
            self._pending.pop(commit.commit_id, None)

    async def register(self) -> None:
        """Write this writer's first checkpoint; call before the store appends anything. (Also adopts, once, the
        commits stored before writers were recorded.)"""
        adopted = await self._checkpoints.adopt_legacy_commits(self._store)
        if adopted:
            log.warning("%d commits from before writers were recorded are left to be published", adopted)
        await self._checkpoint()

    def start(self) -> None:
        self._stopping = False
        self._task = asyncio.create_task(self._run(), name="event-relay")
        self._heartbeat = asyncio.create_task(self._beat(), name="event-relay-checkpoint")

    async def stop(self) -> None:
        # The flag as well as the cancellation: in 3.11 a wait_for inside (nats-py's requests) can swallow the latter.
        self._stopping = True
        for task in (self._task, self._heartbeat):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._task = self._heartbeat = None
        with contextlib.suppress(Exception):
            if self._pending:
                await self._checkpoint()  # what is left is taken over once this writer is seen to be gone
            else:
                await self._checkpoints.forget(self._store.writer)

    def _done_before(self) -> datetime:
        oldest = min(self._pending.values(), default=None)
        now = self._store.clock() - CLOCK_MARGIN
        return now if oldest is None else min(oldest, now)

    async def _checkpoint(self) -> None:
        await self._checkpoints.save(self._done_before(), utcnow())

    async def _beat(self) -> None:
        while not self._stopping:
            await asyncio.sleep(self._poll)
            try:
                await self._checkpoint()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("saving the relay's checkpoint failed; retrying")

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_poll = loop.time()
        while not self._stopping:
            try:
                fresh, self._fresh = self._fresh, []
                await self._publish_own(fresh)
                if loop.time() >= next_poll:
                    next_poll = loop.time() + self._poll
                    await self._publish_own(await self._retries())
                    await self.sweep()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("relay failed; retrying")
            if not self._fresh:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._poll):  # not wait_for: in 3.11 it can swallow a cancellation
                        await self._wake.wait()
            self._wake.clear()

    async def _retries(self) -> list[Commit]:
        """The failed commits to try again, and those of unknown outcome that turned out to be written."""
        again = sorted(self._retry.values(), key=lambda c: (c.recorded_at, c.stream.stream_id, c.first_version))
        self._retry = {}
        now = time.monotonic()
        for commit_id, (commit, since) in list(self._unsure.items()):
            if now - since >= VERIFY_AFTER_S:
                found = await self._store.commit(commit_id)
                del self._unsure[commit_id]
                if found is None:
                    self._pending.pop(commit_id, None)
                else:
                    again.append(commit)
        return again

    async def _publish_own(self, commits: list[Commit]) -> None:
        for commit, failure in await self._publish_all(commits):
            if failure is None or (isinstance(failure, PERMANENT) and await self._count_failure(commit, failure)):
                self._pending.pop(commit.commit_id, None)
            else:
                self._retry[commit.commit_id] = commit

    async def sweep(self) -> int:
        """Publish what dead writers left behind; returns how many commits it found."""
        found = 0
        now = utcnow()
        for writer in await self._checkpoints.dead(now - self._dead_after):
            found += await self._take_over(writer, now)
        return found

    async def _take_over(self, writer: str, now: datetime) -> int:
        """Publish (and react to) the commits of a dead ``writer`` from its checkpoint on, then drop the checkpoint.
        A failure stops at that commit; the checkpoint keeps where to go on from, for this or another relay."""
        since = await self._checkpoints.take_over(writer, now - self._dead_after, now)
        if since is None:
            return 0  # alive again, or taken over by another relay that is alive
        log.warning("taking over the commits of writer %s from %s", writer, since.isoformat())
        found = 0
        after: Commit | datetime = since
        while True:
            commits = await self._store.written_by(writer, after, self._batch)
            found += len(commits)
            for commit, failure in await self._publish_all(commits):
                if failure is not None and not (
                    isinstance(failure, PERMANENT) and await self._count_failure(commit, failure)
                ):
                    await self._checkpoints.advance_taken_over(writer, commit.recorded_at, utcnow())
                    return found
            if len(commits) < self._batch:
                await self._checkpoints.forget(writer)
                return found
            after = commits[-1]
            await self._checkpoints.advance_taken_over(writer, commits[-1].recorded_at, utcnow())

    async def _publish_all(self, commits: list[Commit]) -> list[tuple[Commit, BaseException | None]]:
        """Publish ``commits`` and run the reactors on them; returns each commit with its failure, or None when it
        is done. Publishing is pipelined: every event is sent before any ack is awaited, in commit order on the one
        connection (so the stream keeps that order), PUBLISH_WINDOW commits at a time. Reactors see each stream's
        commits in order, while different streams are handled concurrently; they start first, so what a reactor
        sends (the workflow engine's next task) is not queued behind the events on the connection."""
        results: list[tuple[Commit, BaseException | None]] = []
        for start in range(0, len(commits), PUBLISH_WINDOW):
            window = commits[start : start + PUBLISH_WINDOW]
            by_stream: dict[str, list[Commit]] = {}
            for commit in window:
                by_stream.setdefault(commit.stream.stream_id, []).append(commit)
            reacted, published = await asyncio.gather(
                asyncio.gather(*(self._react_in_order(stream_commits) for stream_commits in by_stream.values())),
                asyncio.gather(*(self._publish(commit) for commit in window), return_exceptions=True),
            )
            unacted = {commit_id: exc for failures in reacted for commit_id, exc in failures.items()}
            for commit, publishing in zip(window, published, strict=True):
                if isinstance(publishing, asyncio.CancelledError):
                    raise publishing
                failure = publishing if publishing is not None else unacted.get(commit.commit_id)
                if failure is None:
                    self._failures.pop(commit.commit_id, None)
                results.append((commit, failure))
        return results

    async def _react_in_order(self, commits: list[Commit]) -> dict[str, Exception]:
        """Run the reactors on one stream's commits in order; a failure stops the stream there (the commit and those
        after it are acted on again later). Returns the failure of each commit left unacted, by commit id."""
        if not self._reactors:
            return {}
        for position, commit in enumerate(commits):
            # In the trace of the command that wrote the commit (what a reactor sends continues it), with no span
            # of its own: spans cost the engine a sixth of its time per step when it had one here.
            token = otel_context.attach(propagate.extract(commit.trace))
            try:
                for index, (react, give_up) in enumerate(self._reactors):
                    await self._react(commit, index, react, give_up)
            except ReactionFailed as failed:
                return {later.commit_id: failed for later in commits[position:]}
            finally:
                otel_context.detach(token)
        return {}

    async def _react(self, commit: Commit, index: int, react: Reactor, give_up: GiveUp | None) -> None:
        """Run one reactor on one commit; raises ReactionFailed while the commit is to be tried again."""
        key = (commit.commit_id, index)
        try:
            await react(commit)
        except Exception as exc:
            if isinstance(exc, AWAY):
                log.warning("reactor waits for the broker or the database on commit %s: %r", commit.commit_id, exc)
                raise ReactionFailed(f"reactor {index} failed") from exc
            failures = self._reaction_failures.get(key, 0) + 1
            self._reaction_failures[key] = failures
            if failures < MAX_FAILURES:
                log.warning("reactor failed on commit %s (%d): %r", commit.commit_id, failures, exc)
                raise ReactionFailed(f"reactor {index} failed") from exc
            log.error("reactor gives up on commit %s after %d failures", commit.commit_id, failures, exc_info=exc)
            if give_up is not None:
                try:
                    await give_up(commit, exc)
                except Exception as gave:  # tried again on the next poll
                    log.warning("giving up on commit %s failed: %r", commit.commit_id, gave)
                    raise ReactionFailed(f"reactor {index} could not give up") from gave
        self._reaction_failures.pop(key, None)

    async def _count_failure(self, commit: Commit, exc: BaseException) -> bool:
        """Count a permanent failure; True once the commit is parked (it will not be tried again)."""
        failures = self._failures.get(commit.commit_id, 0) + 1
        self._failures[commit.commit_id] = failures
        log.warning("commit %s failed to publish (%d): %r", commit.commit_id, failures, exc)
        if failures < MAX_FAILURES:
            return False
        await self._store.park(commit.commit_id, repr(exc))
        self._failures.pop(commit.commit_id, None)
        return True

    async def _publish(self, commit: Commit) -> None:
        """Publish the commit's events under one producer span (a batch, in OpenTelemetry's messaging terms), whose
        context every event carries."""
        subjects = self._bus.subjects
        with self._tracer.start_as_current_span(
            "relay commit",
            context=propagate.extract(commit.trace),
            kind=SpanKind.PRODUCER,
            attributes={
                "messaging.system": "nats",
                "messaging.destination.name": subjects.events_stream,
                "messaging.batch.message_count": len(commit.events),
            },
        ):
            await asyncio.gather(
                *(
                    self._bus.publish(
                        subjects.event(record.aggregate, record.workspace_id, record.aggregate_id, record.type),
                        record.model_dump_json().encode(),
                        msg_id=record.event_id,
                        stream=subjects.events_stream,
                        span=False,
                    )
                    for record in commit.events
                )
            )
