"""The terminal client against a hand-written fake of the gateway's Neptune routes (an httpx transport): the SSE
read as the format has it, tool calls shown on a line each, the answer shown once, the conversation remembered per
gateway and key, and each failure on stderr with its own exit code."""

import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner, Result

from neptune.cli import Wiring, cli
from neptune.terminal.render import tool_call_line, tool_result_line
from neptune.terminal.sse import ServerEvent, parse
from neptune.terminal.state import LastConversations, state_path

KEY = "apk_test"
BASE = "/api/v1/neptune/conversations"
URL = "http://gateway.test"


def sse(*events: tuple[str, dict[str, Any]]) -> str:
    return "".join(f"id: {n}\nevent: {kind}\ndata: {json.dumps(data)}\n\n" for n, (kind, data) in enumerate(events))


CREATE_TEAM = sse(
    ("tool_call", {"call_id": "call_1", "name": "create_agent_team", "arguments": {"department": "sales"}}),
    ("tool_result", {"call_id": "call_1", "name": "create_agent_team", "ok": True, "result": {"summary": "Made."}}),
    ("message", {"content": "Made."}),
)


def problem(status: int, code: str, detail: str) -> httpx.Response:
    return httpx.Response(status, json={"status": status, "code": code, "detail": detail})


class FakeGateway:
    """The gateway as the client sees it: one workspace key, its conversations, and the stream each message gets
    (``streams``, in order)."""

    def __init__(self, *streams: str) -> None:
        self.streams = list(streams) or [CREATE_TEAM]
        self.turns: dict[str, list[str]] = {}
        self.titles: dict[str, str] = {}

    def handle(self, request: httpx.Request) -> httpx.Response:
        if request.headers.get("authorization") != f"Bearer {KEY}":
            return problem(401, "unauthorized", "The API key is not valid.")
        path, method = request.url.path, request.method
        if path == BASE and method == "POST":
            conversation_id = f"cv_{len(self.turns) + 1}"
            self.turns[conversation_id] = []
            self.titles[conversation_id] = json.loads(request.content)["title"]
            return httpx.Response(
                201, json={"status": "accepted", "resource_ids": {"conversation_id": conversation_id}}
            )
        if path == BASE:
            items = [
                {"conversation_id": c, "title": self.titles[c], "turn_count": len(t)} for c, t in self.turns.items()
            ]
            return httpx.Response(200, json={"items": items})
        found = re.fullmatch(rf"{BASE}/([^/]+)(/messages)?", path)
        assert found, path
        conversation_id = found.group(1)
        if conversation_id not in self.turns:
            return problem(404, "conversation_not_found", f"conversation {conversation_id} not found")
        if not found.group(2):
            turns = [{"content": c, "tools": [], "answer": "Made."} for c in self.turns[conversation_id]]
            return httpx.Response(200, json={"conversation_id": conversation_id, "title": "", "turns": turns})
        self.turns[conversation_id].append(json.loads(request.content)["content"])
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, text=self.streams.pop(0))


@pytest.fixture
def gateway() -> FakeGateway:
    return FakeGateway()


def run(gateway: FakeGateway, state: Path, *args: str, key: str = KEY, stdin: str | None = None) -> Result:
    wiring = Wiring(transport=httpx.MockTransport(gateway.handle), environ={"XDG_STATE_HOME": str(state)})
    env = {"AGENT_PLATFORM_API_KEY": key, "AGENT_PLATFORM_URL": URL}
    return CliRunner().invoke(cli, list(args), obj=wiring, env=env, input=stdin)


# The event stream ------------------------------------------------------------------------------------------------


def test_events_are_read_as_the_format_has_them() -> None:
    lines = [
        ": keep-alive",
        "",
        "id: 1",
        "event: delta",
        'data: {"content":',
        'data: "Hi"}',
        "",
        "data: not json",
        "",
        "event: message",
        'data: {"content": "cut off"}',
    ]
    assert list(parse(lines)) == [
        ServerEvent("delta", {"content": "Hi"}),
        ServerEvent("message", {"text": "not json"}),  # an event without a type is a "message" (the format's default)
    ]


def test_a_tool_call_and_its_result_take_a_line_each() -> None:
    arguments = {"department": "sales", "roles": ["lead qualifier", "proposal writer"], "input": {"a": 1}}
    assert tool_call_line("create_agent_team", arguments).plain == (
        '-> create_agent_team(department=sales, roles=[lead qualifier, proposal writer], input={"a":1})'
    )
    assert tool_result_line(True, {"summary": "Created the team.", "team_id": "t1"}).plain == "<- ok: Created the team."
    assert tool_result_line(False, {"error": "team_not_found: no"}).plain == "<- error: team_not_found: no"
    assert len(tool_call_line("x", {"task": "word " * 200}).plain) < 100


