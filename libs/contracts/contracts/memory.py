"""Memory commands, events and queries (owned by the memory service).

Three tiers: ``short_term`` (scoped to a conversation, team run or workflow execution; expires), ``working``
(key-value shared context of a team, team run or execution; versioned) and ``long_term`` (workspace knowledge;
searchable, editable, deletable).
"""

from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from contracts.messages import Command, Event, Id, Label, Number, Query
from contracts.registry import REGISTRY

Tag = Label
Key = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.:-]{1,128}$")]


class Tier(StrEnum):
    SHORT_TERM = "short_term"
    WORKING = "working"
    LONG_TERM = "long_term"


class ScopeKind(StrEnum):
    CONVERSATION = "conversation"
    TEAM = "team"
    TEAM_RUN = "team_run"
    EXECUTION = "execution"


class Scope(BaseModel):
    """What a short-term or working entry belongs to."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: ScopeKind
    id: Id

    @property
    def key(self) -> str:
        return f"{self.kind.value}-{self.id}"


class ShortTermScope(BaseModel):
    """What a short-term entry belongs to: a conversation, a team run or a workflow execution (a team has working
    memory, not short-term)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal[ScopeKind.CONVERSATION, ScopeKind.TEAM_RUN, ScopeKind.EXECUTION]
    id: Id

    def scope(self) -> Scope:
        return Scope(kind=self.kind, id=self.id)


SHORT_TERM_SCOPES = frozenset({ScopeKind.CONVERSATION, ScopeKind.TEAM_RUN, ScopeKind.EXECUTION})


class LongTermFields(BaseModel):
    """A long-term entry as written by a caller."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    content: str = Field(min_length=1)
    tags: list[Tag] = Field(default_factory=list, max_length=50)
    source: str = Field(default="", max_length=500)
    importance: Number = Field(default=0.5, ge=0.0, le=1.0)


# Commands -------------------------------------------------------------------------------------------------------


@REGISTRY.register
class StoreShortTerm(Command):
    service = "memory"
    entry_id: Id
    scope: Scope
    content: str = Field(min_length=1)
    ttl_s: float = Field(gt=0, le=90 * 86_400)


@REGISTRY.register
class DeleteShortTerm(Command):
    service = "memory"
    entry_id: Id


@REGISTRY.register
class ClearShortTerm(Command):
    """Remove every short-term entry of a scope (e.g. when the run or conversation ends)."""

    service = "memory"
    scope: Scope


@REGISTRY.register
class PutWorkingEntry(Command):
    """Write a shared-context value; ``expected_version`` (the version read) guards against lost updates."""

    service = "memory"
    scope: Scope
    key: Key
    value: Any
    expected_version: int | None = Field(default=None, ge=0)


@REGISTRY.register
class DeleteWorkingEntry(Command):
    service = "memory"
    scope: Scope
    key: Key
    expected_version: int | None = Field(default=None, ge=0)


@REGISTRY.register
class RememberLongTerm(Command):
    service = "memory"
    entry_id: Id
    fields: LongTermFields


@REGISTRY.register
class ImportLongTerm(Command):
    """Many long-term entries at once (already validated line by line by the gateway)."""

    service = "memory"
    entries: list[tuple[Id, LongTermFields]] = Field(min_length=1)


@REGISTRY.register
class UpdateLongTerm(Command):
    service = "memory"
    entry_id: Id
    content: str | None = Field(default=None, min_length=1)
    tags: list[Tag] | None = None
    source: str | None = Field(default=None, max_length=500)
    importance: float | None = Field(default=None, ge=0.0, le=1.0)


@REGISTRY.register
class ForgetLongTerm(Command):
    service = "memory"
    entry_id: Id


@REGISTRY.register
class PromoteShortTerm(Command):
    """Keep a short-term entry as long-term knowledge."""

    service = "memory"
    entry_id: Id
    long_term_id: Id
    tags: list[Tag] = Field(default_factory=list, max_length=50)
    importance: float = Field(default=0.5, ge=0.0, le=1.0)


# Events ---------------------------------------------------------------------------------------------------------


@REGISTRY.register
class ShortTermStored(Event):
    aggregate = "shortterm"
    entry_id: str
    scope: Scope
    content: str
    expires_at: str


@REGISTRY.register
class ShortTermCleared(Event):
    aggregate = "shortterm"
    entry_id: str
    reason: str


@REGISTRY.register
class ShortTermPromoted(Event):
    aggregate = "shortterm"
    entry_id: str
    long_term_id: str


@REGISTRY.register
class WorkingEntryWritten(Event):
    aggregate = "working"
    scope: Scope
    key: str
    value: Any


@REGISTRY.register
class WorkingEntryDeleted(Event):
    aggregate = "working"
    scope: Scope
    key: str


@REGISTRY.register
class LongTermRemembered(Event):
    aggregate = "longterm"
    entry_id: str
    fields: LongTermFields
    promoted_from: str | None = None


@REGISTRY.register
class LongTermUpdated(Event):
    aggregate = "longterm"
    entry_id: str
    fields: LongTermFields


@REGISTRY.register
class LongTermForgotten(Event):
    aggregate = "longterm"
    entry_id: str


# Queries --------------------------------------------------------------------------------------------------------


@REGISTRY.register
class RetrieveMemory(Query):
    """The entries most relevant to ``query`` that an agent may see: long-term knowledge of the workspace plus the
    short-term and working entries of the given scopes."""

    service = "memory"
    query: str = Field(min_length=1)
    agent_id: Id | None = None
    scopes: list[Scope] = Field(default_factory=list, max_length=10)
    tiers: list[Tier] = Field(default_factory=lambda: list(Tier))
    limit: int = Field(default=10, ge=1, le=100)


@REGISTRY.register
class RecallForTask(RetrieveMemory):
    """What an agent's task takes from memory in one read: what RetrieveMemory recalls (as ``recalled``), and
    beside it every live working entry of ``shared`` (a team run's context), newest first, at most
    ``shared_limit``, as ListMemory lists them (as ``shared``)."""

    shared: Scope
    shared_limit: int = Field(default=50, ge=1, le=500)


@REGISTRY.register
class ListMemory(Query):
    service = "memory"
    tier: Tier
    scope: Scope | None = None
    tag: str | None = None
    key: Key | None = None
    limit: int = Field(default=100, ge=1, le=500)


@REGISTRY.register
class GetMemory(Query):
    service = "memory"
    tier: Tier
    entry_id: str = Field(min_length=1, max_length=300)


@REGISTRY.register
class GetWorkingHistory(Query):
    service = "memory"
    scope: Scope
    key: Key
