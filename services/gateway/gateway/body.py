"""Request bodies, checked once for every endpoint before a route sees them.

``JsonBodyRoute`` is the route class of every router: a route that takes a body answers 415
``unsupported_media_type`` to one whose Content-Type it does not take (JSON, ``application/json`` or
``application/*+json``, unless the route declares its own media types in ``openapi_extra``, as the memory import
does with ``application/x-ndjson``), and a JSON body is parsed here, by ``parse_json``, instead of by FastAPI's
``json.loads``.

Whatever a body holds ends up in JSON messages and in MongoDB (the command's record, its envelope, the events it
causes), and Python's ``json`` reads more than either can carry. ``parse_json`` refuses, with 422 and the location of
each offending value in ``errors``:

- nesting deeper than ``MAX_JSON_DEPTH`` (``too_deep``): MongoDB refuses documents nested more than 100 levels, and
  the envelope, the event and the commit wrap a body in several more; Pydantic refuses JSON nested 200 levels
  (a command the gateway took would then never be read by its service);
- (``unstorable_value``) integers outside the signed 64-bit range (BSON has no larger integer); numbers that are not
  finite (``NaN`` and ``Infinity`` are not JSON, though Python reads them, and ``1e400`` overflows to infinity; JSON
  cannot carry them on, so they would be stored as null); strings with a lone surrogate (``"\\ud800"``; BSON strings
  are UTF-8); object keys that hold NUL (BSON keys end with one), that start with ``$`` (MongoDB 5.0+ stores them
  only in some operations and refuses them in others, such as a replacing update, and a driver reads
  ``{"$ref": ..., "$id": ...}`` back as a DBRef), or that hold 255 or more dot-separated parts (MongoDB refuses
  them); and a body whose BSON form exceeds ``MAX_VALUE_BSON_BYTES``.

Keys with dots are accepted: MongoDB 5.0 and later store them in inserts and in the values of updates, which is how
the services write what a body holds; no service uses a key from a body as a field path.
"""

import json
import math
import re
from collections.abc import Callable, Coroutine, Iterable
from typing import Any

import bson
from fastapi import params
from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response

from contracts import ErrorCode
from gateway.errors import PROBLEM, ApiError

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
MAX_VALUE_BSON_BYTES = 4 * 1024 * 1024  # a quarter of MongoDB's 16 MiB: a commit may hold a value more than once
BSON_PER_JSON_BYTE = 8  # BSON takes at most about 7 bytes per byte of JSON (``[0,0,...]``); below, no need to encode
MAX_KEY_DOTS = 253  # MongoDB refuses field names of 255 or more dot-separated parts
MAX_REPORTED = 20  # offending values listed in one answer
JSON_MEDIA_TYPES = ("application/json", "application/*+json")
_TOO_LONG_INT = 2**64  # stands in for an integer literal too long to convert (Python refuses 4300+ digits)
_SURROGATE = re.compile("[\ud800-\udfff]")

Loc = list[str]


class BodyError(Exception):
    """A body the platform cannot take: its error code, what is wrong, and where (``errors``)."""

    def __init__(self, code: ErrorCode, detail: str, errors: list[dict[str, Any]]) -> None:
        super().__init__(detail)
        self.code = code
        self.detail = detail
        self.errors = errors

    def api_error(self) -> ApiError:
        return ApiError(self.code, self.detail, errors=self.errors)


def _integer(text: str) -> int:
    return int(text) if len(text) <= 20 else _TOO_LONG_INT  # 20 characters hold every 64-bit integer


