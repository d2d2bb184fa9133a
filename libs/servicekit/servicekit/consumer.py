"""A durable JetStream pull consumer that keeps a pull request waiting on the server (continuous pull).

nats-py's ``fetch`` (which FastStream's pull subscriber calls in a loop) asks for a batch, waits for the answer,
hands the batch over, and only then asks again: a message published between two requests waits for the next
round trip, and a request left waiting on an empty stream returns its first message only once the whole batch has
arrived or the request has expired. Here, as in the Go and JavaScript clients' ``consume``, requests are sent ahead
of need: the server always holds one, so a message is pushed to this process the moment it is stored, and a new
request is sent whenever what is asked for plus what is held falls to half the consumer's capacity (its workers
plus a small buffer). As in the Go client, one count says how many messages are asked for and not yet delivered:
each request adds its batch, each message takes one off, and a request that expires (after ``EXPIRES_S``) or is
refused takes off what it left undelivered, which its status message says (``Nats-Pending-Messages``; the server
fills waiting requests in turn, not one after the other, so only the count is kept, not the requests). Should a
status be lost with the connection, the count is dropped once every request sent has expired.

The consumer is durable and shared: every replica of a service pulls from the same durable, and the server hands
each message to one of them. Handlers ack, nak or terminate each message themselves (see ``Bus``). With one
worker, messages are handled one at a time, in the order they were delivered.
"""

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import BadRequestError
from opentelemetry import propagate
from opentelemetry.trace import SpanKind, Tracer

log = logging.getLogger(__name__)
EXPIRES_S = 5.0
DEADLINE_MARGIN_S = 2.0  # a request is forgotten this long after it should have expired, status or not
API_PREFIX = "$JS.API"
REQUEST_DONE = frozenset({"408", "409"})  # request timeout; request ended (max waiting, consumer deleted, ...)
PENDING_MESSAGES = "Nats-Pending-Messages"  # on a request's end: how many of its messages it did not deliver

MessageHandler = Callable[[Msg], Awaitable[None]]


