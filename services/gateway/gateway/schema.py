"""What the served OpenAPI says beyond what FastAPI derives from the routes, so that it says exactly what the API
accepts and answers: problem documents as ``application/problem+json`` (FastAPI files a response model under
``application/json``), parameters that cannot be null, the ``X-Request-ID`` of every response, and the limits that
come from settings."""

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI

from gateway.settings import GatewaySettings
from servicekit.http import PROBLEM, REQUEST_ID_HEADER

JSON = "application/json"
REQUEST_ID = {
    "description": "The request's id (the client's own when it sent a sane one); a 5xx's problem document repeats "
    "it, and the logs hold the details under it.",
    "required": True,
    "schema": {"type": "string", "pattern": "^[A-Za-z0-9._:-]{1,128}$"},
}


def setting_limits(settings: GatewaySettings) -> dict[tuple[str, str], int]:
    """(schema, property) -> maxLength, for strings whose longest accepted length is a setting."""
    entry, query = settings.memory_max_entry_chars, settings.memory_max_query_chars
    return {
        ("ShortTermIn", "content"): entry,
        ("LongTermFields", "content"): entry,
        ("LongTermPatch", "content"): entry,
        ("RetrieveIn", "query"): query,
    }


def exact_openapi(app: FastAPI, settings: GatewaySettings) -> Callable[[], dict[str, Any]]:
    """An ``app.openapi`` that amends FastAPI's document once (see the module's docstring)."""
    derive = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            spec = derive()
            for path_item in spec["paths"].values():
                for operation in path_item.values():
                    for parameter in operation.get("parameters", []):
                        _not_null(parameter["schema"])
                    for response in operation["responses"].values():
                        _amend_response(response)
            spec["components"]["headers"] = {"RequestId": REQUEST_ID}
            schemas = spec["components"]["schemas"]
            for (name, prop), limit in setting_limits(settings).items():
                _set_max_length(schemas[name]["properties"][prop], limit)
            app.openapi_schema = spec
        return app.openapi_schema

    return openapi


def _not_null(schema: dict[str, Any]) -> None:
    """A parameter is a string on the wire and cannot be null: an optional one is left out (``required: false``).
    FastAPI writes ``X | None`` as ``anyOf: [X, null]``, which tells a client that ``null`` may be sent."""
    branches = [branch for branch in schema.get("anyOf", []) if branch != {"type": "null"}]
    if len(branches) == 1 and "anyOf" in schema:
        del schema["anyOf"]
        schema.update(branches[0])
    elif branches:
        schema["anyOf"] = branches


def _amend_response(response: dict[str, Any]) -> None:
    content = response.get("content", {})
    if PROBLEM in content and JSON in content:
        content[PROBLEM] = content.pop(JSON)
    response.setdefault("headers", {})[REQUEST_ID_HEADER] = {"$ref": "#/components/headers/RequestId"}


def _set_max_length(schema: dict[str, Any], limit: int) -> None:
    for branch in schema.get("anyOf", [schema]):
        if branch.get("type") == "string":
            branch["maxLength"] = limit
