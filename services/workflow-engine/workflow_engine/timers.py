"""Durable timers: retry backoffs, step timeouts and delays.

A timer is a document written when its event is processed (so it survives any restart), and a loop fires the
due ones by sending a FireTimer command whose id is the timer's id: the broker de-duplicates a timer fired twice
by two replicas or across a crash, and the execution ignores a timer that no longer matches its step.
"""

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any, Literal

from pymongo import ASCENDING
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError

from contracts import Actor
from contracts.workflows import FireTimer
from servicekit.batching import InsertBatcher
from servicekit.bus import Bus
from servicekit.commands import envelope_for, publish_command

log = logging.getLogger(__name__)
Document = dict[str, Any]
Purpose = Literal["retry", "timeout", "delay"]
SERVICE = "workflow-engine"
PENDING, FIRED = "pending", "fired"


class Timers:
    def __init__(self, collection: AsyncCollection[Document]) -> None:
        self.collection = collection
        self._inserts = InsertBatcher(collection)  # the claims of steps dispatched together share a round trip

    async def ensure_indexes(self) -> None:
        await self.collection.create_index([("state", ASCENDING), ("due_at", ASCENDING)])
        await self.collection.create_index(
            [("workspace_id", ASCENDING), ("execution_id", ASCENDING), ("version", ASCENDING)]
        )

    @staticmethod
    def timer_id(workspace_id: str, execution_id: str, step_id: str, attempt: int, purpose: Purpose) -> str:
        return f"{workspace_id}:{execution_id}:{step_id}:{attempt}:{purpose}"

    async def schedule(
        self,
        *,
        workspace_id: str,
        execution_id: str,
        step_id: str,
        attempt: int,
        purpose: Purpose,
        due_at: datetime,
        version: int,
    ) -> bool:
        """Write the timer; False when it already existed (so it can also serve as a once-only claim)."""
        try:
            await self._inserts.insert(
                {
                    "_id": self.timer_id(workspace_id, execution_id, step_id, attempt, purpose),
                    "workspace_id": workspace_id,
                    "execution_id": execution_id,
                    "step_id": step_id,
                    "attempt": attempt,
                    "purpose": purpose,
                    "due_at": due_at,
                    "state": PENDING,
                    "version": version,
                }
            )
        except DuplicateKeyError:
            return False
        return True

    async def cancel_before(self, workspace_id: str, execution_id: str, version: int) -> None:
        """Drop the timers an execution's end made pointless: those scheduled by events before ``version``. A timer
        of a later event (a retry that started after the end was decided) is kept, whatever order events arrive
        in. (The filter matches the compound index exactly; SecantusDB scans otherwise.)"""
        await self.collection.delete_many(
            {"workspace_id": workspace_id, "execution_id": execution_id, "version": {"$lt": version}}
        )

    async def due(self, now: datetime, limit: int = 200) -> list[Document]:
        cursor = self.collection.find(
            {"state": PENDING, "due_at": {"$lte": now}}, sort=[("due_at", ASCENDING)], limit=limit
        )
        return await cursor.to_list(None)

    async def mark_fired(self, timer_id: str) -> None:
        await self.collection.update_one({"_id": timer_id, "state": PENDING}, {"$set": {"state": FIRED}})


class TimerLoop:
    def __init__(self, timers: Timers, bus: Bus, clock: Callable[[], datetime], poll_s: float) -> None:
        self._timers = timers
        self._bus = bus
        self._clock = clock
        self._poll_s = poll_s
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="timers")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            try:
                await self.fire_due()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("firing timers failed; retrying")
            await asyncio.sleep(self._poll_s)

    async def fire_due(self) -> int:
        fired = 0
        for doc in await self._timers.due(self._clock()):
            command = FireTimer(
                execution_id=doc["execution_id"], step_id=doc["step_id"], attempt=doc["attempt"], purpose=doc["purpose"]
            )
            envelope = envelope_for(
                command,
                workspace_id=doc["workspace_id"],
                command_id=f"timer-{doc['_id']}".replace(":", "-"),
                actor=Actor(kind="service", id=SERVICE),
            )
            await publish_command(self._bus, SERVICE, envelope)
            await self._timers.mark_fired(doc["_id"])
            fired += 1
        return fired
