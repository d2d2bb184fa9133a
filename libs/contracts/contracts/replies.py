"""Replies that travel back to a submitter: command outcomes and query answers."""

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from contracts.errors import ErrorCode


class OutcomeStatus(StrEnum):
    ACCEPTED = "accepted"
    REJECTED = "rejected"


class CommandOutcome(BaseModel):
    """What became of a command: accepted with the ids it touched, or rejected with a domain error."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    command_id: str
    workspace_id: str
    command_type: str
    submitted_at: datetime
    status: OutcomeStatus
    resource_ids: dict[str, str] = Field(default_factory=dict)
    error_code: ErrorCode | None = None
    error_message: str | None = None
    error_details: list[dict[str, Any]] = Field(default_factory=list)


class QueryReply(BaseModel):
    """Answer to a query: the result, or an error code when it could not be answered."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    ok: bool
    result: Any = None
    error_code: ErrorCode | None = None
    error_message: str | None = None
