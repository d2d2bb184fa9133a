"""Validation of workflow definitions: each kind of error names the offending step."""

from typing import Any

import pytest

from contracts.workflows import WorkflowSpec
from workflow_engine.domain.addresses import AddressPolicy
from workflow_engine.domain.definition import InvalidWorkflow, validate
from workflow_engine.templates import TEMPLATES


def spec(steps: list[dict[str, Any]], start: str = "a", **extra: Any) -> WorkflowSpec:
    return WorkflowSpec.model_validate({"name": "w", "start": start, "steps": steps, **extra})


def problems(s: WorkflowSpec) -> list[dict[str, Any]]:
    with pytest.raises(InvalidWorkflow) as err:
        validate(s)
    return err.value.details


def agent(step_id: str, next_step: str | None = None, **extra: Any) -> dict[str, Any]:
    return {"id": step_id, "kind": "agent", "role": "r", "next": next_step, **extra}


def test_a_sound_graph_passes() -> None:
    validate(
        spec(
            [
                agent("a", "b", input={"lead": "$input.lead"}),
                {
                    "id": "b",
                    "kind": "condition",
                    "branches": [{"when": {"field": "$steps.a.output.score", "op": "gt", "value": 5}, "next": "c"}],
                    "default": "d",
                },
                agent("c", input={"score": "$steps.a.output.score"}),
                agent("d"),
            ],
            input_fields=["lead"],
        )
    )


def test_templates_are_valid() -> None:
    for template in TEMPLATES.values():
        validate(template.spec)


@pytest.mark.parametrize(
    ("steps", "start", "step", "words"),
    [
        ([agent("a", "zz")], "a", "a", "unknown step 'zz'"),
        ([agent("a")], "nope", "nope", "start step does not exist"),
        ([agent("a"), agent("a")], "a", "a", "more than once"),
        ([agent("a"), agent("b")], "a", "b", "unreachable"),
        ([agent("a", "b"), agent("b", "a")], "a", "a", "cycle without an exit"),
        (
            [
                agent("a", "b"),
                {
                    "id": "b",
                    "kind": "condition",
                    "branches": [{"when": {"field": "$steps.ghost.output.x", "op": "eq", "value": 1}, "next": "c"}],
                },
                agent("c"),
            ],
            "a",
            "b",
            "unknown step 'ghost'",
        ),
        (
            [
                {
                    "id": "a",
                    "kind": "condition",
                    "branches": [{"when": {"field": "$steps.b.output.x", "op": "eq", "value": 1}, "next": "b"}],
                },
                agent("b"),
            ],
            "a",
            "a",
            "cannot run before it",
        ),
        ([agent("a", input={"x": "$input..bad"})], "a", "a", "is not $input"),
        ([agent("a", input={"x": "$steps.a.output.y"})], "a", "a", "cannot run before it"),
        (
            [{"id": "a", "kind": "parallel", "branches": ["b", "c"], "join": "b"}, agent("b"), agent("c")],
            "a",
            "a",
            "is not a join step",
        ),
        (
            [
                {
                    "id": "a",
                    "kind": "condition",
                    "branches": [{"when": {"field": "$input.x", "op": "matches", "value": "(unclosed"}, "next": "b"}],
                },
                agent("b"),
            ],
            "a",
            "a",
            "not a valid RE2 expression",
        ),
        (
            [{"id": "a", "kind": "webhook", "url": "http://127.0.0.1:8000/openapi.json"}],
            "a",
            "a",
            "host 127.0.0.1 is a loopback address",
        ),
        (
            [
                {"id": "p", "kind": "parallel", "branches": ["b", "c"], "join": "j"},
                agent("b", "d"),
                agent("c", "d"),
                agent("d", "j"),
                {"id": "j", "kind": "join"},
            ],
            "p",
            "d",
            "is on branches 'b' and 'c'",
        ),
        (
            [
                {"id": "p", "kind": "parallel", "branches": ["b", "c"], "join": "j"},
                {
                    "id": "b",
                    "kind": "condition",
                    "branches": [{"when": {"field": "$input.x", "op": "eq", "value": 1}, "next": "j"}],
                },
                agent("c", "j"),
                {"id": "j", "kind": "join"},
            ],
            "p",
            "b",
            "can end branch 'b'",
        ),
    ],
    ids=[
        "unknown-next",
        "unknown-start",
        "duplicate",
        "unreachable",
        "cycle",
        "condition-unknown-step",
        "condition-on-later-step",
        "bad-mapping-syntax",
        "mapping-self",
        "parallel-bad-join",
        "bad-regex",
        "webhook-internal-host",
        "parallel-branches-meet-before-join",
        "parallel-branch-ends-before-join",
    ],
)
def test_invalid_definitions_name_the_step(steps: list[dict[str, Any]], start: str, step: str, words: str) -> None:
    found = problems(spec(steps, start=start))
    assert any(p["step"] == step and words in p["message"] for p in found), found


def matching(pattern: Any) -> list[dict[str, Any]]:
    return [
        {
            "id": "route",
            "kind": "condition",
            "branches": [{"when": {"field": "$input.x", "op": "matches", "value": pattern}, "next": "b"}],
        },
        agent("b"),
    ]


@pytest.mark.parametrize(
    ("pattern", "words"),
    [
        (r"(a)\1", "no backreferences or lookaround"),
        (r"^(?=.*x)", "no backreferences or lookaround"),
        (r"(?<!x)y", "no backreferences or lookaround"),
        ("a" * 1001, "longer than 1000 characters"),
        (7, "must be a string"),
    ],
    ids=["backreference", "lookahead", "lookbehind", "too-long", "not-a-string"],
)
def test_a_pattern_re2_cannot_take_is_refused_naming_the_step(pattern: Any, words: str) -> None:
    found = problems(spec(matching(pattern), start="route"))
    assert [p["step"] for p in found] == ["route"]
    assert words in found[0]["message"]


def test_a_catastrophic_pattern_for_a_backtracking_engine_is_accepted() -> None:
    validate(spec(matching("(a+)+$"), start="route"))


def test_a_webhook_host_the_deployment_allows_is_accepted() -> None:
    internal = spec([{"id": "a", "kind": "webhook", "url": "http://10.1.2.3/hook"}])
    assert "a private address" in problems(internal)[0]["message"]
    validate(internal, AddressPolicy.allowing(["10.0.0.0/8"]))


def test_condition_on_undeclared_input_field() -> None:
    found = problems(
        spec(
            [
                {
                    "id": "a",
                    "kind": "condition",
                    "branches": [{"when": {"field": "$input.missing", "op": "exists"}, "next": "b"}],
                },
                agent("b"),
            ],
            input_fields=["present"],
        )
    )
    assert found == [
        {"step": "a", "message": "condition on '$input.missing' reads input field 'missing', which is not declared"}
    ]


def test_cycle_with_an_exit_is_allowed() -> None:
    validate(
        spec(
            [
                agent("a", "b"),
                {
                    "id": "b",
                    "kind": "condition",
                    "branches": [{"when": {"field": "$steps.a.output.done", "op": "eq", "value": False}, "next": "a"}],
                },
            ]
        )
    )
