"""Hostile request bodies get a 4xx problem at the gateway: never a 500, a dead letter or a command left pending."""

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from conftest import Infra, Platform, running_platform
from servicekit.testing import eventually

AGENT = {"name": "Lead qualifier", "role": "sales", "capabilities": ["qualification"]}
WORKING = "/api/v1/memory/working/execution/ex_1/notes"
JSON = {"content-type": "application/json"}


@pytest.fixture
async def platform(infra: Infra, env_name: str) -> AsyncIterator[Platform]:
    async with running_platform(
        infra, env_name, memory=True, engine=False, behaviour=None, max_body_bytes=1_000_000
    ) as running:
        yield running


@pytest.fixture
async def workspace(platform: Platform) -> dict[str, str]:
    return await platform.new_workspace()


@pytest.fixture
def auth(platform: Platform, workspace: dict[str, str]) -> dict[str, str]:
    return platform.auth(workspace)


def _problem(resp: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = resp.json()
    assert (body["code"], body["status"]) == (code, status)
    return body


def _nested(depth: int) -> str:
    """A JSON value of ``depth`` nested containers: {"a": {"a": ... []}}."""
    return '{"a": ' * (depth - 1) + "[]" + "}" * (depth - 1)


async def _put(platform: Platform, auth: dict[str, str], raw: str, **headers: str) -> httpx.Response:
    return await platform.client.put(WORKING, content=raw.encode(), headers={**auth, **JSON, **headers})


# Item 4: depth ---------------------------------------------------------------------------------------------------


async def test_json_nested_deeper_than_the_limit_is_422_too_deep(platform: Platform, auth: dict[str, str]) -> None:
    limit = platform.settings.max_json_depth
    accepted = await _put(platform, auth, f'{{"value": {_nested(limit - 1)}}}')
    assert accepted.status_code == 200, accepted.text

    deep = _problem(await _put(platform, auth, f'{{"value": {_nested(limit)}}}'), 422, "too_deep")
    assert deep["errors"][0]["loc"] == ["body", "value", *["a"] * (limit - 1)]
    assert deep["errors"][0]["type"] == "too_deep"
    for depth in (250, 100_000):  # the command stayed pending for good; deeper, a 500
        _problem(await _put(platform, auth, f'{{"value": {"[" * depth + "]" * depth}}}'), 422, "too_deep")


# Item 5: values MongoDB cannot store ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "loc", "kind"),
    [
        ("9223372036854775808", [], "int_out_of_range"),
        ("-9223372036854775809", [], "int_out_of_range"),
        ("1" + "0" * 5000, [], "int_out_of_range"),
        ('{"name\\u0000": 1}', ["name\x00"], "key_not_storable"),
        ('{"x": [{"$ref": "agents", "id": 1}]}', ["x", "0", "$ref"], "key_not_storable"),
        ('{"$set": {"a": 1}}', ["$set"], "key_not_storable"),
        ('{"' + "." * 254 + '": 1}', ["." * 254], "key_not_storable"),
        ('["fine", "\\ud800"]', ["1"], "string_not_unicode"),
        ('{"\\udfff": 1}', ["\\udfff"], "key_not_storable"),
    ],
    ids=[
        "int-over",
        "int-under",
        "int-5000-digits",
        "nul-key",
        "dollar-key",
        "operator-key",
        "dots",
        "surrogate",
        "surrogate-key",
    ],
)
async def test_values_mongodb_cannot_store_are_422_with_their_location(
    platform: Platform, auth: dict[str, str], value: str, loc: list[str], kind: str
) -> None:
    body = _problem(await _put(platform, auth, f'{{"value": {value}}}'), 422, "unstorable_value")
    assert [(e["loc"], e["type"]) for e in body["errors"]] == [(["body", "value", *loc], kind)]


async def test_storable_edge_values_are_accepted(platform: Platform, auth: dict[str, str]) -> None:
    value = '{"max": 9223372036854775807, "min": -9223372036854775808, "a.b": "dots are fine", "pay$": "\\u00e9"}'
    resp = await _put(platform, auth, f'{{"value": {value}}}')
    assert resp.status_code == 200, resp.text


async def test_a_value_too_large_for_a_document_is_422(infra: Infra, env_name: str) -> None:
    async with running_platform(
        infra, env_name, orchestrator=False, engine=False, behaviour=None, max_body_bytes=2_000_000
    ) as platform:
        auth = platform.auth(await platform.new_workspace())
        raw = '{"value": [' + ",".join(["0"] * 600_000) + "]}"  # 1.2 MB of JSON, 7 MB of BSON
        body = _problem(await _put(platform, auth, raw), 422, "unstorable_value")
        assert [(e["loc"], e["type"]) for e in body["errors"]] == [(["body"], "too_large")]


