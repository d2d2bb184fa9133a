"""Delegating from inside a task: what the agent runtime's tools call when an agent hands part of its work on.

The agent at work is the delegator (``from_agent_id``); when its task runs for a delegation, that delegation is the
parent, so the orchestrator continues the parent's chain and refuses a loop or a chain too deep before any model is
called. A refusal is published on the command's outcome subject with its stable code (``delegation_loop``,
``delegation_too_deep``, ``no_agent``...; an agent's accepted commands get no outcome message); the delegation's
progress and result are read with GetDelegation.
"""

from typing import Any

from contracts import Actor
from contracts.budgets import Budget
from contracts.delegations import Delegate, DelegationRequest
from contracts.workflows import AgentTask
from servicekit.bus import Bus
from servicekit.commands import envelope_for, publish_command


def delegation_request(task: AgentTask, agent_id: str, /, **fields: Any) -> DelegationRequest:
    """The request an agent at work on ``task`` makes: ``fields`` are those of DelegationRequest but the chain's."""
    parent = task.origin.id if task.origin is not None and task.origin.kind == "delegation" else None
    return DelegationRequest.model_validate({**fields, "from_agent_id": agent_id, "parent_delegation_id": parent})


async def delegate_from_task(
    bus: Bus,
    task: AgentTask,
    agent_id: str,
    *,
    delegation_id: str,
    command_id: str,
    task_text: str,
    to_agent_id: str | None = None,
    capability: str | None = None,
    role: str | None = None,
    input: dict[str, Any] | None = None,
    budget: Budget | None = None,
    deadline_s: int = 600,
    output_schema: dict[str, Any] | None = None,
    run_id: str | None = None,
) -> Delegate:
    """Publish a Delegate for the agent ``agent_id`` at work on ``task`` (it raises pydantic's ValidationError for a
    request the contract refuses, before anything is sent). ``command_id`` should derive from the task's attempt and
    the call (a tool call's id), so a repeated call delegates once. Returns the command sent."""
    request = delegation_request(
        task,
        agent_id,
        task=task_text,
        input=input or {},
        agent_id=to_agent_id,
        capability=capability,
        role=role,
        budget=budget,
        deadline_s=deadline_s,
        output_schema=output_schema,
        run_id=run_id,
    )
    command = Delegate(delegation_id=delegation_id, request=request)
    envelope = envelope_for(
        command, workspace_id=task.workspace_id, command_id=command_id, actor=Actor(kind="agent", id=agent_id)
    )
    await publish_command(bus, "orchestrator", envelope)
    return command
