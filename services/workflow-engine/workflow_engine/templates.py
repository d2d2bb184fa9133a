"""The workflow templates that ship with the platform."""

from dataclasses import dataclass
from typing import Any

from contracts.workflows import WorkflowSpec


@dataclass(frozen=True, slots=True)
class Template:
    slug: str
    spec: WorkflowSpec

    def summary(self) -> dict[str, Any]:
        return {
            "slug": self.slug,
            "name": self.spec.name,
            "description": self.spec.description,
            "steps": [{"id": s.id, "kind": s.kind, "name": s.name} for s in self.spec.steps],
            "input_fields": self.spec.input_fields,
            "spec": self.spec.model_dump(mode="json"),
        }


def _template(slug: str, spec: dict[str, Any]) -> Template:
    return Template(slug, WorkflowSpec.model_validate(spec))


RETRY = {"max_attempts": 3, "backoff_s": 2, "multiplier": 2}

LEAD_TO_CUSTOMER = _template(
    "lead-to-customer",
    {
        "name": "Lead-to-Customer",
        "description": "Qualify a new lead, route it by score, write and approve a proposal, then onboard.",
        "input_fields": ["lead"],
        "start": "qualify",
        "steps": [
            {
                "id": "qualify",
                "kind": "agent",
                "name": "Qualify the lead",
                "role": "lead qualifier",
                "capability": "qualification",
                "instructions": "Score the lead from 0 to 100 and say why.",
                "input": {"lead": "$input.lead"},
                "output_schema": {
                    "type": "object",
                    "required": ["score", "reasons"],
                    "properties": {
                        "score": {"type": "integer", "minimum": 0, "maximum": 100},
                        "reasons": {"type": "array", "items": {"type": "string"}},
                        "summary": {"type": "string"},
                    },
                },
                "retry": RETRY,
                "next": "route",
            },
            {
                "id": "route",
                "kind": "condition",
                "name": "Hot or nurture?",
                "branches": [
                    {"when": {"field": "$steps.qualify.output.score", "op": "gte", "value": 70}, "next": "proposal"}
                ],
                "default": "nurture",
            },
            {
                "id": "proposal",
                "kind": "agent",
                "name": "Write the proposal",
                "role": "proposal writer",
                "capability": "writing",
                "instructions": "Write a proposal tailored to the lead's needs.",
                "input": {"lead": "$input.lead", "qualification": "$steps.qualify.output"},
                "retry": RETRY,
                "next": "approve",
            },
            {
                "id": "approve",
                "kind": "approval",
                "name": "Manager approves the proposal",
                "prompt": "Send this proposal?",
                "next": "onboard",
                "on_reject": "nurture",
            },
            {
                "id": "onboard",
                "kind": "agent",
                "name": "Onboard the customer",
                "role": "account manager",
                "capability": "onboarding",
                "instructions": "Prepare the onboarding plan.",
                "input": {"lead": "$input.lead", "proposal": "$steps.proposal.output"},
            },
            {
                "id": "nurture",
                "kind": "agent",
                "name": "Nurture the lead",
                "role": "marketer",
                "capability": "nurturing",
                "instructions": "Plan a nurture sequence for a lead that is not ready yet.",
                "input": {"lead": "$input.lead"},
            },
        ],
    },
)