async def test_the_idempotency_key_path_refuses_unstorable_values_too(platform: Platform, auth: dict[str, str]) -> None:
    headers = {**auth, **JSON, "Idempotency-Key": "nul-key"}
    raw = b'{"input": {"ticket\\u0000": 1}}'
    resp = await platform.client.post("/api/v1/workflows/wf_1/executions", content=raw, headers=headers)
    body = _problem(resp, 422, "unstorable_value")  # was an immediate 500 from the gateway's own insert
    assert body["errors"][0]["loc"] == ["body", "input", "ticket\x00"]


# Item 6: numbers that are not finite --------------------------------------------------------------------------------


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity", "1e400", "-1e400"])
async def test_numbers_json_cannot_carry_are_422(platform: Platform, auth: dict[str, str], number: str) -> None:
    body = _problem(await _put(platform, auth, f'{{"value": {{"score": [1.5, {number}]}}}}'), 422, "unstorable_value")
    assert [(e["loc"], e["type"]) for e in body["errors"]] == [(["body", "value", "score", "1"], "number_not_finite")]


# Item 7: Content-Type ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    [None, "text/plain", "application/x-www-form-urlencoded", "application/xml", "multipart/form-data; boundary=x"],
)
async def test_a_body_that_is_not_json_by_its_content_type_is_415(
    platform: Platform, auth: dict[str, str], content_type: str | None
) -> None:
    headers = {**auth, **({"content-type": content_type} if content_type else {})}
    resp = await platform.client.post("/api/v1/agents", content=json.dumps(AGENT).encode(), headers=headers)
    _problem(resp, 415, "unsupported_media_type")


@pytest.mark.parametrize(
    "content_type", ["application/json; charset=utf-8", "Application/JSON", "application/vnd.x+json"]
)
async def test_json_media_types_are_accepted(platform: Platform, auth: dict[str, str], content_type: str) -> None:
    resp = await platform.client.put(WORKING, content=b'{"value": 1}', headers={**auth, "content-type": content_type})
    assert resp.status_code == 200, resp.text


async def test_the_import_takes_ndjson_only(platform: Platform, auth: dict[str, str]) -> None:
    path = "/api/v1/memory/long-term/import"
    line = json.dumps({"content": "Globex pays net 30"}).encode()
    _problem(await platform.client.post(path, content=line, headers={**auth, **JSON}), 415, "unsupported_media_type")
    ok = await platform.client.post(path, content=line, headers={**auth, "content-type": "application/x-ndjson"})
    assert ok.status_code == 200, ok.text


async def test_every_endpoint_that_takes_a_body_documents_415(platform: Platform) -> None:
    operations = [op for path in platform.gateway.openapi()["paths"].values() for op in path.values()]
    with_body = [op for op in operations if "requestBody" in op]
    assert with_body, "the API takes bodies"
    assert [op["operationId"] for op in with_body if "415" not in op["responses"]] == []
    assert [op["operationId"] for op in operations if "requestBody" not in op and "415" in op["responses"]] == []


# Item 10: the import's errors are problems --------------------------------------------------------------------------


async def test_an_import_with_no_good_line_is_a_problem_listing_each_line(
    platform: Platform, auth: dict[str, str]
) -> None:
    lines = [
        "{not json",
        json.dumps({"tags": ["no content"]}),
        '{"content": "x", "importance": NaN}',
        '{"content": "x", "source\\u0000": "crm"}',
    ]
    resp = await platform.client.post(
        "/api/v1/memory/long-term/import",
        content="\n".join(lines).encode(),
        headers={**auth, "content-type": "application/x-ndjson"},
    )
    body = _problem(resp, 422, "validation_failed")
    assert [(e["line"], e["code"], e["loc"]) for e in body["errors"]] == [
        (1, "malformed_json", ["line", "1", "1"]),
        (2, "validation_failed", ["line", "2", "content"]),
        (3, "unstorable_value", ["line", "3", "importance"]),
        (4, "unstorable_value", ["line", "4", "source\x00"]),
    ]
    empty = await platform.client.post(
        "/api/v1/memory/long-term/import", content=b"", headers={**auth, "content-type": "application/x-ndjson"}
    )
    _problem(empty, 422, "validation_failed")


# Item 4: a command dead-lettered with an envelope that cannot be read is answered -------------------------------


async def test_an_unreadable_command_is_rejected_from_its_headers(
    platform: Platform, workspace: dict[str, str], auth: dict[str, str]
) -> None:
    bus = platform.gateway.state.runtime.bus
    command_id = "cmd_unreadable_1"
    await bus.publish(
        bus.subjects.command("memory", workspace["workspace_id"], "PutWorkingEntry"),
        b"{not an envelope",
        msg_id=command_id,
        stream=bus.subjects.commands_stream,
    )

    async def answered() -> dict[str, Any] | None:
        resp = await platform.client.get(f"/api/v1/commands/{command_id}", headers=auth)
        return resp.json() if resp.status_code == 200 else None

    status = await eventually(answered)
    assert (status["status"], status["type"]) == ("rejected", "PutWorkingEntry")
    assert status["error_code"] == "validation_failed"
