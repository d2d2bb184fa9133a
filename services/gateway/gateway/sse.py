"""Live event streams as Server-Sent Events: one aggregate's events from the EVENTS stream, in version order."""

from collections.abc import AsyncIterator, Callable, Collection
from typing import Annotated

from fastapi import Header, Request
from fastapi.responses import StreamingResponse
from nats.errors import TimeoutError as NatsTimeout
from nats.js.api import DeliverPolicy

from contracts import EventRecord
from contracts.public_events import PublicEventMessage
from gateway.deps import BusDep

KEEPALIVE_S = 15.0

LastEventId = Annotated[
    str | None,
    Header(
        alias="Last-Event-ID",
        pattern=r"^[0-9]{1,20}$",
        description="The id of the last event received (a version number sent by this stream): resume after it.",
    ),
]


async def event_stream(
    request: Request,
    bus: BusDep,
    subject: str,
    last_event_id: str | None,
    public: Callable[[EventRecord], PublicEventMessage | None],
    ends: Collection[str],
) -> StreamingResponse:
    """Stream the public events of the events on ``subject`` (one aggregate's), from after ``last_event_id``, then
    live until an event of a type in ``ends``."""
    after = int(last_event_id or 0)
    sub = await bus.js.subscribe(
        subject, stream=bus.subjects.events_stream, ordered_consumer=True, deliver_policy=DeliverPolicy.ALL
    )

    async def stream() -> AsyncIterator[str]:
        """Public events strictly in version order, each once: relays on several replicas may publish a stream's
        events out of order, so early arrivals wait for the versions before them. Internal events are not sent."""
        next_version, early = after + 1, dict[int, EventRecord]()
        try:
            while not await request.is_disconnected():
                try:
                    msg = await sub.next_msg(timeout=KEEPALIVE_S)
                except NatsTimeout:
                    yield ": keep-alive\n\n"
                    continue
                record = EventRecord.model_validate_json(msg.data)
                ended = record.version < next_version and record.type in ends  # resumed after the end
                if record.version >= next_version:
                    early[record.version] = record
                while next_version in early:
                    ready = early.pop(next_version)
                    message = public(ready)
                    if message is not None:
                        yield f"id: {message.version}\nevent: {message.type}\ndata: {message.model_dump_json()}\n\n"
                    ended = ready.type in ends
                    next_version += 1
                if ended and not early and msg.metadata.num_pending == 0:
                    return
        finally:
            await sub.unsubscribe()

    return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
