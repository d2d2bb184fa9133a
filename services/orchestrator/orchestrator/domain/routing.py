"""Routing a task to an agent: pure, so the rules are tested without I/O.

A task names an agent, or a role and/or a capability. The candidates are the workspace's agents that are not
retired and can take it (``can_take``). Among those that are in service and below their concurrency limit, the
best is the one matching both role and capability, then capability, then role, then the lowest load (in-flight
tasks over limit), then the id (so the choice is deterministic). With candidates but none free the task waits;
with no candidate at all it can never run (``no_agent``).
"""

from dataclasses import dataclass
from enum import Enum

from contracts.agents import AgentSpec, AgentState, can_take


@dataclass(frozen=True, slots=True)
class Candidate:
    agent_id: str
    spec: AgentSpec
    spec_version: int
    state: AgentState
    retired: bool
    in_flight: int


class Verdict(Enum):
    ROUTED = "routed"
    WAIT = "wait"
    NO_AGENT = "no_agent"


@dataclass(frozen=True, slots=True)
class Route:
    verdict: Verdict
    choices: tuple[Candidate, ...] = ()
    """Free agents, best first (the caller takes the first whose slot it wins)."""


def eligible(candidate: Candidate, agent_id: str | None, role: str | None, capability: str | None) -> bool:
    if candidate.retired:
        return False
    if agent_id is not None:
        return candidate.agent_id == agent_id
    return can_take(candidate.spec, role, capability)


def route(candidates: list[Candidate], agent_id: str | None, role: str | None, capability: str | None) -> Route:
    able = [c for c in candidates if eligible(c, agent_id, role, capability)]
    if not able:
        return Route(Verdict.NO_AGENT)
    free = [c for c in able if c.state is AgentState.ACTIVE and c.in_flight < c.spec.concurrency_limit]
    if not free:
        return Route(Verdict.WAIT)

    def rank(c: Candidate) -> tuple[int, float, str]:
        caps = {x.casefold() for x in c.spec.capabilities}
        by_capability = capability is not None and capability.casefold() in caps
        by_role = role is not None and c.spec.role.casefold() == role.casefold()
        match = 0 if by_capability and by_role else 1 if by_capability else 2
        return match, c.in_flight / c.spec.concurrency_limit, c.agent_id

    return Route(Verdict.ROUTED, tuple(sorted(free, key=rank)))
