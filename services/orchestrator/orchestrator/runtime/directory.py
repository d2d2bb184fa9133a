"""What the runtime routes and budgets by, kept in the process: each workspace's agents and its monthly cap.

Every task needs the workspace's agents (to route) and its cap (to reserve), and they change seldom, so reading
the orchestrator's read models for each task spent two round trips on answers that were nearly always the same.
The directory reads them once per workspace and keeps them until an event of the agent or workspace-budget
aggregate is heard (a core NATS subscription beside the durable consumers, on the subjects the relay publishes to),
or until ``ttl_s`` has passed (a safety net for an event missed across a reconnect). An event heard before the read
model has applied it must not leave the old rows cached: the directory remembers the version each heard event
brought to its stream, and keeps a reading only once every such stream's row is at that version (rows carry their
stream's version); until then each task reads again. So a task sees an agent's update, pause or retirement as
soon as the read model does, as it did when it read the read model itself.
"""

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Protocol

from nats.aio.msg import Msg

from contracts.budgets import Budget
from orchestrator.domain.agent import AGGREGATE as AGENT_AGGREGATE
from orchestrator.domain.budget import AGGREGATE as BUDGET_AGGREGATE
from orchestrator.domain.routing import Candidate
from orchestrator.projections import candidate_of
from servicekit.bus import Bus

log = logging.getLogger(__name__)
Document = dict[str, Any]
MAX_KEPT = 20_000  # workspaces' readings kept at once


class AgentRows(Protocol):
    async def rows(self, workspace_id: str, *, retired: bool | None = None, limit: int = 1000) -> list[Document]: ...

    async def versions(self, workspace_id: str, stream_ids: list[str]) -> dict[str, int]: ...


class CapRows(Protocol):
    async def row(self, workspace_id: str) -> Document | None: ...


@dataclass(slots=True)
class _Entry:
    value: Any
    read_at: float


class Directory:
    def __init__(
        self,
        agents: AgentRows,
        caps: CapRows,
        *,
        ttl_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._agents = agents
        self._caps = caps
        self._ttl = ttl_s
        self._clock = clock
        self._kept: dict[tuple[str, str], _Entry] = {}  # (aggregate, workspace) -> what was read
        self._heard: dict[tuple[str, str], dict[str, int]] = {}  # (aggregate, workspace) -> stream -> version

    async def watch(self, bus: Bus) -> None:
        """Hear the agent and workspace-budget events as the relay publishes them."""
        for aggregate in (AGENT_AGGREGATE, BUDGET_AGGREGATE):
            await bus.nc.subscribe(bus.subjects.events_of(aggregate), cb=self._heard_event)

    async def _heard_event(self, msg: Msg) -> None:
        self.heard(msg.data)

    def heard(self, body: bytes) -> None:
        """An event of the agent or budget aggregate: what the directory keeps of its workspace is dropped."""
        try:
            record = json.loads(body)
            aggregate, ws = str(record["aggregate"]), str(record["workspace_id"])
            stream, version = str(record["stream_id"]), int(record["version"])
        except (ValueError, KeyError, TypeError):
            log.warning("an event could not be read; the directory forgets what it kept")
            self._kept.clear()
            return
        if len(self._heard) >= MAX_KEPT:  # a bound on memory: what is forgotten is read again
            self._heard.clear()
            self._kept.clear()
        streams = self._heard.setdefault((aggregate, ws), {})
        streams[stream] = max(version, streams.get(stream, 0))
        self._kept.pop((aggregate, ws), None)

    async def candidates(self, ws: str, in_flight: dict[str, int], *, fresh: bool = False) -> list[Candidate]:
        """The workspace's agents that are not retired, as routing sees them (``fresh``: read now)."""
        kept: list[Candidate] = await self._read(AGENT_AGGREGATE, ws, fresh, self._agent_rows)
        return [replace(c, in_flight=in_flight.get(c.agent_id, 0)) for c in kept]

    async def cap(self, ws: str) -> Budget | None:
        row: Document | None = await self._read(BUDGET_AGGREGATE, ws, False, self._caps.row)
        return None if row is None or row.get("budget") is None else Budget.model_validate(row["budget"])

    async def _agent_rows(self, ws: str) -> list[Document]:
        return await self._agents.rows(ws, retired=False)

    async def _read(self, aggregate: str, ws: str, fresh: bool, read: Callable[[str], Any]) -> Any:
        key = (aggregate, ws)
        kept = self._kept.get(key)
        now = self._clock()
        if kept is not None and not fresh and now - kept.read_at < self._ttl:
            return kept.value
        rows = await read(ws)
        value = _parsed(aggregate, rows)
        if await self._caught_up(key, rows):
            if len(self._kept) >= MAX_KEPT:
                self._kept.clear()  # a bound on memory: what is dropped is read again
            self._kept[key] = _Entry(value, now)
        return value

    async def _caught_up(self, key: tuple[str, str], value: Any) -> bool:
        """Whether the read model holds every event heard for the workspace (then what was heard is forgotten): the
        cap's row carries its version; the agents' versions are read for the streams heard (a retired agent's
        row is not among the rows routing reads)."""
        heard = self._heard.get(key)
        if not heard:
            return True
        if key[0] == AGENT_AGGREGATE:
            versions = await self._agents.versions(key[1], sorted(heard))
        else:
            versions = {str(row["_id"]): int(row.get("version", 0)) for row in ([value] if value else [])}
        if any(versions.get(stream, 0) < version for stream, version in heard.items()):
            return False
        del self._heard[key]
        return True


def _parsed(aggregate: str, rows: Any) -> Any:
    """What is kept of a reading, parsed once: the agents as routing candidates (their specs validated), the
    cap's row as it is."""
    return [candidate_of(row, {}) for row in rows] if aggregate == AGENT_AGGREGATE else rows
