"""Workflow definitions, executions, approvals, live events (SSE) and templates."""

import logging
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from contracts import OutcomeStatus
from contracts.agents import AgentSpec, ListAgents, StaffAgents, StaffNeed, can_take
from contracts.budgets import Budget
from contracts.messages import Boolean, Title
from contracts.public_events import describe, public_event
from contracts.workflows import (
    EXECUTION_AGGREGATE,
    EXECUTION_ENDS,
    AgentStep,
    ArchiveWorkflow,
    CancelExecution,
    CreateWorkflow,
    DecideApproval,
    ExecuteWorkflow,
    ExecutionStatus,
    GetExecution,
    GetWorkflow,
    ListExecutions,
    ListWorkflows,
    ListWorkflowTemplates,
    Origin,
    PauseExecution,
    ResumeExecution,
    RetryExecution,
    StepId,
    UpdateWorkflow,
    WorkflowSpec,
)
from gateway.body import JsonBodyRoute
from gateway.deps import BusDep, CurrentPrincipal, Queries
from gateway.errors import ApiError
from gateway.routes.common import PENDING, CommandResponse, ResourceId, Send, segment
from gateway.sse import LastEventId, event_stream

log = logging.getLogger(__name__)
router = APIRouter(tags=["workflows"], route_class=JsonBodyRoute)
Limit = Annotated[int, Query(ge=1, le=500)]
KEEPALIVE_S = 15.0
WORKFLOW_ID = segment("workflow_id", not_one_of=["executions", "dry-runs"])


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class WorkflowFromSpec(Model):
    """A workflow from a full ``spec`` (optionally under another ``name``)."""

    spec: WorkflowSpec
    name: Title | None = None


class WorkflowFromTemplate(Model):
    """A workflow from the slug of a ``template`` (optionally under a new ``name``)."""

    template: str = Field(min_length=1, max_length=100)
    name: Title | None = None
    staff: Boolean = Field(default=True, description="Create the agents its steps need that the workspace lacks.")


WorkflowCreate = WorkflowFromSpec | WorkflowFromTemplate
"""Exactly one of ``spec`` and ``template``: each shape forbids the other's field."""


class ExecutionRequest(Model):
    input: dict[str, Any] = Field(default_factory=dict)
    budget: Budget | None = Field(default=None, description="A hard limit on the execution's model usage.")


class Cancellation(Model):
    reason: str = Field(default="", max_length=2000)


class ApprovalDecision(Model):
    approved: Boolean
    comment: str = Field(default="", max_length=5000)


class Items(BaseModel):
    items: list[dict[str, Any]]


# Executions (registered before /workflows/{workflow_id}, which would otherwise match "executions") -----------


@router.get("/workflows/executions", response_model=Items, summary="List executions by workflow and status")
async def list_executions(
    principal: CurrentPrincipal,
    queries: Queries,
    workflow_id: str | None = Query(default=None, pattern=r"^[A-Za-z0-9_-]{1,64}$"),
    status: ExecutionStatus | None = None,
    limit: Limit = 100,
) -> Items:
    items = await queries.ask(principal, ListExecutions(workflow_id=workflow_id, status=status, limit=limit))
    return Items(items=items)


@router.get(
    "/workflows/executions/{execution_id}",
    summary="An execution with every step's status, attempts, input, output, error and timings",
)
async def get_execution(execution_id: ResourceId, principal: CurrentPrincipal, queries: Queries) -> Any:
    return await queries.ask(principal, GetExecution(execution_id=execution_id))


@router.post(
    "/workflows/executions/{execution_id}/pause", response_model=CommandResponse, summary="Pause", responses=PENDING
)
async def pause(execution_id: ResourceId, send: Send) -> CommandResponse:
    command = PauseExecution(execution_id=execution_id)
    return await send(command)


@router.post(
    "/workflows/executions/{execution_id}/resume", response_model=CommandResponse, summary="Resume", responses=PENDING
)
async def resume(execution_id: ResourceId, send: Send) -> CommandResponse:
    command = ResumeExecution(execution_id=execution_id)
    return await send(command)


@router.post(
    "/workflows/executions/{execution_id}/cancel", response_model=CommandResponse, summary="Cancel", responses=PENDING
)
async def cancel(execution_id: ResourceId, send: Send, body: Cancellation | None = None) -> CommandResponse:
    command = CancelExecution(execution_id=execution_id, reason=body.reason if body else "")
    return await send(command)


