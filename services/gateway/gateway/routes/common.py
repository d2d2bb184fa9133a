"""What every command endpoint shares: the response model and the submit-and-answer flow."""

import re
import uuid
from collections.abc import Iterable
from datetime import datetime
from typing import Annotated, Any

from fastapi import Depends, Path, Request, Response
from pydantic import BaseModel, BeforeValidator, Field
from starlette.convertors import Convertor, register_url_convertor

from contracts import Command, ErrorCode, OutcomeStatus
from gateway.commands import CommandStatus, fingerprint
from gateway.deps import Commands, CurrentPrincipal, IdempotencyKey
from gateway.errors import STATUS_OF, ApiError

FOLLOW_UP_NAMESPACE = uuid.UUID("1b0f7a0e-8f43-4c0e-9a43-5d7a8b2f6c11")
ResourceId = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]


def _date_time(value: object) -> object:
    """A query's date-time is RFC 3339 text: a time of day with it, never a bare number (which pydantic would take
    for a Unix time)."""
    if isinstance(value, str) and not re.search(r"\d[T ]\d", value):
        raise ValueError("give a date-time, e.g. 2026-12-01T00:00:00Z")
    return value


DateTime = Annotated[datetime, BeforeValidator(_date_time)]


class _Segment(Convertor[str]):
    regex = "[^/]+"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


def segment(name: str, *, one_of: Iterable[str] = (), not_one_of: Iterable[str] = ()) -> str:
    """``{name:name}``: a path parameter that matches only ``one_of`` the given values, or anything but
    ``not_one_of`` them, so that a route does not take a request meant for a sibling path (``DELETE
    /short-term/{entry_id}/promote`` is 405, not a clear of scope kind "{entry_id}"). Its value is validated as
    usual after that."""
    if one_of:
        regex = "|".join(re.escape(value) for value in one_of)
    else:
        regex = "".join(f"(?!{re.escape(value)}(?![^/]))" for value in not_one_of) + "[^/]+"
    register_url_convertor(name, type(f"{name}_segment", (_Segment,), {"regex": regex})())
    return f"{{{name}:{name}}}"


class CommandResponse(BaseModel):
    """Where a command stands: ``accepted`` (with the ids it touched), ``rejected``, or ``pending``."""

    command_id: str
    type: str
    status: str
    submitted_at: datetime
    resource_ids: dict[str, str] = Field(default_factory=dict)
    error_code: ErrorCode | None = None
    error_message: str | None = None
    links: dict[str, str] = Field(default_factory=dict)


PENDING: dict[int | str, dict[str, Any]] = {
    202: {
        "model": CommandResponse,
        "description": "Pending: the outcome did not come within COMMAND_WAIT_S; poll the command's status link "
        "(also in Location).",
    }
}
"""The answer every command endpoint may give besides its own."""


def command_response(status: CommandStatus, links: dict[str, str] | None = None) -> CommandResponse:
    outcome = status.outcome
    return CommandResponse(
        command_id=status.command_id,
        type=status.type,
        status=status.status,
        submitted_at=status.submitted_at,
        resource_ids=outcome.resource_ids if outcome else {},
        error_code=outcome.error_code if outcome else None,
        error_message=outcome.error_message if outcome else None,
        links={"status": f"/api/v1/commands/{status.command_id}", **(links or {})},
    )


async def submit(
    request: Request,
    response: Response,
    commands: Commands,
    principal: CurrentPrincipal,
    command_id: str,
    command: Command,
    *,
    created: str | None = None,
) -> CommandResponse:
    """Send ``command`` and answer: 201 (``created`` given) or 200 with its outcome, 202 while it is pending,
    or the domain error as a problem with its code."""
    body = await request.body()
    status = await commands.submit(
        principal,
        command_id,
        command,
        request_fingerprint=fingerprint(request.method, request.url.path, body),
        idempotent=request.headers.get("Idempotency-Key") is not None,
    )
    links = {"resource": created} if created else {}
    if status.outcome is None:
        response.status_code = 202
        response.headers["Location"] = f"/api/v1/commands/{status.command_id}"
        return command_response(status, links)
    if status.outcome.status is OutcomeStatus.REJECTED:
        code = status.outcome.error_code or ErrorCode.CONFLICT
        raise ApiError(
            code,
            status.outcome.error_message or "The command was rejected.",
            status=STATUS_OF.get(code),
            errors=status.outcome.error_details or None,
            command_id=status.command_id,
        )
    if created:
        response.status_code = 201
        response.headers["Location"] = created
    return command_response(status, links)


class CommandSender:
    """What a command endpoint needs to send its command and answer: the caller, its Idempotency-Key, the
    request (fingerprinted) and the response (status and Location are set on it)."""

    def __init__(
        self, request: Request, response: Response, principal: CurrentPrincipal, commands: Commands, key: str | None
    ) -> None:
        self._request = request
        self._response = response
        self._principal = principal
        self._commands = commands
        self.command_id = commands.command_id(principal, key)

    async def __call__(self, command: Command, *, created: str | None = None) -> CommandResponse:
        return await submit(
            self._request, self._response, self._commands, self._principal, self.command_id, command, created=created
        )

    async def follow_up(self, command: Command, purpose: str) -> CommandStatus:
        """Send a second command that the request implies (staffing a new workflow, say); its id derives from the
        request's, so a retried request sends it once. Its status, after at most the command wait."""
        command_id = uuid.uuid5(FOLLOW_UP_NAMESPACE, f"{self.command_id}:{purpose}").hex
        return await self._commands.submit(
            self._principal, command_id, command, request_fingerprint=f"{self.command_id}:{purpose}", idempotent=True
        )


async def _sender(
    request: Request,
    response: Response,
    principal: CurrentPrincipal,
    commands: Commands,
    idempotency_key: IdempotencyKey = None,
) -> CommandSender:
    return CommandSender(request, response, principal, commands, idempotency_key)


Send = Annotated[CommandSender, Depends(_sender)]
