"""`neptune chat`, as `make install` puts it in .venv/bin, against `make up`'s processes: a turn streamed with its tool
call and answer, the conversation continued by the next invocation, and a bad key or an unknown conversation
refused with the gateway's code and a non-zero exit."""

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.support.stack import Launcher

pytestmark = pytest.mark.system
NEPTUNE = Path(sys.executable).with_name("neptune")  # the console script beside the virtual environment's python


def neptune(stack: Launcher, state: Path, *args: str, key: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENT_PLATFORM_")}
    return subprocess.run(
        [str(NEPTUNE), *args, "--url", stack.gateway, "--api-key", key or stack.key],
        env={**env, "XDG_STATE_HOME": str(state)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_neptune_chat_streams_a_turn_and_continues_the_conversation_next_time(stack: Launcher, tmp_path: Path) -> None:
    state, headers = tmp_path / "state", {"Authorization": f"Bearer {stack.key}"}
    made = neptune(stack, state, "chat", "Create a sales team with lead qualifier and proposal writer")
    assert made.returncode == 0, made.stderr
    lines = made.stdout.splitlines()
    assert lines[0].startswith("-> create_agent_team(department=sales, roles=[lead qualifier, proposal writer]"), lines
    assert lines[1].startswith("<- ok: "), lines
    assert len(lines) == 3, "the answer once, after the tool call and its result"
    found = re.search(r"New conversation (cv_\w+)", made.stderr)
    assert found, made.stderr
    conversation_id = found.group(1)

    with httpx.Client(base_url=stack.gateway, headers=headers, timeout=10) as client:
        deadline = time.monotonic() + 30
        while not (teams := client.get("/api/v1/teams").json()["items"]):
            assert time.monotonic() < deadline, "the team never reached the read model"
            time.sleep(0.2)
        team = client.get(f"/api/v1/teams/{teams[0]['team_id']}").json()
        assert sorted(m["role"] for m in team["members"]) == ["lead qualifier", "proposal writer"]

        listed = neptune(stack, state, "chat", "list my teams")  # no --conversation: the last one goes on
        assert listed.returncode == 0, listed.stderr
        assert f"Conversation {conversation_id}" in listed.stderr
        assert listed.stdout.startswith("-> list_agent_teams("), listed.stdout
        assert team["name"] in listed.stdout
        view = client.get(f"/api/v1/neptune/conversations/{conversation_id}").json()
        assert [t["intent"] for t in view["turns"]] == ["create_team", "list_teams"]

    conversations = neptune(stack, state, "conversations")
    assert conversations.returncode == 0, conversations.stderr
    assert re.match(rf"\* {conversation_id} +2 turns", conversations.stdout), conversations.stdout
    shown = neptune(stack, state, "show", conversation_id)
    assert shown.returncode == 0, shown.stderr
    assert "you> list my teams" in shown.stdout

    bad_key = neptune(stack, state, "chat", "list my teams", key="apk_not_a_key")
    assert bad_key.returncode == 3
    assert "unauthorized" in bad_key.stderr
    unknown = neptune(stack, state, "chat", "list my teams", "--conversation", "cv_nobody_started_this")
    assert unknown.returncode == 3
    assert "conversation_not_found" in unknown.stderr
