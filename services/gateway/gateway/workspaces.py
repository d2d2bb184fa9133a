"""Workspaces and their API keys. Keys are random and shown once; only their SHA-256 digest is stored."""

import hashlib
import secrets
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
    """The caller of a request: a workspace, through one of its keys."""

    workspace_id: str
    key_id: str


@dataclass(frozen=True, slots=True)
class CreatedWorkspace:
    workspace_id: str
    name: str
    api_key: str


def digest(api_key: str) -> str:
    return hashlib.sha256(api_key.encode()).hexdigest()


class WorkspaceStore:
    def __init__(self, db: AsyncDatabase[Document]) -> None:
        self._workspaces = db["workspaces"]
        self._keys = db["api_keys"]

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
        doc = await self._keys.find_one({"digest": digest(api_key), "revoked_at": {"$exists": False}})
        return None if doc is None else Principal(doc["workspace_id"], doc["_id"])

    async def get(self, workspace_id: str) -> Document | None:
        return await self._workspaces.find_one({"_id": workspace_id})