CONTENT_CAMPAIGN = _template(
    "content-campaign",
    {
        "name": "Content Campaign",
        "description": "Brief, write the blog post and social posts in parallel, review quality, then publish.",
        "input_fields": ["topic", "audience"],
        "start": "brief",
        "steps": [
            {
                "id": "brief",
                "kind": "agent",
                "name": "Write the brief",
                "role": "content strategist",
                "capability": "strategy",
                "instructions": "Write a campaign brief.",
                "input": {"topic": "$input.topic", "audience": "$input.audience"},
                "next": "fan_out",
            },
            {
                "id": "fan_out",
                "kind": "parallel",
                "name": "Write in parallel",
                "branches": ["blog", "social"],
                "join": "drafts",
            },
            {
                "id": "blog",
                "kind": "agent",
                "name": "Blog post",
                "role": "copywriter",
                "capability": "writing",
                "instructions": "Write the blog post from the brief, and rate its quality from 0 to 1.",
                "input": {"brief": "$steps.brief.output"},
                "output_schema": {
                    "type": "object",
                    "required": ["draft", "quality"],
                    "properties": {
                        "draft": {"type": "string"},
                        "quality": {"type": "number", "minimum": 0, "maximum": 1},
                        "summary": {"type": "string"},
                    },
                },
                "retry": RETRY,
                "next": "drafts",
            },
            {
                "id": "social",
                "kind": "agent",
                "name": "Social posts",
                "role": "social media manager",
                "capability": "social",
                "instructions": "Write three social posts from the brief.",
                "input": {"brief": "$steps.brief.output"},
                "retry": RETRY,
                "next": "drafts",
            },
            {"id": "drafts", "kind": "join", "name": "Drafts ready", "next": "quality"},
            {
                "id": "quality",
                "kind": "condition",
                "name": "Good enough to publish?",
                "branches": [
                    {"when": {"field": "$steps.blog.output.quality", "op": "gte", "value": 0.7}, "next": "publish"}
                ],
                "default": "revise",
            },
            {
                "id": "revise",
                "kind": "agent",
                "name": "Revise",
                "role": "editor",
                "capability": "editing",
                "instructions": "Revise the drafts.",
                "input": {"blog": "$steps.blog.output", "social": "$steps.social.output"},
                "next": "publish",
            },
            {
                "id": "publish",
                "kind": "agent",
                "name": "Publish",
                "role": "publisher",
                "capability": "publishing",
                "instructions": "Schedule the posts.",
                "input": {"blog": "$steps.blog.output", "social": "$steps.social.output"},
            },
        ],
    },
)

SUPPORT_TICKET = _template(
    "support-ticket",
    {
        "name": "Support Ticket",
        "description": "Triage a ticket, escalate urgent or angry ones, otherwise answer; then close it.",
        "input_fields": ["ticket"],
        "start": "triage",
        "steps": [
            {
                "id": "triage",
                "kind": "agent",
                "name": "Triage",
                "role": "support triage",
                "capability": "triage",
                "instructions": "Classify priority (low, normal, urgent) and sentiment (calm, angry).",
                "input": {"ticket": "$input.ticket"},
                "output_schema": {
                    "type": "object",
                    "required": ["priority", "sentiment"],
                    "properties": {
                        "priority": {"enum": ["low", "normal", "urgent"]},
                        "sentiment": {"enum": ["calm", "angry"]},
                        "summary": {"type": "string"},
                    },
                },
                "retry": RETRY,
                "next": "route",
            },
            {
                "id": "route",
                "kind": "condition",
                "name": "Escalate?",
                "branches": [
                    {
                        "when": {
                            "any": [
                                {"field": "$steps.triage.output.priority", "op": "eq", "value": "urgent"},
                                {"field": "$steps.triage.output.sentiment", "op": "eq", "value": "angry"},
                            ]
                        },
                        "next": "escalate",
                    }
                ],
                "default": "respond",
            },
            {
                "id": "escalate",
                "kind": "agent",
                "name": "Senior support",
                "role": "senior support",
                "capability": "escalation",
                "instructions": "Handle the escalated ticket.",
                "input": {"ticket": "$input.ticket", "triage": "$steps.triage.output"},
                "next": "close",
            },
            {
                "id": "respond",
                "kind": "agent",
                "name": "Respond",
                "role": "support agent",
                "capability": "support",
                "instructions": "Answer the customer.",
                "input": {"ticket": "$input.ticket", "triage": "$steps.triage.output"},
                "next": "close",
            },
            {
                "id": "close",
                "kind": "agent",
                "name": "Close the ticket",
                "role": "support agent",
                "capability": "support",
                "instructions": "Summarise the resolution and close the ticket.",
                "input": {"ticket": "$input.ticket"},
            },
        ],
    },
)

TEMPLATES: dict[str, Template] = {t.slug: t for t in (LEAD_TO_CUSTOMER, CONTENT_CAMPAIGN, SUPPORT_TICKET)}