def parse_json(raw: bytes | str, *, max_depth: int, loc: Loc | None = None) -> Any:
    """The JSON value ``raw`` holds, if JSON messages and MongoDB can carry it; raises ``BodyError`` otherwise
    (``malformed_json``, ``too_deep``, ``unstorable_value``). ``loc`` prefixes the location of each error."""
    where = loc if loc is not None else ["body"]
    try:
        value = json.loads(raw, parse_int=_integer)
    except RecursionError:
        raise BodyError(
            ErrorCode.TOO_DEEP,
            f"The JSON is nested more than {max_depth} levels deep.",
            [{"loc": where, "msg": f"nested more than {max_depth} levels", "type": "too_deep"}],
        ) from None
    except json.JSONDecodeError as exc:
        raise BodyError(
            ErrorCode.MALFORMED_JSON,
            "The request body is not valid JSON.",
            [{"loc": [*where, str(exc.pos)], "msg": f"JSON decode error: {exc.msg}", "type": "json_invalid"}],
        ) from None
    except ValueError:  # not UTF-8 (or UTF-16/32) text
        raise BodyError(
            ErrorCode.MALFORMED_JSON,
            "The request body is not valid JSON.",
            [{"loc": where, "msg": "not UTF-8 text", "type": "json_invalid"}],
        ) from None
    deep, unstorable = _inspect(value, max_depth, where, escaped=_may_hold_surrogates(raw))
    if deep:
        raise BodyError(ErrorCode.TOO_DEEP, f"The JSON is nested more than {max_depth} levels deep.", deep)
    if not unstorable and len(raw) * BSON_PER_JSON_BYTE > MAX_VALUE_BSON_BYTES:
        size = len(bson.encode({"v": value}))
        if size > MAX_VALUE_BSON_BYTES:
            unstorable.append(
                {"loc": where, "msg": f"{size} bytes as BSON, over {MAX_VALUE_BSON_BYTES}", "type": "too_large"}
            )
    if unstorable:
        raise BodyError(ErrorCode.UNSTORABLE_VALUE, "The JSON holds values that cannot be stored.", unstorable)
    return value


def _may_hold_surrogates(raw: bytes | str) -> bool:
    """Only a ``\\u`` escape makes a lone surrogate (raw bytes of one are not UTF-8, and fail to decode)."""
    return (b"\\u" in raw) if isinstance(raw, bytes) else ("\\u" in raw)


