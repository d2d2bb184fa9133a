"""HTTP for every service: the request middleware and the server (uvicorn's h11, chosen and held to limits).

``RequestMiddleware`` is the outermost layer of every service's app: it gives each request an id (``X-Request-ID``,
the client's own when it sends a sane one), returns it on every response, and turns any exception that reaches it
(from a route, a dependency, an exception handler or another middleware) into a 500 problem document, so that an
unexpected error never costs the client its connection. The answer says what happened in general terms and carries
the request id; the details (exception, stack) are logged under that id and never sent.

uvicorn's defaults leave a few holes a client can fall into or use: a request head that never completes keeps its
connection for ever; an oversized head (or a head of thousands of fields) is answered with a bare 400 and the
connection closed while the client is still sending, which the client sees as a reset; and every early answer with
``Connection: close`` (a 413 while the body is still coming, a 408) is lost the same way by clients that send the
whole body before they read (Python's urllib, for one). ``GuardedH11Protocol`` closes them:

- the head must arrive within ``http_header_timeout_s`` (408), hold at most ``http_max_header_bytes`` (h11's
  ``max_incomplete_event_size``) and ``http_max_headers`` fields (431); each answer is a problem document;
- closing a connection whose request is not fully read is a *lingering close* (as Apache and nginx do): the answer
  is flushed, the sending side shut, and what the client still sends is read and discarded, up to
  ``HTTP_DISCARD_BYTES`` or ``LINGER_S``, so that the client can finish sending and then read the answer.
"""

import asyncio
import json
import logging
import re
import uuid
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, ClassVar

import h11
import uvicorn
from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode
from starlette.datastructures import MutableHeaders
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.server import ServerState

from contracts import ErrorCode

log = logging.getLogger(__name__)
PROBLEM = "application/problem+json"
REQUEST_ID_HEADER = "X-Request-ID"
LINGER_S = 5.0
"""How long a lingering close waits for the client to finish sending."""
GENERIC_500 = "Unexpected error; the request id finds it in the logs."
SANE_REQUEST_ID = re.compile(rb"^[A-Za-z0-9._:-]{1,128}$")
REQUEST_ID: ContextVar[str | None] = ContextVar("request_id", default=None)
"""The id of the request being handled (for calls that pass it on, e.g. to a service's query handler)."""


def problem_document(status: int, code: ErrorCode, detail: str, **members: Any) -> dict[str, Any]:
    """An RFC 9457 problem document with the platform's stable ``code``; ``members`` are extensions (``None`` ones
    are left out)."""
    body: dict[str, Any] = {
        "type": f"/problems/{code.value}",
        "title": code.value.replace("_", " "),
        "status": status,
        "code": code.value,
        "detail": detail,
    }
    body.update({name: value for name, value in members.items() if value is not None})
    return body


def new_request_id() -> str:
    return uuid.uuid4().hex


def request_id_of(scope: Scope) -> str | None:
    """The id ``RequestMiddleware`` gave the request (None outside it)."""
    state = scope.get("state") or {}
    value = state.get("request_id")
    return value if isinstance(value, str) else None


class RequestMiddleware:
    """The outermost layer of a service's app (see the module's docstring): a request id on every request and
    response, and a 500 problem document for any exception."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        sent = dict(scope.get("headers") or []).get(REQUEST_ID_HEADER.lower().encode())
        request_id = sent.decode() if sent is not None and SANE_REQUEST_ID.match(sent) else new_request_id()
        scope.setdefault("state", {})["request_id"] = request_id
        token = REQUEST_ID.set(request_id)
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                MutableHeaders(scope=message)[REQUEST_ID_HEADER] = request_id
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception as exc:
            log.exception("request %s (%s %s) failed", request_id, scope.get("method"), scope.get("path"))
            span = trace.get_current_span()
            span.record_exception(exc)
            span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
            if started:
                return  # the answer is under way and cannot be taken back; the server closes the connection
            document = problem_document(500, ErrorCode.INTERNAL_ERROR, GENERIC_500, request_id=request_id)
            await JSONResponse(document, status_code=500, media_type=PROBLEM)(scope, receive, send_with_id)
        finally:
            REQUEST_ID.reset(token)


@dataclass(frozen=True, slots=True)
class HttpLimits:
    max_header_bytes: int = 32_768
    max_headers: int = 100
    header_timeout_s: float = 10.0
    discard_bytes: int = 16 * 1_048_576


class TooManyHeaders(h11.RemoteProtocolError):
    pass


class _GuardedConnection(h11.Connection):
    """h11's server connection that also counts header fields and tells when a request head is complete."""

    def __init__(self, limits: HttpLimits, on_head: Callable[[], None]) -> None:
        super().__init__(h11.SERVER, max_incomplete_event_size=limits.max_header_bytes)
        self._max_headers = limits.max_headers
        self._on_head = on_head
        self.error: h11.RemoteProtocolError | None = None

    def next_event(self) -> Any:
        try:
            event = super().next_event()
            if isinstance(event, h11.Request):
                self._on_head()
                if len(event.headers) > self._max_headers:
                    raise TooManyHeaders(f"The request has more than {self._max_headers} header fields.", 431)
        except h11.RemoteProtocolError as exc:
            self.error = exc
            raise
        return event


