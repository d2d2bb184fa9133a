"""The tests' OpenAI-compatible server streams as OpenAI does when a request asks for it (`"stream": true`): SSE
`data:` chunks of object `chat.completion.chunk` (the role, the content a word at a time, each tool call as fragments,
the finish reason, the usage when asked for), then `[DONE]`; a stream scripted to stall keeps its request in flight
until the client goes, and is never counted as answered. Read with plain HTTP, to see the format itself."""

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from tests.support.openai_server import FunctionCall, OpenAICompatibleServer, Reply, words


@pytest.fixture
async def server() -> AsyncIterator[OpenAICompatibleServer]:
    async with OpenAICompatibleServer() as running:
        yield running


def chunks_of(text: str) -> list[Any]:
    """The ``data:`` payloads of an SSE body, JSON decoded (``[DONE]`` as is)."""
    found: list[Any] = []
    for line in text.splitlines():
        if line.startswith("data: "):
            data = line.removeprefix("data: ")
            found.append(data if data == "[DONE]" else json.loads(data))
    return found


async def test_a_streamed_reply_comes_as_openai_chunks(server: OpenAICompatibleServer) -> None:
    arguments = json.dumps({"department": "support", "name": "Night shift"})
    server.script(
        Reply("Two teams, both idle.", tool_calls=(FunctionCall("list_agent_teams", arguments),), prompt_tokens=40),
        Reply("No usage asked for."),
    )
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as http:
        with_usage = await http.post("/chat/completions", json={**body, "stream_options": {"include_usage": True}})
        without = await http.post("/chat/completions", json=body)
    assert with_usage.headers["content-type"].startswith("text/event-stream")
    *chunks, done = chunks_of(with_usage.text)
    assert done == "[DONE]"
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert len({c["id"] for c in chunks}) == 1
    role, content, head, pieces, (finish, usage) = chunks[0], chunks[1:5], chunks[5], chunks[6:-2], chunks[-2:]
    assert role["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert [c["choices"][0]["delta"]["content"] for c in content] == ["Two", " teams,", " both", " idle."]
    (call,) = head["choices"][0]["delta"]["tool_calls"]
    assert (call["index"], call["type"]) == (0, "function")
    assert call["function"] == {"name": "list_agent_teams", "arguments": ""}
    assert call["id"].startswith("call_")
    fragments = [c["choices"][0]["delta"]["tool_calls"][0] for c in pieces]
    assert len(fragments) > 1
    assert all(f["index"] == 0 and "id" not in f and "name" not in f["function"] for f in fragments)
    assert "".join(f["function"]["arguments"] for f in fragments) == arguments
    assert finish["choices"] == [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]
    assert usage["choices"] == []
    assert usage["usage"]["prompt_tokens"] == 40
    assert all(c["usage"] is None for c in chunks[:-1])  # as OpenAI sends it: null until the last chunk

    *plain, done = chunks_of(without.text)
    assert done == "[DONE]"
    assert all("usage" not in c for c in plain)  # not asked for: no usage chunk
    assert plain[-1]["choices"][0]["finish_reason"] == "stop"
    assert (server.answered.completions, server.answered.prompt_tokens) == (2, 40)
    assert server.in_flight == 0


def test_the_words_of_a_text_join_into_it_again() -> None:
    for text in ("", "one", "  two  words\n\nand a line ", "\n"):
        assert "".join(words(text)) == text
    assert words("Hello there, world.") == ["Hello", " there,", " world."]


async def test_a_stalled_stream_stays_in_flight_until_its_client_goes(server: OpenAICompatibleServer) -> None:
    server.script(Reply("one two three four", stall_after_chunks=2))
    body = {"model": "m", "messages": [], "stream": True, "stream_options": {"include_usage": True}}
    async with (
        httpx.AsyncClient(base_url=server.base_url, timeout=10) as http,
        http.stream("POST", "/chat/completions", json=body) as resp,
    ):
        lines = resp.aiter_lines()
        async with asyncio.timeout(5):
            got = [await anext(lines) for _ in range(4)]  # two chunks, each a data line and a blank one
        assert [json.loads(line.removeprefix("data: "))["choices"][0]["delta"] for line in got[::2]] == [
            {"role": "assistant", "content": ""},
            {"content": "one"},
        ]
        with pytest.raises(TimeoutError):  # nothing more comes
            async with asyncio.timeout(0.5):
                await anext(lines)
        assert server.in_flight == 1
    await server.wait_until(lambda: server.in_flight == 0)  # the client went: the stream ended
    assert server.answered.completions == 0  # never finished: not answered
