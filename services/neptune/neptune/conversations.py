"""Neptune's conversations: the command handlers (start one, take a turn), the read model that lists them and the
queries that read them.

A turn (``ChatTurn``) is worked on inside its command's handling: the tool calls go to the gateway with the turn's
credential and an Idempotency-Key per call derived from the turn, so a turn delivered again after a crash gets the
gateway's first outcomes back and does nothing twice; its progress is published on the turn's core NATS subject as
it happens, and the whole turn is recorded as one ``TurnCompleted``. A turn already recorded is streamed again from
its record. The credential is used for the turn's calls and never stored.
"""

from collections.abc import Callable
from datetime import datetime
from typing import Any

import httpx
from openai import AsyncOpenAI
from pymongo import ASCENDING, DESCENDING

from contracts import ErrorCode, EventRecord
from contracts.neptune import (
    ChatTurn,
    CheckConversation,
    ConversationStarted,
    GetConversation,
    ListConversations,
    StartConversation,
    TurnCompleted,
    TurnEvent,
)
from neptune.assistant import offline_turn
from neptune.domain import conversation
from neptune.domain.conversation import Conversation, ConversationNotFound
from neptune.gateway_client import GatewayClient
from neptune.model_turn import model_turn
from neptune.settings import NeptuneSettings
from servicekit.bus import Bus
from servicekit.commands import CommandContext, CommandRouter
from servicekit.eventstore import EventStore, StreamRef, decode, load_state
from servicekit.projections import RowProjection
from servicekit.queries import QueryRouter

Document = dict[str, Any]
Clock = Callable[[], datetime]


def conversation_stream(workspace_id: str, conversation_id: str) -> StreamRef:
    return StreamRef(workspace_id, conversation.AGGREGATE, conversation_id)


def build_router(
    bus: Bus, http: httpx.AsyncClient, clock: Clock, settings: NeptuneSettings, llm: AsyncOpenAI | None
) -> CommandRouter:
    router = CommandRouter()

    @router.register(StartConversation)
    async def start(command: StartConversation, ctx: CommandContext) -> dict[str, str]:
        at = clock().isoformat()
        await ctx.execute(
            conversation_stream(ctx.workspace_id, command.conversation_id),
            Conversation(),
            conversation.evolve,
            lambda s: conversation.decide_start(s, command, ctx.envelope.actor.id, at),
            new_stream=True,
        )
        return {"conversation_id": command.conversation_id}

    @router.register(ChatTurn)
    async def turn(command: ChatTurn, ctx: CommandContext) -> dict[str, str]:
        stream = conversation_stream(ctx.workspace_id, command.conversation_id)
        state = (await load_state(ctx.store, stream, Conversation(), conversation.evolve, ctx.cache)).state
        subject = bus.subjects.neptune_turn(ctx.workspace_id, command.turn_id)

        async def emit(event: TurnEvent) -> None:
            await bus.nc.publish(subject, event.model_dump_json().encode())

        ids = {"conversation_id": command.conversation_id, "turn_id": command.turn_id}
        done = state.turn(command.turn_id)
        if done is not None and done.content != command.content:  # an Idempotency-Key sent again with another text
            # told on the turn's stream: the command's outcome is the first delivery's, which the broker keeps
            detail = f"turn {command.turn_id} was another message; send this one with a new Idempotency-Key"
            await emit(TurnEvent(type="error", data={"code": ErrorCode.IDEMPOTENCY_KEY_REUSED.value, "detail": detail}))
            return ids
        if done is not None:  # recorded already: told again, for a person still listening
            for use in done.tools:
                await emit(TurnEvent(type="tool_call", data={"call_id": use.call_id, "name": use.name}))
                await emit(TurnEvent(type="tool_result", data=use.model_dump(mode="json")))
            await emit(TurnEvent(type="message", data={"content": done.answer}))
            return ids
        conversation.check_turn(state, command.conversation_id)
        earlier = [use for done_turn in state.turns for use in done_turn.tools]
        client = GatewayClient(http, command.credential, f"neptune-{command.turn_id}", earlier)
        if llm is None:
            result = await offline_turn(client, command.content, emit)
        else:
            result = await model_turn(llm, settings, client, state.turns, command.content, emit)
        recorded = TurnCompleted(
            turn_id=command.turn_id,
            content=command.content,
            tools=result.tools,
            answer=result.answer,
            intent=result.intent,
            usage=result.usage,
            at=clock().isoformat(),
        )
        await ctx.execute(stream, Conversation(), conversation.evolve, lambda s: conversation.decide_turn(s, recorded))
        return ids

    return router


class ConversationsProjection(RowProjection):
    """One row per conversation: its title, how many turns, when it last moved."""

    aggregate = conversation.AGGREGATE
    name = "conversations"

    async def ensure_indexes(self) -> None:
        await self.collection.create_index([("workspace_id", ASCENDING), ("updated_at", DESCENDING)])

    async def apply(self, record: EventRecord) -> bool:
        event = decode(record)
        if isinstance(event, ConversationStarted):
            row = {
                "conversation_id": event.conversation_id,
                "title": event.title,
                "turn_count": 0,
                "created_at": event.at,
                "updated_at": event.at,
            }
            return await self.insert_row(record, row)
        if isinstance(event, TurnCompleted):
            result = await self.collection.update_one(
                {"_id": record.stream_id, "version": record.version - 1},
                {"$set": {"updated_at": event.at, "version": record.version}, "$inc": {"turn_count": 1}},
            )
            return result.modified_count == 1
        return await self.update_row(record, {})


def register_queries(router: QueryRouter, store: EventStore, rows: ConversationsProjection) -> None:
    @router.register(GetConversation)
    async def get(query: GetConversation, workspace_id: str) -> Document:
        stream = conversation_stream(workspace_id, query.conversation_id)
        events = await store.load(stream, after_version=0)
        started = next((decode(e) for e in events if e.type == ConversationStarted.type_name), None)
        if not isinstance(started, ConversationStarted):
            raise ConversationNotFound(f"conversation {query.conversation_id} not found")
        turns = [t for t in (decode(e) for e in events) if isinstance(t, TurnCompleted)]
        return {
            "conversation_id": started.conversation_id,
            "title": started.title,
            "started_by": started.started_by,
            "created_at": started.at,
            "updated_at": turns[-1].at if turns else started.at,
            "turns": [t.model_dump(mode="json", exclude={"event_id"}) for t in turns],
        }

    @router.register(CheckConversation)
    async def check(query: CheckConversation, workspace_id: str) -> Document:
        if not await store.exists(conversation_stream(workspace_id, query.conversation_id)):
            raise ConversationNotFound(f"conversation {query.conversation_id} not found")
        return {"conversation_id": query.conversation_id}

    @router.register(ListConversations)
    async def list_all(query: ListConversations, workspace_id: str) -> list[Document]:
        cursor = rows.collection.find(
            {"workspace_id": workspace_id},
            {"_id": 0, "workspace_id": 0, "version": 0},
            sort=[("updated_at", DESCENDING)],
            limit=query.limit,
        )
        return [doc async for doc in cursor]
