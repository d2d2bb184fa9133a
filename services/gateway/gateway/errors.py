"""Every error leaves the gateway as application/problem+json with a stable ``code``."""

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from nats.errors import Error as NatsError
from pydantic import BaseModel
from pymongo.errors import PyMongoError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from contracts import ErrorCode

log = logging.getLogger(__name__)
PROBLEM = "application/problem+json"

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
}


class Problem(BaseModel):
    """An error response (RFC 9457 problem details) with the platform's stable error ``code``."""

    type: str
    title: str
    status: int
    code: ErrorCode
    detail: str
    errors: list[dict[str, Any]] | None = None


PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": Problem, "content": {PROBLEM: {}}, "description": description}
    for status, description in [
        (400, "Malformed request"),
        (401, "Missing or invalid API key"),
        (404, "Not found in the caller's workspace"),
        (409, "Conflicts with the current state"),
        (413, "Body too large"),
        (422, "Invalid input"),
        (503, "A service did not answer in time"),
    ]
}


class ApiError(Exception):
    def __init__(self, code: ErrorCode, detail: str, *, status: int | None = None, errors: list[Any] | None = None):
        super().__init__(detail)
        self.code = code
        self.detail = detail
        self.status = status or STATUS_OF.get(code, 400)
        self.errors = errors


def problem(status: int, code: ErrorCode, detail: str, errors: list[Any] | None = None) -> JSONResponse:
    body: dict[str, Any] = {
        "type": f"/problems/{code.value}",
        "title": code.value.replace("_", " "),
        "status": status,
        "code": code.value,
        "detail": detail,
    }
    if errors:
        body["errors"] = errors
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(body, status_code=status, media_type=PROBLEM, headers=headers)


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


def install_error_handlers(app: FastAPI) -> None:
    async def on_api_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ApiError)
        return problem(exc.status, exc.code, exc.detail, exc.errors)

    async def on_validation(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return _validation_problem(exc)

    async def on_http(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        known = {
            400: ErrorCode.MALFORMED_JSON,  # FastAPI's "There was an error parsing the body"
            401: ErrorCode.UNAUTHORIZED,
            404: ErrorCode.NOT_FOUND,
            405: ErrorCode.METHOD_NOT_ALLOWED,
        }
        fallback = ErrorCode.BAD_REQUEST if exc.status_code < 500 else ErrorCode.INTERNAL_ERROR
        return problem(exc.status_code, known.get(exc.status_code, fallback), str(exc.detail))

    async def on_unavailable(_: Request, exc: Exception) -> JSONResponse:
        log.warning("dependency unavailable: %r", exc)
        return problem(503, ErrorCode.SERVICE_UNAVAILABLE, "A dependency is unavailable; retry shortly.")

    async def on_unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error", exc_info=exc)
        return problem(500, ErrorCode.INTERNAL_ERROR, "Unexpected error; it has been logged.")

    app.add_exception_handler(ApiError, on_api_error)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(PyMongoError, on_unavailable)
    app.add_exception_handler(NatsError, on_unavailable)
    app.add_exception_handler(Exception, on_unexpected)


class BodyLimitMiddleware:
    """Refuses bodies over ``limit`` bytes with 413, whether announced by Content-Length or streamed."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and not declared.isdigit():
            await problem(400, ErrorCode.BAD_REQUEST, "Content-Length is not a number.")(scope, receive, send)
            return
        if declared is not None and int(declared) > self.limit:
            await self._refuse(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                await self._refuse(scope, receive, send)
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

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = problem(413, ErrorCode.BODY_TOO_LARGE, f"The request body exceeds {self.limit} bytes.")
        await response(scope, receive, send)
