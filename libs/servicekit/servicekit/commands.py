"""Command handling: envelope in, domain handler, outcome back to the submitter.

A handler receives the typed command and a context, rebuilds state from the log, decides, appends, and returns
the ids it touched. Domain errors become rejected outcomes; concurrency conflicts are retried against fresh
state; anything else propagates so the bus redelivers with backoff and finally dead-letters.
"""

import contextlib
import logging
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from nats.errors import Error as NatsError
from nats.errors import TimeoutError as NatsTimeout
from nats.js.errors import NotFoundError
from opentelemetry import propagate
from pydantic import ValidationError

from contracts import (
    REGISTRY,
    Actor,
    Command,
    CommandOutcome,
    Envelope,
    ErrorCode,
    Event,
    OutcomeStatus,
    Subjects,
    UnknownMessageType,
)
from contracts.errors import DomainError
from servicekit.bus import MSG_ID, Bus, ConsumerPolicy, DeadLetter, PermanentFailure
from servicekit.eventstore import (
    ConcurrencyError,
    DuplicateCommand,
    EventStore,
    Loaded,
    Metadata,
    StateCache,
    StreamRef,
    load_state,
)

log = logging.getLogger(__name__)

C = TypeVar("C", bound=Command)
S = TypeVar("S")
CONFLICT_RETRIES = 5
SUBJECT_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,128}")  # a command id that can name an outcome subject


@dataclass(frozen=True, slots=True)
class CommandContext:
    envelope: Envelope
    store: EventStore
    cache: StateCache | None = None

    @property
    def command_id(self) -> str:
        return self.envelope.message_id

    @property
    def workspace_id(self) -> str:
        return self.envelope.workspace_id

    @property
    def meta(self) -> Metadata:
        return Metadata(
            correlation_id=self.envelope.correlation_id,
            causation_id=self.envelope.message_id,
            actor=self.envelope.actor,
        )

    def trace(self) -> dict[str, str]:
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        return carrier

    async def execute(
        self,
        stream: StreamRef,
        initial: S,
        evolve: Callable[[S, Event], S],
        decide: Callable[[S], Sequence[Event]],
        *,
        new_stream: bool = False,
        carried: Callable[[S, Sequence[Event]], Mapping[str, Any]] | None = None,
    ) -> int:
        """Rebuild ``stream``, decide on its state and append the result, at most once per command; returns the
        stream's version after it (the version this command wrote, when it wrote).

        When the state is already known (cached, or ``new_stream`` for a command that creates the stream or nearly
        always does), the decision is tried on it without reading: an append that succeeds at that version proves
        the state was current. A conflict, a rejection or a decision to do nothing is never trusted on such a
        state: the stream is read and the command decided again. A redelivered command whose commit is in the stream
        is not decided again. ``carried(state, events)`` is what the commit carries beside the decided events (the
        workflow engine's carried timers).
        """
        known = self.cache.get(stream, evolve) if self.cache is not None else None
        if known is None and new_stream:
            known = Loaded(initial, 0, frozenset())
        if known is not None and self.command_id not in known.commands:
            try:
                events = decide(known.state)
            except DomainError:
                events = []
            if events:
                try:
                    return await self._append(stream, known, evolve, events, carried)
                except (ConcurrencyError, DuplicateCommand):
                    pass
        loaded = await load_state(self.store, stream, initial, evolve, self.cache)
        if self.command_id in loaded.commands:
            return loaded.version
        events = decide(loaded.state)
        if events:
            return await self._append(stream, loaded, evolve, events, carried)
        return loaded.version

    async def _append(
        self,
        stream: StreamRef,
        known: "Loaded[S]",
        evolve: Callable[[S, Event], S],
        events: Sequence[Event],
        carried: Callable[[S, Sequence[Event]], Mapping[str, Any]] | None,
    ) -> int:
        await self.store.append(
            stream,
            known.version,
            events,
            self.meta,
            command_id=self.command_id,
            trace=self.trace(),
            carried=carried(known.state, events) if carried is not None else None,
        )
        if self.cache is not None:
            state = known.state
            for event in events:
                state = evolve(state, event)
            commands = known.commands | {self.command_id}
            self.cache.put(stream, evolve, Loaded(state, known.version + len(events), commands))
        return known.version + len(events)


HandlerFn = Callable[[Any, CommandContext], Awaitable[dict[str, str]]]


