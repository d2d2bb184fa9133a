"""Hard budgets by reservation.

Each budget that applies to a model call (the task's, from its agent; the execution's; the workspace's month) is a
document with what was used and what is held. Before a call, the runtime reserves the call's worst case (its prompt
plus its max output tokens, at the model's price) against every one of them, each by a single conditional update
that takes the hold only if ``used + held + hold <= limit``; so concurrent tasks cannot together overshoot. A call
that does not fit anywhere is not made. After the call, the hold is settled to the real usage. A hold is keyed by
the call (``<attempt key>/<call number>``) and carries an expiry (the task's deadline and a margin), so a crashed
worker's hold is settled or released when its task is redelivered, and swept once it has expired.
"""

import contextlib
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pymongo import ASCENDING
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError

Document = dict[str, Any]
log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Scope:
    """One budget: its document id and its limits (None: no limit on that measure)."""

    budget_id: str
    workspace_id: str
    tokens: int | None
    micros: int | None


@dataclass(frozen=True, slots=True)
class Hold:
    tokens: int
    micros: int


def _fits(field: str, limit: int | None, amount: int) -> Document:
    if limit is None:
        return {"$literal": True}
    used = {"$add": [{"$ifNull": [f"$used_{field}", 0]}, {"$ifNull": [f"$held_{field}", 0]}, amount]}
    return {"$lte": [used, limit]}


class Budgets:
    def __init__(self, collection: AsyncCollection[Document]) -> None:
        self.collection = collection

    async def ensure_indexes(self) -> None:
        await self.collection.create_index([("held_count", ASCENDING)])

    async def reserve(self, scopes: list[Scope], hold_key: str, hold: Hold, until: datetime) -> Scope | None:
        """Hold ``hold`` against every scope, all or none; the scope that did not fit, or None when all did."""
        taken: list[Scope] = []
        for scope in scopes:
            if not await self._reserve(scope, hold_key, hold, until):
                for done in taken:
                    await self.release(done.budget_id, hold_key)
                return scope
            taken.append(scope)
        return None

    async def _reserve(self, scope: Scope, hold_key: str, hold: Hold, until: datetime) -> bool:
        path = f"holds.{hold_key}"
        fits = {"$and": [_fits("tokens", scope.tokens, hold.tokens), _fits("micros", scope.micros, hold.micros)]}
        update = {
            "$inc": {"held_tokens": hold.tokens, "held_micros": hold.micros, "held_count": 1},
            "$set": {path: {"tokens": hold.tokens, "micros": hold.micros, "until": until}},
        }
        for _ in range(2):
            result = await self.collection.update_one(
                {"_id": scope.budget_id, path: {"$exists": False}, "$expr": fits}, update
            )
            if result.modified_count:
                return True
            doc = await self.collection.find_one({"_id": scope.budget_id}, {path: 1})
            if doc is not None:
                return hold_key in doc.get("holds", {})  # held already (a redelivery), or it does not fit
            with contextlib.suppress(DuplicateKeyError):
                await self.collection.insert_one(
                    {
                        "_id": scope.budget_id,
                        "workspace_id": scope.workspace_id,
                        "used_tokens": 0,
                        "used_micros": 0,
                        "held_tokens": 0,
                        "held_micros": 0,
                        "held_count": 0,
                        "holds": {},
                    }
                )
        return False

    async def settle(self, budget_id: str, hold_key: str, tokens: int, micros: int, *, counted: bool = False) -> None:
        """Turn the hold into what the call used. A hold settled or released already is left alone, unless the
        usage is ``counted`` here for the first time (its usage row was just written): then it is added to what
        was used even with no hold left (a hold released while its call was still answering)."""
        path = f"holds.{hold_key}"
        doc = await self.collection.find_one({"_id": budget_id}, {path: 1})
        if doc is None:
            return
        held = doc.get("holds", {}).get(hold_key)
        if held is None:
            if counted and (tokens or micros):
                await self.collection.update_one(
                    {"_id": budget_id}, {"$inc": {"used_tokens": tokens, "used_micros": micros}}
                )
            return
        await self.collection.update_one(
            {"_id": budget_id, f"{path}.until": held["until"]},
            {
                "$inc": {
                    "used_tokens": tokens,
                    "used_micros": micros,
                    "held_tokens": -held["tokens"],
                    "held_micros": -held["micros"],
                    "held_count": -1,
                },
                "$unset": {path: ""},
            },
        )

    async def release(self, budget_id: str, hold_key: str) -> None:
        await self.settle(budget_id, hold_key, 0, 0)

    async def holds_of(self, budget_id: str, prefix: str) -> list[str]:
        """The hold keys starting with ``prefix`` (an attempt's calls) still held on ``budget_id``."""
        doc = await self.collection.find_one({"_id": budget_id}, {"holds": 1})
        return sorted(k for k in (doc or {}).get("holds", {}) if k.startswith(prefix))

    async def sweep(self, now: datetime) -> int:
        """Release holds whose expiry passed (their worker died and their task was never delivered again)."""
        released = 0
        async for doc in self.collection.find({"held_count": {"$gt": 0}}, {"holds": 1}):
            for hold_key, held in doc.get("holds", {}).items():
                if held["until"] < now:
                    await self.release(doc["_id"], hold_key)
                    released += 1
        return released

    async def used(self, budget_id: str) -> Document | None:
        return await self.collection.find_one({"_id": budget_id}, {"holds": 0})
