"""Workflow definitions: validation of the step graph, and the workflow aggregate. Pure."""

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from contracts import ErrorCode, Event, patterns
from contracts.errors import DomainError
from contracts.workflows import (
    EXPRESSION,
    AgentStep,
    AllOf,
    AnyOf,
    ApprovalStep,
    ArchiveWorkflow,
    Comparison,
    ConditionStep,
    CreateWorkflow,
    DelayStep,
    JoinStep,
    Operator,
    ParallelStep,
    Predicate,
    Step,
    UpdateWorkflow,
    WebhookStep,
    WorkflowArchived,
    WorkflowCreated,
    WorkflowSpec,
    WorkflowUpdated,
)
from workflow_engine.domain.addresses import DEFAULT_POLICY, AddressPolicy
from workflow_engine.domain.expressions import is_expression, referenced_step

AGGREGATE = "workflow"


class InvalidWorkflow(DomainError):
    code = ErrorCode.INVALID_WORKFLOW


class WorkflowNotFound(DomainError):
    code = ErrorCode.WORKFLOW_NOT_FOUND


class WorkflowIsArchived(DomainError):
    code = ErrorCode.WORKFLOW_ARCHIVED


def successors(step: Step) -> list[str]:
    """Every step a step may hand over to."""
    match step:
        case AgentStep(next=n) | JoinStep(next=n) | DelayStep(next=n) | WebhookStep(next=n):
            return [n] if n else []
        case ApprovalStep(next=n, on_reject=r):
            return [s for s in (n, r) if s]
        case ConditionStep(branches=branches, default=d):
            return [b.next for b in branches] + ([d] if d else [])
        case ParallelStep(branches=branches):
            return list(branches)
    return []  # pragma: no cover


def _predicates(predicate: Predicate) -> Iterator[Comparison]:
    match predicate:
        case AllOf(all=items) | AnyOf(any=items):
            for item in items:
                yield from _predicates(item)
        case Comparison():
            yield predicate


def _reachable(graph: dict[str, list[str]], start: str) -> set[str]:
    seen, todo = set[str](), [start]
    while todo:
        node = todo.pop()
        if node not in seen:
            seen.add(node)
            todo.extend(graph.get(node, []))
    return seen


def validate(spec: WorkflowSpec, addresses: AddressPolicy = DEFAULT_POLICY) -> None:
    """Raise InvalidWorkflow naming every offending step, or return when the graph is sound. ``addresses`` says
    which internal destinations webhooks may call."""
    problems: list[dict[str, Any]] = []

    def problem(step_id: str, message: str) -> None:
        problems.append({"step": step_id, "message": message})

    ids = [s.id for s in spec.steps]
    for duplicate in sorted({i for i in ids if ids.count(i) > 1}):
        problem(duplicate, "step id used more than once")
    steps = {s.id: s for s in spec.steps}
    graph = {s.id: successors(s) for s in spec.steps}
    if spec.start not in steps:
        problem(spec.start, "the start step does not exist")
    for step in spec.steps:
        for target in graph[step.id]:
            if target not in steps:
                problem(step.id, f"refers to unknown step {target!r}")
    if problems:
        raise InvalidWorkflow(_summary(problems), details=problems)

    reachable = _reachable(graph, spec.start)
    for step in spec.steps:
        if step.id not in reachable:
            problem(step.id, "is unreachable from the start step")
    # A path may end at a step with no successor, or at a condition without a default when no branch holds.
    terminals = {s.id for s in spec.steps if not graph[s.id] or (isinstance(s, ConditionStep) and s.default is None)}
    for step in spec.steps:
        if step.id in reachable and not (_reachable(graph, step.id) & terminals):
            problem(step.id, "is in a cycle without an exit")
    _check_parallel(spec, steps, graph, terminals, problem)
    for step in spec.steps:
        _check_data(spec, step, graph, problem)
        _check_destination(step, addresses, problem)
    if problems:
        raise InvalidWorkflow(_summary(problems), details=problems)


def _check_parallel(
    spec: WorkflowSpec, steps: dict[str, Step], graph: dict[str, list[str]], terminals: set[str], problem: Any
) -> None:
    """Each branch of a parallel step is its own path to the join: it reaches the join, it cannot end before it
    (the join would wait for ever), and it shares no step with another branch (the step would run twice)."""
    joins: dict[str, str] = {}
    for step in spec.steps:
        if isinstance(step, ParallelStep):
            join = steps.get(step.join)
            if not isinstance(join, JoinStep):
                problem(step.id, f"join {step.join!r} is not a join step")
                continue
            if step.join in joins:
                problem(step.id, f"join {step.join!r} already belongs to parallel step {joins[step.join]!r}")
            joins[step.join] = step.id
            claimed: dict[str, str] = {}
            for branch in step.branches:
                if step.join not in _reachable(graph, branch):
                    problem(branch, f"branch of {step.id!r} never reaches its join {step.join!r}")
                    continue
                before_join = _reachable({**graph, step.join: []}, branch) - {step.join}
                for node in sorted(before_join & terminals):
                    problem(node, f"can end branch {branch!r} of {step.id!r} before its join {step.join!r}")
                for node in sorted(before_join & claimed.keys()):
                    problem(node, f"is on branches {claimed[node]!r} and {branch!r} of {step.id!r}")
                claimed.update(dict.fromkeys(before_join, branch))
    for step in spec.steps:
        if isinstance(step, JoinStep) and step.id not in joins:
            problem(step.id, "join step without a parallel step")


