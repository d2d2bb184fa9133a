from contracts.neptune import ToolUse, TurnCompleted
from neptune.domain.history import estimate_tokens, history, turn_messages

AT = "2026-12-03T10:00:00+00:00"


def turn(n: int, content: str, answer: str, *tools: ToolUse) -> TurnCompleted:
    return TurnCompleted(turn_id=f"t{n}", content=content, tools=list(tools), answer=answer, intent="model", at=AT)


MADE = ToolUse(
    call_id="c1",
    name="create_agent_team",
    arguments={"department": "sales"},
    ok=True,
    result={"summary": "Created the sales team", "team_id": "team_0123456789abcdef"},
)


def test_a_turn_is_what_the_model_said_and_saw() -> None:
    messages = turn_messages(turn(1, "make a sales team", "Done: team_0123456789abcdef", MADE))
    assert [m["role"] for m in messages] == ["user", "assistant", "tool", "assistant"]
    assert messages[1]["tool_calls"][0]["function"]["name"] == "create_agent_team"
    assert messages[2]["tool_call_id"] == "c1"


def test_everything_fits_in_a_large_budget() -> None:
    turns = [turn(i, f"message {i}", f"answer {i}") for i in range(5)]
    assert [m["content"] for m in history(turns, 10_000) if m["role"] == "user"] == [f"message {i}" for i in range(5)]


def test_the_oldest_turns_go_first_and_the_budget_holds() -> None:
    turns = [turn(i, f"message {i} " + "x" * 400, f"answer {i}") for i in range(10)]
    kept = history(turns, 400)
    assert estimate_tokens(kept) <= 400
    users = [m["content"].split()[1] for m in kept if m["role"] == "user"]
    assert users == [str(i) for i in range(10 - len(users), 10)]  # the latest ones, in order
    assert users


def test_a_dropped_turns_result_that_a_kept_turn_mentions_stays_as_a_note() -> None:
    old = turn(1, "make a sales team " + "x" * 2000, "Created it.", MADE)
    unrelated = ToolUse(call_id="c2", name="list_agent_teams", arguments={}, ok=True, result={"summary": "none"})
    older = turn(0, "list " + "y" * 2000, "No teams.", unrelated)
    recent = turn(2, "run team_0123456789abcdef on the backlog", "Started.")
    kept = history([older, old, recent], 200)
    note = kept[0]["content"]
    assert "team_0123456789abcdef" in note
    assert "create_agent_team" in note
    assert "list_agent_teams" not in note  # nothing later refers to it
    assert kept[-2]["content"].startswith("run team_")
