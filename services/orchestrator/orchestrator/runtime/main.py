"""Composition root of the agent runtime: a process of its own (``python -m orchestrator.runtime``), scaled by
replicas that share the TASKS consumer, since model calls, not CPU, bound it."""

from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from uuid import uuid4

from fastapi import FastAPI

from orchestrator.projections import AgentsProjection, WorkspaceBudgetsProjection
from orchestrator.providers import Providers
from orchestrator.runtime.budgets import Budgets
from orchestrator.runtime.directory import Directory
from orchestrator.runtime.ledger import Attempts, UsageLedger
from orchestrator.runtime.slots import Slots
from orchestrator.runtime.worker import TaskWorker
from orchestrator.runtime.workers import Workers
from orchestrator.settings import RuntimeSettings
from servicekit.eventstore import utcnow
from servicekit.loops import Every
from servicekit.queries import QueryRouter, serve_queries
from servicekit.runtime import Runtime, create_app

SERVICE = "orchestrator"  # the runtime's consumer and database are the orchestrator's
SWEEP_S = 30.0


def build_app(settings: RuntimeSettings, clock: Callable[[], datetime] = utcnow) -> FastAPI:
    async def setup(runtime: Runtime, app: FastAPI) -> None:
        db = runtime.db
        worker_id = f"{settings.service_name}-{uuid4().hex[:12]}"
        slots, budgets, usage = (
            Slots(db["slots"], settings.slot_lease_s),
            Budgets(db["budgets"]),
            UsageLedger(db["usage"]),
        )
        for part in (slots, budgets, usage):
            await part.ensure_indexes()
        providers = Providers(
            openai_api_key=settings.openai_api_key,
            openai_base_url=settings.openai_base_url,
            openai_model=settings.openai_model,
            openai_max_retries=settings.openai_max_retries,
            openai_max_tokens_param=settings.openai_max_tokens_param,
            openai_response_format=settings.openai_response_format,
        )
        directory = Directory(AgentsProjection(db["agents"]), WorkspaceBudgetsProjection(db["workspace_budgets"]))
        await directory.watch(runtime.bus)
        worker = TaskWorker(
            bus=runtime.bus,
            directory=directory,
            slots=slots,
            budgets=budgets,
            attempts=Attempts(db["attempts"]),
            usage=usage,
            providers=providers,
            settings=settings,
            worker_id=worker_id,
            clock=clock,
        )
        subjects = runtime.bus.subjects
        runtime.bus.consume(
            subject=f"{subjects.env}.task.>",
            stream=subjects.tasks_stream,
            durable=subjects.durable(SERVICE, "tasks"),
            handler=worker.handle,
            policy=replace(runtime.policy, max_deliver=settings.task_max_deliver, max_workers=settings.task_workers),
            on_give_up=worker.give_up,
        )
        serve_queries(runtime.bus, settings.service_name, QueryRouter(), workers=4)  # it answers the gateway's pings
        workers = Workers(db["workers"])
        heartbeat = Every(settings.heartbeat_s, lambda: workers.beat(worker_id, clock()), "runtime heartbeat")
        sweep = Every(SWEEP_S, lambda: budgets.sweep(clock()), "budget sweep")
        await workers.beat(worker_id, clock())
        for loop in (heartbeat, sweep):
            runtime.on_start(loop.start)
            runtime.on_stop(loop.stop)
        runtime.on_stop(providers.close)
        runtime.on_stop(lambda: workers.gone(worker_id))

    return create_app(settings, setup, title="agent-runtime")
