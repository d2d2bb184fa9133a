"""Text helpers shared by the read model and retrieval."""

import json
from typing import Any


def render_value(value: Any) -> str:
    """A working entry's value as searchable text."""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)
