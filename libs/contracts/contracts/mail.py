"""Messages between agents, teams and people, in threads (owned by the orchestrator).

A thread is an aggregate of its own: its subject, who takes part, and its messages in order. A message is addressed
to an agent or a team; a team's message is delivered to each of its members as they are when it is posted. Posted
messages are stored (the thread's events, and a read model by thread, agent and team) and delivered live to each
recipient on ``agent.<workspace>.<agent id>.inbox`` (core NATS: who listens gets it now; who does not reads it from
the store). A message an agent receives during a team run or a delegation reaches it in its next task's prompt.
"""

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from contracts.messages import NOT_BLANK, Command, Event, Id, Integer, Query
from contracts.registry import REGISTRY

MAX_THREAD_MESSAGES = 1000
MAX_BODY_CHARS = 8000
Body = Annotated[str, StringConstraints(min_length=1, max_length=MAX_BODY_CHARS, pattern=NOT_BLANK)]
Subject = Annotated[str, StringConstraints(max_length=200)]


class Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Participant(Model):
    """Who sends or is addressed: an agent, a team (its members receive), or a person (by the key that posted)."""

    kind: Literal["agent", "team", "person"]
    id: str


class Addressee(Model):
    """Whom a message is for: exactly one of an agent and a team of the workspace."""

    agent_id: Id | None = None
    team_id: Id | None = None

    @model_validator(mode="after")
    def _one(self) -> "Addressee":
        if (self.agent_id is None) == (self.team_id is None):
            raise ValueError("give exactly one of agent_id and team_id")
        return self

    def participant(self) -> Participant:
        if self.agent_id is not None:
            return Participant(kind="agent", id=self.agent_id)
        assert self.team_id is not None
        return Participant(kind="team", id=self.team_id)


# Commands ---------------------------------------------------------------------------------------------------------


@REGISTRY.register
class PostMessage(Command):
    """Post a message: into a new thread (``new_thread``, with ``to``), or into an existing one (``to`` defaults to
    the thread's other participants). ``from_agent_id`` names the agent that sends it; without it, the caller (a
    person, by their key) does."""

    service = "orchestrator"
    thread_id: Id
    message_id: Id
    new_thread: bool = False
    to: Addressee | None = None
    subject: Subject = ""
    body: Body
    from_agent_id: Id | None = None
    run_id: Id | None = Field(default=None, description="The team run or delegation the message was sent from.")

    @model_validator(mode="after")
    def _addressed(self) -> "PostMessage":
        if self.new_thread and self.to is None:
            raise ValueError("a new thread needs `to`: an agent or a team")
        return self


# Events -----------------------------------------------------------------------------------------------------------


@REGISTRY.register
class ThreadStarted(Event):
    aggregate = "thread"
    thread_id: str
    subject: str
    started_by: Participant


@REGISTRY.register
class MessagePosted(Event):
    aggregate = "thread"
    thread_id: str
    message_id: str
    sender: Participant
    to: list[Participant] = Field(description="Whom it is addressed to: agents and teams.")
    recipients: list[str] = Field(description="The agents it is delivered to (a team's members when it was posted).")
    body: str
    run_id: str | None = None
    at: str


# Queries ----------------------------------------------------------------------------------------------------------


@REGISTRY.register
class ListMessages(Query):
    """The workspace's messages, oldest first, narrowed by thread, recipient agent and addressed team (together)."""

    service = "orchestrator"
    thread_id: Id | None = None
    agent_id: Id | None = Field(default=None, description="Delivered to this agent (directly or through a team).")
    team_id: Id | None = Field(default=None, description="Addressed to this team.")
    since: datetime | None = Field(default=None, description="Only messages posted at or after this instant.")
    limit: Integer = Field(default=100, ge=1, le=500)


@REGISTRY.register
class GetThread(Query):
    service = "orchestrator"
    thread_id: Id


# Views ------------------------------------------------------------------------------------------------------------


class MessageView(Model):
    message_id: str
    thread_id: str
    sender: Participant
    to: list[Participant]
    recipients: list[str]
    body: str
    run_id: str | None = None
    posted_at: str


class ThreadView(Model):
    thread_id: str
    subject: str
    started_by: Participant
    participants: list[Participant]
    message_count: int
    created_at: str
    updated_at: str
    messages: list[MessageView] = Field(default_factory=list, description="The thread's latest messages, in order.")


class InboxMessage(Model):
    """What an agent's inbox subject carries: one message, as posted."""

    workspace_id: str
    agent_id: str
    message: MessageView
