"""Messages between agents, teams and people through the gateway, on the real NATS and database: stored in threads,
delivered live on each recipient's inbox subject, listed by thread, agent and team, and given to an agent in its
next task of a team run."""

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import nats
import pytest
from nats.aio.msg import Msg

from conftest import Api, Infra, Platform
from contracts import Subjects
from contracts.mail import InboxMessage
from servicekit.testing import eventually
from tests.support.openai_server import FunctionCall, Hold, OpenAICompatibleServer, Reply
from tests.support.runtime_platform import with_runtime

LOCAL = {"provider": "local"}


@pytest.fixture
async def server() -> AsyncIterator[OpenAICompatibleServer]:
    async with OpenAICompatibleServer(default=Reply('{"summary": "done"}')) as running:
        yield running


@pytest.fixture
async def platform(infra: Infra, env_name: str, server: OpenAICompatibleServer) -> AsyncIterator[Platform]:
    async with with_runtime(infra, env_name, server) as running:
        yield running


@pytest.fixture
async def api(platform: Platform) -> Api:
    return Api(platform, await platform.new_workspace())


class Inboxes:
    """Listens on agents' inbox subjects, as an agent's own process would."""

    def __init__(self, infra: Infra, env_name: str, workspace_id: str) -> None:
        self._url, self._subjects, self._ws = infra.nats_url, Subjects(env_name), workspace_id
        self.got: dict[str, list[InboxMessage]] = {}

    async def __aenter__(self) -> "Inboxes":
        self._nc = await nats.connect(self._url)
        return self

    async def __aexit__(self, *_: object) -> None:
        await self._nc.close()

    async def listen(self, agent_id: str) -> None:
        async def on(msg: Msg) -> None:
            self.got.setdefault(agent_id, []).append(InboxMessage.model_validate_json(msg.data))

        await self._nc.subscribe(self._subjects.inbox(self._ws, agent_id), cb=on)
        await self._nc.flush()

    async def bodies(self, agent_id: str, count: int) -> list[str]:
        async def enough() -> list[str] | None:
            bodies = [m.message.body for m in self.got.get(agent_id, [])]
            return bodies if len(bodies) >= count else None

        return await eventually(enough, 10)


async def agent(api: Api, name: str, role: str = "assistant", model: dict[str, Any] = LOCAL) -> str:
    body = {"name": name, "role": role, "model": model}
    return str((await api.post("/api/v1/agents", body, expect=201))["resource_ids"]["agent_id"])


async def team(api: Api, lead: str, *others: str) -> str:
    members = [{"agent_id": lead, "role": "lead", "lead": True}] + [{"agent_id": a, "role": "member"} for a in others]
    created = await api.post("/api/v1/teams", {"spec": {"name": "Crew", "members": members}}, expect=201)
    return str(created["resource_ids"]["team_id"])


async def test_messages_arrive_live_on_the_inbox_subject_and_are_listed_by_thread(
    api: Api, infra: Infra, env_name: str
) -> None:
    alice, bob = await agent(api, "Alice"), await agent(api, "Bob")
    async with Inboxes(infra, env_name, api.workspace_id) as inboxes:
        await inboxes.listen(alice)
        await inboxes.listen(bob)
        first = {"to": {"agent_id": bob}, "from_agent_id": alice, "subject": "Leads", "body": "Three new leads."}
        sent = await api.post("/api/v1/messages", first, expect=201)
        thread_id = sent["resource_ids"]["thread_id"]
        assert sent["links"]["resource"] == f"/api/v1/threads/{thread_id}"
        assert await inboxes.bodies(bob, 1) == ["Three new leads."]
        got = inboxes.got[bob][0]
        assert (got.agent_id, got.message.sender.id, got.message.thread_id) == (bob, alice, thread_id)

        reply = {"thread_id": thread_id, "from_agent_id": bob, "body": "On it."}
        await api.post("/api/v1/messages", reply, expect=201)  # to the thread's others: Alice
        assert await inboxes.bodies(alice, 1) == ["On it."]
        await api.post(f"/api/v1/threads/{thread_id}/messages", {"body": "Thanks, both."}, expect=201)
        assert (await inboxes.bodies(alice, 2))[-1] == "Thanks, both."
        assert (await inboxes.bodies(bob, 2))[-1] == "Thanks, both."  # a person's message reaches every agent
        assert [m.message.body for m in inboxes.got[bob]] == ["Three new leads.", "Thanks, both."]  # not its own

    async def listed() -> list[dict[str, Any]] | None:
        items: list[dict[str, Any]] = (await api.get(f"/api/v1/messages?thread_id={thread_id}"))["items"]
        return items if len(items) == 3 else None

    items = await eventually(listed, 10)
    assert [m["body"] for m in items] == ["Three new leads.", "On it.", "Thanks, both."]
    assert [m["sender"]["kind"] for m in items] == ["agent", "agent", "person"]
    thread = await api.get(f"/api/v1/threads/{thread_id}")
    assert (thread["subject"], thread["message_count"]) == ("Leads", 3)
    assert {(p["kind"], p["id"]) for p in thread["participants"]} >= {("agent", alice), ("agent", bob)}
    to_bob = (await api.get(f"/api/v1/messages?agent_id={bob}"))["items"]
    assert [m["body"] for m in to_bob] == ["Three new leads.", "Thanks, both."]