class CommandRouter:
    """Maps command types to their handler functions."""

    def __init__(self, cache: StateCache | None = None) -> None:
        self._handlers: dict[str, HandlerFn] = {}
        self._cache = cache if cache is not None else StateCache()

    def register(
        self, command: type[C]
    ) -> Callable[[Callable[[C, CommandContext], Awaitable[dict[str, str]]]], HandlerFn]:
        def decorate(fn: Callable[[C, CommandContext], Awaitable[dict[str, str]]]) -> HandlerFn:
            self._handlers[command.type_name] = fn
            return fn

        return decorate

    @property
    def cache(self) -> StateCache:
        """The states its handlers decided on (a reactor to their commits may read them)."""
        return self._cache

    @property
    def command_types(self) -> list[str]:
        return sorted(self._handlers)

    async def handle(self, envelope: Envelope, store: EventStore) -> CommandOutcome:
        fn = self._handlers.get(envelope.type)
        if fn is None:
            raise PermanentFailure(f"no handler for command {envelope.type}")
        try:
            command = REGISTRY.load(envelope.type, envelope.schema_version, envelope.payload)
        except (ValidationError, UnknownMessageType) as exc:
            errors = validation_errors(exc) if isinstance(exc, ValidationError) else None
            message = f"The command does not match version {envelope.schema_version} of the {envelope.type} schema."
            return _rejected(envelope, ErrorCode.VALIDATION_FAILED, message, errors)
        ctx = CommandContext(envelope, store, self._cache)
        for _attempt in range(CONFLICT_RETRIES):
            try:
                ids = await fn(command, ctx)
            except (ConcurrencyError, DuplicateCommand):
                continue
            except DomainError as exc:
                return _rejected(envelope, exc.code, str(exc), exc.details)
            return CommandOutcome(
                command_id=envelope.message_id,
                workspace_id=envelope.workspace_id,
                command_type=envelope.type,
                submitted_at=envelope.occurred_at,
                status=OutcomeStatus.ACCEPTED,
                resource_ids=ids,
            )
        raise ConcurrencyError(f"command {envelope.message_id} lost {CONFLICT_RETRIES} races in a row")


def validation_errors(exc: ValidationError) -> list[dict[str, Any]]:
    """Where and why a message failed validation, without the input values the error's text repeats."""
    return [{"loc": [str(p) for p in e["loc"]], "msg": e["msg"], "type": e["type"]} for e in exc.errors()]


def _rejected(
    envelope: Envelope, code: ErrorCode, message: str, details: list[dict[str, Any]] | None = None
) -> CommandOutcome:
    return CommandOutcome(
        command_id=envelope.message_id,
        workspace_id=envelope.workspace_id,
        command_type=envelope.type,
        submitted_at=envelope.occurred_at,
        status=OutcomeStatus.REJECTED,
        error_code=code,
        error_message=message[:2000],
        error_details=details or [],
    )


def _rejected_unread(subjects: Subjects, dead: DeadLetter, message: str) -> CommandOutcome | None:
    """The rejection of a command whose envelope could not be read; None when the message names no command id or
    its subject no workspace (no submitter to tell)."""
    parts = subjects.command_parts(dead.subject)
    command_id = dead.headers.get(MSG_ID, "")
    if parts is None or not SUBJECT_TOKEN.fullmatch(command_id):
        return None
    _service, workspace_id, command_type = parts
    return CommandOutcome(
        command_id=command_id,
        workspace_id=workspace_id,
        command_type=command_type,
        submitted_at=dead.stored_at,
        status=OutcomeStatus.REJECTED,
        error_code=ErrorCode.VALIDATION_FAILED,
        error_message=message[:2000],
    )


def envelope_for(
    command: Command,
    *,
    workspace_id: str,
    command_id: str,
    actor: Actor,
    correlation_id: str | None = None,
    causation_id: str | None = None,
) -> Envelope:
    """Wrap ``command`` for the bus; a command that starts a conversation correlates with itself."""
    return Envelope(
        message_id=command_id,
        type=command.type_name,
        schema_version=command.schema_version,
        workspace_id=workspace_id,
        correlation_id=correlation_id or command_id,
        causation_id=causation_id,
        actor=actor,
        occurred_at=datetime.now(UTC),
        payload=command.model_dump(mode="json"),
    )


OUTCOME_WANTED = "Outcome-Wanted"
"""A header asking for the outcome of a command from a service or an agent, whose accepted commands get none."""


async def publish_command(bus: Bus, service: str, envelope: Envelope, *, outcome_wanted: bool = False) -> bool:
    """Send a command to ``service``; the broker de-duplicates by command id. False when it was a duplicate."""
    subjects = bus.subjects
    return await bus.publish(
        subjects.command(service, envelope.workspace_id, envelope.type),
        envelope.model_dump_json().encode(),
        msg_id=envelope.message_id,
        stream=subjects.commands_stream,
        headers={OUTCOME_WANTED: "1"} if outcome_wanted else None,
    )


