"""JetStream streams, publishing and durable consumers.

Streams are declared here, once, at start-up; subscribers attach with ``declare=False``. Every consumer is a
durable pull consumer shared by all replicas of a service, with explicit acks: a handler that cannot succeed
sends the message to the dead-letter subject and terminates it; one that may succeed later naks it with a delay,
until ``max_deliver`` is reached, when it too goes to the dead-letter subject.
"""

import asyncio
import logging
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime

from faststream.nats import NatsBroker
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import BadRequestError
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Tracer

from contracts import Subjects
from servicekit.consumer import MessageHandler, PullConsumer, consumer_config

log = logging.getLogger(__name__)

DAY = 24 * 3600.0
DEAD_LETTER_TRIES = 3
TASKS_DUPLICATE_WINDOW_S = 120.0  # a task published again within this is dropped by the broker
MSG_ID = "Nats-Msg-Id"  # the broker de-duplicates by it; a command's is its command id


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


class PermanentFailure(Exception):
    """The message can never be handled (malformed, unknown type): dead-letter it at once."""


class Defer(Exception):
    """Not now, but later: the message is given back (nak) to be delivered again after ``delay_s``; not a failure,
    so nothing is logged (it still counts as a delivery towards the consumer's ``max_deliver``)."""

    def __init__(self, delay_s: float) -> None:
        super().__init__(f"deferred by {delay_s} s")
        self.delay_s = delay_s


_delivery: ContextVar[Msg | None] = ContextVar("servicekit_delivery", default=None)


def deliveries() -> int:
    """How many times the message being handled (in this task) has been delivered, this time included."""
    msg = _delivery.get()
    return (msg.metadata.num_delivered or 1) if msg is not None else 1


async def in_progress() -> None:
    """Tell the broker that the message being handled (in this task) is still being worked on, which restarts its
    ack wait; for a handler that takes long, such as a model call."""
    msg = _delivery.get()
    if msg is not None:
        await msg.in_progress()


