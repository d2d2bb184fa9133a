"""Submitting commands and waiting a bounded time for their outcome.

A command is published to the COMMANDS stream with Nats-Msg-Id = command id, and its outcome is awaited on the
outcome subject; every outcome is also kept in the OUTCOMES stream (7 days), keyed by workspace and command id,
which is where /commands/{id} finds it.

The gateway's ``commands`` collection records what the OUTCOMES stream cannot tell: requests sent with an
Idempotency-Key (written before sending, so that a retried request finds the first one's command instead of doing
the work again; the command id is derived from the workspace and the key), and commands still pending when the
request stops waiting (answered 202). Once a command is sent, the request does not fail: if recording it fails, the
answer is still 202 with its id, and the record is written again in the background.
"""

import asyncio
import hashlib
import logging
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from nats.errors import Error as NatsError
from pymongo import ASCENDING
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError, PyMongoError

from contracts import Actor, Command, CommandOutcome, Envelope, ErrorCode, new_id
from gateway.errors import ApiError
from gateway.workspaces import Principal
from servicekit.bus import Bus
from servicekit.commands import envelope_for, last_outcome, send_and_wait

log = logging.getLogger(__name__)
Document = dict[str, Any]
IDEMPOTENCY_NAMESPACE = uuid.UUID("7f1d5d2e-8a53-4c8e-9a3e-2b1f0c6a9d41")
PENDING = "pending"
RECORD_RETRIES = 8  # a pending command's record, when its first write failed: tried again for about a minute
RECORD_RETRY_FIRST_S = 0.5
RECORD_RETRY_MAX_S = 15.0


@dataclass(frozen=True, slots=True)
class CommandStatus:
    command_id: str
    type: str
    status: str
    submitted_at: datetime
    outcome: CommandOutcome | None

    @property
    def finished(self) -> bool:
        return self.outcome is not None