def _inspect(
    value: Any, max_depth: int, root: Loc, *, escaped: bool
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Walks ``value`` without recursion; returns what is nested too deep and what cannot be stored, by location.
    A location is kept as a chain of (parent, key) and spelled out only for what is reported."""
    deep: list[dict[str, Any]] = []
    bad: list[dict[str, Any]] = []

    def report(into: list[dict[str, Any]], path: _Path, msg: str, kind: str) -> None:
        if len(into) < MAX_REPORTED:
            into.append({"loc": [*root, *_spell(path)], "msg": msg, "type": kind})

    if not isinstance(value, dict | list):
        if (problem := _scalar_problem(value, escaped)) is not None:
            report(bad, None, *problem)
        return deep, bad
    stack: list[tuple[dict[str, Any] | list[Any], int, _Path]] = [(value, 1, None)]  # (container, its depth, path)
    while stack:
        node, depth, path = stack.pop()
        if depth > max_depth:
            report(deep, path, f"nested more than {max_depth} levels", "too_deep")
            continue
        items: Iterable[tuple[str | int, Any]]
        if type(node) is dict:
            for name, wrong in _key_problems(node, escaped):
                report(bad, (path, name), wrong, "key_not_storable")
            items = node.items()
        else:
            items = enumerate(node)
        children = []
        for key, child in items:
            kind = type(child)
            if kind is dict or kind is list:
                children.append((child, depth + 1, (path, key)))
            elif kind is int:
                if not INT64_MIN <= child <= INT64_MAX:
                    report(bad, (path, key), "integer outside the signed 64-bit range", "int_out_of_range")
            elif (kind is float or escaped) and (problem := _scalar_problem(child, escaped)) is not None:
                report(bad, (path, key), *problem)
        stack.extend(reversed(children))
    return deep, bad


_Path = tuple["_Path", str | int] | None


def _spell(path: _Path) -> Loc:
    keys: list[str] = []
    while path is not None:
        path, key = path
        keys.append(str(key) if isinstance(key, int) else _SURROGATE.sub(_escape, key))
    return keys[::-1]


def _scalar_problem(node: Any, escaped: bool) -> tuple[str, str] | None:
    """(message, type) of a number or string that cannot be stored; None for one that can."""
    if isinstance(node, bool) or node is None:
        return None
    if isinstance(node, int) and not INT64_MIN <= node <= INT64_MAX:
        return "integer outside the signed 64-bit range", "int_out_of_range"
    if isinstance(node, float) and not math.isfinite(node):
        return "number that is not finite (NaN, Infinity or out of range)", "number_not_finite"
    if escaped and isinstance(node, str) and _SURROGATE.search(node):
        return "string with a lone surrogate", "string_not_unicode"
    return None


def _escape(match: re.Match[str]) -> str:
    """A lone surrogate as its JSON escape, so that the location naming it can be sent as UTF-8."""
    return f"\\u{ord(match.group()):04x}"


def _key_problems(node: dict[str, Any], escaped: bool) -> list[tuple[str, str]]:
    suspects = [k for k in node if "\x00" in k or k[:1] == "$" or escaped or k.count(".") > MAX_KEY_DOTS]
    return [(key, wrong) for key in suspects if (wrong := _key_problem(key, escaped)) is not None]


def _key_problem(key: str, escaped: bool) -> str | None:
    if "\x00" in key:
        return "key holds NUL"
    if key.startswith("$"):
        return "key starts with '$'"
    if key.count(".") > MAX_KEY_DOTS:
        return "key has 255 or more dot-separated parts"
    if escaped and _SURROGATE.search(key):
        return "key with a lone surrogate"
    return None


def media_type(content_type: str | None) -> str:
    """``application/json`` of ``Application/JSON; charset=utf-8``; empty when there is none."""
    return (content_type or "").partition(";")[0].strip().lower()


def accepts(accepted: tuple[str, ...], media: str) -> bool:
    for pattern in accepted:
        kind, _, suffix = pattern.partition("/*")
        if media == pattern or (suffix and media.startswith(kind + "/") and media.endswith(suffix)):
            return True
    return False


class _ParsedRequest(Request):
    """A request whose JSON body ``JsonBodyRoute`` has parsed already."""

    parsed: Any = None

    async def json(self) -> Any:
        return self.parsed


UNSUPPORTED_MEDIA_TYPE: dict[str, Any] = {
    "description": "The body's Content-Type is not one this endpoint takes",
    "content": {PROBLEM: {"schema": {"$ref": "#/components/schemas/Problem"}}},
}


class JsonBodyRoute(APIRoute):
    """Checks the Content-Type of a body and parses a JSON body with ``parse_json`` (the gateway's settings give
    ``max_json_depth``), answering problems before the route's own validation runs."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self._media_types()[0]:
            self.responses = {**self.responses, 415: UNSUPPORTED_MEDIA_TYPE}

    def _media_types(self) -> tuple[tuple[str, ...], bool]:
        """The media types of the bodies this route takes (none: it takes no body), and whether it takes JSON that
        is parsed here (a route that declares its own media types in ``openapi_extra`` reads its body itself)."""
        declared = ((self.openapi_extra or {}).get("requestBody") or {}).get("content")
        if declared:
            return tuple(declared), False
        if self.body_field is not None and not isinstance(self.body_field.field_info, params.Form):
            return JSON_MEDIA_TYPES, True
        return (), False

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handle = super().get_route_handler()
        media_types, parses_json = self._media_types()
        if not media_types:
            return handle

        async def handler(request: Request) -> Response:
            checked = _ParsedRequest(request.scope, request.receive)
            body = await checked.body()
            if not body:
                return await handle(checked)
            media = media_type(checked.headers.get("content-type"))
            if not accepts(media_types, media):
                raise ApiError(
                    ErrorCode.UNSUPPORTED_MEDIA_TYPE,
                    f"Send the body as {' or '.join(media_types)}"
                    + (f", not {media}." if media else " with its Content-Type header."),
                )
            if parses_json:
                try:
                    checked.parsed = parse_json(body, max_depth=request.app.state.settings.max_json_depth)
                except BodyError as exc:
                    raise exc.api_error() from None
            return await handle(checked)

        return handler
