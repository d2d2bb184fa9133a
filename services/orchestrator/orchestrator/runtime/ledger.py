"""What the runtime records of its work: one record per task attempt, and one usage row per model call.

The attempt record is what makes a task idempotent: it is written before the model is called (its call count) and
again, with the result, before the result is sent; a delivery that finds the result answers from it, without a
model call. A worker that died mid-call (before the result and the usage of its answer were written, in one write)
leaves the count behind, so the redelivery calls again: a model is called at most once per attempt except after a
crash in the middle of a call. Usage rows are keyed by the call, so a
call's usage is counted once whatever is retried.
"""

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pymongo import ASCENDING, ReturnDocument
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError

from contracts.budgets import MICROS_PER_USD, UsageTotals
from servicekit.batching import InsertBatcher, UpdateBatcher, UpsertBatcher

Document = dict[str, Any]


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    key: str
    first_seen_at: datetime
    calls: int
    agent_id: str | None
    agent_spec: Document | None
    """The agent's spec as the attempt's first call used it: a redelivery keeps it, whatever was updated since."""
    answer: Document | None
    """The model's answer to the last call, kept as soon as it came: a redelivery concludes from it, no new call."""
    result: Document | None


def _record(doc: Document) -> AttemptRecord:
    return AttemptRecord(
        key=doc["key"],
        first_seen_at=doc["first_seen_at"],
        calls=int(doc["calls"]),
        agent_id=doc.get("agent_id"),
        agent_spec=doc.get("agent_spec"),
        answer=doc.get("answer"),
        result=doc.get("result"),
    )


class Attempts:
    def __init__(self, collection: AsyncCollection[Document]) -> None:
        self.collection = collection
        self._begins = UpsertBatcher(collection)  # the tasks begun or finished at once share a round trip
        self._finishes = UpdateBatcher(collection)

    @staticmethod
    def _id(ws: str, key: str) -> str:
        return f"{ws}:{key}"

    async def open(self, ws: str, key: str, now: datetime) -> AttemptRecord:
        doc = await self.collection.find_one_and_update(
            {"_id": self._id(ws, key)},
            {"$setOnInsert": {"workspace_id": ws, "key": key, "first_seen_at": now, "calls": 0}},
            upsert=True,
            return_document=ReturnDocument.AFTER,
        )
        assert doc is not None
        return _record(doc)

    async def begin(
        self, ws: str, key: str, agent_id: str, agent_spec: Document, holder: str, now: datetime, lease: timedelta
    ) -> int | None:
        """A first delivery's open and first call in one write (shared with the other tasks begun at once): create
        the record, or take one that no call was counted on yet, with its first call counted and its call lease for
        ``holder``; 1, or None when the attempt was seen before and called (the full path then reads its record)."""
        try:
            await self._begins.upsert(
                {"_id": self._id(ws, key), "calls": 0, "result": None, "answer": None},
                {
                    "$setOnInsert": {"workspace_id": ws, "key": key, "first_seen_at": now},
                    "$inc": {"calls": 1},
                    "$set": _call_taken(agent_id, agent_spec, holder, now, lease),
                },
            )
        except DuplicateKeyError:
            return None
        return 1

    async def drop_lease(self, ws: str, key: str, holder: str) -> None:
        """Give up the call lease ``holder`` took without making the call (what it needed first failed)."""
        await self.collection.update_one(
            {"_id": self._id(ws, key), "calling_by": holder}, {"$set": {"calling_until": None}}
        )

    async def calling(
        self, ws: str, key: str, agent_id: str, agent_spec: Document, holder: str, now: datetime, lease: timedelta
    ) -> int | None:
        """Count a model call about to be made and take the attempt's call lease for ``holder`` (one handling of
        one delivery); the call's number (1 for the first), or None while another handling holds a live lease (a
        delivery repeated while the first is still at work: it must not call too) or the attempt has an answer."""
        free: Document = {"$or": [{"calling_until": None}, {"calling_until": {"$lt": now}}]}
        doc = await self.collection.find_one_and_update(
            {"_id": self._id(ws, key), "result": None, "answer": None, **free},
            {"$inc": {"calls": 1}, "$set": _call_taken(agent_id, agent_spec, holder, now, lease)},
            return_document=ReturnDocument.AFTER,
        )
        return None if doc is None else int(doc["calls"])

    async def next_call(self, ws: str, key: str, holder: str, now: datetime, lease: timedelta) -> int | None:
        """Count the next model call of a conversation with tools, for the holder of the call lease; its number, or
        None when the lease was lost (another handling of the attempt took over)."""
        doc = await self.collection.find_one_and_update(
            {"_id": self._id(ws, key), "result": None, "answer": None, "calling_by": holder},
            {"$inc": {"calls": 1}, "$set": {"called_at": now, "calling_until": now + lease}},
            return_document=ReturnDocument.AFTER,
        )
        return None if doc is None else int(doc["calls"])

    async def renew(self, ws: str, key: str, holder: str, now: datetime, lease: timedelta) -> None:
        await self.collection.update_one(
            {"_id": self._id(ws, key), "calling_by": holder}, {"$set": {"calling_until": now + lease}}
        )

    async def finish(
        self, ws: str, key: str, result: Document, now: datetime, answer: Document | None = None
    ) -> Document:
        """Record the attempt's result (the first one recorded stays), with the model's ``answer`` it came from
        (its usage, so a redelivery counts it if the worker died before it did); the result recorded."""
        changes: Document = {"result": result, "finished_at": now, "calling_until": None}
        if answer is not None:
            changes["answer"] = answer
        if await self._finishes.update({"_id": self._id(ws, key), "result": None}, {"$set": changes}):
            return result
        doc = await self.collection.find_one({"_id": self._id(ws, key)}, {"result": 1})
        stored: Document = (doc or {}).get("result") or result
        return stored


