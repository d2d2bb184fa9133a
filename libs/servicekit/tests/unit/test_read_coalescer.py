"""Overlapping identical reads share one round trip, never one begun before their caller asked."""

import asyncio

import pytest

from servicekit.batching import ReadCoalescer


class Source:
    """A read that returns how many reads began before it, held until ``release`` is set."""

    def __init__(self) -> None:
        self.began = 0
        self.release = asyncio.Event()

    async def read(self) -> int:
        self.began += 1
        number = self.began
        await self.release.wait()
        return number


async def test_callers_who_ask_while_a_read_runs_share_the_next_one() -> None:
    reads: ReadCoalescer[str, int] = ReadCoalescer()
    source = Source()
    first = asyncio.create_task(reads.read("k", source.read))
    await asyncio.sleep(0)
    later = [asyncio.create_task(reads.read("k", source.read)) for _ in range(3)]
    await asyncio.sleep(0.01)
    assert source.began == 1  # the later ones wait: what the running read sees may predate them

    source.release.set()

    assert await first == 1
    assert await asyncio.gather(*later) == [2, 2, 2]  # one read for the three, begun after they asked
    assert source.began == 2


async def test_other_keys_are_not_held_up_and_a_cancelled_caller_cancels_no_one_else() -> None:
    reads: ReadCoalescer[str, int] = ReadCoalescer()
    source = Source()
    a1 = asyncio.create_task(reads.read("a", source.read))
    a2 = asyncio.create_task(reads.read("a", source.read))
    b = asyncio.create_task(reads.read("b", source.read))
    await asyncio.sleep(0.01)
    assert source.began == 2  # "a" and "b" at once

    a1.cancel()
    source.release.set()

    with pytest.raises(asyncio.CancelledError):
        await a1
    assert await a2 == 3
    assert await b == 2


async def test_a_failed_read_fails_its_callers_only() -> None:
    reads: ReadCoalescer[str, int] = ReadCoalescer()
    calls = 0

    async def flaky() -> int:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionError("lost")
        return calls

    with pytest.raises(ConnectionError):
        await reads.read("k", flaky)
    assert await reads.read("k", flaky) == 2
