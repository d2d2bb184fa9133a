"""schemathesis hooks for tests/system/test_openapi_conformance.py (loaded through SCHEMATHESIS_HOOKS)."""

import uuid
from typing import Any

import schemathesis
from schemathesis import Case
from schemathesis.hooks import HookContext


@schemathesis.hook
def before_call(ctx: HookContext, case: Case[Any], **kwargs: Any) -> None:
    """Give every request its own Idempotency-Key. A key names one request: the same key with another body is
    rightly refused (422 idempotency_key_reused), but a generator that draws "0" for every operation cannot know that,
    and would take it for a schema-valid request rejected. A key that is invalid on purpose is left as it is."""
    key = case.headers.get("Idempotency-Key") if case.headers else None
    if case.headers is not None and isinstance(key, str) and 1 <= len(key) <= 200:
        case.headers["Idempotency-Key"] = (uuid.uuid4().hex + key)[:200]