@dataclass(frozen=True, slots=True)
class ConsumerPolicy:
    max_deliver: int = 5
    ack_wait_s: float = 30.0
    max_ack_pending: int = 256
    max_workers: int = 1
    buffer: int = 16  # messages held beyond those being handled, so that the next is at hand
    base_delay_s: float = 0.2
    max_delay_s: float = 10.0

    def backoff(self, delivered: int) -> float:
        return float(min(self.max_delay_s, self.base_delay_s * 2 ** max(0, delivered - 1)))


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message given up on: where it was sent, what it held, its headers (``Nats-Msg-Id`` among them), why it was
    given up on and when the stream stored it."""

    subject: str
    body: bytes
    headers: dict[str, str]
    reason: str
    stored_at: datetime


Handler = Callable[[bytes, dict[str, str]], Awaitable[None]]
GiveUp = Callable[[DeadLetter], Awaitable[None]]


class Bus:
    """The service's broker plus the JetStream context used for publishing and administration.

    FastStream holds the connection (and serves request/reply queries, see ``queries``). Every publish goes straight
    through nats-py's JetStream context (a stream publish with an awaited ack) inside our own producer span, whose
    context travels in the headers; FastStream's publisher would run its middleware stack around each message for
    nothing more. Durable consumers are ``PullConsumer``s, which keep a pull request waiting on the server, so a
    message reaches its handler the moment it is stored; each handles its message in a consumer span that
    continues the producer's trace."""

    def __init__(self, broker: NatsBroker, subjects: Subjects, timeout_s: float, tracer: Tracer | None = None) -> None:
        self.broker = broker
        self.subjects = subjects
        self.timeout_s = timeout_s
        self._tracer = tracer or trace.get_tracer(__name__)
        self._js: JetStreamContext | None = None
        self._nc: Client | None = None
        self._consumers: list[tuple[str, ConsumerPolicy, Handler, GiveUp | None, ConsumerConfig]] = []
        self._running: list[PullConsumer] = []

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
        self,
        subject: str,
        body: bytes,
        *,
        msg_id: str | None,
        stream: str,
        headers: dict[str, str] | None = None,
        span: bool = True,
    ) -> bool:
        """Publish to a stream and wait for its ack; returns False when the broker de-duplicated it (by ``msg_id``;
        None only for a message nothing may drop, a dead letter). The message carries the trace context: of its own
        producer span, or, with ``span=False``, of the caller's (one span for a batch, say)."""
        if not span:
            return await self._publish(subject, body, msg_id, stream, headers)
        with self._tracer.start_as_current_span(
            f"{subject} publish",
            kind=SpanKind.PRODUCER,
            attributes={"messaging.system": "nats", "messaging.destination.name": subject},
        ):
            return await self._publish(subject, body, msg_id, stream, headers)

    async def _publish(
        self, subject: str, body: bytes, msg_id: str | None, stream: str, headers: dict[str, str] | None
    ) -> bool:
        sent = dict(headers or {})
        if msg_id is not None:
            sent[MSG_ID] = msg_id
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
        """Attach ``handler`` as a durable pull consumer shared by every replica of the service; it starts with
        ``start_consumers``.

        ``on_give_up(dead_letter)`` runs when a message is dead-lettered, before it is terminated, to tell its sender;
        it returns when there is nobody to tell and raises when telling failed (the message is then delivered
        again)."""
        config = consumer_config(
            durable,
            subject,
            ack_wait_s=policy.ack_wait_s,
            # beyond the handler's deliveries, a few for a dead-letter publish that failed to be tried again
            max_deliver=policy.max_deliver + DEAD_LETTER_TRIES,
            max_ack_pending=policy.max_ack_pending,
        )
        self._consumers.append((stream, policy, handler, on_give_up, config))

    async def start_consumers(self) -> None:
        for stream, policy, handler, on_give_up, config in self._consumers:
            consumer = PullConsumer(
                self.nc,
                self.js,
                stream=stream,
                config=config,
                handler=self._dispatcher(handler, policy, on_give_up),
                workers=policy.max_workers,
                buffer=policy.buffer,
                tracer=self._tracer,
            )
            await consumer.start()
            self._running.append(consumer)

    async def stop_consumers(self, grace_s: float) -> None:
        """Stop every consumer; messages in hand get ``grace_s`` to finish, and are given back after that."""
        running, self._running = self._running, []
        await asyncio.gather(*(consumer.stop(grace_s) for consumer in running))

    def _dispatcher(self, handler: Handler, policy: ConsumerPolicy, on_give_up: GiveUp | None) -> MessageHandler:
        async def dispatch(msg: Msg) -> None:
            await self._dispatch(msg, handler, policy, on_give_up)

        return dispatch

    async def _dispatch(self, msg: Msg, handler: Handler, policy: ConsumerPolicy, on_give_up: GiveUp | None) -> None:
        delivered = msg.metadata.num_delivered or 1
        headers = dict(msg.headers or {})
        token = _delivery.set(msg)
        try:
            await handler(msg.data, headers)
        except Defer as defer:
            if delivered >= policy.max_deliver:  # the broker would not deliver it again
                await self._give_up(msg, headers, "deferred too often", delivered, policy, on_give_up)
            else:
                await msg.nak(delay=defer.delay_s)
        except PermanentFailure as exc:
            await self._give_up(msg, headers, str(exc), delivered, policy, on_give_up)
        except Exception as exc:
            if delivered >= policy.max_deliver:
                message_id = headers.get("Nats-Msg-Id")
                log.exception("giving up on %s (message %s) after %d deliveries", msg.subject, message_id, delivered)
                await self._give_up(msg, headers, repr(exc), delivered, policy, on_give_up)
            else:
                log.warning("retrying %s (delivery %d): %r", msg.subject, delivered, exc)
                await msg.nak(delay=policy.backoff(delivered))
        else:
            await msg.ack()
        finally:
            _delivery.reset(token)

    async def _give_up(
        self,
        msg: Msg,
        headers: dict[str, str],
        reason: str,
        delivered: int,
        policy: ConsumerPolicy,
        on_give_up: GiveUp | None,
    ) -> None:
        """Dead-letter the message, tell its sender (``on_give_up``) and terminate it; if either fails, nak it, so
        that it is delivered (and dead-lettered, and its sender told) again, up to DEAD_LETTER_TRIES more times. The
        sender is told before the message is terminated, so a message is never gone without its sender knowing."""
        try:
            await self.dead_letter(msg.subject, msg.data, headers, reason=reason, delivered=delivered)
        except Exception:
            log.exception("could not dead-letter %s; it will be delivered again", msg.subject)
            await msg.nak(delay=policy.max_delay_s)
            return
        if on_give_up is not None:
            try:
                await on_give_up(DeadLetter(msg.subject, msg.data, headers, reason, msg.metadata.timestamp))
            except Exception:
                log.exception("dead-lettered %s, but telling its sender failed; delivering it again", msg.subject)
                await msg.nak(delay=policy.max_delay_s)
                return
        await msg.term()

    async def dead_letter(
        self, subject: str, body: bytes, headers: dict[str, str], *, reason: str, delivered: int
    ) -> None:
        dl_headers = {k: v for k, v in headers.items() if not k.startswith("Nats-")}
        if MSG_ID in headers:
            dl_headers["X-Original-Msg-Id"] = headers[MSG_ID]  # a command's id, say
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
