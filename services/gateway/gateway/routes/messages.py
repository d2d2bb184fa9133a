"""Messages between agents, teams and people, in threads: post, list, read a thread."""

from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field, model_validator

from contracts.mail import Addressee, Body, GetThread, ListMessages, MessageView, PostMessage, Subject, ThreadView
from contracts.messages import Id
from gateway.body import JsonBodyRoute
from gateway.deps import CurrentPrincipal, Queries
from gateway.routes.common import PENDING, CommandResponse, DateTime, ResourceId, Send

router = APIRouter(tags=["messages"], route_class=JsonBodyRoute)


class Reply(BaseModel):
    """A message into an existing thread; ``to`` defaults to the thread's other participants."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    body: Body
    to: Addressee | None = None
    from_agent_id: Id | None = Field(
        default=None, description="The workspace's agent that sends it; without it, the caller (a person) does."
    )


class MessageCreate(Reply):
    """A message: into a thread (``thread_id``), or starting one (``to`` an agent or a team, and a subject)."""

    thread_id: Id | None = Field(default=None, description="The thread to post into; without it, a new thread.")
    subject: Subject = ""

    @model_validator(mode="after")
    def _addressed(self) -> "MessageCreate":
        if self.thread_id is None and self.to is None:
            raise ValueError("a new thread needs `to`: an agent or a team (or give `thread_id`)")
        return self


class MessageList(BaseModel):
    items: list[MessageView]


def _ids(send: Send) -> tuple[str, str]:
    return f"th_{send.command_id[:24]}", f"msg_{send.command_id[:24]}"


@router.post(
    "/messages",
    response_model=CommandResponse,
    status_code=201,
    summary="Send a message to an agent or a team, in a new thread or an existing one (delivered live to each "
    "recipient's inbox subject)",
    responses=PENDING,
)
async def post_message(body: MessageCreate, send: Send) -> CommandResponse:
    new_thread, message_id = _ids(send)
    thread_id = body.thread_id or new_thread
    command = PostMessage(
        thread_id=thread_id,
        message_id=message_id,
        new_thread=body.thread_id is None,
        to=body.to,
        subject=body.subject,
        body=body.body,
        from_agent_id=body.from_agent_id,
    )
    return await send(command, created=f"/api/v1/threads/{thread_id}")


@router.post(
    "/threads/{thread_id}/messages",
    response_model=CommandResponse,
    status_code=201,
    summary="Post into a thread (a person joining an agents' conversation, say)",
    responses=PENDING,
)
async def reply(thread_id: ResourceId, body: Reply, send: Send) -> CommandResponse:
    _, message_id = _ids(send)
    command = PostMessage(
        thread_id=thread_id, message_id=message_id, to=body.to, body=body.body, from_agent_id=body.from_agent_id
    )
    return await send(command, created=f"/api/v1/threads/{thread_id}")


@router.get(
    "/messages",
    response_model=MessageList,
    summary="The workspace's messages, oldest first (the latest `limit`, or the first after `since`), narrowed by "
    "thread, by the agent they were delivered to and by the team they were addressed to",
)
async def list_messages(
    principal: CurrentPrincipal,
    queries: Queries,
    thread_id: Annotated[Id | None, Query()] = None,
    agent_id: Annotated[Id | None, Query()] = None,
    team_id: Annotated[Id | None, Query()] = None,
    since: DateTime | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> MessageList:
    query = ListMessages(thread_id=thread_id, agent_id=agent_id, team_id=team_id, since=since, limit=limit)
    return MessageList.model_validate({"items": await queries.ask(principal, query)})


@router.get("/threads/{thread_id}", response_model=ThreadView, summary="A thread: who takes part, its messages")
async def get_thread(thread_id: ResourceId, principal: CurrentPrincipal, queries: Queries) -> Any:
    return await queries.ask(principal, GetThread(thread_id=thread_id))