# chat ------------------------------------------------------------------------------------------------------------


def test_a_message_starts_a_conversation_and_the_next_invocation_continues_it(
    gateway: FakeGateway, tmp_path: Path
) -> None:
    gateway.streams.append(CREATE_TEAM)
    first = run(gateway, tmp_path, "chat", "Create", "a", "sales", "team")
    assert first.exit_code == 0, first.output
    assert first.stdout.splitlines() == ["-> create_agent_team(department=sales)", "<- ok: Made.", "Made."]
    assert "New conversation cv_1" in first.stderr
    assert gateway.turns == {"cv_1": ["Create a sales team"]}
    assert gateway.titles == {"cv_1": "Create a sales team"}

    again = run(gateway, tmp_path, "chat", "List my teams")
    assert again.exit_code == 0, again.output
    assert "Conversation cv_1" in again.stderr
    assert gateway.turns == {"cv_1": ["Create a sales team", "List my teams"]}
    assert LastConversations(state_path({"XDG_STATE_HOME": str(tmp_path)})).get(LastConversations.slot(URL, KEY))


def test_new_starts_another_conversation_and_another_key_does_not_continue_this_ones(
    gateway: FakeGateway, tmp_path: Path
) -> None:
    gateway.streams += [CREATE_TEAM, CREATE_TEAM]
    assert run(gateway, tmp_path, "chat", "one").exit_code == 0
    assert run(gateway, tmp_path, "chat", "--new", "--title", "Second", "two").exit_code == 0
    assert gateway.titles == {"cv_1": "one", "cv_2": "Second"}
    refused = run(gateway, tmp_path, "chat", "three", key="apk_other")
    assert refused.exit_code == 3
    assert "unauthorized: The API key is not valid." in refused.stderr
    assert run(gateway, tmp_path, "chat", "--conversation", "cv_1", "three").exit_code == 0
    assert gateway.turns == {"cv_1": ["one", "three"], "cv_2": ["two"]}


def test_the_answer_streamed_in_deltas_is_shown_once(tmp_path: Path) -> None:
    stream = sse(
        ("delta", {"content": "Two "}), ("delta", {"content": "teams"}), ("message", {"content": "Two teams."})
    )
    done = run(FakeGateway(stream), tmp_path, "chat", "List my teams")
    assert done.exit_code == 0, done.output
    assert done.stdout == "Two teams.\n"


def test_text_streamed_before_a_tool_call_ends_its_line(tmp_path: Path) -> None:
    stream = sse(
        ("delta", {"content": "Let me "}),
        ("delta", {"content": "look."}),
        ("tool_call", {"call_id": "call_1", "name": "list_agent_teams", "arguments": {}}),
        ("tool_result", {"call_id": "call_1", "name": "list_agent_teams", "ok": True, "result": {"summary": "None."}}),
        ("delta", {"content": "No teams yet."}),
        ("message", {"content": "No teams yet."}),
    )
    done = run(FakeGateway(stream), tmp_path, "chat", "List my teams")
    assert done.exit_code == 0, done.output
    assert done.stdout == "Let me look.\n-> list_agent_teams()\n<- ok: None.\nNo teams yet.\n"


def test_an_answer_that_replaces_text_broken_off_is_shown_once(tmp_path: Path) -> None:
    fallback = "(The model stopped answering, so I read your message myself.) Here is what I can do."
    stream = sse(
        ("delta", {"content": "Sure, I"}),
        ("delta", {"content": "…\n"}),  # the model stopped mid-answer: Neptune closes the text and answers itself
        ("delta", {"content": fallback}),
        ("message", {"content": fallback}),
    )
    done = run(FakeGateway(stream), tmp_path, "chat", "Help")
    assert done.exit_code == 0, done.output
    assert done.stdout == f"Sure, I…\n{fallback}\n"


def test_an_error_event_goes_to_stderr_with_its_code_and_exit_code_4(tmp_path: Path) -> None:
    stream = sse(("delta", {"content": "Work"}), ("error", {"code": "service_unavailable", "detail": "Too slow."}))
    done = run(FakeGateway(stream), tmp_path, "chat", "Run the sales team")
    assert done.exit_code == 4
    assert done.stdout == "Work\n"
    assert "service_unavailable: Too slow." in done.stderr


def test_a_stream_that_ends_without_an_answer_exits_5(tmp_path: Path) -> None:
    done = run(FakeGateway(sse(("tool_call", {"name": "list_agent_teams"}))), tmp_path, "chat", "List my teams")
    assert done.exit_code == 5
    assert "stream_ended" in done.stderr


