"""MongoDB client construction; every operation is bounded by a client-side timeout."""

from typing import Any

from pymongo import AsyncMongoClient
from pymongo.errors import PyMongoError


def connect_mongo(url: str, timeout_ms: int) -> AsyncMongoClient[dict[str, Any]]:
    """Create the client inside a running event loop (it binds to the loop that first uses it)."""
    return AsyncMongoClient(
        url,
        timeoutMS=timeout_ms,
        serverSelectionTimeoutMS=timeout_ms,
        connectTimeoutMS=timeout_ms,
        tz_aware=True,
        uuidRepresentation="standard",
    )


async def ping(client: AsyncMongoClient[dict[str, Any]]) -> bool:
    try:
        await client.admin.command("ping")
    except PyMongoError:
        return False
    return True
