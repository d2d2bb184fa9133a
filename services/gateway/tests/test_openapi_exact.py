"""The OpenAPI says exactly what the gateway accepts: each rule the API enforces is in the schema, and what the
schema allows is not refused (tests/system/test_openapi_conformance.py runs schemathesis over all of it)."""

import re
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from conftest import Infra, Platform, running_platform
from gateway.main import build_app
from gateway.settings import GatewaySettings

# Keywords JSON Schema knows; anything else in a schema (pydantic's ``ge``, say) is ignored by every client.
JSON_SCHEMA_KEYWORDS = {
    "$ref", "$defs", "type", "enum", "const", "anyOf", "oneOf", "allOf", "not", "discriminator", "properties",
    "required", "additionalProperties", "items", "prefixItems", "minItems", "maxItems", "uniqueItems", "minLength",
    "maxLength", "pattern", "format", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf",
    "default", "title", "description", "examples", "contentMediaType", "readOnly", "writeOnly", "deprecated",
}  # fmt: skip


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    document: dict[str, Any] = build_app(GatewaySettings(memory_max_entry_chars=777)).openapi()
    return document


@pytest.fixture
async def api(infra: Infra, env_name: str) -> AsyncIterator[tuple[Platform, dict[str, str]]]:
    async with running_platform(infra, env_name, memory=True, behaviour=None) as platform:
        yield platform, platform.auth(await platform.new_workspace())


def _schemas(node: Any) -> Iterator[dict[str, Any]]:
    """Every schema object in ``node`` (a whole document's schemas, parameters and bodies)."""
    if isinstance(node, dict):
        if "type" in node or "anyOf" in node or "$ref" in node or "properties" in node:
            yield node
        for key, value in node.items():
            if key not in {"properties", "$defs", "mapping", "examples", "default"}:
                yield from _schemas(value)
            elif key in {"properties", "$defs"}:
                for child in value.values():
                    yield from _schemas(child)
    elif isinstance(node, list):
        for item in node:
            yield from _schemas(item)


def _component(spec: dict[str, Any], name: str) -> dict[str, Any]:
    schema: dict[str, Any] = spec["components"]["schemas"][name]
    return schema


def _parameter(spec: dict[str, Any], path: str, method: str, name: str) -> dict[str, Any]:
    params = spec["paths"][path][method]["parameters"]
    parameter: dict[str, Any] = next(p for p in params if p["name"] == name)
    return parameter


def test_every_schema_keyword_is_one_json_schema_knows(spec: dict[str, Any]) -> None:
    unknown = {
        key for schema in _schemas(spec["components"]["schemas"]) for key in schema if key not in JSON_SCHEMA_KEYWORDS
    }
    assert unknown == set(), "e.g. pydantic's ge/le leak when a constraint cannot reach the number's schema"


def test_the_step_kind_is_required_on_every_step(spec: dict[str, Any]) -> None:
    for name in ["AgentStep", "ConditionStep", "ParallelStep", "JoinStep", "ApprovalStep", "DelayStep", "WebhookStep"]:
        assert "kind" in _component(spec, name)["required"], name


def test_a_short_term_scope_offers_only_the_kinds_it_takes(spec: dict[str, Any]) -> None:
    scope = _component(spec, "ShortTermIn")["properties"]["scope"]
    assert scope == {"$ref": "#/components/schemas/ShortTermScope"}
    assert set(_component(spec, "ShortTermScope")["properties"]["kind"]["enum"]) == {
        "conversation",
        "team_run",
        "execution",
    }


def test_names_and_tags_must_hold_more_than_whitespace(spec: dict[str, Any]) -> None:
    tag = _component(spec, "LongTermFields")["properties"]["tags"]["items"]
    agent_name = _component(spec, "AgentSpec")["properties"]["name"]
    for schema in (tag, agent_name, _component(spec, "WorkflowSpec")["properties"]["name"]):
        pattern = re.compile(schema["pattern"])
        assert pattern.search(" \t\n ") is None
        assert pattern.search("  x ") is not None


def test_last_event_id_is_digits(spec: dict[str, Any]) -> None:
    header = _parameter(spec, "/api/v1/workflows/executions/{execution_id}/events", "get", "Last-Event-ID")
    assert header["schema"]["pattern"] == "^[0-9]{1,20}$"


