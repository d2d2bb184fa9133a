"""JetStream streams, publishing and durable consumers.

Streams are declared here, once, at start-up; subscribers attach with ``declare=False``. Every consumer is a
durable pull consumer shared by all replicas of a service, with explicit acks: a handler that cannot succeed
sends the message to the dead-letter subject and terminates it; one that may succeed later naks it with a delay,
until ``max_deliver`` is reached, when it too goes to the dead-letter subject.
"""

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from faststream import AckPolicy
from faststream.nats import ConsumerConfig, JStream, NatsBroker, NatsMessage, PullSub
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import BadRequestError
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Tracer

from contracts import Subjects

log = logging.getLogger(__name__)

DAY = 24 * 3600.0
DEAD_LETTER_TRIES = 3
TASKS_DUPLICATE_WINDOW_S = 120.0  # a task published again within this is dropped by the broker


def stream_configs(subjects: Subjects) -> list[StreamConfig]:
    """Every stream of an environment, with explicit retention."""
    env = subjects.env
    return [
        StreamConfig(
            name=subjects.commands_stream,
            subjects=[f"{env}.cmd.>"],
            retention=RetentionPolicy.WORK_QUEUE,
            storage=StorageType.FILE,
            max_age=7 * DAY,
            duplicate_window=120.0,
        ),
        StreamConfig(
            name=subjects.events_stream,
            subjects=[f"{env}.evt.>"],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            max_age=365 * DAY,
            duplicate_window=600.0,
        ),
        StreamConfig(
            name=subjects.tasks_stream,
            subjects=[f"{env}.task.>"],
            retention=RetentionPolicy.WORK_QUEUE,
            storage=StorageType.FILE,
            max_age=7 * DAY,
            duplicate_window=TASKS_DUPLICATE_WINDOW_S,
        ),
        StreamConfig(
            name=subjects.outcomes_stream,
            subjects=[f"{env}.outcome.>"],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            max_age=7 * DAY,
            duplicate_window=120.0,
            discard=DiscardPolicy.OLD,
        ),
        StreamConfig(
            name=subjects.dead_letter_stream,
            subjects=[f"{env}.dlq.>"],
            retention=RetentionPolicy.LIMITS,
            storage=StorageType.FILE,
            max_age=30 * DAY,
        ),
    ]


async def ensure_streams(js: JetStreamContext, subjects: Subjects) -> None:
    """Create or update the environment's streams; safe to run from every replica at every start."""
    for config in stream_configs(subjects):
        try:
            await js.add_stream(config)
        except BadRequestError:
            await js.update_stream(config)


async def delete_streams(js: JetStreamContext, subjects: Subjects) -> None:
    for config in stream_configs(subjects):
        try:
            await js.delete_stream(config.name or "")
        except Exception:  # noqa: BLE001 - already gone is fine when cleaning up
            log.debug("stream %s not deleted", config.name)


async def the_message(msg: NatsMessage) -> NatsMessage:
    """A subscriber decoder that hands the handler the message itself.

    Our handlers read the raw body and headers and ack by hand; with the broker's ``apply_types=False`` this
    skips FastStream's per-message dependency injection (which resolves a ``NatsMessage`` parameter through a
    worker thread) and body decoding."""
    return msg


class PermanentFailure(Exception):
    """The message can never be handled (malformed, unknown type): dead-letter it at once."""


@dataclass(frozen=True, slots=True)
class ConsumerPolicy:
    max_deliver: int = 5
    ack_wait_s: float = 30.0
    max_ack_pending: int = 256
    max_workers: int = 1
    batch_size: int = 16
    base_delay_s: float = 0.2
    max_delay_s: float = 10.0

    def backoff(self, delivered: int) -> float:
        return float(min(self.max_delay_s, self.base_delay_s * 2 ** max(0, delivered - 1)))


Handler = Callable[[bytes, dict[str, str]], Awaitable[None]]
GiveUp = Callable[[bytes, str], Awaitable[None]]