@router.post(
    "/workflows/executions/{execution_id}/retry",
    response_model=CommandResponse,
    summary="Retry from the failed step",
    responses=PENDING,
)
async def retry(execution_id: ResourceId, send: Send) -> CommandResponse:
    command = RetryExecution(execution_id=execution_id)
    return await send(command)


@router.post(
    "/workflows/executions/{execution_id}/approvals/{step_id}",
    response_model=CommandResponse,
    summary="Approve or reject a waiting approval step",
    responses=PENDING,
)
async def decide_approval(
    execution_id: ResourceId, step_id: StepId, decision: ApprovalDecision, send: Send
) -> CommandResponse:
    command = DecideApproval(
        execution_id=execution_id, step_id=step_id, approved=decision.approved, comment=decision.comment
    )
    return await send(command)


@router.get(
    "/workflows/executions/{execution_id}/events",
    summary="The execution's events as Server-Sent Events, live (Last-Event-ID resumes after that version)",
    description="The execution's public events, from its start (or after `Last-Event-ID`), then live until it ends. "
    "Each is one Server-Sent Event: `id` is the event's version (increasing, not consecutive), `event` its public "
    "type and `data` a JSON object `{version, type, data}` whose `data` has the type's fields (JSON Schemas in "
    "docs/schemas, `public.<type>.json`). The types:\n\n" + describe(),
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def execution_events(
    execution_id: ResourceId,
    request: Request,
    principal: CurrentPrincipal,
    queries: Queries,
    bus: BusDep,
    last_event_id: LastEventId = None,
) -> StreamingResponse:
    await queries.ask(principal, GetExecution(execution_id=execution_id))  # 404 unless it is the caller's
    subject = bus.subjects.event(EXECUTION_AGGREGATE, principal.workspace_id, execution_id, "*")
    return await event_stream(request, bus, subject, last_event_id, public_event, EXECUTION_ENDS)


# Definitions --------------------------------------------------------------------------------------------------


class StaffedAgent(BaseModel):
    agent_id: str
    role: str


class WorkflowCreated(CommandResponse):
    """The workflow's command answer, with the agents created for its steps (a template's, unless ``staff`` is
    false) and the agent steps that no agent of the workspace can take yet (they would fail with ``no_agent``)."""

    staffed_agents: list[StaffedAgent] = Field(default_factory=list)
    unstaffed_steps: list[str] = Field(default_factory=list)


async def _staffing(
    body: WorkflowCreate, send: Send, principal: CurrentPrincipal, queries: Queries
) -> tuple[list[StaffedAgent], list[str]]:
    """The agents staffing created for a template's steps, and the agent steps no agent can take yet."""
    if isinstance(body, WorkflowFromSpec):
        spec, template = body.spec, None
    else:
        templates = await queries.ask(principal, ListWorkflowTemplates())
        found = next((t for t in templates if t["slug"] == body.template), None)
        if found is None:
            return [], []
        spec, template = WorkflowSpec.model_validate(found["spec"]), body
    steps = [step for step in spec.steps if isinstance(step, AgentStep)]
    staffed: list[StaffedAgent] = []
    covered: set[str] = set()  # steps whose agents staffing created or found (the read model may not show them yet)
    if template is not None and template.staff:
        routed = [s for s in steps if not s.agent_id]
        needs = {(s.role, s.capability): StaffNeed(role=s.role, capability=s.capability) for s in routed}
        status = await send.follow_up(StaffAgents(needs=list(needs.values())), "staff")
        if status.outcome is not None and status.outcome.status is OutcomeStatus.ACCEPTED:
            created = status.outcome.resource_ids
            staffed = [StaffedAgent(agent_id=agent_id, role=role) for agent_id, role in sorted(created.items())]
            covered = {s.id for s in routed}
    views = [v for v in await queries.ask(principal, ListAgents(limit=500)) if not v["retired"]]
    ids = {v["agent_id"] for v in views}
    specs = [AgentSpec(name=v["name"], role=v["role"], capabilities=v["capabilities"]) for v in views]
    unstaffed = [
        s.id
        for s in steps
        if s.id not in covered
        and not (s.agent_id in ids if s.agent_id else any(can_take(a, s.role, s.capability) for a in specs))
    ]
    return staffed, unstaffed


@router.post(
    "/workflows",
    response_model=WorkflowCreated,
    status_code=201,
    summary="Create a workflow from a spec or a template (a template's missing agents are created)",
    responses={202: {"model": WorkflowCreated, "description": "Accepted; poll the command's status link."}},
)
async def create_workflow(
    body: WorkflowCreate, send: Send, principal: CurrentPrincipal, queries: Queries
) -> WorkflowCreated:
    command_id = send.command_id
    workflow_id = f"wf_{command_id[:24]}"
    if isinstance(body, WorkflowFromSpec):
        command = CreateWorkflow(workflow_id=workflow_id, spec=body.spec, name=body.name)
    else:
        command = CreateWorkflow(workflow_id=workflow_id, template=body.template, name=body.name)
    answer = await send(command, created=f"/api/v1/workflows/{workflow_id}")
    try:
        staffed, unstaffed = await _staffing(body, send, principal, queries)
    except ApiError as exc:  # the workflow exists: answer that, and say why the lists are missing
        log.warning("staffing workflow %s failed: %s", workflow_id, exc.detail)
        staffed, unstaffed = [], []
        answer = answer.model_copy(update={"links": {**answer.links, "staffing": "unavailable"}})
    return WorkflowCreated(**answer.model_dump(), staffed_agents=staffed, unstaffed_steps=unstaffed)


@router.get("/workflows", response_model=Items, summary="List workflows")
async def list_workflows(
    principal: CurrentPrincipal, queries: Queries, include_archived: bool = False, limit: Limit = 100
) -> Items:
    items = await queries.ask(principal, ListWorkflows(include_archived=include_archived, limit=limit))
    return Items(items=items)


@router.get(f"/workflows/{WORKFLOW_ID}", summary="A workflow definition (latest version, or ?version=N)")
async def get_workflow(
    workflow_id: ResourceId,
    principal: CurrentPrincipal,
    queries: Queries,
    version: Annotated[int | None, Query(ge=1)] = None,
) -> Any:
    return await queries.ask(principal, GetWorkflow(workflow_id=workflow_id, version=version))


@router.put(
    f"/workflows/{WORKFLOW_ID}",
    response_model=CommandResponse,
    summary="Save a new version (running executions keep theirs)",
    responses=PENDING,
)
async def update_workflow(workflow_id: ResourceId, spec: WorkflowSpec, send: Send) -> CommandResponse:
    command = UpdateWorkflow(workflow_id=workflow_id, spec=spec)
    return await send(command)


@router.post(
    f"/workflows/{WORKFLOW_ID}/archive", response_model=CommandResponse, summary="Archive a workflow", responses=PENDING
)
async def archive_workflow(workflow_id: ResourceId, send: Send) -> CommandResponse:
    command = ArchiveWorkflow(workflow_id=workflow_id)
    return await send(command)


@router.post(
    f"/workflows/{WORKFLOW_ID}/executions",
    response_model=CommandResponse,
    status_code=201,
    summary="Execute a workflow with an input",
    responses=PENDING,
)
async def execute_workflow(
    workflow_id: ResourceId, send: Send, body: ExecutionRequest | None = None
) -> CommandResponse:
    command_id = send.command_id
    execution_id = f"ex_{command_id[:24]}"
    command = ExecuteWorkflow(
        workflow_id=workflow_id,
        execution_id=execution_id,
        input=body.input if body else {},
        budget=body.budget if body else None,
    )
    return await send(command, created=f"/api/v1/workflows/executions/{execution_id}")


class DryRun(Model):
    spec: WorkflowSpec
    input: dict[str, Any] = Field(default_factory=dict, description="A sample input: the branch it takes is shown.")


@router.post(
    "/workflows/dry-runs",
    response_model=CommandResponse,
    status_code=201,
    summary="Try a definition on a sample input without saving it: the engine validates it, its agent steps run on "
    "the deterministic local provider and its webhooks are not called; follow the execution to see the path",
    responses=PENDING,
)
async def dry_run(body: DryRun, send: Send) -> CommandResponse:
    execution_id = f"dr_{send.command_id[:24]}"
    command = ExecuteWorkflow(
        workflow_id="dry-run",
        execution_id=execution_id,
        input=body.input,
        spec=body.spec,
        origin=Origin(kind="dry_run", id=execution_id),
    )
    return await send(command, created=f"/api/v1/workflows/executions/{execution_id}")


@router.get("/workflow-templates", response_model=Items, summary="The workflow templates that ship with the platform")
async def list_templates(principal: CurrentPrincipal, queries: Queries) -> Items:
    return Items(items=await queries.ask(principal, ListWorkflowTemplates()))
