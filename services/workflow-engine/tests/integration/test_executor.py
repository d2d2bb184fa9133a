"""The executor against the real NATS JetStream and MongoDB-compatible server, on commits as a crash leaves them."""

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest

from conftest import Infra
from contracts import Actor, Envelope, Event
from contracts.workflows import ExecuteWorkflow, RecordTaskResult, StepScheduled, WorkflowSpec
from servicekit.eventstore import Commit, Metadata, StateCache, utcnow
from servicekit.runtime import Runtime
from servicekit.settings import ServiceSettings
from servicekit.testing import eventually
from workflow_engine.domain import execution
from workflow_engine.executor import Executor
from workflow_engine.handlers import execution_stream
from workflow_engine.timers import SERVICE, TimerDocuments, carried_timers, carry, timer_id

WS = "ws1"
SPEC = WorkflowSpec.model_validate(
    {"name": "One", "start": "a", "steps": [{"id": "a", "kind": "agent", "role": "writer"}]}
)
META = Metadata(correlation_id="c", actor=Actor(kind="system", id="test"))


@pytest.fixture
async def runtime(infra: Infra, env_name: str) -> AsyncIterator[Runtime]:
    settings = ServiceSettings(
        service_name=SERVICE, platform_env=env_name, nats_url=infra.nats_url, mongodb_url=infra.mongodb_url
    )
    rt = Runtime(settings, event_store=True)
    await rt.open()  # not started: nothing but the test acts on the commits
    yield rt
    await rt.stop()


async def started(runtime: Runtime, execution_id: str, **step_input: Any) -> tuple[Commit, StepScheduled]:
    """The commit that starts an execution of SPEC, its first step scheduled with ``step_input``."""
    events: list[Event] = execution.start(
        ExecuteWorkflow(workflow_id="wf", execution_id=execution_id), SPEC, 1, utcnow()
    )
    events = [e.model_copy(update={"input": step_input}) if isinstance(e, StepScheduled) else e for e in events]
    commit = await runtime.store.append(execution_stream(WS, execution_id), 0, events, META)
    scheduled = next(e for e in events if isinstance(e, StepScheduled))
    return commit, scheduled


async def test_a_task_is_sent_again_only_while_the_broker_drops_repeats(runtime: Runtime, env_name: str) -> None:
    timers = TimerDocuments(runtime.db["timers"])
    await timers.ensure_indexes()
    executor = Executor(runtime.store, runtime.bus, timers, StateCache())
    commit, scheduled = await started(runtime, "ex1")
    timeout_id = timer_id(WS, "ex1", "a", scheduled.attempt, "timeout")
    sent: list[str] = []

    async def count(msg: Any) -> None:
        sent.append(msg.headers["Nats-Msg-Id"])

    sub = await runtime.bus.nc.subscribe(f"{env_name}.task.>", cb=count)
    try:
        # Acted on long after it was written (a writer that died then, taken over now): the task may have gone out
        # then, and the broker would no longer drop it, so nothing is sent; the attempt's timeout decides.
        await executor.react(replace(commit, recorded_at=utcnow() - timedelta(hours=1)))
        await runtime.bus.nc.flush()
        await asyncio.sleep(0.3)
        assert sent == []
        assert await timers.collection.find_one({"_id": timeout_id}) is not None, "the timeout is there to decide"

        await executor.react(commit)
        await eventually(lambda: _true(sent == [scheduled.key]))
        info = await runtime.bus.js.stream_info(runtime.subjects.tasks_stream)
        assert info.state.messages == 1

        await executor.react(commit)  # acted on again: published again, and dropped by the broker
        await eventually(lambda: _true(len(sent) == 2))
        info = await runtime.bus.js.stream_info(runtime.subjects.tasks_stream)
        assert info.state.messages == 1
    finally:
        await sub.unsubscribe()


async def test_a_timeout_carried_by_the_commit_is_not_written_again(runtime: Runtime) -> None:
    timers = TimerDocuments(runtime.db["timers"])
    await timers.ensure_indexes()
    executor = Executor(runtime.store, runtime.bus, timers, StateCache())
    now = utcnow()
    events: list[Event] = execution.start(ExecuteWorkflow(workflow_id="wf", execution_id="ex3"), SPEC, 1, now)
    carried = carried_timers(WS, "ex3", None, events, now)
    assert [timer.timer_id for timer in carried] == [timer_id(WS, "ex3", "a", 1, "timeout")]  # five minutes ahead
    commit = await runtime.store.append(execution_stream(WS, "ex3"), 0, events, META, carried=carry(carried))

    await executor.react(commit)

    assert await timers.collection.count_documents({}) == 0


async def test_a_task_too_large_to_send_fails_its_attempt_at_once(runtime: Runtime) -> None:
    timers = TimerDocuments(runtime.db["timers"])
    await timers.ensure_indexes()
    executor = Executor(runtime.store, runtime.bus, timers, StateCache())
    commit, scheduled = await started(runtime, "ex2", blob="x" * (runtime.bus.nc.max_payload + 1))

    await executor.react(commit)

    subjects = runtime.subjects
    msg = await runtime.bus.js.get_last_msg(subjects.commands_stream, subjects.command(SERVICE, WS, "RecordTaskResult"))
    assert msg.data is not None
    result = RecordTaskResult.model_validate(Envelope.model_validate_json(msg.data).payload)
    assert (result.execution_id, result.step_id, result.attempt) == ("ex2", "a", scheduled.attempt)
    assert (result.ok, result.error_kind) == (False, "dispatch")


async def _true(value: bool) -> bool | None:
    return value or None
