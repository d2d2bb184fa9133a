"""Every error leaves the gateway as application/problem+json with a stable ``code``.

A 5xx answers in general terms and carries the request id (servicekit.http.RequestMiddleware gives every request
one); the details are logged under that id and never sent. An exception no handler here knows is the middleware's.
"""

import asyncio
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import iter_route_contexts
from nats.errors import Error as NatsError
from pydantic import BaseModel
from pymongo.errors import PyMongoError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from contracts import ErrorCode
from servicekit.http import GENERIC_500, PROBLEM, problem_document, request_id_of

log = logging.getLogger(__name__)

STATUS_OF: dict[ErrorCode, int] = {
    ErrorCode.MALFORMED_JSON: 400,
    ErrorCode.BAD_REQUEST: 400,
    ErrorCode.VALIDATION_FAILED: 422,
    ErrorCode.UNKNOWN_FIELD: 422,
    ErrorCode.TOO_DEEP: 422,
    ErrorCode.UNSTORABLE_VALUE: 422,
    ErrorCode.BODY_TOO_LARGE: 413,
    ErrorCode.UNSUPPORTED_MEDIA_TYPE: 415,
    ErrorCode.UNAUTHORIZED: 401,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.METHOD_NOT_ALLOWED: 405,
    ErrorCode.IDEMPOTENCY_KEY_REUSED: 422,
    ErrorCode.CONFLICT: 409,
    ErrorCode.CONCURRENCY_CONFLICT: 409,
    ErrorCode.INVALID_TRANSITION: 409,
    ErrorCode.AGENT_NOT_FOUND: 404,
    ErrorCode.AGENT_RETIRED: 409,
    ErrorCode.TEAM_NOT_FOUND: 404,
    ErrorCode.TEAM_ARCHIVED: 409,
    ErrorCode.UNKNOWN_MEMBER: 422,
    ErrorCode.INVALID_TEAM: 422,
    ErrorCode.UNKNOWN_COMMAND: 400,
    ErrorCode.INVALID_WORKFLOW: 422,
    ErrorCode.WORKFLOW_NOT_FOUND: 404,
    ErrorCode.WORKFLOW_ARCHIVED: 409,
    ErrorCode.EXECUTION_NOT_FOUND: 404,
    ErrorCode.TEMPLATE_NOT_FOUND: 404,
    ErrorCode.MEMORY_NOT_FOUND: 404,
    ErrorCode.VERSION_CONFLICT: 409,
    ErrorCode.ENTRY_TOO_LARGE: 413,
    ErrorCode.TOO_MANY_ENTRIES: 413,
    ErrorCode.QUERY_TOO_LONG: 422,
    ErrorCode.RESULT_TOO_LARGE: 413,
    ErrorCode.SERVICE_UNAVAILABLE: 503,
    ErrorCode.INTERNAL_ERROR: 500,
    ErrorCode.HEADERS_TOO_LARGE: 431,
    ErrorCode.REQUEST_TIMEOUT: 408,
    ErrorCode.TEAM_RUN_NOT_FOUND: 404,
    ErrorCode.NO_RUNNABLE_MEMBER: 409,
    ErrorCode.THREAD_NOT_FOUND: 404,
    ErrorCode.THREAD_FULL: 409,
    ErrorCode.DELEGATION_NOT_FOUND: 404,
    ErrorCode.DELEGATION_LOOP: 409,
    ErrorCode.DELEGATION_TOO_DEEP: 409,
    ErrorCode.NO_AGENT: 409,
    ErrorCode.CONVERSATION_NOT_FOUND: 404,
    ErrorCode.FORBIDDEN: 403,
}


class Problem(BaseModel):
    """An error response (RFC 9457 problem details) with the platform's stable error ``code``."""

    type: str
    title: str
    status: int
    code: ErrorCode
    detail: str
    errors: list[dict[str, Any]] | None = None
    request_id: str | None = None
    """On a 5xx: the request's id, which finds the details in the gateway's logs (also in ``X-Request-ID``)."""
    command_id: str | None = None
    """When a command was rejected: its id (for an internal error, it finds the details in the service's logs)."""


PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": Problem, "content": {PROBLEM: {}}, "description": description}
    for status, description in [
        (400, "Malformed request"),
        (401, "Missing or invalid API key"),
        (404, "Not found in the caller's workspace"),
        (409, "Conflicts with the current state"),
        (408, "The request did not arrive in time"),
        (413, "Body too large"),
        (422, "Invalid input"),
        (431, "Request header fields too large"),
        (500, "Unexpected error; the problem's request_id finds it in the logs"),
        (503, "A service did not answer in time"),
    ]
}


class ApiError(Exception):
    def __init__(
        self,
        code: ErrorCode,
        detail: str,
        *,
        status: int | None = None,
        errors: list[Any] | None = None,
        command_id: str | None = None,
    ):
        super().__init__(detail)
        self.code = code
        self.detail = detail
        self.status = status or STATUS_OF.get(code, 400)
        self.errors = errors
        self.command_id = command_id