async def test_a_message_to_a_team_reaches_each_member(api: Api, infra: Infra, env_name: str) -> None:
    lead, helper = await agent(api, "Lead"), await agent(api, "Helper")
    team_id = await team(api, lead, helper)
    async with Inboxes(infra, env_name, api.workspace_id) as inboxes:
        for member in (lead, helper):
            await inboxes.listen(member)
        await api.post("/api/v1/messages", {"to": {"team_id": team_id}, "body": "Stand-up at nine."}, expect=201)
        assert await inboxes.bodies(lead, 1) == ["Stand-up at nine."]
        assert await inboxes.bodies(helper, 1) == ["Stand-up at nine."]

    async def listed() -> list[dict[str, Any]] | None:
        items: list[dict[str, Any]] = (await api.get(f"/api/v1/messages?team_id={team_id}"))["items"]
        return items or None

    (message,) = await eventually(listed, 10)
    assert message["to"] == [{"kind": "team", "id": team_id}]
    assert sorted(message["recipients"]) == sorted([lead, helper])


async def test_a_message_sent_during_a_run_reaches_the_agent_in_its_next_task(
    api: Api, server: OpenAICompatibleServer
) -> None:
    server.behave("first", Hold(Reply('{"summary": "first part done"}')))
    lead = await agent(api, "Lead", "planner")
    first = await agent(api, "First", "first", {"provider": "openai", "model": "first", "max_output_tokens": 100})
    second = await agent(api, "Second", "second", {"provider": "openai", "model": "second", "max_output_tokens": 100})
    team_id = await team(api, lead, first, second)
    before = {"to": {"agent_id": second}, "body": "An old note from before the run."}
    await api.post("/api/v1/messages", before, expect=201)
    await asyncio.sleep(0.05)  # the run starts strictly after it
    started = await api.post(f"/api/v1/teams/{team_id}/runs", {"objective": "Do both parts"}, expect=201)
    run_id = started["resource_ids"]["run_id"]

    await server.wait_until(lambda: server.in_flight == 1, timeout_s=20)  # the first member is at work
    during = {"to": {"agent_id": second}, "from_agent_id": lead, "body": "Use the blue template, please."}
    sent = await api.post("/api/v1/messages", during, expect=201)
    server.release()

    async def ended() -> dict[str, Any] | None:
        view: dict[str, Any] = await api.get(f"/api/v1/team-runs/{run_id}")
        return view if view["status"] in {"completed", "failed", "cancelled", "budget_exceeded"} else None

    view = await eventually(ended, 30)
    assert view["status"] == "completed", view["error"]
    assert [s["agent_id"] for s in view["plan"]][-2:] == [first, second]
    (request,) = server.requests_for("second")
    prompt = "\n".join(str(m.get("content")) for m in request.body["messages"])
    assert "## Messages you received during this run" in prompt
    assert "Use the blue template, please." in prompt
    assert f"from agent {lead}" in prompt
    assert "An old note from before the run." not in prompt
    (handoff,) = [h for h in view["handoffs"] if h["agent_id"] == second]
    message_id = (await api.get(f"/api/v1/messages?thread_id={sent['resource_ids']['thread_id']}"))["items"][0]
    assert handoff["handoff"]["messages"] == [message_id["message_id"]]  # what it was given is on record
    first_prompt = json.dumps(server.requests_for("first")[0].body)
    assert "blue template" not in first_prompt  # it was sent after the first member's task began


