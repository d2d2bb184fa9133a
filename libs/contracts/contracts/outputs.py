"""Structured output: the JSON Schema an agent step may declare for its output, checked on save and on every answer.

Schemas are JSON Schema (draft 2020-12). The ``pattern`` and ``patternProperties`` keywords are refused: they would
run a user's regular expression on a model's answer with Python's backtracking engine.
"""

import json
from collections.abc import Iterator
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from referencing import Registry, Resource
from referencing.exceptions import Unresolvable
from referencing.jsonschema import DRAFT202012

MAX_SCHEMA_CHARS = 20_000
BASE = "urn:agentplatform:output-schema"
REFUSED_KEYWORDS = frozenset({"pattern", "patternProperties", "$dynamicRef", "$recursiveRef"})
BOUNDED_KEYWORDS = {"minItems": 1000, "minLength": 100_000, "minProperties": 1000, "minContains": 1000}
"""A schema's lower bounds above these ask for answers no model call should produce."""


def _keywords(node: Any) -> Iterator[tuple[str, Any]]:
    """Every keyword of a schema with its value (names of properties and definitions are not keywords)."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield key, value
            if key not in {"properties", "$defs", "definitions"}:
                yield from _keywords(value)
            elif isinstance(value, dict):
                for sub in value.values():
                    yield from _keywords(sub)
    elif isinstance(node, list):
        for item in node:
            yield from _keywords(item)


def check_output_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """Raise ValueError unless ``schema`` is a valid JSON Schema the platform accepts; return it."""
    if len(json.dumps(schema)) > MAX_SCHEMA_CHARS:
        raise ValueError(f"an output schema may be at most {MAX_SCHEMA_CHARS} characters of JSON")
    keywords = list(_keywords(schema))
    refused = sorted(REFUSED_KEYWORDS.intersection(key for key, _ in keywords))
    if refused:
        raise ValueError(f"output schemas may not use {', '.join(refused)}")
    if any(key == "$ref" and not (isinstance(ref, str) and ref.startswith("#")) for key, ref in keywords):
        raise ValueError("an output schema may refer only to its own definitions ($ref starting with #)")
    for key, value in keywords:
        bound = BOUNDED_KEYWORDS.get(key)
        if bound is not None and isinstance(value, int | float) and value > bound:
            raise ValueError(f"an output schema's {key} may be at most {bound}")
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        raise ValueError(f"not a valid JSON Schema: {exc.message}") from None
    refs = sorted({ref for key, ref in keywords if key == "$ref"})
    resolver = Registry().with_resource(BASE, Resource.from_contents(schema, DRAFT202012)).resolver(base_uri=BASE)
    for ref in refs:
        try:
            resolver.lookup(ref)
        except Unresolvable:
            raise ValueError(f"the output schema's $ref {ref!r} does not resolve") from None
    if refs:
        try:  # a recursive reference could make validation recurse without end: try it on an empty answer
            list(Draft202012Validator(schema).iter_errors({}))
        except RecursionError:
            raise ValueError("the output schema's references are recursive") from None
    return schema


def output_errors(schema: dict[str, Any], output: Any, limit: int = 5) -> list[str]:
    """What is wrong with ``output`` against ``schema`` (empty when it conforms), each with its JSON path."""
    validator = Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(output), key=lambda e: list(e.absolute_path))
    return [f"{e.json_path}: {e.message}"[:300] for e in errors[:limit]]