def _call_taken(agent_id: str, agent_spec: Document, holder: str, now: datetime, lease: timedelta) -> Document:
    """What a call about to be made sets on its attempt: the agent and spec it runs on, and the call lease."""
    return {
        "agent_id": agent_id,
        "agent_spec": agent_spec,
        "called_at": now,
        "calling_by": holder,
        "calling_until": now + lease,
    }


class UsageLedger:
    def __init__(self, collection: AsyncCollection[Document]) -> None:
        self.collection = collection
        self._inserts = InsertBatcher(collection)  # the calls answered at once share a round trip

    async def ensure_indexes(self) -> None:
        await self.collection.create_index([("workspace_id", ASCENDING), ("at", ASCENDING)])
        await self.collection.create_index([("workspace_id", ASCENDING), ("execution_id", ASCENDING)])
        await self.collection.create_index([("workspace_id", ASCENDING), ("agent_id", ASCENDING), ("at", ASCENDING)])

    async def record(self, row: Document) -> bool:
        """Record one call's usage (``_id`` = the call); False when it was recorded already."""
        try:
            await self._inserts.insert(row)
        except DuplicateKeyError:
            return False
        return True

    async def recorded(self, call_id: str) -> Document | None:
        return await self.collection.find_one({"_id": call_id})

    async def totals(
        self,
        ws: str,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        agent_id: str | None = None,
        agent_ids: list[str] | None = None,
        execution_id: str | None = None,
        execution_ids: list[str] | None = None,
        group_by: str | None = None,
    ) -> tuple[UsageTotals, dict[str, UsageTotals]]:
        match: Document = {"workspace_id": ws}
        period: Document = {}
        if since is not None:
            period["$gte"] = since
        if until is not None:
            period["$lt"] = until
        if period:
            match["at"] = period
        if agent_id is not None:
            match["agent_id"] = agent_id
        elif agent_ids is not None:
            match["agent_id"] = {"$in": agent_ids}
        if execution_id is not None:
            match["execution_id"] = execution_id
        elif execution_ids is not None:
            match["execution_id"] = {"$in": execution_ids}
        key: Any = None
        if group_by == "day":
            key = {"$dateToString": {"format": "%Y-%m-%d", "date": "$at"}}
        elif group_by is not None:
            key = f"${group_by}_id" if group_by in {"agent", "execution"} else f"${group_by}"  # task: the attempt key
        pipeline: list[Document] = [
            {"$match": match},
            {
                "$group": {
                    "_id": key,
                    "calls": {"$sum": 1},
                    "prompt_tokens": {"$sum": "$prompt_tokens"},
                    "completion_tokens": {"$sum": "$completion_tokens"},
                    "cost_micros": {"$sum": "$cost_micros"},
                    "estimated_calls": {"$sum": {"$cond": ["$estimated", 1, 0]}},
                }
            },
        ]
        groups = {str(d["_id"]): _totals(d) async for d in await self.collection.aggregate(pipeline)}
        total = UsageTotals(
            calls=sum(g.calls for g in groups.values()),
            prompt_tokens=sum(g.prompt_tokens for g in groups.values()),
            completion_tokens=sum(g.completion_tokens for g in groups.values()),
            total_tokens=sum(g.total_tokens for g in groups.values()),
            cost_usd=round(sum(g.cost_usd for g in groups.values()), 6),
            estimated_calls=sum(g.estimated_calls for g in groups.values()),
        )
        return total, (groups if group_by is not None else {})


def _totals(doc: Document) -> UsageTotals:
    prompt, completion = int(doc["prompt_tokens"]), int(doc["completion_tokens"])
    return UsageTotals(
        calls=int(doc["calls"]),
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=prompt + completion,
        cost_usd=round(int(doc["cost_micros"]) / MICROS_PER_USD, 6),
        estimated_calls=int(doc["estimated_calls"]),
    )
