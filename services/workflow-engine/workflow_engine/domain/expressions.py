"""Expressions and predicates over an execution's data. Pure functions."""

from collections.abc import Mapping
from typing import Any

from contracts import patterns
from contracts.workflows import EXPRESSION, AllOf, AnyOf, Comparison, Operator, Predicate

MISSING = object()


def is_expression(value: Any) -> bool:
    return isinstance(value, str) and value.startswith("$")


def referenced_step(expression: str) -> str | None:
    match = EXPRESSION.match(expression)
    return match.group(2) if match else None


def resolve(expression: str, context: Mapping[str, Any]) -> Any:
    """The value at ``expression`` in ``context`` ({"input": ..., "steps": {id: {"output": ...}}}), or MISSING."""
    if not EXPRESSION.match(expression):
        raise ValueError(f"not an expression: {expression!r}")
    current: Any = context
    for part in expression[1:].split("."):
        if isinstance(current, Mapping) and part in current:
            current = current[part]
        elif isinstance(current, list) and part.isdigit() and int(part) < len(current):
            current = current[int(part)]
        else:
            return MISSING
    return current


def render(mapping: Mapping[str, Any], context: Mapping[str, Any]) -> dict[str, Any]:
    """A step's input: expressions replaced by their values (None when missing), literals kept, at any depth."""
    return {key: _render_value(value, context) for key, value in mapping.items()}


def _render_value(value: Any, context: Mapping[str, Any]) -> Any:
    if is_expression(value):
        found = resolve(value, context)
        return None if found is MISSING else found
    if isinstance(value, Mapping):
        return render(value, context)
    if isinstance(value, list):
        return [_render_value(item, context) for item in value]
    return value


def holds(predicate: Predicate, context: Mapping[str, Any]) -> bool:
    match predicate:
        case AllOf(all=items):
            return all(holds(p, context) for p in items)
        case AnyOf(any=items):
            return any(holds(p, context) for p in items)
        case Comparison():
            return compare(predicate, resolve(predicate.field, context))
    raise TypeError(f"unknown predicate {predicate!r}")  # pragma: no cover


def compare(comparison: Comparison, actual: Any) -> bool:
    op, expected = comparison.op, comparison.value
    if op is Operator.EXISTS:
        present = actual is not MISSING and actual is not None
        return present if expected is None else present == bool(expected)
    if actual is MISSING:
        return False
    try:
        match op:
            case Operator.EQ:
                return bool(actual == expected)
            case Operator.NE:
                return bool(actual != expected)
            case Operator.GT:
                return bool(actual > expected)
            case Operator.GTE:
                return bool(actual >= expected)
            case Operator.LT:
                return bool(actual < expected)
            case Operator.LTE:
                return bool(actual <= expected)
            case Operator.CONTAINS:
                return expected in actual if isinstance(actual, str | list | dict) else False
            case Operator.IN:
                return actual in expected if isinstance(expected, str | list | dict) else False
            case Operator.MATCHES:
                return isinstance(actual, str) and _matches(str(expected), actual)
    except TypeError:
        return False  # e.g. "abc" > 3: a comparison of unlike types does not hold
    return False  # pragma: no cover


def _matches(pattern: str, text: str) -> bool:
    try:
        return patterns.search(pattern, text)
    except patterns.PatternError:
        return False  # refused on save; only a definition saved before patterns were RE2 can hold one
