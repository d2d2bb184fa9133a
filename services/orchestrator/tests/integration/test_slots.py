"""The runtime's concurrency slots on the real database: one document per agent, its holders under the limit, a
redelivery keeping its place, an expired lease given to the next task, a lower limit holding at once, and the
in-flight counts availability reads."""

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from orchestrator.runtime.slots import Slots

Document = dict[str, Any]
WS = "ws_slots"


@pytest.fixture
async def slots(mongo: AsyncMongoClient[Document], env_name: str) -> Slots:
    part = Slots(mongo[f"{env_name}_slots_test"]["slots"], lease_s=30)
    await part.ensure_indexes()
    return part


async def test_the_limit_holds_and_a_release_frees_a_place(slots: Slots) -> None:
    now = datetime.now(UTC)
    assert [await slots.acquire(WS, "ag", 3, f"t{n}", "w", now) for n in range(5)] == [True] * 3 + [False] * 2
    assert await slots.in_flight(WS, now) == {"ag": 3}
    await slots.release(WS, "t1")
    assert await slots.in_flight(WS, now) == {"ag": 2}
    assert await slots.acquire(WS, "ag", 3, "t3", "w", now)
    assert not await slots.acquire(WS, "ag", 3, "t4", "w", now)


async def test_a_redelivery_keeps_its_place_even_when_the_agent_is_full(slots: Slots) -> None:
    now = datetime.now(UTC)
    assert await slots.acquire(WS, "ag", 1, "t0", "w1", now)
    assert await slots.acquire(WS, "ag", 1, "t0", "w2", now + timedelta(seconds=1))
    assert not await slots.acquire(WS, "ag", 1, "t1", "w1", now)
    assert await slots.in_flight(WS, now) == {"ag": 1}


async def test_an_expired_lease_is_taken_over_and_not_counted(slots: Slots) -> None:
    now = datetime.now(UTC)
    assert await slots.acquire(WS, "ag", 2, "dead-0", "gone", now - timedelta(minutes=5))
    assert await slots.acquire(WS, "ag", 2, "dead-1", "gone", now - timedelta(minutes=5))
    assert await slots.in_flight(WS, now) == {}
    assert await slots.acquire(WS, "ag", 2, "t0", "w", now)
    assert await slots.acquire(WS, "ag", 2, "t1", "w", now)
    assert not await slots.acquire(WS, "ag", 2, "t2", "w", now)
    assert await slots.in_flight(WS, now) == {"ag": 2}


async def test_renewing_keeps_a_lease_alive(slots: Slots) -> None:
    start = datetime.now(UTC)
    assert await slots.acquire(WS, "ag", 1, "t0", "w", start)
    later = start + timedelta(seconds=25)
    await slots.renew(WS, "t0", later)
    assert await slots.in_flight(WS, start + timedelta(seconds=40)) == {"ag": 1}
    assert not await slots.acquire(WS, "ag", 1, "t1", "w", start + timedelta(seconds=40))


async def test_a_lower_limit_holds_at_once_and_workspaces_are_apart(slots: Slots) -> None:
    now = datetime.now(UTC)
    for n in range(4):
        assert await slots.acquire(WS, "ag", 4, f"t{n}", "w", now)
    await slots.release(WS, "t0")
    assert not await slots.acquire(WS, "ag", 2, "t9", "w", now)  # updated to 2 while 3 are at work
    assert await slots.acquire("ws_other", "ag", 1, "t0", "w", now)
    await slots.release("ws_other", "t1")  # another workspace's release frees nothing here
    assert await slots.in_flight(WS, now) == {"ag": 3}
    assert await slots.in_flight("ws_other", now) == {"ag": 1}


async def test_a_recent_load_counts_this_process_takes_and_releases_and_another_process_only_when_read_again(
    slots: Slots,
) -> None:
    other = Slots(slots.collection)  # another replica of the runtime, on the same documents
    now = datetime.now(UTC)
    assert await slots.in_flight(WS, now) == {}
    assert await slots.acquire(WS, "ag", 5, "t0", "w", now)
    assert await slots.acquire(WS, "bg", 5, "t1", "w", now)
    assert await other.acquire(WS, "ag", 5, "t2", "w2", now)
    assert await slots.recent_in_flight(WS, now, max_age_s=60) == {"ag": 1, "bg": 1}  # its own takes, not the other's
    await slots.release(WS, "t1")
    assert await slots.recent_in_flight(WS, now, max_age_s=60) == {"ag": 1, "bg": 0}
    assert await slots.recent_in_flight(WS, now, max_age_s=0) == {"ag": 2}  # read again: everyone's
