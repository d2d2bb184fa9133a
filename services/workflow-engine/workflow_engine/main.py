"""Composition root of the workflow engine."""

from collections.abc import Callable
from datetime import datetime, timedelta

from fastapi import FastAPI

from contracts.workflows import ExecutionStarted
from servicekit.commands import serve_commands
from servicekit.eventstore import StateCache, utcnow
from servicekit.projections import serve_projection
from servicekit.queries import serve_queries
from servicekit.runtime import Runtime, create_app
from workflow_engine.executor import Executor
from workflow_engine.handlers import build_router
from workflow_engine.projections import STATUS_EVENTS, ExecutionsProjection, WorkflowsProjection
from workflow_engine.queries import build_queries
from workflow_engine.settings import WorkflowEngineSettings
from workflow_engine.timers import SERVICE, CarriedTimers, TimerDocuments, TimerLoop

SUMMARY_EVENTS = sorted({ExecutionStarted.type_name, *STATUS_EVENTS})


def build_app(settings: WorkflowEngineSettings, clock: Callable[[], datetime] = utcnow) -> FastAPI:
    async def setup(runtime: Runtime, app: FastAPI) -> None:
        store, db = runtime.store, runtime.db
        workflows = WorkflowsProjection(db["workflows"])
        executions = ExecutionsProjection(db["executions"])
        timers = TimerDocuments(db["timers"])
        carried = CarriedTimers(store)
        for part in (workflows, executions, timers, carried):
            await part.ensure_indexes()
        decided = StateCache()  # the aggregates the handlers decided on; the executor reads their definitions
        carry_after = timedelta(seconds=settings.timer_carry_after_s)
        executor = Executor(
            store,
            runtime.bus,
            timers,
            decided,
            webhook_concurrency=settings.webhook_concurrency,
            webhook_addresses=settings.webhook_addresses,
            carry_after=carry_after,
        )
        serve_commands(
            runtime.bus,
            SERVICE,
            build_router(clock, decided, carry_after=carry_after, addresses=settings.webhook_addresses),
            store,
            runtime.policy,
        )
        serve_projection(runtime.bus, SERVICE, workflows, store, runtime.policy)
        serve_projection(runtime.bus, SERVICE, executions, store, runtime.policy, types=SUMMARY_EVENTS)
        if runtime.relay is None:
            raise RuntimeError("the workflow engine needs its event store and relay")
        runtime.relay.add_reactor(executor.react, executor.give_up)
        serve_queries(runtime.bus, SERVICE, build_queries(store, workflows, executions))
        loop = TimerLoop(timers, carried, runtime.bus, clock, settings.timer_poll_s, executions)
        runtime.on_start(loop.start)
        runtime.on_stop(loop.stop)
        runtime.on_stop(executor.stop)

    return create_app(settings, setup, title="workflow-engine", event_store=True)
