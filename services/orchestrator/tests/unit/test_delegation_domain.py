"""The delegation aggregate, pure: the chain's loop and depth checks, the refusals of a retired, paused or unknown
target, routing by capability and load (never an agent at its limit, never one of the chain), an idempotent
repeat, and the execution's events noted in any order and any number of times."""

from datetime import UTC, datetime
from functools import reduce
from typing import Any

import pytest

from contracts import ErrorCode, Event
from contracts.agents import AgentSpec, AgentState
from contracts.delegations import (
    Delegate,
    DelegationFailed,
    DelegationRequest,
    DelegationRequested,
    DelegationStatus,
    DelegationSucceeded,
    NoteDelegationOutcome,
)
from contracts.errors import DomainError
from contracts.workflows import (
    AgentTask,
    ExecuteWorkflow,
    ExecutionCompleted,
    ExecutionFailed,
    Origin,
    StepFailed,
    StepScheduled,
    StepSucceeded,
)
from orchestrator.delegating import delegation_request
from orchestrator.domain.delegation import (
    STEP_ID,
    Delegation,
    Target,
    chain_of,
    decide_note,
    decide_request,
    delegation_spec,
    evolve,
    execution_id,
    named,
    parse_execution_id,
    routed,
)
from orchestrator.domain.routing import Candidate

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
MAX_DEPTH = 3


def delegate(delegation_id: str = "d1", **request: Any) -> Delegate:
    fields: dict[str, Any] = {"task": "Write the proposal", **request}
    if not {"agent_id", "capability", "role"} & set(fields):
        fields["agent_id"] = "b"
    return Delegate(delegation_id=delegation_id, request=DelegationRequest.model_validate(fields))


def agent(agent_id: str) -> Target:
    return named(agent_id, known=True, retired=False, paused=False)


def requested(delegation_id: str, target: str, chain: list[str]) -> Delegation:
    events = decide_request(Delegation(), delegate(delegation_id, agent_id=target), chain, agent(target), 9, NOW)
    return reduce(evolve, events, Delegation())


def refused(command: Delegate, chain: list[str], target: Target, max_depth: int = MAX_DEPTH) -> DomainError:
    with pytest.raises(DomainError) as caught:
        decide_request(Delegation(), command, chain, target, max_depth, NOW)
    return caught.value


def test_a_delegation_to_a_named_agent_is_requested_with_its_chain_depth_and_execution() -> None:
    command = delegate(agent_id="b", from_agent_id="a", deadline_s=60)
    [event] = decide_request(Delegation(), command, ["a"], agent("b"), MAX_DEPTH, NOW)
    assert isinstance(event, DelegationRequested)
    assert (event.agent_id, event.chain, event.depth, event.routed) == ("b", ["a"], 2, False)
    assert event.execution_id == "dg-d1"
    assert event.deadline_at == "2026-12-02T12:01:00+00:00"
    state = evolve(Delegation(), event)
    assert state.status is DelegationStatus.REQUESTED


def test_the_chain_continues_from_the_parent_delegation() -> None:
    parent = requested("d1", "b", ["a"])  # a delegated to b
    assert chain_of(parent, "b") == ["a", "b"]  # b, at work on d1, delegates on
    assert chain_of(parent, None) == ["a", "b"]
    assert chain_of(None, "a") == ["a"]
    assert chain_of(None, None) == []  # a person delegates


def test_a_loop_a_to_b_to_a_is_refused_naming_the_chain() -> None:
    parent = requested("d1", "b", ["a"])
    chain = chain_of(parent, "b")
    error = refused(delegate("d2", agent_id="a", from_agent_id="b", parent_delegation_id="d1"), chain, agent("a"))
    assert error.code is ErrorCode.DELEGATION_LOOP
    assert "a -> b -> a" in str(error)
    assert error.details == [{"chain": ["a", "b"], "target": "a"}]


def test_an_agent_delegating_to_itself_is_refused() -> None:
    error = refused(delegate(agent_id="a", from_agent_id="a"), chain_of(None, "a"), agent("a"))
    assert error.code is ErrorCode.DELEGATION_LOOP
    assert "a -> a" in str(error)


