"""The delegation aggregate: state, decide and evolve. Pure: the chain, the target (the named agent as its stream
says, or the choice routing made among the workspace's agents), the depth limit and the clock are passed in.

A delegation is requested (with the agent it goes to, fixed at once), runs as one agent step of the workflow engine
(``dg-<delegation id>``) and ends succeeded or failed as the orchestrator follows that execution's events.

The rules, in the order they are checked:

- a named agent that is not an agent of the workspace: ``agent_not_found``;
- a target that is the delegating agent or already in the chain (A -> B -> A): ``delegation_loop``, naming the
  chain; routed by capability/role, the agents of the chain are never chosen, and when every capable agent is in it
  the request is the same loop;
- a chain already holding ``max_depth`` agents: ``delegation_too_deep``;
- a retired named agent: ``agent_retired``; a paused one: ``no_agent``;
- routed, no agent of the workspace with the capability/role: ``no_agent``;
- routed, capable agents outside the chain but none free now (each at its concurrency limit, paused, or no runtime
  worker alive): ``no_agent`` too, saying they are busy, with ``details`` ``[{"reason": "busy", "agents": [...]}]``.
  A delegation is refused rather than queued behind a busy agent: routing never names an agent at its limit, and
  the delegator (often an agent in the middle of its own step) learns at once that it should do the work itself or
  try later, instead of spending its deadline waiting. A delegation to a *named* agent that is busy is taken: it
  waits for that agent's slot, within its deadline, as any step for a named agent does.
"""

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from contracts import ErrorCode, Event
from contracts.delegations import (
    DELEGATION_ENDS,
    Delegate,
    DelegationFailed,
    DelegationRequested,
    DelegationStarted,
    DelegationStatus,
    DelegationSucceeded,
    NoteDelegationOutcome,
)
from contracts.errors import DomainError
from contracts.workflows import (
    AgentStep,
    ExecutionCancelled,
    ExecutionCompleted,
    ExecutionFailed,
    RetryPolicy,
    StepFailed,
    StepScheduled,
    StepSucceeded,
    WorkflowSpec,
)
from orchestrator.domain.agent import AgentNotFound, AgentRetiredError
from orchestrator.domain.routing import Candidate, Verdict, eligible, route

AGGREGATE = "delegation"
EXECUTION_PREFIX = "dg-"
STEP_ID = "work"
RETRY = RetryPolicy(max_attempts=2, backoff_s=0.5, retry_on=["invalid_output", "model_error", "error"])
"""A second attempt for an answer that could not be used; never after a timeout (the deadline is the caller's)."""


class DelegationNotFound(DomainError):
    code = ErrorCode.DELEGATION_NOT_FOUND


class DelegationLoop(DomainError):
    code = ErrorCode.DELEGATION_LOOP


class DelegationTooDeep(DomainError):
    code = ErrorCode.DELEGATION_TOO_DEEP


class NoAgent(DomainError):
    code = ErrorCode.NO_AGENT


def execution_id(delegation_id: str) -> str:
    return f"{EXECUTION_PREFIX}{delegation_id}"


def parse_execution_id(value: str) -> str | None:
    """The delegation id of a delegation's execution; None for any other id."""
    delegation_id = value.removeprefix(EXECUTION_PREFIX)
    return delegation_id if value.startswith(EXECUTION_PREFIX) and delegation_id and "-" not in delegation_id else None


@dataclass(frozen=True, slots=True)
class Delegation:
    requested: DelegationRequested | None = None
    status: DelegationStatus = DelegationStatus.REQUESTED
    attempt: int = 0
    output: Any = None
    error: str | None = None
    error_kind: str | None = None

    @property
    def exists(self) -> bool:
        return self.requested is not None

    @property
    def over(self) -> bool:
        return self.status in DELEGATION_ENDS


def evolve(state: Delegation, event: Event) -> Delegation:
    match event:
        case DelegationRequested():
            return Delegation(requested=event)
        case DelegationStarted(attempt=attempt):
            return Delegation(state.requested, DelegationStatus.RUNNING, attempt)
        case DelegationSucceeded(output=output):
            return Delegation(state.requested, DelegationStatus.SUCCEEDED, state.attempt, output)
        case DelegationFailed(error=error, error_kind=kind):
            return Delegation(state.requested, DelegationStatus.FAILED, state.attempt, None, error, kind)
    return state


# The chain and the target -----------------------------------------------------------------------------------------


def chain_of(parent: Delegation | None, from_agent_id: str | None) -> list[str]:
    """The agents that delegated before the target, the first one first: the parent delegation's chain and its
    agent (who is delegating now), then ``from_agent_id`` if that is someone else."""
    chain: list[str] = []
    if parent is not None and parent.requested is not None:
        chain = [*parent.requested.chain, parent.requested.agent_id]
    if from_agent_id is not None and (not chain or chain[-1] != from_agent_id):
        chain.append(from_agent_id)
    return chain


@dataclass(frozen=True, slots=True)
class Target:
    """Where a delegation would go, as the handler found it."""

    wanted: str
    """What was asked for, for the messages: ``agent X`` or ``capability 'c'``."""
    agent_id: str | None
    """The named agent, or the one routing chose; None when routing found none free."""
    routed: bool = False
    known: bool = True
    retired: bool = False
    paused: bool = False
    capable: tuple[str, ...] = ()
    """Routed: the agents of the workspace (not retired) that could take it, those of the chain too."""
    busy: tuple[str, ...] = ()
    """Routed: capable agents outside the chain that are not free now."""


