"""Request/reply queries answered from a service's read models (core NATS, queue group per service).

Each replica answers up to ``workers`` queries at once: a core NATS subscription hands its messages to one callback
at a time, so a subscriber without workers answers one query after another, and one slow query holds up every query
behind it. Every router answers ``Ping`` (``ping`` asks it), so a service whose query path is stuck or gone shows.
"""

import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from faststream.nats import NatsMessage
from nats.errors import Error as NatsError
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout
from pydantic import ValidationError

from contracts import REGISTRY, ErrorCode, Query, QueryReply, UnknownMessageType
from contracts.errors import DomainError
from contracts.health import Ping
from servicekit.bus import Bus
from servicekit.http import REQUEST_ID_HEADER

log = logging.getLogger(__name__)
Q = TypeVar("Q", bound=Query)
QueryFn = Callable[[Any, str], Awaitable[Any]]


async def the_message(msg: NatsMessage) -> NatsMessage:
    """A subscriber decoder that hands the handler the message itself.

    The query handler reads the raw subject and body; with the broker's ``apply_types=False`` this skips
    FastStream's per-message dependency injection (which resolves a ``NatsMessage`` parameter through a worker
    thread) and body decoding."""
    return msg


async def pong(query: Ping, workspace_id: str) -> str:
    return "pong"


class QueryRouter:
    """The service's query handlers by query type; ``Ping`` is answered by every router."""

    def __init__(self) -> None:
        self._handlers: dict[str, QueryFn] = {}
        self.register(Ping)(pong)

    def register(self, query: type[Q]) -> Callable[[Callable[[Q, str], Awaitable[Any]]], QueryFn]:
        def decorate(fn: Callable[[Q, str], Awaitable[Any]]) -> QueryFn:
            self._handlers[query.type_name] = fn
            return fn

        return decorate

    async def answer(self, query_type: str, workspace_id: str, body: bytes) -> QueryReply:
        fn = self._handlers.get(query_type)
        if fn is None:
            return QueryReply(ok=False, error_code=ErrorCode.NOT_FOUND, error_message=f"unknown query {query_type}")
        try:
            query = REGISTRY.get(query_type).model_validate_json(body or b"{}")
        except (ValidationError, UnknownMessageType):
            message = f"The query does not match the {query_type} schema."
            return QueryReply(ok=False, error_code=ErrorCode.VALIDATION_FAILED, error_message=message)
        try:
            return QueryReply(ok=True, result=await fn(query, workspace_id))
        except DomainError as exc:
            return QueryReply(ok=False, error_code=exc.code, error_message=str(exc))


def serve_queries(bus: Bus, service: str, router: QueryRouter, *, workers: int) -> None:
    """Answer ``service``'s queries with ``router``, up to ``workers`` at once in this replica (the replicas share
    the queries through a queue group)."""
    subjects = bus.subjects
    prefix_parts = len(subjects.queries_of(service).split(".")) - 1

    @bus.broker.subscriber(
        subjects.queries_of(service),
        queue=subjects.durable(service, "queries"),
        decoder=the_message,
        max_workers=workers,
    )
    async def _on_query(msg: NatsMessage) -> bytes:
        parts = msg.raw_message.subject.split(".")
        workspace_id, query_type = parts[prefix_parts], parts[prefix_parts + 1]
        try:
            reply = await router.answer(query_type, workspace_id, msg.raw_message.data)
        except Exception:
            request_id = (msg.raw_message.headers or {}).get(REQUEST_ID_HEADER)
            log.exception("query %s failed (request %s)", query_type, request_id)
            reply = QueryReply(ok=False, error_code=ErrorCode.INTERNAL_ERROR, error_message="The query failed.")
        body = reply.model_dump_json().encode()
        if len(body) > bus.nc.max_payload:
            too_large = "The result is larger than a message may be; ask for fewer items (a smaller limit)."
            return (
                QueryReply(ok=False, error_code=ErrorCode.RESULT_TOO_LARGE, error_message=too_large)
                .model_dump_json()
                .encode()
            )
        return body


class QueryFailed(Exception):
    """A query that got no answer (``service_unavailable``) or an error reply (its code)."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code


async def ask(
    bus: Bus, workspace_id: str, query: Query, timeout_s: float, headers: dict[str, str] | None = None
) -> Any:
    """Ask another service's read models over NATS request/reply, scoped to ``workspace_id``; the result."""
    subject = bus.subjects.query(query.service, workspace_id, query.type_name)
    try:
        msg = await bus.nc.request(subject, query.model_dump_json().encode(), timeout=timeout_s, headers=headers)
    except (NatsTimeout, NoRespondersError) as exc:
        raise QueryFailed(ErrorCode.SERVICE_UNAVAILABLE, f"the {query.service} service did not answer") from exc
    reply = QueryReply.model_validate_json(msg.data)
    if not reply.ok:
        raise QueryFailed(reply.error_code or ErrorCode.INTERNAL_ERROR, reply.error_message or "query failed")
    return reply.result


async def ping(bus: Bus, service: str, timeout_s: float) -> bool:
    """Whether ``service`` answers a Ping within ``timeout_s`` (False when no replica of it is subscribed)."""
    try:
        msg = await bus.nc.request(bus.subjects.ping(service), b"{}", timeout=timeout_s)
        return QueryReply.model_validate_json(msg.data).ok
    except (NatsError, TimeoutError, ValidationError):
        return False