class _LingeringTransport(asyncio.Transport):
    """The connection's transport as uvicorn sees it: ``close`` lingers while the client may still be sending."""

    def __init__(self, raw: asyncio.Transport, protocol: "GuardedH11Protocol") -> None:
        super().__init__()
        self._raw = raw
        self._protocol = protocol

    def close(self) -> None:
        self._protocol.close_connection()

    def is_closing(self) -> bool:
        return self._protocol.lingering or self._raw.is_closing()

    def write(self, data: "bytes | bytearray | memoryview[int]") -> None:
        self._raw.write(data)

    def pause_reading(self) -> None:
        self._raw.pause_reading()

    def resume_reading(self) -> None:
        self._raw.resume_reading()

    def is_reading(self) -> bool:
        return self._raw.is_reading()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._raw.get_extra_info(name, default)

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._raw.set_protocol(protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._raw.get_protocol()

    def can_write_eof(self) -> bool:
        return self._raw.can_write_eof()

    def write_eof(self) -> None:
        self._raw.write_eof()

    def get_write_buffer_size(self) -> int:
        return self._raw.get_write_buffer_size()

    def abort(self) -> None:
        self._raw.abort()


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with the limits of ``limits`` (see the module's docstring)."""

    limits: ClassVar[HttpLimits] = HttpLimits()

    def __init__(
        self,
        config: uvicorn.Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.conn = _GuardedConnection(self.limits, self._head_complete)
        self._raw: asyncio.Transport | None = None
        self._head_timer: asyncio.TimerHandle | None = None
        self._linger_timer: asyncio.TimerHandle | None = None
        self._discarded = 0

    @property
    def lingering(self) -> bool:
        return self._linger_timer is not None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        super().connection_made(transport)
        self._raw = transport
        self.transport = _LingeringTransport(transport, self)
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        for timer in (self._head_timer, self._linger_timer):
            if timer is not None:
                timer.cancel()

    def data_received(self, data: bytes) -> None:
        if self.lingering:
            self._discarded += len(data)
            if self._discarded > self.limits.discard_bytes:
                self._close_now()
            return
        super().data_received(data)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.cycle is None or self.cycle.response_complete:  # no pipelined request has begun since
            self._arm_head_timer()

    def send_400_response(self, msg: str) -> None:
        """Answer a request h11 could not take (malformed, head too large, too many fields) and close."""
        error = getattr(self.conn, "error", None)
        if isinstance(error, TooManyHeaders):
            self._answer_and_close(431, ErrorCode.HEADERS_TOO_LARGE, str(error))
        elif error is not None and error.error_status_hint == 431:
            detail = f"The request head is larger than {self.limits.max_header_bytes} bytes."
            self._answer_and_close(431, ErrorCode.HEADERS_TOO_LARGE, detail)
        else:
            self._answer_and_close(400, ErrorCode.BAD_REQUEST, "The request is not valid HTTP/1.1.")

    # Lingering close ----------------------------------------------------------------------------------------------

    def close_connection(self) -> None:
        """Close now when the client has nothing more to send; otherwise linger (see the module's docstring)."""
        if self._raw is None or self.lingering or self._raw.is_closing():
            return
        if self.conn.their_state not in {h11.SEND_BODY, h11.ERROR} or not self._raw.can_write_eof():
            self._close_now()
            return
        log.debug("lingering close: discarding what the client still sends")
        self._cancel_head_timer()
        self._raw.write_eof()
        self._linger_timer = self.loop.call_later(LINGER_S, self._close_now)
        self.flow.resume_reading()

    def _close_now(self) -> None:
        if self._raw is not None:
            self._raw.close()

    # The head timeout ---------------------------------------------------------------------------------------------

    def _arm_head_timer(self) -> None:
        self._cancel_head_timer()
        self._head_timer = self.loop.call_later(self.limits.header_timeout_s, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_complete(self) -> None:
        self._cancel_head_timer()

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self._raw is None or self._raw.is_closing() or self.lingering:
            return
        if self.cycle is not None and not self.cycle.response_complete:
            return  # a request is being answered; its head arrived in time
        self._answer_and_close(408, ErrorCode.REQUEST_TIMEOUT, "The request head did not arrive in time.")

    def _answer_and_close(self, status: int, code: ErrorCode, detail: str) -> None:
        """Write a problem answer below h11 (which may be in no state to send one) and close the connection."""
        request_id = new_request_id()
        log.info("HTTP %d before any request was read (request %s): %s", status, request_id, detail)
        document = problem_document(status, code, detail, request_id=request_id)
        body = json.dumps(document, separators=(",", ":")).encode()
        head = (
            f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n"
            f"content-type: {PROBLEM}\r\ncontent-length: {len(body)}\r\n"
            f"{REQUEST_ID_HEADER.lower()}: {request_id}\r\nconnection: close\r\n\r\n"
        )
        assert self._raw is not None
        self._raw.write(head.encode() + body)
        self.close_connection()


def protocol_class(limits: HttpLimits) -> type[GuardedH11Protocol]:
    return type("GuardedH11Protocol", (GuardedH11Protocol,), {"limits": limits})
