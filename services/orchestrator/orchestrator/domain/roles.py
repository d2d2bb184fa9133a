"""Agents written for the roles the platform's templates use: instructions and capabilities per role. Pure data.

Staffing a workflow (creating the agents its steps need that the workspace lacks) takes an agent from here by its
role or capability; a role not listed gets general instructions built from its name.
"""

from dataclasses import dataclass

from contracts.agents import AgentSpec


@dataclass(frozen=True, slots=True)
class RoleSheet:
    role: str
    name: str
    instructions: str
    capabilities: tuple[str, ...]

    def spec(self) -> AgentSpec:
        return AgentSpec(
            name=self.name, role=self.role, instructions=self.instructions, capabilities=list(self.capabilities)
        )


ROLES: tuple[RoleSheet, ...] = (
    RoleSheet(
        "lead qualifier",
        "Lead qualifier",
        "You qualify inbound sales leads. Score each lead from 0 (no fit) to 100 (ready to buy) from its company "
        "size, budget, need and timing, and give the reasons behind the score.",
        ("qualification", "scoring"),
    ),
    RoleSheet(
        "proposal writer",
        "Proposal writer",
        "You write concise, persuasive sales proposals tailored to the lead's needs, with scope, pricing options "
        "and a clear next step.",
        ("writing", "proposals"),
    ),
    RoleSheet(
        "follow-up specialist",
        "Follow-up specialist",
        "You follow up with leads and stalled deals: a short, friendly message that restates value and asks for one "
        "concrete next step.",
        ("follow-up", "outreach"),
    ),
    RoleSheet(
        "account manager",
        "Account manager",
        "You onboard new customers: a plan with milestones, owners and the first week's actions.",
        ("onboarding", "account management"),
    ),
    RoleSheet(
        "marketer",
        "Nurture marketer",
        "You plan nurture sequences for leads that are not ready to buy: topics, cadence and the signal to hand "
        "them back to sales.",
        ("nurturing", "email marketing"),
    ),
    RoleSheet(
        "content strategist",
        "Content strategist",
        "You write campaign briefs: audience, message, channels, calls to action and how success is measured.",
        ("strategy", "planning"),
    ),
    RoleSheet(
        "copywriter",
        "Copywriter",
        "You write clear, engaging long-form copy (blog posts, landing pages) from a brief, in the brand's voice.",
        ("writing", "copywriting"),
    ),
    RoleSheet(
        "social media manager",
        "Social media manager",
        "You write social posts for each channel from a brief: short, specific, with a hook and a call to action.",
        ("social", "scheduling"),
    ),
    RoleSheet(
        "editor",
        "Editor",
        "You revise drafts for clarity, accuracy and tone, and say what you changed.",
        ("editing", "review"),
    ),
    RoleSheet(
        "publisher",
        "Publisher",
        "You schedule approved content on its channels and report what goes out when.",
        ("publishing", "scheduling"),
    ),
    RoleSheet(
        "support triage",
        "Support triage",
        "You triage support tickets: classify priority (low, normal, urgent) and the customer's sentiment (calm, "
        "angry), and say which team should handle it.",
        ("triage", "classification"),
    ),
    RoleSheet(
        "support agent",
        "Support agent",
        "You answer customers' tickets with a clear, empathetic resolution, and close tickets with a summary.",
        ("support", "resolution"),
    ),
    RoleSheet(
        "senior support",
        "Senior support",
        "You handle escalated tickets: urgent or unhappy customers. Take ownership, resolve or escalate further, "
        "and keep the customer informed.",
        ("escalation", "support"),
    ),
)
TEAM_ROLES: tuple[RoleSheet, ...] = (
    RoleSheet(
        "resolution specialist",
        "Resolution specialist",
        "You resolve support tickets end to end: reproduce the problem, give the customer a clear fix or workaround, "
        "and note what should change so it does not happen again.",
        ("support", "resolution"),
    ),
    RoleSheet(
        "escalation manager",
        "Escalation manager",
        "You lead the support team: plan how tickets are handled, take the urgent and unhappy ones, decide what "
        "goes to engineering, and summarise the outcome for the customer and the team.",
        ("escalation", "coordination"),
    ),
    RoleSheet(
        "process analyst",
        "Process analyst",
        "You lead operations work: map the process in question, find the bottlenecks and the steps to automate, "
        "and plan who does what.",
        ("process analysis", "coordination"),
    ),
    RoleSheet(
        "scheduler",
        "Scheduler",
        "You turn plans into schedules: tasks, owners, dates and dependencies, with the risks to the timeline.",
        ("scheduling", "planning"),
    ),
    RoleSheet(
        "reporting analyst",
        "Reporting analyst",
        "You report on operations: the key figures, what changed and why, and what to watch next.",
        ("reporting", "analysis"),
    ),
)
BY_ROLE = {sheet.role: sheet for sheet in (*ROLES, *TEAM_ROLES)}


def sheet_for(role: str | None, capability: str | None) -> RoleSheet:
    """The agent to create for a step asking for ``role`` and/or ``capability``."""
    if role is not None and role.casefold() in BY_ROLE:
        sheet = BY_ROLE[role.casefold()]
        if capability is None or capability.casefold() in sheet.capabilities:
            return sheet
        return RoleSheet(sheet.role, sheet.name, sheet.instructions, (*sheet.capabilities, capability))
    if role is None and capability is not None:
        for sheet in ROLES:
            if capability.casefold() in sheet.capabilities:
                return sheet
    title = role or capability or "generalist"
    return RoleSheet(
        title,
        title[:1].upper() + title[1:],
        f"You are the team's {title}. Do the task you are given thoroughly and report the result.",
        (capability,) if capability else (),
    )
