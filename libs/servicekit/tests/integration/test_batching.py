"""Group commit of single-document writes against the real MongoDB-compatible server."""

import asyncio
from typing import Any

import pytest
from pymongo import AsyncMongoClient
from pymongo.errors import DuplicateKeyError

from servicekit.batching import InsertBatcher, UpdateBatcher

Document = dict[str, Any]


async def test_inserts_made_together_share_a_write_and_each_hears_its_own_duplicate(
    mongo: AsyncMongoClient[Document], env_name: str
) -> None:
    rows = mongo[f"{env_name}_batching"]["rows"]
    await rows.insert_one({"_id": "taken"})
    batcher = InsertBatcher(rows)

    outcomes = await asyncio.gather(
        *(batcher.insert({"_id": f"r{i}"}) for i in range(5)), batcher.insert({"_id": "taken"}), return_exceptions=True
    )

    assert outcomes[:5] == [None] * 5
    assert isinstance(outcomes[5], DuplicateKeyError)
    assert await rows.count_documents({}) == 6


@pytest.mark.parametrize("stale", [False, True])
async def test_updates_made_together_say_they_applied_or_that_the_caller_must_look(
    mongo: AsyncMongoClient[Document], env_name: str, stale: bool
) -> None:
    rows = mongo[f"{env_name}_batching"]["versions"]
    await rows.insert_many([{"_id": f"r{i}", "version": 1} for i in range(4)])
    batcher = UpdateBatcher(rows)
    wanted = [1] * 4
    if stale:
        wanted[2] = 7  # this compare-and-set does not match: its row is not at version 7

    outcomes = await asyncio.gather(
        *(
            batcher.update({"_id": f"r{i}", "version": wanted[i]}, {"$set": {"version": wanted[i] + 1}})
            for i in range(4)
        )
    )

    assert outcomes == ([None] * 4 if stale else [True] * 4)
    versions = {doc["_id"]: doc["version"] async for doc in rows.find()}
    assert versions == {"r0": 2, "r1": 2, "r2": 1 if stale else 2, "r3": 2}
