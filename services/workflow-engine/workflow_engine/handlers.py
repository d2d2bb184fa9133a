"""Command handlers of the workflow engine: rebuild the aggregate from its stream, decide, append."""

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TypeVar

from contracts import Event
from contracts.errors import DomainError
from contracts.workflows import (
    AbandonStep,
    ArchiveWorkflow,
    CancelExecution,
    CreateWorkflow,
    DecideApproval,
    ExecuteWorkflow,
    FireTimer,
    PauseExecution,
    RecordTaskResult,
    ResumeExecution,
    RetryExecution,
    UpdateWorkflow,
)
from servicekit.commands import CommandContext, CommandRouter
from servicekit.eventstore import StateCache, StreamRef, load_state
from workflow_engine.domain import definition, execution
from workflow_engine.domain.addresses import DEFAULT_POLICY, AddressPolicy
from workflow_engine.templates import TEMPLATES
from workflow_engine.timers import CARRY_AFTER, carried_timers, carry

Clock = Callable[[], datetime]
W = TypeVar("W", UpdateWorkflow, ArchiveWorkflow)
E = TypeVar(
    "E",
    AbandonStep,
    PauseExecution,
    ResumeExecution,
    CancelExecution,
    RetryExecution,
    DecideApproval,
    RecordTaskResult,
    FireTimer,
)


def workflow_stream(workspace_id: str, workflow_id: str) -> StreamRef:
    return StreamRef(workspace_id, definition.AGGREGATE, workflow_id)


def execution_stream(workspace_id: str, execution_id: str) -> StreamRef:
    return StreamRef(workspace_id, execution.AGGREGATE, execution_id)


ExecutionDecider = Callable[[execution.Execution, datetime], list[Event]]


def build_router(
    clock: Clock,
    cache: StateCache | None = None,
    *,
    carry_after: timedelta = CARRY_AFTER,
    addresses: AddressPolicy = DEFAULT_POLICY,
) -> CommandRouter:
    router = CommandRouter(cache)

    async def on_workflow(
        ctx: CommandContext,
        workflow_id: str,
        decide: Callable[[definition.Workflow], list[Event]],
        *,
        new_stream: bool = False,
    ) -> dict[str, str]:
        stream = workflow_stream(ctx.workspace_id, workflow_id)
        await ctx.execute(stream, definition.Workflow(), definition.evolve, decide, new_stream=new_stream)
        return {"workflow_id": workflow_id}

    async def on_execution(
        ctx: CommandContext, execution_id: str, decide: ExecutionDecider, *, new_stream: bool = False
    ) -> dict[str, str]:
        now = clock()
        await ctx.execute(
            execution_stream(ctx.workspace_id, execution_id),
            execution.Execution(),
            execution.evolve,
            lambda state: decide(state, now),
            new_stream=new_stream,
            carried=lambda state, events: carry(
                carried_timers(ctx.workspace_id, execution_id, state.spec, events, now, carry_after)
            ),
        )
        return {"execution_id": execution_id}

    @router.register(CreateWorkflow)
    async def create(command: CreateWorkflow, ctx: CommandContext) -> dict[str, str]:
        specs = {slug: template.spec for slug, template in TEMPLATES.items()}
        return await on_workflow(
            ctx, command.workflow_id, lambda s: definition.decide_create(s, command, specs, addresses), new_stream=True
        )

    def workflow_change(command_type: type[W], decide: Callable[[definition.Workflow, W], list[Event]]) -> None:
        @router.register(command_type)
        async def handle(command: W, ctx: CommandContext) -> dict[str, str]:
            return await on_workflow(ctx, command.workflow_id, lambda state: decide(state, command))

    workflow_change(UpdateWorkflow, lambda state, command: definition.decide_update(state, command, addresses))
    workflow_change(ArchiveWorkflow, definition.decide_archive)

    @router.register(ExecuteWorkflow)
    async def execute(command: ExecuteWorkflow, ctx: CommandContext) -> dict[str, str]:
        if command.spec is not None:  # an inline plan (a team run's, a delegation's): checked as a saved one is
            inline = command.spec

            def decide_inline(state: execution.Execution, now: datetime) -> list[Event]:
                if state.exists:
                    raise DomainError(f"execution {command.execution_id} already exists")
                definition.validate(inline, addresses)
                return execution.start(command, inline, 0, now)

            return await on_execution(ctx, command.execution_id, decide_inline, new_stream=True)
        loaded = await load_state(
            ctx.store,
            workflow_stream(ctx.workspace_id, command.workflow_id),
            definition.Workflow(),
            definition.evolve,
            ctx.cache,
        )
        workflow = loaded.state

        def decide(state: execution.Execution, now: datetime) -> list[Event]:
            if state.exists:
                raise DomainError(f"execution {command.execution_id} already exists")
            definition.require_active(workflow, command.workflow_id)  # decided here: a redelivery is not refused
            return execution.start(command, workflow.spec, workflow.version, now)

        return await on_execution(ctx, command.execution_id, decide, new_stream=True)

    def execution_change(
        command_type: type[E], decide: Callable[[execution.Execution, E, datetime], list[Event]]
    ) -> None:
        @router.register(command_type)
        async def handle(command: E, ctx: CommandContext) -> dict[str, str]:
            return await on_execution(ctx, command.execution_id, lambda state, now: decide(state, command, now))

    execution_change(PauseExecution, execution.pause)
    execution_change(ResumeExecution, execution.resume)
    execution_change(CancelExecution, execution.cancel)
    execution_change(RetryExecution, execution.retry)
    execution_change(DecideApproval, execution.decide_approval)
    execution_change(RecordTaskResult, execution.record_result)
    execution_change(FireTimer, execution.fire_timer)
    execution_change(AbandonStep, execution.abandon_step)
    return router
