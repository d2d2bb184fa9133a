"""A background loop that runs a coroutine function every few seconds while the service runs."""

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)


class Every:
    """Run ``work`` every ``interval_s`` from ``start`` until ``stop``; a failure is logged and the loop goes on."""

    def __init__(self, interval_s: float, work: Callable[[], Awaitable[object]], name: str) -> None:
        self._interval_s = interval_s
        self._work = work
        self._name = name
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=self._name)

    async def stop(self) -> None:
        # The flag as well as the cancellation: in 3.11 a wait_for inside nats-py can swallow the latter.
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while not self._stopping:
            try:
                await self._work()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("%s failed; trying again in %s s", self._name, self._interval_s)
            await asyncio.sleep(self._interval_s)
