"""The offline intent parser: the issue's phrasings exactly, and a held-out set (written apart from the parser, not
tuned on one by one) at a measured floor that the next sessions raise to all of it."""

import json
from pathlib import Path
from typing import Any

import pytest

from neptune.domain.intents import IntentKind, parse

SEEDS: list[tuple[str, str, dict[str, Any]]] = [
    (
        "Create a sales team with lead qualifier and proposal writer",
        "create_team",
        {"department": "sales", "roles": ["lead qualifier", "proposal writer"]},
    ),
    (
        "Run the marketing team to create this week's social content",
        "run_team",
        {"team": "marketing", "objective": "create this week's social content"},
    ),
    ("Set up a workflow for handling support tickets", "create_workflow", {"description": "handling support tickets"}),
    (
        "Have the sales team follow up with all stalled deals",
        "run_team",
        {"team": "sales", "objective": "follow up with all stalled deals"},
    ),
    ("What's the status of the support ticket workflow?", "workflow_status", {"workflow": "support ticket"}),
    ("Which agents are available?", "availability", {"capability": None}),
    (
        "Delegate the Q3 churn report to the reporting analyst",
        "delegate",
        {"task": "the q3 churn report", "agent": "reporting analyst"},
    ),
    (
        "Remember that Initech needs a SOC2 review for the sales team",
        "remember",
        {"fact": "initech needs a soc2 review", "team": "sales"},
    ),
    ("What do we know about Initech?", "recall", {"topic": "initech"}),
    ("List my teams", "list_teams", {}),
    ("Pause the support ticket workflow", "pause_execution", {"workflow": "support ticket"}),
    ("cancel the lead to customer workflow", "cancel_execution", {"workflow": "lead to customer"}),
    ("book me a flight", "unknown", {}),
]
HELD_OUT = json.loads((Path(__file__).parent / "heldout_phrasings.json").read_text())


@pytest.mark.parametrize(("text", "kind", "slots"), SEEDS)
def test_the_issues_phrasings(text: str, kind: str, slots: dict[str, Any]) -> None:
    intent = parse(text)
    assert (intent.kind.value, intent.slots) == (kind, slots)


def test_the_held_out_phrasings_at_the_measured_floor() -> None:
    kinds = [parse(case["text"]).kind.value == case["intent"] for case in HELD_OUT]
    exact = [
        parse(c["text"]).kind.value == c["intent"] and parse(c["text"]).slots == {**c["slots"]}
        if c["slots"]
        else parse(c["text"]).kind.value == c["intent"]
        for c in HELD_OUT
    ]
    assert len(HELD_OUT) >= 150
    assert {case["intent"] for case in HELD_OUT} == {k.value for k in IntentKind}
    assert sum(kinds) / len(kinds) >= 0.85  # measured 0.87 when the parser landed
    assert sum(exact) / len(exact) >= 0.75  # measured 0.82


def test_nothing_parses_to_an_error() -> None:
    for text in ("", "   ", "?!", "x" * 10_000, "team", "workflow", "delegate to", "remember that"):
        assert parse(text).kind in set(IntentKind)
