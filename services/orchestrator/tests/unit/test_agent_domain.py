from functools import reduce

import pytest
from pydantic import ValidationError

from contracts.agents import (
    AgentSpec,
    AgentState,
    AgentStatus,
    AgentStatusChanged,
    ModelSetting,
    RegisterAgent,
    RetireAgent,
    SetAgentState,
    UpdateAgent,
)
from orchestrator.domain.agent import (
    Agent,
    AgentAlreadyExists,
    AgentNotFound,
    AgentRetiredError,
    InvalidTransition,
    decide_register,
    decide_retire,
    decide_state,
    decide_update,
    evolve,
)

SPEC = AgentSpec(name="Proposal writer", role="sales", capabilities=["writing"])


def _registered() -> Agent:
    return reduce(evolve, decide_register(Agent(), RegisterAgent(agent_id="a1", spec=SPEC)), Agent())


def test_register_update_pause_then_replay_gives_the_same_state() -> None:
    events = decide_register(Agent(), RegisterAgent(agent_id="a1", spec=SPEC))
    state = reduce(evolve, events, Agent())
    newer = SPEC.model_copy(update={"instructions": "Be brief.", "concurrency_limit": 2})
    events += decide_update(state, UpdateAgent(agent_id="a1", spec=newer))
    state = reduce(evolve, events, Agent())
    events += decide_state(state, SetAgentState(agent_id="a1", state=AgentState.PAUSED))
    replayed_once = reduce(evolve, events, Agent())
    replayed_twice = reduce(evolve, events, Agent())
    assert replayed_once == replayed_twice == Agent(agent_id="a1", spec=newer, spec_version=2, state=AgentState.PAUSED)


def test_rules() -> None:
    registered = _registered()
    with pytest.raises(AgentAlreadyExists):
        decide_register(registered, RegisterAgent(agent_id="a1", spec=SPEC))
    with pytest.raises(AgentNotFound):
        decide_update(Agent(), UpdateAgent(agent_id="a2", spec=SPEC))
    with pytest.raises(InvalidTransition):
        decide_state(registered, SetAgentState(agent_id="a1", state=AgentState.ACTIVE))
    assert decide_update(registered, UpdateAgent(agent_id="a1", spec=SPEC)) == []  # the same spec: no new version


def test_a_retired_agent_cannot_be_updated_paused_or_retired_again() -> None:
    retired = reduce(evolve, decide_retire(_registered(), RetireAgent(agent_id="a1")), _registered())
    assert retired.retired
    assert retired.spec == SPEC  # its history stays readable
    with pytest.raises(AgentRetiredError):
        decide_update(retired, UpdateAgent(agent_id="a1", spec=SPEC.model_copy(update={"name": "New"})))
    with pytest.raises(AgentRetiredError):
        decide_retire(retired, RetireAgent(agent_id="a1"))
    with pytest.raises(AgentRetiredError):
        decide_state(retired, SetAgentState(agent_id="a1", state=AgentState.PAUSED))


def test_a_status_stored_by_hand_before_replays_as_in_or_out_of_service() -> None:
    offline = AgentStatusChanged(agent_id="a1", previous=AgentStatus.AVAILABLE, status=AgentStatus.OFFLINE)
    assert evolve(_registered(), offline).state is AgentState.PAUSED
    busy = AgentStatusChanged(agent_id="a1", previous=AgentStatus.OFFLINE, status=AgentStatus.BUSY)
    assert evolve(evolve(_registered(), offline), busy).state is AgentState.ACTIVE


@pytest.mark.parametrize(
    "bad",
    [
        {"model": {"provider": "anthropic"}},
        {"model": {"provider": "local", "model": "gpt-4o"}},
        {"model": {"provider": "openai", "model": "bad model name"}},
        {"model": {"max_output_tokens": 0}},
        {"concurrency_limit": 0},
        {"budget": {"tokens": 0}},
        {"budget": {"cost_usd": -1}},
        {"budget": {}},
    ],
)
def test_bad_agent_settings_are_refused(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        AgentSpec.model_validate({"name": "A", "role": "r", **bad})


def test_an_openai_model_with_limits_is_accepted() -> None:
    spec = AgentSpec.model_validate(
        {"name": "A", "role": "r", "model": {"provider": "openai", "model": "gpt-4o-mini", "max_output_tokens": 256}}
    )
    assert spec.model == ModelSetting(provider="openai", model="gpt-4o-mini", max_output_tokens=256)
