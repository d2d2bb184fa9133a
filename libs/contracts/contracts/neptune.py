"""Neptune's conversations (owned by the neptune service).

A conversation is an aggregate of its own: who started it, then its turns. A turn is a person's message, the tool
calls Neptune made for it (each a request to the gateway's REST API with a short-lived credential the gateway
minted for the caller's workspace) and Neptune's answer. The turn's progress is streamed live on a core NATS
subject the gateway relays as Server-Sent Events; the conversation's events are the record.
"""

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from contracts.messages import NOT_BLANK, Command, Event, Id, Integer, Query
from contracts.registry import REGISTRY

MAX_MESSAGE_CHARS = 4000
MAX_TURNS = 500
Content = Annotated[str, StringConstraints(min_length=1, max_length=MAX_MESSAGE_CHARS, pattern=NOT_BLANK)]
Title = Annotated[str, StringConstraints(max_length=200)]


class Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


# Commands ---------------------------------------------------------------------------------------------------------


@REGISTRY.register
class StartConversation(Command):
    service = "neptune"
    conversation_id: Id
    title: Title = ""


@REGISTRY.register
class ChatTurn(Command):
    """A person's message to Neptune. ``credential`` is the gateway's short-lived token for the caller's workspace,
    with which Neptune makes the turn's tool calls; it is never stored."""

    service = "neptune"
    conversation_id: Id
    turn_id: Id
    content: Content
    credential: str = Field(max_length=2000, repr=False)


# Events -----------------------------------------------------------------------------------------------------------


@REGISTRY.register
class ConversationStarted(Event):
    aggregate = "conversation"
    conversation_id: str
    title: str
    started_by: str = Field(description="The API key that started it.")
    at: str


class ToolUse(Model):
    """One tool call of a turn and what it returned."""

    call_id: str
    name: str
    arguments: dict[str, Any]
    ok: bool
    result: dict[str, Any] = Field(description="What the tool answered (ids, links, a short summary), or its error.")


@REGISTRY.register
class TurnCompleted(Event):
    """A turn as it went: the message, the tool calls in order, the answer."""

    aggregate = "conversation"
    turn_id: str
    content: str
    tools: list[ToolUse]
    answer: str
    intent: str = Field(description="What Neptune took the message for (the offline parser's intent, or `model`).")
    usage: dict[str, Any] = Field(default_factory=dict, description="The model's usage in the turn, if a model ran.")
    at: str


# Queries ----------------------------------------------------------------------------------------------------------


@REGISTRY.register
class GetConversation(Query):
    service = "neptune"
    conversation_id: Id


@REGISTRY.register
class CheckConversation(Query):
    """Whether the conversation is the caller's (404 if not): what the gateway asks before it sends a turn."""

    service = "neptune"
    conversation_id: Id


@REGISTRY.register
class ListConversations(Query):
    service = "neptune"
    limit: Integer = Field(default=50, ge=1, le=500)


# Views and the live stream ----------------------------------------------------------------------------------------


class TurnView(Model):
    turn_id: str
    content: str
    tools: list[ToolUse]
    answer: str
    intent: str
    usage: dict[str, Any] = Field(default_factory=dict)
    at: str


class ConversationView(Model):
    conversation_id: str
    title: str
    started_by: str
    created_at: str
    updated_at: str
    turns: list[TurnView] = Field(default_factory=list)


class ConversationLine(Model):
    conversation_id: str
    title: str
    turn_count: int
    created_at: str
    updated_at: str


class TurnEvent(Model):
    """One event of a turn's live stream: ``tool_call`` (name, arguments), ``tool_result`` (name, ok, result),
    ``delta`` (a piece of the answer's text), ``message`` (the whole answer: the turn's end) or ``error``."""

    type: Literal["tool_call", "tool_result", "delta", "message", "error"]
    data: dict[str, Any]
