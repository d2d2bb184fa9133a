"""Memory: short-term, working (shared context) and long-term entries, import, and retrieval for an agent."""

import json
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from contracts import ErrorCode
from contracts.memory import (
    ClearShortTerm,
    DeleteShortTerm,
    DeleteWorkingEntry,
    ForgetLongTerm,
    GetMemory,
    GetWorkingHistory,
    ImportLongTerm,
    ListMemory,
    LongTermFields,
    PromoteShortTerm,
    PutWorkingEntry,
    RememberLongTerm,
    RetrieveMemory,
    Scope,
    ScopeKind,
    StoreShortTerm,
    Tag,
    Tier,
    UpdateLongTerm,
)
from contracts.messages import Id
from gateway.body import BodyError, JsonBodyRoute, parse_json
from gateway.deps import CurrentPrincipal, Queries, Settings
from gateway.errors import ApiError
from gateway.routes.common import CommandResponse, ResourceId, Send

router = APIRouter(prefix="/memory", tags=["memory"], route_class=JsonBodyRoute)
Limit = Annotated[int, Query(ge=1, le=500)]
ScopeKindPath = Annotated[ScopeKind, Path()]
ScopeIdPath = Annotated[str, Path(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
NDJSON = "application/x-ndjson"
KeyPath = Annotated[str, Path(pattern=r"^[A-Za-z0-9_.:-]{1,128}$")]


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ShortTermIn(Model):
    scope: Scope
    content: str = Field(min_length=1)
    ttl_s: float | None = Field(default=None, gt=0, le=90 * 86_400)


class Promotion(Model):
    tags: list[Tag] = Field(default_factory=list, max_length=50)
    importance: float = Field(default=0.5, ge=0.0, le=1.0)


class WorkingIn(Model):
    value: Any
    expected_version: int | None = Field(
        default=None, ge=0, description="The version you read (0: the key must not exist yet); a stale one is 409."
    )


class LongTermPatch(Model):
    content: str | None = Field(default=None, min_length=1)
    tags: list[Tag] | None = None
    source: str | None = Field(default=None, max_length=500)
    importance: float | None = Field(default=None, ge=0.0, le=1.0)


class RetrieveIn(Model):
    """``retrieve_agent_memory``: what an agent should recall for ``query``."""

    query: str = Field(min_length=1)
    agent_id: Id | None = None
    team_id: Id | None = None
    team_run_id: Id | None = None
    execution_id: Id | None = None
    conversation_id: Id | None = None
    tiers: list[Tier] = Field(default_factory=lambda: list(Tier))
    limit: int = Field(default=10, ge=1, le=100)

    def scopes(self) -> list[Scope]:
        pairs = [
            (ScopeKind.TEAM, self.team_id),
            (ScopeKind.TEAM_RUN, self.team_run_id),
            (ScopeKind.EXECUTION, self.execution_id),
            (ScopeKind.CONVERSATION, self.conversation_id),
        ]
        return [Scope(kind=kind, id=value) for kind, value in pairs if value]


class Items(BaseModel):
    items: list[dict[str, Any]]


class ImportReport(BaseModel):
    imported: int
    errors: list[dict[str, Any]]
    command: CommandResponse | None


def _check_size(settings: Settings, text: str | None) -> None:
    if text is not None and len(text) > settings.memory_max_entry_chars:
        raise ApiError(
            ErrorCode.ENTRY_TOO_LARGE, f"An entry holds at most {settings.memory_max_entry_chars} characters."
        )


# Short-term ----------------------------------------------------------------------------------------------------


@router.post("/short-term", response_model=CommandResponse, status_code=201, summary="Store a short-term entry")
async def store_short_term(body: ShortTermIn, send: Send, settings: Settings) -> CommandResponse:
    _check_size(settings, body.content)
    command_id = send.command_id
    entry_id = f"stm_{command_id[:24]}"
    command = StoreShortTerm(
        entry_id=entry_id, scope=body.scope, content=body.content, ttl_s=body.ttl_s or settings.memory_default_ttl_s
    )
    return await send(command, created=f"/api/v1/memory/short-term/{entry_id}")


@router.get("/short-term", response_model=Items, summary="List live short-term entries, optionally of one scope")
async def list_short_term(
    principal: CurrentPrincipal,
    queries: Queries,
    scope_kind: ScopeKind | None = None,
    scope_id: Annotated[str | None, Query(pattern=r"^[A-Za-z0-9_-]{1,64}$")] = None,
    limit: Limit = 100,
) -> Items:
    scope = Scope(kind=scope_kind, id=scope_id) if scope_kind and scope_id else None
    return Items(items=await queries.ask(principal, ListMemory(tier=Tier.SHORT_TERM, scope=scope, limit=limit)))


@router.get("/short-term/{entry_id}", summary="A live short-term entry")
async def get_short_term(entry_id: ResourceId, principal: CurrentPrincipal, queries: Queries) -> Any:
    return await queries.ask(principal, GetMemory(tier=Tier.SHORT_TERM, entry_id=entry_id))


@router.delete("/short-term/{entry_id}", response_model=CommandResponse, summary="Delete a short-term entry")
async def delete_short_term(entry_id: ResourceId, send: Send) -> CommandResponse:
    command = DeleteShortTerm(entry_id=entry_id)
    return await send(command)


@router.delete(
    "/short-term/{scope_kind}/{scope_id}", response_model=CommandResponse, summary="Clear a scope's short-term memory"
)
async def clear_short_term(scope_kind: ScopeKindPath, scope_id: ScopeIdPath, send: Send) -> CommandResponse:
    command = ClearShortTerm(scope=Scope(kind=scope_kind, id=scope_id))
    return await send(command)


@router.post(
    "/short-term/{entry_id}/promote",
    response_model=CommandResponse,
    status_code=201,
    summary="Keep a short-term entry as long-term knowledge",
)
async def promote(entry_id: ResourceId, send: Send, body: Promotion | None = None) -> CommandResponse:
    command_id = send.command_id
    long_term_id = f"ltm_{command_id[:24]}"
    options = body or Promotion()
    command = PromoteShortTerm(
        entry_id=entry_id, long_term_id=long_term_id, tags=options.tags, importance=options.importance
    )
    created = f"/api/v1/memory/long-term/{long_term_id}"
    return await send(command, created=created)


# Working (shared context) ---------------------------------------------------------------------------------------


@router.put(
    "/working/{scope_kind}/{scope_id}/{key}",
    response_model=CommandResponse,
    summary="store_shared_context: write a working entry (optimistic concurrency with expected_version)",
)
async def put_working(
    scope_kind: ScopeKindPath, scope_id: ScopeIdPath, key: KeyPath, body: WorkingIn, send: Send, settings: Settings
) -> CommandResponse:
    _check_size(settings, json.dumps(body.value, default=str))
    command = PutWorkingEntry(
        scope=Scope(kind=scope_kind, id=scope_id), key=key, value=body.value, expected_version=body.expected_version
    )
    return await send(command)


@router.get("/working/{scope_kind}/{scope_id}", response_model=Items, summary="A scope's working entries")
async def list_working(
    scope_kind: ScopeKindPath, scope_id: ScopeIdPath, principal: CurrentPrincipal, queries: Queries, limit: Limit = 100
) -> Items:
    scope = Scope(kind=scope_kind, id=scope_id)
    return Items(items=await queries.ask(principal, ListMemory(tier=Tier.WORKING, scope=scope, limit=limit)))


@router.get("/working/{scope_kind}/{scope_id}/{key}/history", response_model=Items, summary="Every version")
async def working_history(
    scope_kind: ScopeKindPath, scope_id: ScopeIdPath, key: KeyPath, principal: CurrentPrincipal, queries: Queries
) -> Items:
    query = GetWorkingHistory(scope=Scope(kind=scope_kind, id=scope_id), key=key)
    return Items(items=await queries.ask(principal, query))


@router.get("/working/{scope_kind}/{scope_id}/{key}", summary="A working entry with its version")
async def get_working(
    scope_kind: ScopeKindPath, scope_id: ScopeIdPath, key: KeyPath, principal: CurrentPrincipal, queries: Queries
) -> Any:
    scope = Scope(kind=scope_kind, id=scope_id)
    rows = await queries.ask(principal, ListMemory(tier=Tier.WORKING, scope=scope, key=key, limit=1))
    row = rows[0] if rows else None
    if row is None:
        raise ApiError(ErrorCode.MEMORY_NOT_FOUND, f"working entry {key!r} not found")
    return row


@router.delete("/working/{scope_kind}/{scope_id}/{key}", response_model=CommandResponse, summary="Delete")
async def delete_working(
    scope_kind: ScopeKindPath,
    scope_id: ScopeIdPath,
    key: KeyPath,
    send: Send,
    expected_version: Annotated[int | None, Query(ge=0)] = None,
) -> CommandResponse:
    command = DeleteWorkingEntry(scope=Scope(kind=scope_kind, id=scope_id), key=key, expected_version=expected_version)
    return await send(command)


# Long-term ------------------------------------------------------------------------------------------------------


@router.post("/long-term", response_model=CommandResponse, status_code=201, summary="Remember a long-term entry")
async def remember(body: LongTermFields, send: Send, settings: Settings) -> CommandResponse:
    _check_size(settings, body.content)
    command_id = send.command_id
    entry_id = f"ltm_{command_id[:24]}"
    command = RememberLongTerm(entry_id=entry_id, fields=body)
    created = f"/api/v1/memory/long-term/{entry_id}"
    return await send(command, created=created)


@router.post(
    "/long-term/import",
    response_model=ImportReport,
    summary="Import long-term entries from JSON lines; each bad line is reported, the good ones are imported",
    description="Answers 422 (`validation_failed`, the bad lines in `errors`) when no line can be imported.",
    openapi_extra={"requestBody": {"content": {NDJSON: {"schema": {"type": "string"}}}}},
)
async def import_long_term(request: Request, send: Send, settings: Settings) -> ImportReport:
    raw = await request.body()
    try:
        text = raw.decode()
    except UnicodeDecodeError as exc:
        raise ApiError(ErrorCode.MALFORMED_JSON, "The body is not UTF-8 text.") from exc
    lines = [(n, line) for n, line in enumerate(text.splitlines(), start=1) if line.strip()]
    if len(lines) > settings.memory_max_import_entries:
        raise ApiError(ErrorCode.TOO_MANY_ENTRIES, f"At most {settings.memory_max_import_entries} entries per import.")
    command_id = send.command_id
    good: list[tuple[str, LongTermFields]] = []
    errors: list[dict[str, Any]] = []
    for number, line in lines:
        where = ["line", str(number)]
        try:
            fields = LongTermFields.model_validate(parse_json(line, max_depth=settings.max_json_depth, loc=where))
        except BodyError as exc:
            first = exc.errors[0]
            errors.append({"line": number, "code": exc.code.value, "message": first["msg"], "loc": first["loc"]})
            continue
        except ValidationError as exc:
            invalid = exc.errors()[0]
            loc = [*where, *(str(p) for p in invalid["loc"])]
            errors.append({"line": number, "code": "validation_failed", "message": invalid["msg"], "loc": loc})
            continue
        if len(fields.content) > settings.memory_max_entry_chars:
            errors.append({"line": number, "code": ErrorCode.ENTRY_TOO_LARGE.value, "message": "content too long"})
            continue
        good.append((f"ltm_{command_id[:20]}_{number}", fields))
    if not good:
        raise ApiError(
            ErrorCode.VALIDATION_FAILED,
            "No line could be imported; each is reported in errors." if lines else "The body holds no line to import.",
            errors=errors,
        )
    result = await send(ImportLongTerm(entries=good))
    return ImportReport(imported=len(good), errors=errors, command=result)


@router.get("/long-term", response_model=Items, summary="List long-term entries, optionally by tag")
async def list_long_term(
    principal: CurrentPrincipal,
    queries: Queries,
    tag: Annotated[str | None, Query(max_length=60)] = None,
    limit: Limit = 100,
) -> Items:
    return Items(items=await queries.ask(principal, ListMemory(tier=Tier.LONG_TERM, tag=tag, limit=limit)))


@router.get("/long-term/{entry_id}", summary="A long-term entry")
async def get_long_term(entry_id: ResourceId, principal: CurrentPrincipal, queries: Queries) -> Any:
    return await queries.ask(principal, GetMemory(tier=Tier.LONG_TERM, entry_id=entry_id))


@router.patch("/long-term/{entry_id}", response_model=CommandResponse, summary="Edit a long-term entry")
async def edit_long_term(entry_id: ResourceId, body: LongTermPatch, send: Send, settings: Settings) -> CommandResponse:
    _check_size(settings, body.content)
    command = UpdateLongTerm(entry_id=entry_id, **body.model_dump(exclude_none=True))
    return await send(command)


@router.delete("/long-term/{entry_id}", response_model=CommandResponse, summary="Delete a long-term entry")
async def forget(entry_id: ResourceId, send: Send) -> CommandResponse:
    command = ForgetLongTerm(entry_id=entry_id)
    return await send(command)


# Retrieval ------------------------------------------------------------------------------------------------------


@router.post("/retrieve", response_model=Items, summary="retrieve_agent_memory: the most relevant entries, ranked")
async def retrieve(body: RetrieveIn, principal: CurrentPrincipal, queries: Queries, settings: Settings) -> Items:
    if len(body.query) > settings.memory_max_query_chars:
        raise ApiError(ErrorCode.QUERY_TOO_LONG, f"A query holds at most {settings.memory_max_query_chars} characters.")
    query = RetrieveMemory(
        query=body.query, agent_id=body.agent_id, scopes=body.scopes(), tiers=body.tiers, limit=body.limit
    )
    return Items(items=await queries.ask(principal, query))