async def send_and_wait(bus: Bus, service: str, envelope: Envelope, timeout_s: float) -> CommandOutcome | None:
    """Send a command and wait, up to ``timeout_s`` (0: not at all), for its outcome: its handler has run (the
    command itself is in the stream either way). None when none came in time or it cannot be read now; a repeat of
    a command sent before answers with the outcome recorded for it, or waits for it like the first. Raises the
    broker's error only when the command could not be sent."""
    sub = await bus.nc.subscribe(bus.subjects.outcome(envelope.workspace_id, envelope.message_id), max_msgs=1)
    try:
        if not await publish_command(bus, service, envelope, outcome_wanted=True):  # sent before: answered yet?
            with contextlib.suppress(NatsError):
                known = await last_outcome(bus, envelope.workspace_id, envelope.message_id)
                if known is not None:
                    return known
        if timeout_s <= 0:
            return None
        try:
            msg = await sub.next_msg(timeout=timeout_s)
        except (TimeoutError, NatsTimeout):
            return None
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()
    return CommandOutcome.model_validate_json(msg.data)


async def last_outcome(bus: Bus, workspace_id: str, command_id: str) -> CommandOutcome | None:
    """The outcome published for a command, read back from the OUTCOMES stream; None while there is none."""
    subjects = bus.subjects
    try:
        msg = await bus.js.get_last_msg(subjects.outcomes_stream, subjects.outcome(workspace_id, command_id))
    except NotFoundError:
        return None
    return CommandOutcome.model_validate_json(msg.data or b"")


def serve_commands(bus: Bus, service: str, router: CommandRouter, store: EventStore, policy: ConsumerPolicy) -> None:
    """Consume this service's commands and publish each outcome on the submitter's outcome subject."""
    subjects = bus.subjects

    async def on_command(body: bytes, headers: dict[str, str]) -> None:
        try:
            envelope = Envelope.model_validate_json(body)
        except ValidationError as exc:
            raise PermanentFailure(f"malformed command envelope: {exc.error_count()} errors") from exc
        outcome = await router.handle(envelope, store)
        quiet = envelope.actor.kind in {"service", "agent"} and headers.get(OUTCOME_WANTED) != "1"
        if quiet and outcome.status is OutcomeStatus.ACCEPTED:
            return  # nobody waits for these (timers, task results); a rejection is still published, to be seen
        await bus.publish(
            subjects.outcome(envelope.workspace_id, envelope.message_id),
            outcome.model_dump_json().encode(),
            msg_id=f"outcome-{envelope.message_id}",
            stream=subjects.outcomes_stream,
        )

    async def on_give_up(dead: DeadLetter) -> None:
        """Tell the submitter: a dead-lettered command is rejected, never left pending. A message whose envelope
        cannot be read is answered from what the broker knows of it: its command id (Nats-Msg-Id) and the
        workspace and command type its subject names."""
        try:
            envelope = Envelope.model_validate_json(dead.body)
        except ValidationError:  # the reason is ours: why the envelope could not be read
            outcome = _rejected_unread(subjects, dead, f"The command could not be read: {dead.reason}")
            if outcome is None:
                log.warning("dead-lettered %s names no command id; nobody to tell", dead.subject)
                return
        else:
            if dead.reason.startswith("no handler"):
                message = f"The {service} service has no {envelope.type}."
                outcome = _rejected(envelope, ErrorCode.UNKNOWN_COMMAND, message)
            else:  # what went wrong is for the logs, found by the command id; the submitter learns that it failed
                log.error("command %s (%s) dead-lettered: %s", envelope.message_id, envelope.type, dead.reason)
                message = (
                    f"The command could not be processed; the {service} service's logs have the details under its "
                    f"id, {envelope.message_id}."
                )
                outcome = _rejected(envelope, ErrorCode.INTERNAL_ERROR, message)
        await bus.publish(
            subjects.outcome(outcome.workspace_id, outcome.command_id),
            outcome.model_dump_json().encode(),
            msg_id=f"outcome-{outcome.command_id}",
            stream=subjects.outcomes_stream,
        )

    bus.consume(
        subject=subjects.commands_of(service),
        stream=subjects.commands_stream,
        durable=subjects.durable(service, "commands"),
        handler=on_command,
        policy=policy,
        on_give_up=on_give_up,
    )