def problem(
    status: int,
    code: ErrorCode,
    detail: str,
    errors: list[Any] | None = None,
    *,
    request_id: str | None = None,
    command_id: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body = problem_document(status, code, detail, errors=errors or None, request_id=request_id, command_id=command_id)
    all_headers = {"WWW-Authenticate": "Bearer"} if status == 401 else {}
    all_headers.update(headers or {})
    return JSONResponse(body, status_code=status, media_type=PROBLEM, headers=all_headers or None)


def _validation_problem(exc: RequestValidationError) -> JSONResponse:
    errors = [
        {"loc": [str(p) for p in e.get("loc", ())], "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))}
        for e in exc.errors()
    ]
    kinds = {e["type"] for e in errors}
    if "json_invalid" in kinds:
        return problem(400, ErrorCode.MALFORMED_JSON, "The request body is not valid JSON.", errors)
    if kinds == {"extra_forbidden"}:
        names = ", ".join(e["loc"][-1] for e in errors)
        return problem(422, ErrorCode.UNKNOWN_FIELD, f"Unknown field(s): {names}.", errors)
    return problem(422, ErrorCode.VALIDATION_FAILED, "The request does not match the schema.", errors)


def _allowed_methods(request: Request) -> list[str]:
    """Every method some route takes at the request's path."""
    methods: set[str] = set()
    for route in iter_route_contexts(request.app.router.routes):
        if route.matches(request.scope)[0] is not Match.NONE:
            methods |= route.methods or set()
    return sorted(methods)


def install_error_handlers(app: FastAPI) -> None:
    async def on_api_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ApiError)
        request_id = None
        if exc.status >= 500:
            request_id = request_id_of(request.scope)
            log.error("request %s answered %d %s: %s", request_id, exc.status, exc.code.value, exc.detail)
        return problem(exc.status, exc.code, exc.detail, exc.errors, request_id=request_id, command_id=exc.command_id)

    async def on_validation(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return _validation_problem(exc)

    async def on_http(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        known = {
            400: ErrorCode.MALFORMED_JSON,  # FastAPI's "There was an error parsing the body"
            401: ErrorCode.UNAUTHORIZED,
            404: ErrorCode.NOT_FOUND,
            405: ErrorCode.METHOD_NOT_ALLOWED,
        }
        if exc.status_code >= 500:
            request_id = request_id_of(request.scope)
            log.error("request %s answered %d: %s", request_id, exc.status_code, exc.detail)
            return problem(exc.status_code, ErrorCode.INTERNAL_ERROR, GENERIC_500, request_id=request_id)
        code = known.get(exc.status_code, ErrorCode.BAD_REQUEST)
        headers = dict(exc.headers or {})
        if exc.status_code == 405:  # Starlette names the methods of one route; a path has a route per method
            headers["Allow"] = ", ".join(_allowed_methods(request))
        return problem(exc.status_code, code, str(exc.detail), headers=headers)

    async def on_unavailable(request: Request, exc: Exception) -> JSONResponse:
        request_id = request_id_of(request.scope)
        log.warning("request %s: dependency unavailable: %r", request_id, exc)
        detail = "A dependency is unavailable; retry shortly."
        return problem(503, ErrorCode.SERVICE_UNAVAILABLE, detail, request_id=request_id)

    app.add_exception_handler(ApiError, on_api_error)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(PyMongoError, on_unavailable)
    app.add_exception_handler(NatsError, on_unavailable)
    # Any other exception is servicekit.http.RequestMiddleware's: an ``Exception`` handler here would run in
    # Starlette's ServerErrorMiddleware, which answers and then raises again, and the server drops the connection.


class BodyLimitMiddleware:
    """Reads the whole body before the app sees it: refuses one over ``limit`` bytes with 413, whether announced
    by Content-Length or streamed, and one that has not arrived within ``timeout_s`` with 408. Both answers close
    the connection; the server reads and discards what the client still sends (a lingering close,
    servicekit.http), so that a client that sends everything before it reads sees the status too."""

    def __init__(self, app: ASGIApp, limit: int, timeout_s: float) -> None:
        self.app = app
        self.limit = limit
        self.timeout_s = timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and not declared.isdigit():
            await problem(400, ErrorCode.BAD_REQUEST, "Content-Length is not a number.")(scope, receive, send)
            return
        if declared is not None and int(declared) > self.limit:
            await self._too_large(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        more = True
        deadline = asyncio.get_running_loop().time() + self.timeout_s
        while more:
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                detail = f"The request body did not arrive within {self.timeout_s:g} s."
                await problem(408, ErrorCode.REQUEST_TIMEOUT, detail, headers=CLOSE)(scope, receive, send)
                return
            if message["type"] != "http.request":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                await self._too_large(scope, receive, send)
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        detail = f"The request body exceeds {self.limit} bytes."
        await problem(413, ErrorCode.BODY_TOO_LARGE, detail, headers=CLOSE)(scope, receive, send)


CLOSE = {"Connection": "close"}
