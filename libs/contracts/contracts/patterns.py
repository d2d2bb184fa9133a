"""Regular expressions written by callers (a condition's ``matches``), matched in time linear in the text.

Python's ``re`` backtracks: a pattern like ``(a+)+$`` on a few dozen characters takes seconds, doubling with each
one more, and would stall the process that evaluates it. RE2 (google-re2) never backtracks; the price is that it
has no backreferences and no lookaround (nor possessive quantifiers or atomic groups), so a pattern is checked
when a definition is saved, and only there refused. Patterns and the texts they are matched against are bounded,
so one evaluation costs at most a few milliseconds.
"""

import functools
from typing import Any

import re2

MAX_PATTERN_CHARS = 1000
MAX_SUBJECT_CHARS = 100_000  # a longer text does not match (RE2 is linear, but a bound keeps each call short)
MAX_PROGRAM_BYTES = 1 << 20  # RE2's memory budget for one compiled pattern (its program and its DFA cache)
SYNTAX = (
    "RE2 syntax (https://github.com/google/re2/wiki/Syntax), searched anywhere in the text: no backreferences or "
    f"lookaround; at most {MAX_PATTERN_CHARS} characters; a text longer than {MAX_SUBJECT_CHARS} characters does "
    "not match"
)


class PatternError(ValueError):
    """The pattern cannot be used: too long, or not valid RE2 syntax."""


def _options() -> Any:
    options = re2.Options()
    options.max_mem = MAX_PROGRAM_BYTES
    options.log_errors = False  # the error is raised to the caller; RE2 would also print it to stderr
    options.never_capture = True  # a condition asks only whether it matches
    return options


@functools.lru_cache(maxsize=128)
def compile_pattern(pattern: str) -> Any:
    """The compiled pattern (recently used ones are kept); raises PatternError."""
    if len(pattern) > MAX_PATTERN_CHARS:
        raise PatternError(f"is longer than {MAX_PATTERN_CHARS} characters")
    try:
        return re2.compile(pattern, _options())
    except re2.error as exc:
        reason = exc.args[0] if exc.args else "invalid"
        text = reason.decode(errors="replace") if isinstance(reason, bytes) else str(reason)
        raise PatternError(f"is not a valid RE2 expression ({text}); no backreferences or lookaround") from None


def check_pattern(pattern: object) -> str | None:
    """What is wrong with ``pattern`` as a ``matches`` operand, or None when it can be used."""
    if not isinstance(pattern, str):
        return "must be a string"
    try:
        compile_pattern(pattern)
    except PatternError as exc:
        return str(exc)
    return None


def search(pattern: str, text: str) -> bool:
    """Whether ``pattern`` matches anywhere in ``text``; False for a text longer than MAX_SUBJECT_CHARS. Raises
    PatternError for a pattern that ``check_pattern`` refuses."""
    if len(text) > MAX_SUBJECT_CHARS:
        return False
    return compile_pattern(pattern).search(text) is not None
