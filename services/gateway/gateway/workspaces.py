"""Workspaces and their API keys. Keys are random and shown once; only their SHA-256 digest is stored."""

import hashlib
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pymongo import ASCENDING
from pymongo.asynchronous.database import AsyncDatabase

from contracts import new_id

Document = dict[str, Any]
KEY_PREFIX = "apk_"


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller of a request: a workspace, through one of its keys (``via`` Neptune, with a credential the
    gateway minted for a chat turn)."""

    workspace_id: str
    key_id: str
    via: str | None = None


@dataclass(frozen=True, slots=True)
class CreatedWorkspace:
    workspace_id: str
    name: str
    api_key: str


def digest(api_key: str) -> str:
    return hashlib.sha256(api_key.encode()).hexdigest()


class WorkspaceStore:
    """Workspaces and keys. A verified key is remembered for ``key_cache_s`` seconds, so most requests authenticate
    without a database read."""

    def __init__(self, db: AsyncDatabase[Document], *, key_cache_s: float = 30.0, key_cache_size: int = 10_000) -> None:
        self._workspaces = db["workspaces"]
        self._keys = db["api_keys"]
        self._ttl = key_cache_s
        self._size = key_cache_size
        self._verified: OrderedDict[str, tuple[Principal, float]] = OrderedDict()

    async def ensure_indexes(self) -> None:
        await self._keys.create_index([("digest", ASCENDING)], unique=True)
        await self._keys.create_index([("workspace_id", ASCENDING)])

    async def create(self, name: str) -> CreatedWorkspace:
        workspace_id = "ws_" + new_id()[:20]
        await self._workspaces.insert_one({"_id": workspace_id, "name": name, "created_at": datetime.now(UTC)})
        return CreatedWorkspace(workspace_id, name, await self.issue_key(workspace_id))

    async def issue_key(self, workspace_id: str) -> str:
        key_id = new_id()[:12]
        api_key = f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
        await self._keys.insert_one(
            {"_id": key_id, "workspace_id": workspace_id, "digest": digest(api_key), "created_at": datetime.now(UTC)}
        )
        return api_key

    async def authenticate(self, api_key: str) -> Principal | None:
        if not api_key.startswith(KEY_PREFIX) or len(api_key) > 200:
            return None
        return await self._verify(f"key:{digest(api_key)}", {"digest": digest(api_key)})

    async def key_active(self, workspace_id: str, key_id: str) -> bool:
        """Whether the key is the workspace's and not revoked (a credential minted from it lives no longer); cached
        like a verified key, so Neptune's calls with a credential cost no more reads than the caller's own."""
        found = await self._verify(f"id:{workspace_id}:{key_id}", {"_id": key_id, "workspace_id": workspace_id})
        return found is not None

    async def _verify(self, cache_key: str, selector: Document) -> Principal | None:
        """The principal of the active key ``selector`` finds, remembered for ``key_cache_s`` under ``cache_key``."""
        now = time.monotonic()
        cached = self._verified.get(cache_key)
        if cached is not None and cached[1] > now:
            return cached[0]
        doc = await self._keys.find_one({**selector, "revoked_at": {"$exists": False}})
        if doc is None:
            self._verified.pop(cache_key, None)
            return None
        principal = Principal(doc["workspace_id"], doc["_id"])
        self._verified[cache_key] = (principal, now + self._ttl)
        self._verified.move_to_end(cache_key)
        while len(self._verified) > self._size:
            self._verified.popitem(last=False)
        return principal

    async def get(self, workspace_id: str) -> Document | None:
        return await self._workspaces.find_one({"_id": workspace_id})