def _check_data(spec: WorkflowSpec, step: Step, graph: dict[str, list[str]], problem: Any) -> None:
    def check(expression: str, what: str) -> None:
        if not EXPRESSION.match(expression):
            problem(step.id, f"{what} {expression!r} is not $input.<field> or $steps.<id>.output.<field>")
            return
        source = referenced_step(expression)
        if source is None:
            fields = spec.input_fields
            top = expression.split(".")[1] if expression.count(".") >= 1 else None
            if fields is not None and top is not None and top not in fields:
                problem(step.id, f"{what} {expression!r} reads input field {top!r}, which is not declared")
            elif top is None and what == "condition on":
                problem(step.id, f"{what} {expression!r} must name an input field")
            return
        if source not in graph:
            problem(step.id, f"{what} {expression!r} reads unknown step {source!r}")
        elif source == step.id or step.id not in _reachable(graph, source):
            problem(step.id, f"{what} {expression!r} reads step {source!r}, which cannot run before it")

    if isinstance(step, ConditionStep):
        for branch in step.branches:
            for comparison in _predicates(branch.when):
                check(comparison.field, "condition on")
                if comparison.op is Operator.MATCHES:
                    _check_regex(step.id, comparison.value, problem)
    mapping: dict[str, Any] = {}
    if isinstance(step, AgentStep):
        mapping = step.input
    elif isinstance(step, WebhookStep):
        mapping = step.body
    for value in _leaves(mapping):
        if is_expression(value):
            check(value, "input mapping")


def _check_destination(step: Step, addresses: AddressPolicy, problem: Any) -> None:
    """A webhook's literal host (an address, ``localhost``) is checked here; a name, on every call."""
    if isinstance(step, WebhookStep):
        refused = addresses.url_refusal(step.url)
        if refused is not None:
            problem(step.id, f"url {refused}: a webhook may only call public addresses unless allowed")


def _check_regex(step_id: str, pattern: Any, problem: Any) -> None:
    wrong = patterns.check_pattern(pattern)
    if wrong is not None:
        shown = pattern if not isinstance(pattern, str) or len(pattern) <= 100 else pattern[:100] + "..."
        problem(step_id, f"pattern {shown!r} {wrong}")


def _leaves(value: Any) -> Iterator[Any]:
    if isinstance(value, dict):
        for item in value.values():
            yield from _leaves(item)
    elif isinstance(value, list):
        for item in value:
            yield from _leaves(item)
    else:
        yield value


def _summary(problems: list[dict[str, Any]]) -> str:
    return "; ".join(f"step {p['step']!r} {p['message']}" for p in problems)


@dataclass(frozen=True, slots=True)
class Workflow:
    workflow_id: str = ""
    versions: dict[int, WorkflowSpec] = field(default_factory=dict)
    archived: bool = False
    template: str | None = None

    @property
    def exists(self) -> bool:
        return bool(self.versions)

    @property
    def version(self) -> int:
        return max(self.versions, default=0)

    @property
    def spec(self) -> WorkflowSpec:
        return self.versions[self.version]


def evolve(state: Workflow, event: Event) -> Workflow:
    match event:
        case WorkflowCreated(workflow_id=wid, version=v, spec=spec, template=template):
            return Workflow(workflow_id=wid, versions={v: spec}, template=template)
        case WorkflowUpdated(version=v, spec=spec):
            return Workflow(state.workflow_id, {**state.versions, v: spec}, state.archived, state.template)
        case WorkflowArchived():
            return Workflow(state.workflow_id, state.versions, True, state.template)
    return state


class TemplateNotFound(DomainError):
    code = ErrorCode.TEMPLATE_NOT_FOUND


def decide_create(
    state: Workflow,
    command: CreateWorkflow,
    templates: dict[str, WorkflowSpec],
    addresses: AddressPolicy = DEFAULT_POLICY,
) -> list[Event]:
    if state.exists:
        raise DomainError(f"workflow {command.workflow_id} already exists")
    if command.template is not None:
        if command.template not in templates:
            raise TemplateNotFound(f"no workflow template {command.template!r}")
        spec = templates[command.template]
    else:
        assert command.spec is not None
        spec = command.spec
    if command.name:
        spec = spec.model_copy(update={"name": command.name})
    validate(spec, addresses)
    return [WorkflowCreated(workflow_id=command.workflow_id, version=1, spec=spec, template=command.template)]


def decide_update(state: Workflow, command: UpdateWorkflow, addresses: AddressPolicy = DEFAULT_POLICY) -> list[Event]:
    require_active(state, command.workflow_id)
    validate(command.spec, addresses)
    return [WorkflowUpdated(workflow_id=command.workflow_id, version=state.version + 1, spec=command.spec)]


def decide_archive(state: Workflow, command: ArchiveWorkflow) -> list[Event]:
    require_active(state, command.workflow_id)
    return [WorkflowArchived(workflow_id=command.workflow_id)]


def require_active(state: Workflow, workflow_id: str) -> None:
    if not state.exists:
        raise WorkflowNotFound(f"workflow {workflow_id} not found")
    if state.archived:
        raise WorkflowIsArchived(f"workflow {workflow_id} is archived")
