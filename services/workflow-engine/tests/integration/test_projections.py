"""The execution summaries against the real MongoDB-compatible server, applied concurrently as the engine does."""

import asyncio
import random
from datetime import UTC, datetime
from typing import Any

from pymongo import AsyncMongoClient

from contracts import Actor, Event, EventRecord
from contracts.workflows import ExecuteWorkflow, ExecutionPaused, ExecutionResumed, WorkflowSpec
from servicekit.eventstore import EventStore, Metadata, StreamRef
from workflow_engine.domain import execution
from workflow_engine.projections import ExecutionsProjection

Document = dict[str, Any]
T0 = datetime(2026, 1, 1, tzinfo=UTC)
META = Metadata(correlation_id="c", actor=Actor(kind="system", id="test"))
SPEC = WorkflowSpec.model_validate(
    {"name": "One", "start": "a", "steps": [{"id": "a", "kind": "agent", "role": "writer"}]}
)


async def test_status_events_applied_together_and_out_of_order_leave_the_newest_status(
    mongo: AsyncMongoClient[Document], env_name: str
) -> None:
    db = mongo[f"{env_name}_projections"]
    projection = ExecutionsProjection(db["executions"])
    await projection.ensure_indexes()
    store = EventStore(db)
    streams: dict[str, list[EventRecord]] = {}
    for i in range(6):
        execution_id = f"ex{i}"
        started = execution.start(ExecuteWorkflow(workflow_id="wf", execution_id=execution_id), SPEC, 1, T0)
        changes: list[Event] = [ExecutionPaused(at=T0.isoformat()), ExecutionResumed(at=T0.isoformat())] * 2
        commit = await store.append(StreamRef("ws", "execution", execution_id), 0, [*started, *changes], META)
        streams[execution_id] = commit.events  # the store has them: a status before its start catches up from it
    summary_types = {"ExecutionStarted", "ExecutionPaused", "ExecutionResumed"}
    deliveries = [r for stream in streams.values() for r in stream if r.type in summary_types]
    random.Random(7).shuffle(deliveries)

    await projection.handle(deliveries[0], store)  # the first alone, the rest in batches that mix up versions
    await asyncio.gather(*(projection.handle(record, store) for record in deliveries[1:]))

    rows = {doc["execution_id"]: (doc["status"], doc["version"]) async for doc in db["executions"].find()}
    last = {execution_id: stream[-1].version for execution_id, stream in streams.items()}
    assert rows == {execution_id: ("running", version) for execution_id, version in last.items()}


class StartLandsMeanwhile(ExecutionsProjection):
    """The race, made to happen every time: the start's row is inserted (by another worker) right after a status
    change found no row to update, just before it looks at the row again."""

    def __init__(self, collection: Any, starts: dict[str, EventRecord]) -> None:
        super().__init__(collection)
        self._starts = starts

    async def position(self, record: EventRecord) -> int:
        start = self._starts.pop(record.stream_id, None)
        if start is not None:
            assert await self.apply(start)
        return await super().position(record)


async def test_a_status_change_that_finds_no_row_while_its_start_lands_is_not_lost(
    mongo: AsyncMongoClient[Document], env_name: str
) -> None:
    db = mongo[f"{env_name}_projections"]
    store = EventStore(db)
    started = execution.start(ExecuteWorkflow(workflow_id="wf", execution_id="ex1"), SPEC, 1, T0)
    commit = await store.append(
        StreamRef("ws", "execution", "ex1"), 0, [*started, ExecutionPaused(at=T0.isoformat())], META
    )
    start, paused = commit.events[0], commit.events[-1]
    projection = StartLandsMeanwhile(db["executions"], {start.stream_id: start})
    await projection.ensure_indexes()

    await projection.handle(paused, store)

    row = await db["executions"].find_one({"_id": start.stream_id})
    assert row is not None
    assert (row["status"], row["version"]) == ("paused", paused.version)
