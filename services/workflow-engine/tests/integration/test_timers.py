"""Durable timers against the real MongoDB-compatible server."""

from datetime import UTC, datetime
from typing import Any

from pymongo import AsyncMongoClient

from workflow_engine.timers import Timers

Document = dict[str, Any]
NOW = datetime(2026, 1, 1, tzinfo=UTC)


async def test_an_end_drops_only_the_timers_scheduled_before_it(
    mongo: AsyncMongoClient[Document], env_name: str
) -> None:
    timers = Timers(mongo[f"{env_name}_timers"]["timers"])
    await timers.ensure_indexes()

    async def schedule(attempt: int, purpose: Any, version: int) -> bool:
        return await timers.schedule(
            workspace_id="ws",
            execution_id="e1",
            step_id="a",
            attempt=attempt,
            purpose=purpose,
            due_at=NOW,
            version=version,
        )

    assert await schedule(1, "timeout", 3)
    assert not await schedule(1, "timeout", 3), "a timer is also a once-only claim"
    assert await schedule(2, "retry", 7)
    await timers.cancel_before("ws", "e1", 5)  # an ExecutionFailed at version 5, handled after the retry's timer
    assert [t["attempt"] for t in await timers.due(NOW)] == [2]