def test_a_chain_at_the_depth_limit_is_refused() -> None:
    chain = ["a", "b", "c"]
    error = refused(delegate(agent_id="d", from_agent_id="c"), chain, agent("d"))
    assert error.code is ErrorCode.DELEGATION_TOO_DEEP
    [event] = decide_request(Delegation(), delegate(agent_id="d"), chain[:2], agent("d"), MAX_DEPTH, NOW)
    assert isinstance(event, DelegationRequested)
    assert event.depth == MAX_DEPTH  # the chain holds max_depth agents with its target


def test_a_retired_paused_or_unknown_target_is_refused_with_its_code() -> None:
    retired = named("b", known=True, retired=True, paused=False)
    assert refused(delegate(), [], retired).code is ErrorCode.AGENT_RETIRED
    assert refused(delegate(), [], named("b", known=True, retired=False, paused=True)).code is ErrorCode.NO_AGENT
    assert refused(delegate(), [], named("b", known=False, retired=False, paused=False)).code is (
        ErrorCode.AGENT_NOT_FOUND
    )


def test_a_repeat_of_the_same_delegation_changes_nothing() -> None:
    state = requested("d1", "b", [])
    assert decide_request(state, delegate("d1"), [], agent("b"), MAX_DEPTH, NOW) == []
    # even when the target would now be refused: the delegation stands as it was decided
    retired = named("b", known=True, retired=True, paused=False)
    assert decide_request(state, delegate("d1"), ["b"], retired, MAX_DEPTH, NOW) == []


# Routing by capability and load -----------------------------------------------------------------------------------


def candidate(agent_id: str, capabilities: list[str], in_flight: int = 0, limit: int = 2, **spec: Any) -> Candidate:
    fields = {"name": agent_id, "role": "writer", "capabilities": capabilities, "concurrency_limit": limit, **spec}
    return Candidate(agent_id, AgentSpec.model_validate(fields), 1, AgentState.ACTIVE, False, in_flight)


def test_routing_picks_the_least_loaded_capable_free_agent_and_never_one_at_its_limit() -> None:
    agents = [
        candidate("busy", ["proposals"], in_flight=2),  # at its limit
        candidate("loaded", ["proposals"], in_flight=1),
        candidate("idle", ["proposals"], in_flight=0),
        candidate("other", ["invoices"]),
    ]
    target = routed(agents, "proposals", None, [], online=True)
    assert (target.agent_id, target.routed) == ("idle", True)
    assert routed(agents[:2], "proposals", None, [], online=True).agent_id == "loaded"
    [event] = decide_request(Delegation(), delegate(capability="proposals"), [], target, MAX_DEPTH, NOW)
    assert isinstance(event, DelegationRequested)
    assert (event.agent_id, event.routed) == ("idle", True)


def test_routing_never_chooses_an_agent_of_the_chain() -> None:
    agents = [candidate("a", ["proposals"]), candidate("b", ["proposals"], in_flight=1)]
    assert routed(agents, "proposals", None, ["a"], online=True).agent_id == "b"
    only_the_chain = routed(agents, "proposals", None, ["a", "b"], online=True)
    error = refused(delegate(capability="proposals"), ["a", "b"], only_the_chain)
    assert error.code is ErrorCode.DELEGATION_LOOP


def test_routing_with_every_capable_agent_busy_is_refused_as_busy() -> None:
    agents = [candidate("a", ["proposals"], in_flight=2), candidate("p", ["proposals"])]
    paused = Candidate("p", agents[1].spec, 1, AgentState.PAUSED, False, 0)
    target = routed([agents[0], paused], "proposals", None, [], online=True)
    assert target.agent_id is None
    error = refused(delegate(capability="proposals"), [], target)
    assert error.code is ErrorCode.NO_AGENT
    assert error.details == [{"reason": "busy", "agents": ["a", "p"]}]
    offline = routed([candidate("a", ["proposals"])], "proposals", None, [], online=False)
    assert refused(delegate(capability="proposals"), [], offline).details[0]["reason"] == "busy"


def test_routing_with_no_capable_agent_is_no_agent() -> None:
    target = routed([candidate("a", ["invoices"])], "proposals", None, [], online=True)
    error = refused(delegate(capability="proposals"), [], target)
    assert error.code is ErrorCode.NO_AGENT
    assert "capability 'proposals'" in str(error)
    assert routed([candidate("a", [])], None, "writer", [], online=True).agent_id == "a"  # by role


# The execution and its events -------------------------------------------------------------------------------------


