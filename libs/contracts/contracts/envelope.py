"""The envelope carried by every command on the bus, and the stored form of every event."""

from datetime import datetime
from typing import Any, Literal
from uuid import uuid4

from pydantic import BaseModel, ConfigDict, Field

from contracts.messages import Id


def new_id() -> str:
    return uuid4().hex


class Actor(BaseModel):
    """Who caused a message: a workspace API key, a service, or an agent."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["api_key", "service", "agent", "system"]
    id: str


class Envelope(BaseModel):
    """A command in transit: metadata plus the command's payload as JSON data."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    message_id: str = Field(description="Command id; also the Nats-Msg-Id, so the broker de-duplicates resubmits.")
    type: str
    schema_version: int = 1
    workspace_id: Id
    correlation_id: str
    causation_id: str | None = None
    actor: Actor
    occurred_at: datetime
    payload: dict[str, Any]


class EventRecord(BaseModel):
    """An event as stored in a commit and published on the EVENTS stream."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    event_id: str
    type: str
    schema_version: int
    data: dict[str, Any]
    occurred_at: datetime
    correlation_id: str
    causation_id: str | None = None
    actor: Actor
    stream_id: str
    aggregate: str
    aggregate_id: str
    workspace_id: str
    version: int = Field(description="Position of the event in its stream, starting at 1.")