def test_an_unknown_conversation_is_refused_but_a_remembered_one_gone_is_replaced(
    gateway: FakeGateway, tmp_path: Path
) -> None:
    named = run(gateway, tmp_path, "chat", "--conversation", "cv_nope", "hello")
    assert named.exit_code == 3
    assert "conversation_not_found: conversation cv_nope not found" in named.stderr

    memory = LastConversations(state_path({"XDG_STATE_HOME": str(tmp_path)}))
    memory.remember(LastConversations.slot(URL, KEY), "cv_gone")  # e.g. from a make up since torn down
    done = run(gateway, tmp_path, "chat", "hello")
    assert done.exit_code == 0, done.output
    assert gateway.turns == {"cv_1": ["hello"]}
    assert memory.get(LastConversations.slot(URL, KEY)) == "cv_1"


def test_json_prints_each_event_as_a_line(gateway: FakeGateway, tmp_path: Path) -> None:
    done = run(gateway, tmp_path, "chat", "--json", "Create a sales team")
    assert done.exit_code == 0, done.output
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert [line["event"] for line in lines] == ["conversation", "tool_call", "tool_result", "message"]
    assert lines[0]["data"] == {"conversation_id": "cv_1", "new": True}
    assert lines[-1]["data"] == {"content": "Made."}


def test_without_a_message_it_reads_one_a_line_until_exit(tmp_path: Path) -> None:
    failing = sse(("error", {"code": "conversation_full", "detail": "Start another."}))
    gateway = FakeGateway(CREATE_TEAM, failing, CREATE_TEAM)
    done = run(gateway, tmp_path, "chat", stdin="Create a sales team\n\nagain\nList my teams\nexit\nnot sent\n")
    assert done.exit_code == 0, done.output
    assert gateway.turns == {"cv_1": ["Create a sales team", "again", "List my teams"]}
    assert "conversation_full: Start another." in done.stderr  # and the conversation went on
    assert run(FakeGateway(), tmp_path, "chat", "--new", stdin="").exit_code == 0  # Ctrl-D


def test_ctrl_c_during_a_turn_stops_listening_to_it_and_the_chat_goes_on(tmp_path: Path) -> None:
    gateway = FakeGateway(CREATE_TEAM, CREATE_TEAM)

    def interrupted_once(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/messages") and not gateway.turns["cv_1"]:
            gateway.turns["cv_1"].append("interrupted")
            raise KeyboardInterrupt
        return gateway.handle(request)

    wiring = Wiring(transport=httpx.MockTransport(interrupted_once), environ={"XDG_STATE_HOME": str(tmp_path)})
    done = CliRunner().invoke(
        cli, ["chat", "--api-key", KEY, "--url", URL], obj=wiring, input="Create a sales team\nList my teams\n"
    )
    assert done.exit_code == 0, done.output
    assert "interrupted" in done.stderr
    assert gateway.turns == {"cv_1": ["interrupted", "List my teams"]}
    assert "<- ok: Made." in done.stdout


def test_usage_errors_exit_2(gateway: FakeGateway, tmp_path: Path) -> None:
    assert run(gateway, tmp_path, "chat", "--new", "--conversation", "cv_1", "hi").exit_code == 2
    no_key = run(gateway, tmp_path, "chat", "hi", key="")
    assert no_key.exit_code == 2
    assert "AGENT_PLATFORM_API_KEY" in no_key.stderr


def test_a_gateway_that_does_not_answer_in_time_exits_5(tmp_path: Path) -> None:
    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    wiring = Wiring(transport=httpx.MockTransport(slow), environ={"XDG_STATE_HOME": str(tmp_path)})
    done = CliRunner().invoke(cli, ["chat", "hi", "--api-key", KEY, "--url", URL], obj=wiring)
    assert done.exit_code == 5
    assert "timeout: the gateway did not answer in time" in done.stderr


# conversations and show ------------------------------------------------------------------------------------------


def test_conversations_lists_them_and_show_prints_a_conversations_turns(gateway: FakeGateway, tmp_path: Path) -> None:
    assert run(gateway, tmp_path, "chat", "Create a sales team").exit_code == 0
    listed = run(gateway, tmp_path, "conversations")
    assert listed.exit_code == 0, listed.output
    assert re.match(r"\* cv_1 +1 turns .*Create a sales team", listed.stdout)
    as_json = run(gateway, tmp_path, "conversations", "--json")
    assert json.loads(as_json.stdout)["conversation_id"] == "cv_1"

    shown = run(gateway, tmp_path, "show")  # the remembered one
    assert shown.exit_code == 0, shown.output
    assert shown.stdout.splitlines()[1:] == ["you> Create a sales team", "Made."]
    assert run(gateway, tmp_path, "show", "cv_nope").exit_code == 3
