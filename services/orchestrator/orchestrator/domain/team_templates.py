"""The four department team templates, their members written for their roles (``roles``). Pure data."""

from collections.abc import Callable

from contracts.agents import AgentSpec
from contracts.teams import (
    MAX_MEMBERS,
    Department,
    MemberChange,
    TeamFromTemplate,
    TeamMember,
    TeamSpec,
    TeamTemplate,
    TemplateMember,
)
from orchestrator.domain.roles import BY_ROLE
from orchestrator.domain.team import InvalidTeam


def _member(key: str, role: str, *, lead: bool = False) -> TemplateMember:
    sheet = BY_ROLE[role]
    return TemplateMember(
        key=key,
        name=sheet.name,
        role=sheet.role,
        instructions=sheet.instructions,
        capabilities=list(sheet.capabilities),
        lead=lead,
    )


TEAM_TEMPLATES: dict[str, TeamTemplate] = {
    t.slug: t
    for t in (
        TeamTemplate(
            slug="sales",
            name="Sales team",
            department=Department.SALES,
            description="Qualifies new leads, writes proposals for the promising ones and follows up on the rest.",
            members=[
                _member("lead-qualifier", "lead qualifier", lead=True),
                _member("proposal-writer", "proposal writer"),
                _member("follow-up-specialist", "follow-up specialist"),
            ],
        ),
        TeamTemplate(
            slug="marketing",
            name="Marketing team",
            department=Department.MARKETING,
            description="Plans campaigns and writes their long-form and social content.",
            members=[
                _member("content-strategist", "content strategist", lead=True),
                _member("copywriter", "copywriter"),
                _member("social-media-manager", "social media manager"),
            ],
        ),
        TeamTemplate(
            slug="support",
            name="Support team",
            department=Department.SUPPORT,
            description="Triages tickets, resolves them, and escalates the urgent and unhappy ones.",
            members=[
                _member("triage", "support triage"),
                _member("resolution-specialist", "resolution specialist"),
                _member("escalation-manager", "escalation manager", lead=True),
            ],
        ),
        TeamTemplate(
            slug="operations",
            name="Operations team",
            department=Department.OPERATIONS,
            description="Analyses processes, schedules the work and reports on how it goes.",
            members=[
                _member("process-analyst", "process analyst", lead=True),
                _member("scheduler", "scheduler"),
                _member("reporting-analyst", "reporting analyst"),
            ],
        ),
    )
}


def instantiate(
    template: TeamTemplate, request: TeamFromTemplate, agent_id_of: Callable[[str], str]
) -> tuple[list[tuple[str, AgentSpec]], TeamSpec]:
    """The agents (id, spec) and the team a template request creates; ``agent_id_of(key)`` names each new agent."""
    keys = {m.key for m in template.members}
    unknown = sorted((set(request.drop) | set(request.change)) - keys)
    if unknown:
        raise InvalidTeam(f"the {template.slug} template has no member {', '.join(unknown)} (it has {sorted(keys)})")
    members = [m for m in template.members if m.key not in set(request.drop)] + list(request.add)
    if not members or len(members) > MAX_MEMBERS:
        raise InvalidTeam(f"a team has 1 to {MAX_MEMBERS} members; this request makes {len(members)}")
    if len({m.key for m in members}) != len(members):
        raise InvalidTeam("each member of a team needs its own key")
    agents: list[tuple[str, AgentSpec]] = []
    team_members: list[TeamMember] = []
    for member in members:
        change = request.change.get(member.key, MemberChange())
        agent_spec = AgentSpec(
            name=change.name or member.name,
            role=member.role,
            instructions=member.instructions,
            capabilities=member.capabilities,
            model=change.model or request.model or member.model,
            budget=change.budget or member.budget,
        )
        agent_id = agent_id_of(member.key)
        agents.append((agent_id, agent_spec))
        team_members.append(TeamMember(agent_id=agent_id, role=member.role, lead=member.lead))
    if sum(m.lead for m in team_members) != 1:
        raise InvalidTeam("the team needs exactly one lead: keep the template's lead or add one member with lead true")
    spec = TeamSpec(
        name=request.name or template.name,
        department=template.department,
        description=template.description,
        members=team_members,
    )
    return agents, spec
