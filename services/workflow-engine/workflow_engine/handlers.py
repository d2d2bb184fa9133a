"""Command handlers of the workflow engine: rebuild the aggregate from its stream, decide, append."""

from collections.abc import Callable
from datetime import datetime

from contracts import Event
from contracts.workflows import (
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
from servicekit.commands import CommandContext, CommandRouter, DomainError
from servicekit.eventstore import StreamRef, load_state
from workflow_engine.domain import definition, execution
from workflow_engine.templates import TEMPLATES

Clock = Callable[[], datetime]


def workflow_stream(workspace_id: str, workflow_id: str) -> StreamRef:
    return StreamRef(workspace_id, definition.AGGREGATE, workflow_id)


def execution_stream(workspace_id: str, execution_id: str) -> StreamRef:
    return StreamRef(workspace_id, execution.AGGREGATE, execution_id)


ExecutionDecider = Callable[[execution.Execution, datetime], list[Event]]


def build_router(clock: Clock) -> CommandRouter:
    router = CommandRouter()

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
        )
        return {"execution_id": execution_id}

    @router.register(CreateWorkflow)
    async def create(command: CreateWorkflow, ctx: CommandContext) -> dict[str, str]:
        specs = {slug: template.spec for slug, template in TEMPLATES.items()}
        return await on_workflow(
            ctx, command.workflow_id, lambda s: definition.decide_create(s, command, specs), new_stream=True
        )

    @router.register(UpdateWorkflow)
    async def update(command: UpdateWorkflow, ctx: CommandContext) -> dict[str, str]:
        return await on_workflow(ctx, command.workflow_id, lambda s: definition.decide_update(s, command))

    @router.register(ArchiveWorkflow)
    async def archive(command: ArchiveWorkflow, ctx: CommandContext) -> dict[str, str]:
        return await on_workflow(ctx, command.workflow_id, lambda s: definition.decide_archive(s, command))

    @router.register(ExecuteWorkflow)
    async def execute(command: ExecuteWorkflow, ctx: CommandContext) -> dict[str, str]:
        loaded = await load_state(
            ctx.store,
            workflow_stream(ctx.workspace_id, command.workflow_id),
            definition.Workflow(),
            definition.evolve,
            ctx.cache,
        )
        workflow = loaded.state
        definition.require_active(workflow, command.workflow_id)

        def decide(state: execution.Execution, now: datetime) -> list[Event]:
            if state.exists:
                raise DomainError(f"execution {command.execution_id} already exists")
            return execution.start(command, workflow.spec, workflow.version, now)

        return await on_execution(ctx, command.execution_id, decide, new_stream=True)

    @router.register(PauseExecution)
    async def pause(command: PauseExecution, ctx: CommandContext) -> dict[str, str]:
        return await on_execution(ctx, command.execution_id, lambda s, now: execution.pause(s, command, now))

    @router.register(ResumeExecution)
    async def resume(command: ResumeExecution, ctx: CommandContext) -> dict[str, str]:
        return await on_execution(ctx, command.execution_id, lambda s, now: execution.resume(s, command, now))

    @router.register(CancelExecution)
    async def cancel(command: CancelExecution, ctx: CommandContext) -> dict[str, str]:
        return await on_execution(ctx, command.execution_id, lambda s, now: execution.cancel(s, command, now))

    @router.register(RetryExecution)
    async def retry(command: RetryExecution, ctx: CommandContext) -> dict[str, str]:
        return await on_execution(ctx, command.execution_id, lambda s, now: execution.retry(s, command, now))

    @router.register(DecideApproval)
    async def approve(command: DecideApproval, ctx: CommandContext) -> dict[str, str]:
        return await on_execution(ctx, command.execution_id, lambda s, now: execution.decide_approval(s, command, now))

    @router.register(RecordTaskResult)
    async def result(command: RecordTaskResult, ctx: CommandContext) -> dict[str, str]:
        return await on_execution(ctx, command.execution_id, lambda s, now: execution.record_result(s, command, now))

    @router.register(FireTimer)
    async def timer(command: FireTimer, ctx: CommandContext) -> dict[str, str]:
        return await on_execution(ctx, command.execution_id, lambda s, now: execution.fire_timer(s, command, now))

    return router