class Bus:
    """The service's broker plus the JetStream context used for publishing and administration.

    Consumers are FastStream subscribers. Every publish goes straight through nats-py's JetStream context (a
    stream publish with an awaited ack) inside our own producer span, whose context travels in the headers for the
    consumers' telemetry middleware to continue; FastStream's publisher would run its middleware stack around each
    message for nothing more."""

    def __init__(self, broker: NatsBroker, subjects: Subjects, timeout_s: float, tracer: Tracer | None = None) -> None:
        self.broker = broker
        self.subjects = subjects
        self.timeout_s = timeout_s
        self._tracer = tracer or trace.get_tracer(__name__)
        self._js: JetStreamContext | None = None
        self._nc: Client | None = None

    @property
    def js(self) -> JetStreamContext:
        if self._js is None:
            raise RuntimeError("bus not connected")
        return self._js

    @property
    def nc(self) -> Client:
        """The underlying nats-py connection, for core request/reply and ad-hoc subscriptions."""
        if self._nc is None:
            raise RuntimeError("bus not connected")
        return self._nc

    async def connect(self) -> None:
        client = await self.broker.connect()
        self._nc = client
        self._js = client.jetstream(timeout=self.timeout_s)
        await ensure_streams(self._js, self.subjects)

    async def publish(
        self, subject: str, body: bytes, *, msg_id: str | None, stream: str, headers: dict[str, str] | None = None
    ) -> bool:
        """Publish to a stream and wait for its ack; returns False when the broker de-duplicated it (by ``msg_id``;
        None only for a message nothing may drop, a dead letter)."""
        with self._tracer.start_as_current_span(
            f"{subject} publish",
            kind=SpanKind.PRODUCER,
            attributes={"messaging.system": "nats", "messaging.destination.name": subject},
        ):
            sent = dict(headers or {})
            if msg_id is not None:
                sent["Nats-Msg-Id"] = msg_id
            propagate.inject(sent)
            ack = await self.js.publish(subject, body, stream=stream, timeout=self.timeout_s, headers=sent)
        return not ack.duplicate

    def consume(
        self,
        *,
        subject: str,
        stream: str,
        durable: str,
        handler: Handler,
        policy: ConsumerPolicy,
        on_give_up: GiveUp | None = None,
    ) -> None:
        """Attach ``handler`` as a durable pull consumer shared by every replica of the service.

        ``on_give_up(body, reason)`` runs when a message is dead-lettered (e.g. to tell its sender)."""
        bus = self

        @self.broker.subscriber(
            subject,
            stream=JStream(stream, declare=False),
            durable=durable,
            pull_sub=PullSub(batch_size=policy.batch_size, timeout=1.0),
            config=ConsumerConfig(
                ack_wait=policy.ack_wait_s,
                # beyond the handler's deliveries, a few for a dead-letter publish that failed to be tried again
                max_deliver=policy.max_deliver + DEAD_LETTER_TRIES,
                max_ack_pending=policy.max_ack_pending,
            ),
            ack_policy=AckPolicy.MANUAL,
            max_workers=policy.max_workers,
            decoder=the_message,
        )
        async def _on_message(msg: NatsMessage) -> None:
            await bus._dispatch(msg, handler, policy, on_give_up)

    async def _dispatch(
        self, msg: NatsMessage, handler: Handler, policy: ConsumerPolicy, on_give_up: GiveUp | None
    ) -> None:
        raw = msg.raw_message
        delivered = raw.metadata.num_delivered or 1
        headers = dict(raw.headers or {})
        try:
            await handler(raw.data, headers)
        except PermanentFailure as exc:
            await self._give_up(msg, headers, str(exc), delivered, policy, on_give_up)
        except Exception as exc:
            if delivered >= policy.max_deliver:
                log.exception("giving up on %s after %d deliveries", raw.subject, delivered)
                await self._give_up(msg, headers, repr(exc), delivered, policy, on_give_up)
            else:
                log.warning("retrying %s (delivery %d): %r", raw.subject, delivered, exc)
                await msg.nack(delay=policy.backoff(delivered))
        else:
            await msg.ack()

    async def _give_up(
        self,
        msg: NatsMessage,
        headers: dict[str, str],
        reason: str,
        delivered: int,
        policy: ConsumerPolicy,
        on_give_up: GiveUp | None,
    ) -> None:
        """Dead-letter the message and terminate it; if that fails, nak it, so that it is delivered (and dead-lettered)
        again, up to DEAD_LETTER_TRIES more times."""
        raw = msg.raw_message
        try:
            await self.dead_letter(raw.subject, raw.data, headers, reason=reason, delivered=delivered)
        except Exception:
            log.exception("could not dead-letter %s; it will be delivered again", raw.subject)
            await msg.nack(delay=policy.max_delay_s)
            return
        await msg.reject()
        if on_give_up is not None:
            try:
                await on_give_up(raw.data, reason)
            except Exception:
                log.exception("dead-lettered %s, but telling its sender failed", raw.subject)

    async def dead_letter(
        self, subject: str, body: bytes, headers: dict[str, str], *, reason: str, delivered: int
    ) -> None:
        dl_headers = {k: v for k, v in headers.items() if not k.startswith("Nats-")}
        dl_headers.update(
            {"X-Original-Subject": subject, "X-Failure-Reason": reason[:1000], "X-Deliveries": str(delivered)}
        )
        await self.publish(
            self.subjects.dead_letter(subject),
            body,
            msg_id=None,
            stream=self.subjects.dead_letter_stream,
            headers=dl_headers,
        )
