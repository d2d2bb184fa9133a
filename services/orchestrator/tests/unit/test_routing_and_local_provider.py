import json
from typing import Any

import pytest

from contracts.agents import AgentSpec, AgentState
from contracts.outputs import check_output_schema, output_errors
from contracts.workflows import AgentTask
from orchestrator.domain.routing import Candidate, Verdict, route
from orchestrator.providers.base import ModelRequest, estimate_prompt_tokens, estimate_tokens
from orchestrator.providers.local import LocalProvider
from orchestrator.runtime.prompt import build_messages
from orchestrator.runtime.worker import unstorable


def agent(agent_id: str, role: str, caps: list[str], *, in_flight: int = 0, limit: int = 2, **extra: Any) -> Candidate:
    spec = AgentSpec(name=agent_id, role=role, capabilities=caps, concurrency_limit=limit)
    fields: dict[str, Any] = {"state": AgentState.ACTIVE, "retired": False, **extra}
    return Candidate(agent_id, spec, 1, in_flight=in_flight, **fields)


def test_routing_prefers_role_and_capability_then_the_lowest_load() -> None:
    writer = agent("w1", "copywriter", ["writing"], in_flight=1)
    other_writer = agent("w2", "copywriter", ["writing"], in_flight=0)
    only_capability = agent("c1", "editor", ["writing"], in_flight=0)
    chosen = route([writer, only_capability, other_writer], None, "copywriter", "writing")
    assert chosen.verdict is Verdict.ROUTED
    assert [c.agent_id for c in chosen.choices] == ["w2", "w1", "c1"]


def test_routing_never_picks_an_agent_at_its_limit_paused_or_retired() -> None:
    full = agent("a", "triage", [], in_flight=2, limit=2)
    paused = agent("b", "triage", [], state=AgentState.PAUSED)
    retired = agent("c", "triage", [], retired=True)
    assert route([full, paused, retired], None, "triage", None).verdict is Verdict.WAIT
    assert route([retired], None, "triage", None).verdict is Verdict.NO_AGENT
    assert route([full], None, "auditor", None).verdict is Verdict.NO_AGENT
    assert route([full, agent("d", "triage", [])], "d", None, None).choices[0].agent_id == "d"


def _task(role_input: dict[str, Any], schema: dict[str, Any] | None = None) -> AgentTask:
    return AgentTask(
        key="ex:s:1",
        workspace_id="ws",
        execution_id="ex",
        step_id="s",
        attempt=1,
        agent_id=None,
        role="support triage",
        capability=None,
        instructions="Classify priority (low, normal, urgent).",
        input=role_input,
        deadline="",
        output_schema=schema,
        context={"earlier": {"summary": "before"}},
    )


async def _answer(role: str, task: AgentTask, max_out: int = 512) -> Any:
    spec = AgentSpec(name="A", role=role)
    messages = build_messages(spec, task, ["Initech is a key account"])
    request = ModelRequest(
        model="local-deterministic",
        messages=messages,
        max_output_tokens=max_out,
        timeout_s=5,
        output_schema=task.output_schema,
        role=role,
    )
    response = await LocalProvider().complete(request)
    assert response.usage.prompt_tokens == estimate_prompt_tokens(messages)
    assert response.usage.completion_tokens == estimate_tokens(response.text) <= max_out
    assert json.loads(response.text) == response.output
    return response.output


async def test_the_local_provider_reads_only_the_input_and_is_deterministic() -> None:
    urgent = await _answer("support triage", _task({"ticket": "The site is down, fix it now!!!"}))
    calm = await _answer("support triage", _task({"ticket": "A question about exports"}))
    assert (urgent["priority"], urgent["sentiment"]) == ("urgent", "angry")
    assert (calm["priority"], calm["sentiment"]) == ("low", "calm")  # the instructions' "urgent" is not read
    assert urgent == await _answer("support triage", _task({"ticket": "The site is down, fix it now!!!"}))


async def test_the_local_provider_fills_a_declared_schema() -> None:
    schema = check_output_schema(
        {
            "type": "object",
            "required": ["score", "tier", "tags"],
            "properties": {
                "score": {"type": "integer", "minimum": 0, "maximum": 100},
                "tier": {"enum": ["gold", "silver"]},
                "tags": {"type": "array", "items": {"type": "string"}, "minItems": 2},
            },
        }
    )
    output = await _answer("lead qualifier", _task({"lead": {"notes": "enterprise, budget approved"}}, schema))
    assert output_errors(schema, output) == []
    assert output["score"] >= 70  # its own score for the role, where the schema asks for one


@pytest.mark.parametrize(
    "schema",
    [
        {"type": 3},
        {"type": "string", "pattern": "(a+)+$"},
        {"properties": {"x": {"patternProperties": {"a": {}}}}},
        {"$ref": "https://example.com/schema.json"},
        {"properties": {"x": {"$ref": "http://169.254.169.254/"}}},
    ],
)
def test_output_schemas_that_are_invalid_or_unsafe_are_refused(schema: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=r"schema|pattern|\$ref"):
        check_output_schema(schema)


async def test_the_local_provider_stops_at_its_output_limit_as_a_model_would() -> None:
    task = _task({"ticket": "The site is down"})
    messages = build_messages(AgentSpec(name="A", role="support triage"), task, [])
    request = ModelRequest(model="local-deterministic", messages=messages, max_output_tokens=1, timeout_s=5)
    response = await LocalProvider().complete(request)
    assert response.output is None  # cut off: not JSON any more
    assert response.usage.completion_tokens <= 1
    wide = {"type": "array", "minItems": 1000, "items": {"type": "string", "minLength": 100_000}}
    request = ModelRequest(
        model="local-deterministic", messages=messages, max_output_tokens=50, timeout_s=5, output_schema=wide
    )
    assert (await LocalProvider().complete(request)).usage.completion_tokens <= 50


@pytest.mark.parametrize(
    "schema",
    [
        {"$ref": "#/$defs/nope"},
        {"$defs": {"a": {"$ref": "#/$defs/a"}}, "$ref": "#/$defs/a"},
        {"type": "array", "minItems": 100_000_000},
        {"type": "string", "minLength": 10**12},
    ],
)
def test_schemas_that_cannot_be_checked_or_met_are_refused(schema: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=r"resolve|recursive|at most"):
        check_output_schema(schema)


@pytest.mark.parametrize(
    ("value", "bad"),
    [
        ({"$where": "1"}, True),
        ({"a": {"b\x00": 1}}, True),
        ({"n": 2**64}, True),
        ({"s": "\ud800"}, True),
        ({"a": [1, 2.5, None, True, "ok", {"b.c": -(2**63)}]}, False),
    ],
)
def test_unstorable_answers_are_found(value: Any, bad: bool) -> None:
    assert bool(unstorable(value)) is bad
