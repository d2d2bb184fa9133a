from functools import reduce

import pytest

from contracts.agents import AgentSpec, AgentStatus, ChangeAgentStatus, RegisterAgent
from orchestrator.domain.agent import (
    Agent,
    AgentAlreadyExists,
    AgentNotFound,
    InvalidTransition,
    decide_register,
    decide_status,
    evolve,
)

SPEC = AgentSpec(name="Proposal writer", role="sales", capabilities=["writing"])


def test_register_then_replay_gives_the_same_state() -> None:
    events = decide_register(Agent(), RegisterAgent(agent_id="a1", spec=SPEC))
    state = reduce(evolve, events, Agent())
    events += decide_status(state, ChangeAgentStatus(agent_id="a1", status=AgentStatus.BUSY))
    replayed_once = reduce(evolve, events, Agent())
    replayed_twice = reduce(evolve, events, Agent())
    assert replayed_once == replayed_twice == Agent(agent_id="a1", spec=SPEC, status=AgentStatus.BUSY)


def test_rules() -> None:
    registered = reduce(evolve, decide_register(Agent(), RegisterAgent(agent_id="a1", spec=SPEC)), Agent())
    with pytest.raises(AgentAlreadyExists):
        decide_register(registered, RegisterAgent(agent_id="a1", spec=SPEC))
    with pytest.raises(AgentNotFound):
        decide_status(Agent(), ChangeAgentStatus(agent_id="a1", status=AgentStatus.BUSY))
    with pytest.raises(InvalidTransition):
        decide_status(registered, ChangeAgentStatus(agent_id="a1", status=AgentStatus.AVAILABLE))