def note(state: Delegation, event_type: str, **data: Any) -> tuple[Delegation, list[Event]]:
    command = NoteDelegationOutcome(delegation_id="d1", execution_id="dg-d1", event_type=event_type, data=data)
    events = decide_note(state, command, NOW)
    return reduce(evolve, events, state), events


def test_the_execution_id_parses_back_to_the_delegation() -> None:
    assert parse_execution_id(execution_id("dg_abc")) == "dg_abc"
    assert parse_execution_id("tr-run_1-plan") is None
    assert parse_execution_id("dg-") is None


def test_the_step_runs_to_success_and_a_repeat_or_a_late_event_changes_nothing() -> None:
    state, events = note(requested("d1", "b", []), StepScheduled.type_name, step_id=STEP_ID, attempt=1)
    assert state.status is DelegationStatus.RUNNING
    assert note(state, StepScheduled.type_name, step_id=STEP_ID, attempt=1)[1] == []
    state, events = note(state, StepSucceeded.type_name, step_id=STEP_ID, attempt=1, output={"text": "done"})
    assert events == [DelegationSucceeded(output={"text": "done"}, at=NOW.isoformat())]
    assert (state.status, state.output) == (DelegationStatus.SUCCEEDED, {"text": "done"})
    assert note(state, ExecutionCompleted.type_name, output={STEP_ID: {"text": "done"}})[1] == []


def test_the_executions_end_counts_when_the_steps_own_event_comes_later() -> None:
    state, _ = note(requested("d1", "b", []), ExecutionCompleted.type_name, output={STEP_ID: {"text": "x"}})
    assert (state.status, state.output) == (DelegationStatus.SUCCEEDED, {"text": "x"})


def test_a_failed_attempt_that_is_retried_does_not_end_it_the_last_one_does() -> None:
    state = requested("d1", "b", [])
    retried = {"step_id": STEP_ID, "error": "bad json", "error_kind": "invalid_output"}
    assert note(state, StepFailed.type_name, attempt=1, **retried)[1] == []
    state, events = note(state, StepFailed.type_name, attempt=2, **retried)
    assert events == [DelegationFailed(error="bad json", error_kind="invalid_output", at=NOW.isoformat())]
    timeout = {"step_id": STEP_ID, "error": "too slow", "error_kind": "timeout"}
    state, _ = note(requested("d1", "b", []), StepFailed.type_name, attempt=1, **timeout)
    assert (state.status, state.error_kind) == (DelegationStatus.FAILED, "timeout")  # the deadline is not retried
    state, _ = note(requested("d1", "b", []), ExecutionFailed.type_name, error="over", error_kind="budget_exceeded")
    assert (state.status, state.error, state.error_kind) == (DelegationStatus.FAILED, "over", "budget_exceeded")


def test_the_execution_is_one_step_for_the_agent_with_the_task_deadline_and_schema() -> None:
    schema = {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}
    command = delegate(agent_id="b", deadline_s=45, output_schema=schema, input={"lead": "Initech"})
    [event] = decide_request(Delegation(), command, [], agent("b"), MAX_DEPTH, NOW)
    assert isinstance(event, DelegationRequested)
    spec = delegation_spec(event)
    [step] = spec.steps
    assert step.kind == "agent"
    assert (step.agent_id, step.instructions, step.timeout_s) == ("b", "Write the proposal", 45.0)
    assert step.output_schema == schema
    assert "timeout" not in step.retry.retry_on
    ExecuteWorkflow(workflow_id="delegation", execution_id=event.execution_id, input=event.request.input, spec=spec)


def test_an_agent_at_work_on_a_delegation_delegates_with_it_as_the_parent() -> None:
    fields: dict[str, Any] = {
        "key": "k",
        "workspace_id": "w",
        "execution_id": "dg-d1",
        "step_id": STEP_ID,
        "attempt": 1,
        "agent_id": "b",
        "role": None,
        "capability": None,
        "instructions": "",
        "input": {},
        "deadline": NOW.isoformat(),
    }
    task = AgentTask(**fields, origin=Origin(kind="delegation", id="d1"))
    request = delegation_request(task, "b", task="Check the figures", capability="finance")
    assert (request.from_agent_id, request.parent_delegation_id) == ("b", "d1")
    plain = delegation_request(AgentTask(**fields), "b", task="Check", agent_id="c")
    assert (plain.from_agent_id, plain.parent_delegation_id) == ("b", None)