async def test_bad_messages_are_refused_with_a_stable_code_and_other_workspaces_see_nothing(
    api: Api, platform: Platform
) -> None:
    alice, gone = await agent(api, "Alice"), await agent(api, "Gone")
    await api.post(f"/api/v1/agents/{gone}/retire", {}, expect=200)
    sent = await api.post("/api/v1/messages", {"to": {"agent_id": alice}, "body": "Hello"}, expect=201)
    thread_id = sent["resource_ids"]["thread_id"]
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({"thread_id": "th_nope", "body": "Anyone?"}, 404, "thread_not_found"),
        ({"to": {"agent_id": gone}, "body": "Hello"}, 409, "agent_retired"),
        ({"to": {"agent_id": "agt_nobody"}, "body": "Hello"}, 404, "agent_not_found"),
        ({"to": {"team_id": "team_nobody"}, "body": "Hello"}, 404, "team_not_found"),
        ({"to": {"agent_id": alice}, "from_agent_id": "agt_nobody", "body": "Hello"}, 404, "agent_not_found"),
        ({"to": {"agent_id": alice}, "body": "   "}, 422, "validation_failed"),
        ({"body": "To whom?"}, 422, "validation_failed"),
        ({"to": {"agent_id": alice, "team_id": "t1"}, "body": "Hi"}, 422, "validation_failed"),
        ({"to": {"agent_id": alice}, "body": "Hi", "cc": "x"}, 422, "unknown_field"),
    ]
    for body, status, code in cases:
        resp = await api.client.post("/api/v1/messages", json=body, headers=api.headers)
        assert (resp.status_code, resp.json()["code"]) == (status, code), (body, resp.text)
    unknown = await api.client.post("/api/v1/threads/th_nope/messages", json={"body": "x"}, headers=api.headers)
    assert (unknown.status_code, unknown.json()["code"]) == (404, "thread_not_found")

    async def stored() -> list[str] | None:
        items = (await api.get("/api/v1/messages"))["items"]
        return [m["body"] for m in items] or None

    assert await eventually(stored, 10) == ["Hello"]  # the refused ones were not stored
    bad_since = await api.client.get("/api/v1/messages?since=yesterday", headers=api.headers)
    assert (bad_since.status_code, bad_since.json()["code"]) == (422, "validation_failed")

    other = Api(platform, await platform.new_workspace("Other"))
    for path in (f"/api/v1/threads/{thread_id}", f"/api/v1/messages?thread_id={thread_id}"):
        resp = await other.client.get(path, headers=other.headers)
        assert (resp.status_code, resp.json()["code"]) == (404, "thread_not_found"), path
    posted = await other.client.post(f"/api/v1/threads/{thread_id}/messages", json={"body": "x"}, headers=other.headers)
    assert (posted.status_code, posted.json()["code"]) == (404, "thread_not_found")
    assert (await other.get(f"/api/v1/messages?agent_id={alice}"))["items"] == []


async def test_a_member_with_a_tool_calling_model_messages_a_teammate_and_is_told_of_a_bad_thread(
    api: Api, server: OpenAICompatibleServer
) -> None:
    lead = await agent(api, "Lead", "planner")
    member = await agent(api, "Talker", "talker", {"provider": "openai", "model": "talker", "max_output_tokens": 100})
    mate = await agent(api, "Mate", "mate")
    send = FunctionCall("send_message", json.dumps({"agent_id": mate, "body": "Your turn next."}))
    astray = FunctionCall("send_message", json.dumps({"thread_id": "th_nope", "body": "Anyone?"}))
    server.script(Reply(None, tool_calls=(send, astray)), Reply('{"summary": "told"}'), model="talker")
    team_id = await team(api, lead, member, mate)
    started = await api.post(f"/api/v1/teams/{team_id}/runs", {"objective": "Pass the word"}, expect=201)

    async def delivered() -> list[dict[str, Any]] | None:
        items: list[dict[str, Any]] = (await api.get(f"/api/v1/messages?agent_id={mate}"))["items"]
        return items or None

    (message,) = await eventually(delivered, 30)
    assert (message["sender"], message["body"]) == ({"kind": "agent", "id": member}, "Your turn next.")
    assert message["run_id"] == started["resource_ids"]["run_id"]
    _, second = server.requests_for("talker")
    answers = [json.loads(m["content"]) for m in second.body["messages"] if m["role"] == "tool"]
    assert answers[0]["sent"] == message["message_id"]
    assert answers[1] == {"error": "there is no thread th_nope"}
