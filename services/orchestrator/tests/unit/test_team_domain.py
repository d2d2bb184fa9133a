from functools import reduce

import pytest
from pydantic import ValidationError

from contracts.budgets import Budget
from contracts.teams import (
    AddTeamMember,
    ArchiveTeam,
    CreateTeam,
    MemberChange,
    RemoveTeamMember,
    TeamFromTemplate,
    TeamMember,
    TeamSpec,
    TemplateMember,
)
from orchestrator.domain.team import (
    InvalidTeam,
    Team,
    TeamIsArchived,
    UnknownMember,
    decide_add,
    decide_archive,
    decide_create,
    decide_remove,
    evolve,
    spec_of,
)
from orchestrator.domain.team_templates import TEAM_TEMPLATES, instantiate

SPEC = TeamSpec(
    name="Sales",
    members=[TeamMember(agent_id="a1", role="qualifier", lead=True), TeamMember(agent_id="a2", role="writer")],
)
AGENTS = {"a1": False, "a2": False, "a3": False, "old": True}


def _created() -> Team:
    return reduce(evolve, decide_create(Team(), CreateTeam(team_id="t1", spec=SPEC), AGENTS), Team())


def test_create_add_a_new_lead_and_remove_then_replay() -> None:
    events = decide_create(Team(), CreateTeam(team_id="t1", spec=SPEC), AGENTS)
    state = reduce(evolve, events, Team())
    events += decide_add(
        state, AddTeamMember(team_id="t1", member=TeamMember(agent_id="a3", role="boss", lead=True)), AGENTS
    )
    state = reduce(evolve, events, Team())
    assert state.lead == "a3"
    events += decide_remove(state, RemoveTeamMember(team_id="t1", agent_id="a1"))
    replayed = reduce(evolve, events, Team())
    assert replayed == reduce(evolve, events, Team())
    assert [m.agent_id for m in spec_of(replayed).members] == ["a2", "a3"]


def test_members_must_be_live_agents_of_the_workspace() -> None:
    stranger = TeamSpec(name="X", members=[TeamMember(agent_id="nobody", role="r", lead=True)])
    with pytest.raises(UnknownMember):
        decide_create(Team(), CreateTeam(team_id="t1", spec=stranger), AGENTS)
    with pytest.raises(UnknownMember):
        decide_add(_created(), AddTeamMember(team_id="t1", member=TeamMember(agent_id="old", role="r")), AGENTS)


def test_a_team_has_one_lead_which_cannot_leave() -> None:
    with pytest.raises(ValidationError):
        TeamSpec(name="X", members=[TeamMember(agent_id="a1", role="r")])
    with pytest.raises(ValidationError):
        TeamSpec(name="X", members=[TeamMember(agent_id="a1", role="r", lead=True)] * 2)
    with pytest.raises(InvalidTeam):
        decide_remove(_created(), RemoveTeamMember(team_id="t1", agent_id="a1"))
    archived = reduce(evolve, decide_archive(_created(), ArchiveTeam(team_id="t1")), _created())
    with pytest.raises(TeamIsArchived):
        decide_add(archived, AddTeamMember(team_id="t1", member=TeamMember(agent_id="a3", role="r")), AGENTS)


def test_every_template_has_three_members_one_lead_and_written_instructions() -> None:
    assert sorted(TEAM_TEMPLATES) == ["marketing", "operations", "sales", "support"]
    for template in TEAM_TEMPLATES.values():
        assert len(template.members) == 3
        assert sum(m.lead for m in template.members) == 1
        assert all(len(m.instructions) > 40 and m.capabilities for m in template.members)


def test_a_template_request_renames_drops_changes_and_adds_members() -> None:
    request = TeamFromTemplate(
        template="sales",
        name="EMEA sales",
        drop=["follow-up-specialist"],
        change={"proposal-writer": MemberChange(name="Proposals", budget=Budget(tokens=1000))},
        add=[TemplateMember(key="analyst", name="Analyst", role="analyst")],
    )
    agents, spec = instantiate(TEAM_TEMPLATES["sales"], request, lambda key: f"agt_{key.replace('-', '_')}")
    assert spec.name == "EMEA sales"
    assert [m.role for m in spec.members] == ["lead qualifier", "proposal writer", "analyst"]
    names = {agent_id: s.name for agent_id, s in agents}
    assert names["agt_proposal_writer"] == "Proposals"
    assert dict(agents)["agt_proposal_writer"].budget is not None
    with pytest.raises(InvalidTeam, match="no member"):
        instantiate(TEAM_TEMPLATES["sales"], TeamFromTemplate(template="sales", drop=["nope"]), str)
    with pytest.raises(InvalidTeam, match="lead"):
        instantiate(TEAM_TEMPLATES["sales"], TeamFromTemplate(template="sales", drop=["lead-qualifier"]), str)