class PullConsumer:
    def __init__(
        self,
        nc: Client,
        js: JetStreamContext,
        *,
        stream: str,
        config: ConsumerConfig,
        handler: MessageHandler,
        workers: int,
        buffer: int,
        tracer: Tracer,
        expires_s: float = EXPIRES_S,
    ) -> None:
        if not config.durable_name:
            raise ValueError("a shared consumer needs a durable name")
        self.durable: str = config.durable_name
        self.stream = stream
        self._nc = nc
        self._js = js
        self._config = config
        self._handler = handler
        self._workers = workers
        self._capacity = workers + buffer
        self._tracer = tracer
        self._expires_s = expires_s
        self._queue: asyncio.Queue[Msg | None] = asyncio.Queue()  # None: stop
        self._asked = 0  # messages asked for and not yet delivered, nor left undelivered by an expired request
        self._asked_until = 0.0  # when every request sent has expired, margin included (monotonic clock)
        self._held = 0  # delivered and not yet handled to the end
        self._wake = asyncio.Event()
        self._sub: Subscription | None = None
        self._stopping = False
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def asked(self) -> int:
        """Messages asked for and not yet delivered."""
        return self._asked

    @property
    def held(self) -> int:
        return self._held

    async def start(self) -> None:
        await self._ensure_consumer()
        inbox = self._nc.new_inbox()
        self._sub = await self._nc.subscribe(inbox, cb=self._on_delivery)
        self._tasks = [asyncio.create_task(self._work(), name=f"consume {self.durable}") for _ in range(self._workers)]
        self._tasks.append(asyncio.create_task(self._pull(inbox), name=f"pull {self.durable}"))

    async def stop(self, grace_s: float = 10.0) -> None:
        """Stop asking, give back what is buffered (nak: another replica takes it at once), and let the messages
        being handled finish; those still in hand after ``grace_s`` are cancelled and given back too."""
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
            self._sub = None
        self._stopping = True
        pulling, workers = self._tasks[-1:], self._tasks[:-1]
        for task in pulling:
            task.cancel()
        while not self._queue.empty():
            msg = self._queue.get_nowait()
            if msg is not None:
                self._held -= 1
                with contextlib.suppress(Exception):
                    await msg.nak()
        for _ in workers:
            self._queue.put_nowait(None)  # each worker ends after its message in hand
        if workers:
            _, late = await asyncio.wait(workers, timeout=grace_s)
            for task in late:
                task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    async def _ensure_consumer(self) -> None:
        try:
            await self._js.add_consumer(self.stream, config=self._config)
        except BadRequestError as exc:
            # It exists with settings the server will not change in place: use it as it is.
            log.warning("consumer %s kept with its existing settings: %s", self.durable, exc.description)

    async def _on_delivery(self, msg: Msg) -> None:
        status = JetStreamContext.is_status_msg(msg)
        if status is None:
            self._asked = max(0, self._asked - 1)
            self._held += 1
            self._queue.put_nowait(msg)
            return
        if status in REQUEST_DONE:
            undelivered = (msg.headers or {}).get(PENDING_MESSAGES)
            if undelivered is not None and undelivered.isdigit():
                self._asked = max(0, self._asked - int(undelivered))
        self._wake.set()

    async def _pull(self, inbox: str) -> None:
        subject = f"{API_PREFIX}.CONSUMER.MSG.NEXT.{self.stream}.{self.durable}"
        while not self._stopping:
            self._wake.clear()  # before looking: a wake-up while asking below is not lost
            now = time.monotonic()
            if self._asked and now >= self._asked_until:
                self._asked = 0  # every request has expired: whatever was not heard of is not coming
            free = self._capacity - self._asked - self._held
            if free > 0 and (self._asked == 0 or free >= self._capacity // 2):
                request = {"batch": free, "expires": int(self._expires_s * 1e9)}
                self._asked += free  # counted before sending: a message may arrive before the send returns
                self._asked_until = now + self._expires_s + DEADLINE_MARGIN_S
                try:
                    await self._nc.publish(subject, json.dumps(request).encode(), reply=inbox)
                except Exception:  # the connection is down or closing: ask again shortly
                    self._asked = max(0, self._asked - free)
                    log.warning("could not ask %s for messages; asking again", self.durable, exc_info=True)
                    await asyncio.sleep(1.0)
                    continue
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._expires_s + DEADLINE_MARGIN_S):  # not wait_for, which in 3.11
                    await self._wake.wait()  # can swallow the cancellation that stops this loop

    async def _work(self) -> None:
        while (msg := await self._queue.get()) is not None:
            try:
                await self._handle(msg)
            except asyncio.CancelledError:
                with contextlib.suppress(Exception):
                    await msg.nak()  # stopped before it was done: another replica takes it now
                raise
            finally:
                self._held -= 1
                self._wake.set()

    async def _handle(self, msg: Msg) -> None:
        headers = msg.headers or {}
        with self._tracer.start_as_current_span(
            f"{msg.subject} process",
            kind=SpanKind.CONSUMER,
            context=propagate.extract(headers),
            attributes={"messaging.system": "nats", "messaging.destination.name": msg.subject},
        ):
            try:
                await self._handler(msg)
            except Exception:
                log.exception("handling %s failed", msg.subject)


def consumer_config(
    durable: str, subject: str, *, ack_wait_s: float, max_deliver: int, max_ack_pending: int
) -> ConsumerConfig:
    return ConsumerConfig(
        durable_name=durable,
        filter_subject=subject,
        ack_policy=AckPolicy.EXPLICIT,
        deliver_policy=DeliverPolicy.ALL,
        ack_wait=ack_wait_s,
        max_deliver=max_deliver,
        max_ack_pending=max_ack_pending,
    )