class CommandGateway:
    def __init__(self, db: AsyncDatabase[Document], bus: Bus, wait_s: float) -> None:
        self._commands = db["commands"]
        self._bus = bus
        self._wait_s = wait_s
        self._background: set[asyncio.Task[None]] = set()
        self._recording: set[asyncio.Task[None]] = set()

    async def close(self) -> None:
        """Finish recording the outcomes already received; stop trying again to record pending commands."""
        for task in self._recording:
            task.cancel()
        await asyncio.gather(*self._background, *self._recording, return_exceptions=True)

    async def ensure_indexes(self) -> None:
        await self._commands.create_index([("workspace_id", ASCENDING), ("submitted_at", ASCENDING)])

    @staticmethod
    def command_id(principal: Principal, idempotency_key: str | None) -> str:
        """A fresh id, or the one id an Idempotency-Key always maps to within a workspace."""
        if idempotency_key is None:
            return new_id()
        return uuid.uuid5(IDEMPOTENCY_NAMESPACE, f"{principal.workspace_id}:{idempotency_key}").hex

    async def submit(
        self,
        principal: Principal,
        command_id: str,
        command: Command,
        *,
        request_fingerprint: str,
        idempotent: bool = True,
    ) -> CommandStatus:
        """Send ``command`` for ``principal``'s workspace; returns its status after at most the wait time.

        ``idempotent``: the id comes from an Idempotency-Key, so an earlier request may hold it; its record is
        written before anything is sent. A fresh id cannot collide, so nothing is written before sending: a
        command finished within the wait is found by its outcome, and one still pending is recorded after the
        wait (see ``_record_pending``)."""
        workspace_id = principal.workspace_id
        envelope = envelope_for(
            command, workspace_id=workspace_id, command_id=command_id, actor=Actor(kind="api_key", id=principal.key_id)
        )
        if len(envelope.model_dump_json().encode()) > self._bus.nc.max_payload:  # bytes, not characters
            raise ApiError(ErrorCode.BODY_TOO_LARGE, "The command is larger than a message may be; send less at once.")
        record: Document = {
            "_id": _key(workspace_id, command_id),
            "workspace_id": workspace_id,
            "command_id": command_id,
            "type": command.type_name,
            "service": command.service,
            "status": PENDING,
            "fingerprint": request_fingerprint,
            "envelope": envelope.model_dump(mode="json"),
            "submitted_at": envelope.occurred_at,
        }
        if not idempotent:
            status = await self._send_and_wait(record, envelope, recorded=False)
            if not status.finished:
                await self._record_pending(record)  # so that /commands/{id} can answer "pending"
            return status
        try:
            await self._commands.insert_one(record)
        except DuplicateKeyError:
            existing = await self._commands.find_one({"_id": record["_id"]})
            if existing is None:  # pragma: no cover - removed between insert and read
                raise
            if existing["fingerprint"] != request_fingerprint:
                raise ApiError(
                    ErrorCode.IDEMPOTENCY_KEY_REUSED, "This Idempotency-Key was used for a different request."
                ) from None
            status = await self._refresh(existing)
            if status.finished:
                return status
            record, envelope = existing, Envelope.model_validate(existing["envelope"])
        return await self._send_and_wait(record, envelope)

    async def _record_pending(self, record: Document) -> None:
        """Record a command that went out and is still pending. The command is sent whatever happens here, so a
        failed write does not fail the request (the client gets 202 and the command id): it is tried again in the
        background, and until it lands /commands/{id} finds the command by its outcome, which every command gets
        (a dead-lettered one too)."""
        try:
            await self._commands.insert_one(record)
        except PyMongoError as exc:
            log.warning("command %s sent, its record not written (%r); writing it again", record["command_id"], exc)
            task = asyncio.create_task(self._record_later(record))
            self._recording.add(task)
            task.add_done_callback(self._recording.discard)

    async def _record_later(self, record: Document) -> None:
        delay = RECORD_RETRY_FIRST_S
        for _ in range(RECORD_RETRIES):
            await asyncio.sleep(delay)
            delay = min(delay * 2, RECORD_RETRY_MAX_S)
            try:
                await self._commands.insert_one(record)
            except DuplicateKeyError:
                return  # an earlier try landed after all
            except PyMongoError as exc:
                log.warning("command %s: its record still not written (%r)", record["command_id"], exc)
            else:
                return
        log.error("command %s: its record could not be written; its outcome will tell", record["command_id"])

    async def status(self, principal: Principal, command_id: str) -> CommandStatus | None:
        doc = await self._commands.find_one({"_id": _key(principal.workspace_id, command_id)})
        if doc is not None:
            return await self._refresh(doc)
        outcome = await self._outcome(principal.workspace_id, command_id)
        if outcome is None:
            return None
        return CommandStatus(command_id, outcome.command_type, outcome.status.value, outcome.submitted_at, outcome)

    async def _outcome(self, workspace_id: str, command_id: str) -> CommandOutcome | None:
        """The command's outcome from the OUTCOMES stream; None while there is none."""
        return await last_outcome(self._bus, workspace_id, command_id)

    async def _send_and_wait(self, record: Document, envelope: Envelope, *, recorded: bool = True) -> CommandStatus:
        """Publish and wait for the outcome. ``recorded``: the record was written before sending (an
        Idempotency-Key's); the outcome is then written into it off the request's path."""
        try:
            outcome = await send_and_wait(self._bus, record["service"], envelope, self._wait_s)
        except NatsError as exc:  # it could not be sent
            advice = (
                "retrying with the same Idempotency-Key is safe"
                if recorded
                else "send commands with an Idempotency-Key to retry them safely"
            )
            raise ApiError(
                ErrorCode.SERVICE_UNAVAILABLE,
                f"Command {envelope.message_id} could not be sent; {advice}.",
                errors=[{"command_id": envelope.message_id}],
            ) from exc
        if outcome is None:  # no answer in time; it may have come as the wait ended
            try:
                outcome = await self._outcome(envelope.workspace_id, envelope.message_id)
            except NatsError:
                outcome = None  # sent, but its outcome cannot be read now: pending
        if outcome is not None and recorded:
            # Recorded off the request's path: until then, /commands/{id} reads it from the OUTCOMES stream.
            task = asyncio.create_task(self._finish(record, outcome))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
        return _status(record, outcome)

    async def _refresh(self, doc: Document) -> CommandStatus:
        """The record's status; a pending one is completed from the OUTCOMES stream if its outcome is there."""
        if doc["status"] != PENDING:
            return _status(doc, CommandOutcome.model_validate(doc["outcome"]))
        outcome = await self._outcome(doc["workspace_id"], doc["command_id"])
        if outcome is None:
            return _status(doc, None)  # still pending
        await self._finish(doc, outcome)
        return _status(doc, outcome)

    async def _finish(self, doc: Document, outcome: CommandOutcome) -> None:
        await self._commands.update_one(
            {"_id": doc["_id"]},
            {"$set": {"status": outcome.status.value, "outcome": outcome.model_dump(mode="json")}},
        )


def _key(workspace_id: str, command_id: str) -> str:
    return f"{workspace_id}:{command_id}"


def _status(doc: Document, outcome: CommandOutcome | None) -> CommandStatus:
    return CommandStatus(
        command_id=doc["command_id"],
        type=doc["type"],
        status=outcome.status.value if outcome else PENDING,
        submitted_at=doc["submitted_at"],
        outcome=outcome,
    )


def fingerprint(method: str, path: str, body: bytes) -> str:
    return hashlib.sha256(method.encode() + b" " + path.encode() + b"\n" + body).hexdigest()
