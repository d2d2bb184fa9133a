"""Neptune, the assistant: conversations and their turns, each turn's answer streamed as Server-Sent Events.

For a turn the gateway mints a short-lived credential for the caller's workspace (``gateway.credentials``) and sends
it with the message to Neptune; Neptune makes the turn's tool calls with it through this API, so it can do no more
than the caller could, and never sees the caller's key. A request made with such a credential cannot start
conversations or turns.
"""

import asyncio
import json
from collections import OrderedDict
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse
from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from pydantic import BaseModel, ConfigDict

from contracts import Actor, CommandOutcome, ErrorCode, OutcomeStatus, new_id
from contracts.neptune import (
    ChatTurn,
    CheckConversation,
    Content,
    ConversationLine,
    ConversationView,
    GetConversation,
    ListConversations,
    StartConversation,
    Title,
    TurnEvent,
)
from gateway.body import JsonBodyRoute
from gateway.credentials import VIA_NEPTUNE, mint
from gateway.deps import BusDep, CurrentPrincipal, Queries, Settings, neptune_secret
from gateway.errors import ApiError
from gateway.routes.common import PENDING, CommandResponse, ResourceId, Send
from gateway.workspaces import Principal
from servicekit.commands import envelope_for, publish_command

KEEPALIVE_S = 15.0
SEEN_CONVERSATIONS = 50_000
router = APIRouter(prefix="/neptune", tags=["neptune"], route_class=JsonBodyRoute)


class ConversationCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    title: Title = ""


class MessageCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    content: Content


class ConversationList(BaseModel):
    items: list[ConversationLine]


class SeenConversations:
    """The conversations this gateway has found to be their workspace's. A conversation is never deleted, so one
    that was the caller's still is: a later turn on it need not ask Neptune again (a round trip over NATS and a
    read of its event log), which is most of what a chat turn costs beyond its own work. Bounded, oldest dropped."""

    def __init__(self, size: int = SEEN_CONVERSATIONS) -> None:
        self._size = size
        self._seen: OrderedDict[tuple[str, str], None] = OrderedDict()

    def __contains__(self, key: tuple[str, str]) -> bool:
        if key in self._seen:
            self._seen.move_to_end(key)
            return True
        return False

    def add(self, key: tuple[str, str]) -> None:
        self._seen[key] = None
        while len(self._seen) > self._size:
            self._seen.popitem(last=False)


def _seen(request: Request) -> SeenConversations:
    seen: SeenConversations | None = getattr(request.app.state, "seen_conversations", None)
    if seen is None:
        seen = request.app.state.seen_conversations = SeenConversations()
    return seen


def _not_via_neptune(principal: Principal) -> None:
    if principal.via == VIA_NEPTUNE:
        raise ApiError(ErrorCode.FORBIDDEN, "A credential minted for Neptune cannot talk to Neptune.", status=403)


@router.post(
    "/conversations",
    response_model=CommandResponse,
    status_code=201,
    summary="Start a conversation with Neptune",
    responses=PENDING,
)
async def start_conversation(body: ConversationCreate, principal: CurrentPrincipal, send: Send) -> CommandResponse:
    _not_via_neptune(principal)
    conversation_id = f"cv_{send.command_id[:24]}"
    command = StartConversation(conversation_id=conversation_id, title=body.title)
    return await send(command, created=f"/api/v1/neptune/conversations/{conversation_id}")


@router.get("/conversations", response_model=ConversationList, summary="The conversations, latest first")
async def list_conversations(
    principal: CurrentPrincipal, queries: Queries, limit: Annotated[int, Query(ge=1, le=500)] = 50
) -> ConversationList:
    return ConversationList.model_validate({"items": await queries.ask(principal, ListConversations(limit=limit))})


@router.get(
    "/conversations/{conversation_id}",
    response_model=ConversationView,
    summary="A conversation in full: each turn's message, tool calls with their results, and answer",
)
async def get_conversation(conversation_id: ResourceId, principal: CurrentPrincipal, queries: Queries) -> Any:
    return await queries.ask(principal, GetConversation(conversation_id=conversation_id))


