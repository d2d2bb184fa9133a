from typing import Any

import pytest

from orchestrator.providers.openai_provider import strict_allowed


def closed(properties: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": list(properties), "additionalProperties": False}


TRIAGE = closed(
    {
        "priority": {"type": "string", "enum": ["low", "medium", "high", "urgent"]},
        "sentiment": {"type": ["string", "null"]},
        "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 5},
        "customer": closed({"name": {"type": "string"}, "tier": {"anyOf": [{"type": "string"}, {"type": "null"}]}}),
    }
)


def test_a_closed_schema_with_every_property_required_is_strict() -> None:
    assert strict_allowed(TRIAGE)


def test_defs_and_refs_are_strict_when_what_they_define_is() -> None:
    schema = {
        **closed({"owner": {"$ref": "#/$defs/person"}}),
        "$defs": {"person": closed({"name": {"type": "string"}})},
    }
    assert strict_allowed(schema)


@pytest.mark.parametrize(
    "schema",
    [
        pytest.param({"type": "array", "items": {"type": "string"}}, id="root not an object"),
        pytest.param({**closed({"a": {"type": "string"}}), "required": []}, id="optional property"),
        pytest.param(
            {k: v for k, v in closed({"a": {"type": "string"}}).items() if k != "additionalProperties"},
            id="open object",
        ),
        pytest.param({"type": "object", "additionalProperties": False}, id="object without properties"),
        pytest.param(closed({"a": {"type": "string", "minLength": 3}}), id="unsupported keyword"),
        pytest.param(closed({"a": {"allOf": [{"type": "string"}]}}), id="allOf"),
        pytest.param(closed({"a": closed({"b": {"type": "object"}})}), id="open object deep down"),
        pytest.param(closed({"a": {"type": "array", "items": {"type": "object"}}}), id="open object in items"),
        pytest.param(closed({"a": {"anyOf": [{"type": "object"}]}}), id="open object in anyOf"),
        pytest.param(
            {**closed({"a": {"type": "string"}}), "$defs": {"x": {"type": "object"}}}, id="open object in defs"
        ),
        pytest.param(closed({"a": True}), id="boolean schema"),
    ],
)
def test_a_schema_outside_the_strict_subset_is_not_strict(schema: dict[str, Any]) -> None:
    assert not strict_allowed(schema)