def test_creating_a_workflow_takes_a_spec_or_a_template_never_both(spec: dict[str, Any]) -> None:
    body = spec["paths"]["/api/v1/workflows"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    shapes = [_component(spec, ref["$ref"].rsplit("/", 1)[-1]) for ref in body["anyOf"]]
    assert [(s["required"], s["additionalProperties"]) for s in shapes] == [(["spec"], False), (["template"], False)]


def test_parameters_are_never_null_and_limits_from_settings_are_declared(spec: dict[str, Any]) -> None:
    for path_item in spec["paths"].values():
        for operation in path_item.values():
            for parameter in operation.get("parameters", []):
                assert {"type": "null"} not in parameter["schema"].get("anyOf", []), parameter["name"]
    content = _component(spec, "LongTermFields")["properties"]["content"]
    assert content["maxLength"] == 777, "MEMORY_MAX_ENTRY_CHARS of the gateway that serves it"


def test_problems_are_documented_as_problem_json_and_auth_as_a_security_scheme(spec: dict[str, Any]) -> None:
    operation = spec["paths"]["/api/v1/agents"]["post"]
    assert set(operation["responses"]["422"]["content"]) == {"application/problem+json"}
    assert operation["security"] == [{"apiKey": []}]
    assert spec["components"]["securitySchemes"]["apiKey"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "A workspace API key: `Authorization: Bearer <key>`.",
    }
    assert "X-Request-ID" in operation["responses"]["201"]["headers"]


# What the schema says, the API does ------------------------------------------------------------------------------


def _status(resp: httpx.Response) -> tuple[int, str]:
    return resp.status_code, resp.json().get("code", "")


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/v1/agents", {"name": "A", "role": "r", "model": {"temperature": True}}),
        ("/api/v1/agents", {"name": "A", "role": "r", "model": {"temperature": "0.5"}}),
        ("/api/v1/agents", {"name": " \t", "role": "r"}),
        ("/api/v1/memory/long-term", {"content": "x", "importance": False}),
        ("/api/v1/memory/long-term", {"content": "x", "tags": ["   "]}),
        ("/api/v1/memory/retrieve", {"query": "x", "limit": "3"}),
        ("/api/v1/memory/short-term", {"scope": {"kind": "team", "id": "t1"}, "content": "x"}),
        ("/api/v1/workflows", {"spec": {"name": "W", "start": "a", "steps": [{"id": "a"}]}}),
        ("/api/v1/workflows", {"template": "support-ticket", "spec": {"name": "W", "start": "a", "steps": []}}),
        ("/api/v1/workflows", {}),
    ],
)
async def test_what_the_schema_forbids_is_refused_with_422(
    api: tuple[Platform, dict[str, str]], path: str, body: dict[str, Any]
) -> None:
    platform, auth = api
    resp = await platform.client.post(path, json=body, headers=auth)
    assert _status(resp) == (422, "validation_failed"), resp.text


async def test_integral_numbers_and_padded_names_are_taken(api: tuple[Platform, dict[str, str]]) -> None:
    platform, auth = api
    agent = {"name": "  Writer ", "role": "sales", "model": {"temperature": 1}}
    assert (await platform.client.post("/api/v1/agents", json=agent, headers=auth)).status_code == 201
    retrieve = await platform.client.post("/api/v1/memory/retrieve", json={"query": "x", "limit": 3.0}, headers=auth)
    assert retrieve.status_code == 200, retrieve.text


async def test_a_last_event_id_that_is_not_a_number_is_refused(api: tuple[Platform, dict[str, str]]) -> None:
    platform, auth = api
    raw_auth = {key.encode(): value.encode() for key, value in auth.items()}
    # b"\xb9" is SUPERSCRIPT ONE in latin-1, as headers are read: str.isdigit() holds and int() fails
    for bad in (b"abc", b"-1", b"\xb9", b"1" * 21):
        path = "/api/v1/workflows/executions/ex_1/events"
        resp = await platform.client.get(path, headers={**raw_auth, b"Last-Event-ID": bad})
        assert _status(resp) == (422, "validation_failed"), bad


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("DELETE", "/api/v1/memory/short-term/stm_1/promote", "POST"),
        ("PUT", "/api/v1/workflows/executions", "GET"),
        ("GET", "/api/v1/memory/long-term/import", "POST"),
        ("OPTIONS", "/api/v1/memory/long-term/ltm_1", "DELETE, GET, PATCH"),
        ("TRACE", "/healthz", "GET"),
    ],
)
async def test_a_method_a_path_does_not_take_is_405_naming_those_it_does(
    api: tuple[Platform, dict[str, str]], method: str, path: str, allow: str
) -> None:
    platform, auth = api
    resp = await platform.client.request(method, path, headers=auth)
    assert _status(resp) == (405, "method_not_allowed"), resp.text
    assert resp.headers["allow"] == allow
