"""The conversation each gateway and key last talked in, so that ``neptune chat`` continues it next time.

Kept in ``$XDG_STATE_HOME/agent-platform/neptune.json`` (``~/.local/state/...`` without it), by gateway URL and a
fingerprint of the key (a conversation belongs to a workspace); the key itself is never written.
"""

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path


def state_path(environ: Mapping[str, str]) -> Path:
    base = environ.get("XDG_STATE_HOME", "")
    root = Path(base) if os.path.isabs(base) else Path.home() / ".local" / "state"  # the spec ignores a relative one
    return root / "agent-platform" / "neptune.json"


class LastConversations:
    def __init__(self, path: Path) -> None:
        self._path = path

    @staticmethod
    def slot(url: str, api_key: str) -> str:
        return f"{url.rstrip('/')} {hashlib.sha256(api_key.encode()).hexdigest()[:16]}"

    def get(self, slot: str) -> str | None:
        return self._read().get(slot)

    def remember(self, slot: str, conversation_id: str) -> None:
        self._write({**self._read(), slot: conversation_id})

    def forget(self, slot: str) -> None:
        self._write({k: v for k, v in self._read().items() if k != slot})

    def _read(self) -> dict[str, str]:
        try:
            stored = json.loads(self._path.read_text())
        except (OSError, ValueError):
            return {}
        last = stored.get("last_conversation") if isinstance(stored, dict) else None
        return {k: v for k, v in last.items() if isinstance(v, str)} if isinstance(last, dict) else {}

    def _write(self, last: dict[str, str]) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        partial = self._path.with_suffix(".tmp")
        partial.write_text(json.dumps({"last_conversation": last}, indent=2) + "\n")
        partial.replace(self._path)