def named(agent_id: str, *, known: bool, retired: bool, paused: bool) -> Target:
    return Target(f"agent {agent_id}", agent_id, known=known, retired=retired, paused=paused)


def routed(
    candidates: list[Candidate], capability: str | None, role: str | None, chain: list[str], *, online: bool
) -> Target:
    """The least loaded free agent that has the capability/role and is not in the chain (see ``routing.route`` for
    the ranking); never one at its concurrency limit, paused, or when no runtime worker is alive."""
    wanted = " and ".join(f"{what} {value!r}" for what, value in (("capability", capability), ("role", role)) if value)
    able = [c for c in candidates if eligible(c, None, role, capability)]
    outside = [c for c in able if c.agent_id not in chain]
    verdict = route(outside, None, role, capability)
    chosen = verdict.choices[0].agent_id if online and verdict.verdict is Verdict.ROUTED else None
    busy = tuple(c.agent_id for c in outside) if chosen is None else ()
    return Target(wanted, chosen, routed=True, capable=tuple(c.agent_id for c in able), busy=busy)


# Deciding ---------------------------------------------------------------------------------------------------------


def _loop(chain: list[str], target: str) -> str:
    return " -> ".join([*chain, target])


def decide_request(
    state: Delegation, command: Delegate, chain: list[str], target: Target, max_depth: int, now: datetime
) -> list[Event]:
    if state.exists:
        return []  # the same delegation asked again: it stands as it was decided
    if not target.known:
        raise AgentNotFound(f"agent {target.agent_id} not found")
    details = [{"chain": chain, "target": target.agent_id or target.wanted}]
    if target.routed and target.agent_id is None and target.capable and not target.busy:
        message = f"every agent with {target.wanted} is already in the delegation chain {' -> '.join(chain)}"
        raise DelegationLoop(message, details=details)
    if target.agent_id is not None and target.agent_id in chain:
        message = f"delegating to {target.agent_id} would loop: {_loop(chain, target.agent_id)}"
        raise DelegationLoop(message, details=details)
    if len(chain) >= max_depth:
        message = f"the delegation chain {' -> '.join(chain)} already holds {len(chain)} agents (at most {max_depth})"
        raise DelegationTooDeep(message, details=details)
    if target.retired:
        raise AgentRetiredError(f"agent {target.agent_id} is retired")
    if target.paused:
        raise NoAgent(f"agent {target.agent_id} is paused: it takes no new task")
    if target.agent_id is None:
        if not target.capable:
            raise NoAgent(f"no agent of the workspace has {target.wanted}")
        message = f"every agent with {target.wanted} is busy (at its concurrency limit, paused or offline); try later"
        raise NoAgent(message, details=[{"reason": "busy", "agents": list(target.busy)}])
    request = command.request
    return [
        DelegationRequested(
            delegation_id=command.delegation_id,
            request=request,
            agent_id=target.agent_id,
            routed=target.routed,
            chain=chain,
            depth=len(chain) + 1,
            execution_id=execution_id(command.delegation_id),
            at=now.isoformat(),
            deadline_at=(now + timedelta(seconds=request.deadline_s)).isoformat(),
        )
    ]


def decide_note(state: Delegation, command: NoteDelegationOutcome, now: datetime) -> list[Event]:
    """An event of the delegation's execution: its step's start, its result, or the execution's end (whichever of
    the result and the end comes first ends the delegation; a repeat or a late one changes nothing)."""
    if state.requested is None:
        raise DelegationNotFound(f"delegation {command.delegation_id} not found")
    if parse_execution_id(command.execution_id) != command.delegation_id or state.over:
        return []
    kind, data, at = command.event_type, command.data, now.isoformat()
    attempt = int(data.get("attempt", 0) or 0)
    error = str(data.get("error") or "failed")[:2000]
    error_kind = str(data.get("error_kind") or "error")
    if kind == StepScheduled.type_name:
        return [DelegationStarted(attempt=attempt, at=at)] if attempt > state.attempt else []
    if kind == StepSucceeded.type_name:
        return [DelegationSucceeded(output=data.get("output"), at=at)]
    if kind == ExecutionCompleted.type_name:
        return [DelegationSucceeded(output=(data.get("output") or {}).get(STEP_ID), at=at)]
    if kind == StepFailed.type_name:
        retried = RETRY.retries(error_kind, attempt)  # another attempt follows
        return [] if retried else [DelegationFailed(error=error, error_kind=error_kind, at=at)]
    if kind == ExecutionFailed.type_name:
        return [DelegationFailed(error=error, error_kind=error_kind, at=at)]
    if kind == ExecutionCancelled.type_name:
        reason = str(data.get("reason") or "its execution was cancelled")[:2000]
        return [DelegationFailed(error=reason, error_kind="cancelled", at=at)]
    return []


# The execution ----------------------------------------------------------------------------------------------------


def delegation_spec(requested: DelegationRequested) -> WorkflowSpec:
    """The inline definition the delegation runs as: one step for its agent, the task as its instructions."""
    request = requested.request
    step = AgentStep(
        id=STEP_ID,
        kind="agent",
        name="Delegated task",
        agent_id=requested.agent_id,
        instructions=request.task,
        input={"input": "$input"},
        output_schema=request.output_schema,
        timeout_s=float(request.deadline_s),
        retry=RETRY,
    )
    return WorkflowSpec(name=f"Delegation: {request.task.strip()[:150]}", start=STEP_ID, steps=[step])