@router.post(
    "/conversations/{conversation_id}/messages",
    summary="Say something to Neptune; its answer streams back (Server-Sent Events)",
    description="Each SSE has a type as `event` (`tool_call`, `tool_result`, `delta`, `message`, `error`) and a "
    "JSON object as `data`; `delta` is a piece of the answer's text as the model writes it (the deltas after the "
    "last tool event add up to the answer; a model that stops mid-answer has its text closed with `…` and a line "
    "break, and the answer that replaces it follows); `message` carries the whole answer and ends the stream, "
    "`error` ends it too (e.g. "
    "`service_unavailable` when Neptune does not answer within NEPTUNE_TURN_TIMEOUT_S: the turn is still taken and "
    "recorded when it does). An Idempotency-Key makes a retried message the same turn.",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def post_message(
    conversation_id: ResourceId,
    body: MessageCreate,
    request: Request,
    principal: CurrentPrincipal,
    queries: Queries,
    bus: BusDep,
    settings: Settings,
    send: Send,
) -> StreamingResponse:
    _not_via_neptune(principal)
    seen, key = _seen(request), (principal.workspace_id, conversation_id)
    if key not in seen:
        await queries.ask(principal, CheckConversation(conversation_id=conversation_id))  # 404 unless the caller's
        seen.add(key)
    turn_id = f"turn_{send.command_id[:24]}"  # an Idempotency-Key sent again names the same turn
    delivery = new_id()  # but each request is a command of its own, which the broker does not drop as a repeat
    credential = mint(neptune_secret(request), principal, settings.neptune_token_ttl_s)
    command = ChatTurn(conversation_id=conversation_id, turn_id=turn_id, content=body.content, credential=credential)
    subjects = bus.subjects
    events: asyncio.Queue[TurnEvent] = asyncio.Queue()

    async def on_live(msg: Msg) -> None:
        events.put_nowait(TurnEvent.model_validate_json(msg.data))

    async def on_outcome(msg: Msg) -> None:
        answer = CommandOutcome.model_validate_json(msg.data)
        if answer.status is OutcomeStatus.REJECTED:  # Neptune refused the turn (e.g. the conversation is full)
            events.put_nowait(TurnEvent(type="error", data={"code": answer.error_code, "detail": answer.error_message}))

    live = await bus.nc.subscribe(subjects.neptune_turn(principal.workspace_id, turn_id), cb=on_live)
    outcome = await bus.nc.subscribe(subjects.outcome(principal.workspace_id, delivery), cb=on_outcome, max_msgs=1)
    actor = Actor(kind="api_key", id=principal.key_id)
    sent = False
    try:
        envelope = envelope_for(command, workspace_id=principal.workspace_id, command_id=delivery, actor=actor)
        await publish_command(bus, "neptune", envelope)
        sent = True
    except NatsError as exc:  # the broker is away: nothing was sent, the message can be sent again
        raise ApiError(
            ErrorCode.SERVICE_UNAVAILABLE, "The message could not be sent to Neptune; send it again."
        ) from exc
    finally:
        if not sent:
            await live.unsubscribe()
            await outcome.unsubscribe()

    async def stream() -> AsyncIterator[str]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + settings.neptune_turn_timeout_s
        number = 0
        try:
            while not await request.is_disconnected():
                left = deadline - loop.time()
                if left <= 0:
                    detail = "Neptune did not answer in time; the conversation shows the turn once it does."
                    event = TurnEvent(type="error", data={"code": "service_unavailable", "detail": detail})
                else:
                    try:
                        event = await asyncio.wait_for(events.get(), timeout=min(left, KEEPALIVE_S))
                    except TimeoutError:
                        yield ": keep-alive\n\n"
                        continue
                number += 1
                yield f"id: {number}\nevent: {event.type}\ndata: {json.dumps(event.data, ensure_ascii=False)}\n\n"
                if event.type in {"message", "error"}:
                    return
        finally:
            await live.unsubscribe()
            await outcome.unsubscribe()

    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no", "X-Turn-Id": turn_id}
    return StreamingResponse(stream(), media_type="text/event-stream", headers=headers)
