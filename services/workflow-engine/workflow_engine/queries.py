"""Queries: details come from replaying the stream (the truth), lists from the read models."""

from dataclasses import asdict
from typing import Any

from contracts.workflows import GetExecution, GetWorkflow, ListExecutions, ListWorkflows, ListWorkflowTemplates
from servicekit.eventstore import EventStore, load_state
from servicekit.queries import QueryRouter
from workflow_engine.domain import definition, execution
from workflow_engine.handlers import execution_stream, workflow_stream
from workflow_engine.projections import ExecutionsProjection, WorkflowsProjection
from workflow_engine.templates import TEMPLATES


def execution_view(state: execution.Execution) -> dict[str, Any]:
    assert state.spec is not None
    steps = []
    for step in state.spec.steps:
        run = state.steps[step.id]
        details = asdict(run)
        details.pop("budget_from")
        details["attempts"] = [
            {**a, "status": a["status"].value if hasattr(a["status"], "value") else a["status"]}
            for a in details["attempts"]
        ]
        steps.append({"id": step.id, "kind": step.kind, "name": step.name, **details, "status": run.status.value})
    return {
        "execution_id": state.execution_id,
        "workflow_id": state.workflow_id,
        "workflow_version": state.workflow_version,
        "status": state.status.value,
        "input": state.input,
        "output": state.output,
        "error": state.error,
        "failed_step": state.failed_step,
        "started_at": state.started_at,
        "finished_at": state.finished_at,
        "updated_at": state.updated_at,
        "steps": steps,
    }


def build_queries(store: EventStore, workflows: WorkflowsProjection, executions: ExecutionsProjection) -> QueryRouter:
    router = QueryRouter()

    @router.register(GetWorkflow)
    async def get_workflow(query: GetWorkflow, workspace_id: str) -> dict[str, Any]:
        loaded = await load_state(
            store, workflow_stream(workspace_id, query.workflow_id), definition.Workflow(), definition.evolve
        )
        workflow = loaded.state
        version = query.version or workflow.version
        if not workflow.exists or version not in workflow.versions:
            raise definition.WorkflowNotFound(f"workflow {query.workflow_id} (version {version}) not found")
        return {
            "workflow_id": query.workflow_id,
            "version": version,
            "latest_version": workflow.version,
            "archived": workflow.archived,
            "template": workflow.template,
            "spec": workflow.versions[version].model_dump(mode="json"),
        }

    @router.register(ListWorkflows)
    async def list_workflows(query: ListWorkflows, workspace_id: str) -> list[dict[str, Any]]:
        return await workflows.list(workspace_id, query.include_archived, query.limit)

    @router.register(GetExecution)
    async def get_execution(query: GetExecution, workspace_id: str) -> dict[str, Any]:
        loaded = await load_state(
            store, execution_stream(workspace_id, query.execution_id), execution.Execution(), execution.evolve
        )
        if not loaded.state.exists:
            raise execution.ExecutionNotFound(f"execution {query.execution_id} not found")
        return {**execution_view(loaded.state), "version": loaded.version}

    @router.register(ListExecutions)
    async def list_executions(query: ListExecutions, workspace_id: str) -> list[dict[str, Any]]:
        return await executions.list(workspace_id, query.workflow_id, query.status, query.limit)

    @router.register(ListWorkflowTemplates)
    async def list_templates(query: ListWorkflowTemplates, workspace_id: str) -> list[dict[str, Any]]:
        return [t.summary() for t in TEMPLATES.values()]

    return router
