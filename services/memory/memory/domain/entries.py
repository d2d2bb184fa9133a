"""The three memory aggregates: a short-term entry, a working (shared-context) entry and a long-term entry.
Pure state, evolve and decide; the clock is passed in."""

import hashlib
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from contracts import ErrorCode, Event
from contracts.errors import DomainError
from contracts.memory import (
    SHORT_TERM_SCOPES,
    DeleteWorkingEntry,
    ForgetLongTerm,
    LongTermFields,
    LongTermForgotten,
    LongTermRemembered,
    LongTermUpdated,
    PromoteShortTerm,
    PutWorkingEntry,
    RememberLongTerm,
    Scope,
    ShortTermCleared,
    ShortTermPromoted,
    ShortTermStored,
    StoreShortTerm,
    UpdateLongTerm,
    WorkingEntryDeleted,
    WorkingEntryWritten,
)

SHORT_TERM, WORKING, LONG_TERM = "shortterm", "working", "longterm"


class MemoryNotFound(DomainError):
    code = ErrorCode.MEMORY_NOT_FOUND


class VersionConflict(DomainError):
    code = ErrorCode.VERSION_CONFLICT


class InvalidScope(DomainError):
    code = ErrorCode.VALIDATION_FAILED


def working_id(scope: Scope, key: str) -> str:
    """The stream id of a working entry: subject-safe whatever characters the key has."""
    return hashlib.sha256(f"{scope.key}/{key}".encode()).hexdigest()[:40]


# Short-term ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ShortTerm:
    entry_id: str = ""
    scope: Scope | None = None
    content: str = ""
    expires_at: str = ""
    cleared: bool = False
    promoted_to: str | None = None

    @property
    def exists(self) -> bool:
        return self.scope is not None

    def alive(self, now: datetime) -> bool:
        return self.exists and not self.cleared and datetime.fromisoformat(self.expires_at) > now


def evolve_short_term(state: ShortTerm, event: Event) -> ShortTerm:
    match event:
        case ShortTermStored():
            return ShortTerm(event.entry_id, event.scope, event.content, event.expires_at)
        case ShortTermCleared():
            return replace(state, cleared=True)
        case ShortTermPromoted():
            return replace(state, promoted_to=event.long_term_id)
    return state


def store_short_term(state: ShortTerm, command: StoreShortTerm, now: datetime) -> list[Event]:
    if state.exists:
        raise DomainError(f"memory {command.entry_id} already exists")
    if command.scope.kind not in SHORT_TERM_SCOPES:
        raise InvalidScope(
            f"short-term memory belongs to a conversation, team run or execution, not a {command.scope.kind}"
        )
    expires = (now + timedelta(seconds=command.ttl_s)).isoformat()
    return [
        ShortTermStored(entry_id=command.entry_id, scope=command.scope, content=command.content, expires_at=expires)
    ]


def clear_short_term(state: ShortTerm, reason: str) -> list[Event]:
    return [] if not state.exists or state.cleared else [ShortTermCleared(entry_id=state.entry_id, reason=reason)]


def delete_short_term(state: ShortTerm, entry_id: str, now: datetime) -> list[Event]:
    if not state.alive(now):
        raise MemoryNotFound(f"short-term memory {entry_id} not found (or expired)")
    return [ShortTermCleared(entry_id=entry_id, reason="deleted")]


def promote(state: ShortTerm, command: PromoteShortTerm, now: datetime) -> list[Event]:
    if not state.alive(now):
        raise MemoryNotFound(f"short-term memory {command.entry_id} not found (or expired)")
    if state.promoted_to is not None:
        raise DomainError(f"short-term memory {command.entry_id} was already promoted to {state.promoted_to}")
    return [ShortTermPromoted(entry_id=command.entry_id, long_term_id=command.long_term_id)]


def promoted_fields(state: ShortTerm, command: PromoteShortTerm) -> LongTermFields:
    source = f"{state.scope.kind.value}:{state.scope.id}" if state.scope else ""
    return LongTermFields(content=state.content, tags=command.tags, source=source, importance=command.importance)


# Working ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Working:
    version: int = 0
    deleted: bool = False


def evolve_working(state: Working, event: Event) -> Working:
    match event:
        case WorkingEntryWritten():
            return Working(version=state.version + 1)
        case WorkingEntryDeleted():
            return Working(version=state.version + 1, deleted=True)
    return state


def _check_version(state: Working, expected: int | None, key: str) -> None:
    """``expected`` 0 means "absent": true of a key never written and of a deleted one alike."""
    current = 0 if state.deleted else state.version
    if expected is not None and expected != current:
        raise VersionConflict(f"{key!r} is at version {current}, not {expected}: read it again and retry")


def put_working(state: Working, command: PutWorkingEntry) -> list[Event]:
    _check_version(state, command.expected_version, command.key)
    return [WorkingEntryWritten(scope=command.scope, key=command.key, value=command.value)]


def delete_working(state: Working, command: DeleteWorkingEntry) -> list[Event]:
    _check_version(state, command.expected_version, command.key)
    if state.version == 0 or state.deleted:
        raise MemoryNotFound(f"working entry {command.key!r} not found")
    return [WorkingEntryDeleted(scope=command.scope, key=command.key)]


# Long-term ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LongTerm:
    fields: LongTermFields | None = None
    forgotten: bool = False


def evolve_long_term(state: LongTerm, event: Event) -> LongTerm:
    match event:
        case LongTermRemembered() | LongTermUpdated():
            return LongTerm(fields=event.fields)
        case LongTermForgotten():
            return replace(state, forgotten=True)
    return state


def remember(state: LongTerm, entry_id: str, fields: LongTermFields, promoted_from: str | None = None) -> list[Event]:
    if state.fields is not None:
        raise DomainError(f"memory {entry_id} already exists")
    return [LongTermRemembered(entry_id=entry_id, fields=fields, promoted_from=promoted_from)]


def remember_command(state: LongTerm, command: RememberLongTerm) -> list[Event]:
    return remember(state, command.entry_id, command.fields)


def update_long_term(state: LongTerm, command: UpdateLongTerm) -> list[Event]:
    if state.fields is None or state.forgotten:
        raise MemoryNotFound(f"memory {command.entry_id} not found")
    changes = command.model_dump(exclude={"entry_id"}, exclude_none=True)
    if not changes:
        return []
    return [LongTermUpdated(entry_id=command.entry_id, fields=state.fields.model_copy(update=changes))]


def forget(state: LongTerm, command: ForgetLongTerm) -> list[Event]:
    if state.fields is None or state.forgotten:
        raise MemoryNotFound(f"memory {command.entry_id} not found")
    return [LongTermForgotten(entry_id=command.entry_id)]
