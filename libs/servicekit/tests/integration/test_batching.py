"""Group commit of single-document writes against the real MongoDB-compatible server."""

import asyncio
from typing import Any

import pytest
from pymongo import AsyncMongoClient
from pymongo.errors import DuplicateKeyError, WriteError

from servicekit.batching import InsertBatcher, UpdateBatcher, UpdateManyBatcher, UpsertBatcher

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


async def test_conditional_upserts_made_together_each_hear_whether_they_took_it(
    mongo: AsyncMongoClient[Document], env_name: str
) -> None:
    """Places taken on a list of at most three, five asking at once on a list that exists with one and two more on
    a list that does not exist yet: each hears its own yes or no, as one update_one would tell it."""
    rows = mongo[f"{env_name}_batching"]["lists"]
    await rows.insert_one({"_id": "full-soon", "holders": ["h0"]})
    batcher = UpsertBatcher(rows)

    def take(list_id: str, holder: str) -> Any:
        query = {"_id": list_id, "holders": {"$ne": holder}, "holders.2": {"$exists": False}}
        return batcher.upsert(query, {"$push": {"holders": holder}})

    outcomes = await asyncio.gather(
        *(take("full-soon", f"h{i}") for i in range(1, 6)), take("new", "a"), take("new", "b"), return_exceptions=True
    )

    refused = [isinstance(o, DuplicateKeyError) for o in outcomes]
    assert refused == [False, False, True, True, True, False, False]
    assert (await rows.find_one({"_id": "full-soon"}) or {})["holders"] == ["h0", "h1", "h2"]
    assert (await rows.find_one({"_id": "new"}) or {})["holders"] == ["a", "b"]


async def test_updates_of_many_made_together_are_all_applied(mongo: AsyncMongoClient[Document], env_name: str) -> None:
    rows = mongo[f"{env_name}_batching"]["tags"]
    await rows.insert_many([{"_id": f"r{i}", "group": i % 2, "tags": ["x", f"t{i}"]} for i in range(4)])
    batcher = UpdateManyBatcher(rows)

    await asyncio.gather(
        batcher.update_many({"group": 0}, {"$pull": {"tags": "x"}}),
        batcher.update_many({"_id": "r1"}, {"$pull": {"tags": "t1"}}),
        batcher.update_many({"group": 9}, {"$pull": {"tags": "x"}}),  # matches nothing: no error
    )

    tags = {doc["_id"]: doc["tags"] async for doc in rows.find()}
    assert tags == {"r0": ["t0"], "r1": ["x"], "r2": ["t2"], "r3": ["x", "t3"]}


async def test_an_update_the_server_refuses_fails_for_its_caller_alone(
    mongo: AsyncMongoClient[Document], env_name: str
) -> None:
    rows = mongo[f"{env_name}_batching"]["counters"]
    await rows.insert_many([{"_id": "n", "count": 1}, {"_id": "s", "count": "one"}])
    batcher = UpdateBatcher(rows)

    outcomes = await asyncio.gather(
        batcher.update({"_id": "n"}, {"$inc": {"count": 1}}),
        batcher.update({"_id": "s"}, {"$inc": {"count": 1}}),  # not a number: the server refuses it
        return_exceptions=True,
    )

    assert outcomes[0] is None  # written, but the batch cannot say so: its caller looks
    assert isinstance(outcomes[1], WriteError)
    assert (await rows.find_one({"_id": "n"}) or {})["count"] == 2
