"""The openai provider through the real openai SDK, over real HTTP, against the OpenAI-compatible test server."""

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest

from orchestrator.providers.base import (
    ChatMessage,
    ModelError,
    ModelRequest,
    Tool,
    Usage,
    estimate_prompt_tokens,
    estimate_tokens,
)
from orchestrator.providers.openai_provider import OpenAIProvider
from tests.support.openai_server import (
    Body,
    Fail,
    Hang,
    Hold,
    OpenAICompatibleServer,
    Reply,
    Respond,
    reply_json,
    reply_tool_call,
)

API_KEY = "sk-test-secret-key"
MODEL = "test-model"
LEAD_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "properties": {"score": {"type": "integer", "minimum": 0, "maximum": 100}, "reason": {"type": "string"}},
    "required": ["score", "reason"],
    "additionalProperties": False,
}
LOOKUP = Tool(
    name="lookup_order",
    description="Find an order by its id.",
    parameters={"type": "object", "properties": {"order_id": {"type": "string"}}, "required": ["order_id"]},
)
# A bound for the test itself, so a provider that ignored its deadline fails the test instead of hanging it.
GUARD_S = 20


def ask(content: str = "Qualify this lead: ACME, 500 seats.", **kwargs: Any) -> ModelRequest:
    values: dict[str, Any] = {
        "model": MODEL,
        "messages": [ChatMessage("system", "You qualify sales leads."), ChatMessage("user", content)],
        "max_output_tokens": 64,
        "timeout_s": 10.0,
        "temperature": 0.3,
    }
    return ModelRequest(**(values | kwargs))


@pytest.fixture
async def server() -> AsyncIterator[OpenAICompatibleServer]:
    async with OpenAICompatibleServer() as running:
        yield running


@pytest.fixture
async def provider(server: OpenAICompatibleServer) -> AsyncIterator[OpenAIProvider]:
    opened = OpenAIProvider(API_KEY, server.base_url, max_retries=2)
    yield opened
    await opened.close()


async def test_a_canned_completion_with_the_usage_the_server_reported(
    server: OpenAICompatibleServer, provider: OpenAIProvider
) -> None:
    server.script(Reply("A promising lead.", prompt_tokens=31, completion_tokens=5))

    response = await provider.complete(ask())

    assert response.text == "A promising lead."
    assert response.usage == Usage(prompt_tokens=31, completion_tokens=5, estimated=False)
    assert response.model == MODEL
    assert response.output is None
    assert response.tool_calls == []
    [received] = server.requests
    assert received.headers["authorization"] == f"Bearer {API_KEY}"
    assert received.body["model"] == MODEL
    assert received.body["temperature"] == 0.3
    assert received.body["messages"] == [
        {"role": "system", "content": "You qualify sales leads."},
        {"role": "user", "content": "Qualify this lead: ACME, 500 seats."},
    ]
    assert "tools" not in received.body
    assert "response_format" not in received.body
    assert (server.answered.prompt_tokens, server.answered.completion_tokens) == (31, 5)


async def test_usage_sums_match_the_server_count_exactly(
    server: OpenAICompatibleServer, provider: OpenAIProvider
) -> None:
    server.default = Respond(lambda body: Reply("x" * len(str(body["messages"]))))

    responses = await asyncio.gather(*(provider.complete(ask("lead " * n)) for n in range(1, 8)))

    assert server.answered.completions == 7
    assert sum(r.usage.prompt_tokens for r in responses) == server.answered.prompt_tokens
    assert sum(r.usage.completion_tokens for r in responses) == server.answered.completion_tokens
    assert not any(r.usage.estimated for r in responses)


async def test_a_tool_call_comes_back_parsed_and_its_result_goes_back_to_the_model(
    server: OpenAICompatibleServer, provider: OpenAIProvider
) -> None:
    server.script(reply_tool_call("lookup_order", {"order_id": "A-17"}), Reply("Order A-17 shipped."))

    first = await provider.complete(ask("Where is order A-17?", tools=[LOOKUP]))

    [call] = first.tool_calls
    assert (call.name, call.arguments) == ("lookup_order", {"order_id": "A-17"})
    assert call.id
    assert first.text == ""
    assert server.requests[0].body["tools"] == [
        {
            "type": "function",
            "function": {
                "name": "lookup_order",
                "description": "Find an order by its id.",
                "parameters": LOOKUP.parameters,
            },
        }
    ]

    follow_up = ask(
        tools=[LOOKUP],
        messages=[
            ChatMessage("user", "Where is order A-17?"),
            ChatMessage("assistant", "", tool_calls=[call]),
            ChatMessage("tool", '{"status": "shipped"}', tool_call_id=call.id),
        ],
    )
    second = await provider.complete(follow_up)

    assert second.text == "Order A-17 shipped."
    assistant, tool = server.requests[1].body["messages"][1:]
    assert assistant["tool_calls"] == [
        {"id": call.id, "type": "function", "function": {"name": "lookup_order", "arguments": '{"order_id": "A-17"}'}}
    ]
    assert tool == {"role": "tool", "content": '{"status": "shipped"}', "tool_call_id": call.id}


async def test_tool_arguments_that_are_not_json_are_a_model_error_with_the_usage_spent(
    server: OpenAICompatibleServer, provider: OpenAIProvider
) -> None:
    server.script(reply_tool_call("lookup_order", '{"order_id": "A-17"', prompt_tokens=20, completion_tokens=9))

    with pytest.raises(ModelError) as raised:
        await provider.complete(ask(tools=[LOOKUP]))

    assert raised.value.kind == "model_error"
    assert "lookup_order" in str(raised.value)
    assert raised.value.usage == Usage(20, 9)


async def test_a_tool_message_without_the_call_it_answers_is_refused_before_any_call(
    server: OpenAICompatibleServer, provider: OpenAIProvider
) -> None:
    with pytest.raises(ModelError) as raised:
        await provider.complete(ask(messages=[ChatMessage("tool", "{}")]))

    assert raised.value.kind == "model_error"
    assert server.requests == []


async def test_structured_output_is_requested_strict_and_parsed(
    server: OpenAICompatibleServer, provider: OpenAIProvider
) -> None:
    server.script(reply_json({"score": 87, "reason": "500 seats, budget approved"}))

    response = await provider.complete(ask(output_schema=LEAD_SCHEMA))

    assert response.output == {"score": 87, "reason": "500 seats, budget approved"}
    schema_without_metadata = {k: v for k, v in LEAD_SCHEMA.items() if k != "$schema"}
    assert server.requests[0].body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "output", "schema": schema_without_metadata, "strict": True},
    }


async def test_a_schema_outside_the_strict_subset_is_sent_non_strict(
    server: OpenAICompatibleServer, provider: OpenAIProvider
) -> None:
    optional_reason = {**LEAD_SCHEMA, "required": ["score"]}
    server.script(reply_json({"score": 12}))

    response = await provider.complete(ask(output_schema=optional_reason))

    assert response.output == {"score": 12}
    assert server.requests[0].body["response_format"]["json_schema"]["strict"] is False


async def test_the_json_object_style_sends_the_schema_beside_json_object(server: OpenAICompatibleServer) -> None:
    provider = OpenAIProvider(API_KEY, server.base_url, response_format="json_object")
    server.script(reply_json({"score": 87, "reason": "500 seats"}))

    response = await provider.complete(ask(output_schema=LEAD_SCHEMA))

    assert response.output == {"score": 87, "reason": "500 seats"}
    schema_without_metadata = {k: v for k, v in LEAD_SCHEMA.items() if k != "$schema"}
    assert server.requests[0].body["response_format"] == {"type": "json_object", "schema": schema_without_metadata}
    await provider.close()


@pytest.mark.parametrize(
    ("content", "output"),
    [
        ("The score is 87.", None),
        ('{"score": 87, "reason": "cut off', None),
        ('```json\n{"score": 40, "reason": "small team"}\n```', {"score": 40, "reason": "small team"}),
    ],
)
async def test_an_answer_that_is_not_json_keeps_its_text_and_has_no_output(
    server: OpenAICompatibleServer, provider: OpenAIProvider, content: str, output: Any
) -> None:
    server.script(Reply(content))

    response = await provider.complete(ask(output_schema=LEAD_SCHEMA))

    assert response.text == content
    assert response.output == output


async def test_a_429_is_retried_and_answers_once(server: OpenAICompatibleServer, provider: OpenAIProvider) -> None:
    server.script(Fail(429, "slow down", code="rate_limit_exceeded", retry_after_ms=20), Reply("after the wait"))

    response = await provider.complete(ask())

    assert response.text == "after the wait"
    assert len(server.requests) == 2
    assert server.requests[1].headers["x-stainless-retry-count"] == "1"
    assert server.answered.completions == 1


@pytest.mark.parametrize("max_retries", [0, 3])
async def test_a_500_is_retried_up_to_max_retries_then_is_a_model_error(
    server: OpenAICompatibleServer, max_retries: int
) -> None:
    server.default = Fail(500, "upstream exploded", retry_after_ms=20)
    provider = OpenAIProvider(API_KEY, server.base_url, max_retries=max_retries)

    with pytest.raises(ModelError) as raised:
        await provider.complete(ask())
    await provider.close()

    assert raised.value.kind == "model_error"
    assert "500" in str(raised.value)
    assert len(server.requests) == 1 + max_retries
    assert server.answered.completions == 0


@pytest.mark.parametrize(
    ("status", "code"), [(400, "invalid_request_error"), (401, "invalid_api_key"), (404, "model_not_found")]
)
async def test_other_4xx_are_not_retried(
    server: OpenAICompatibleServer, provider: OpenAIProvider, status: int, code: str
) -> None:
    server.script(Fail(status, f"Incorrect API key provided: {API_KEY}", type="invalid_request_error", code=code))

    with pytest.raises(ModelError) as raised:
        await provider.complete(ask())

    assert raised.value.kind == "model_error"
    assert str(status) in str(raised.value)
    assert code in str(raised.value)
    assert API_KEY not in str(raised.value)
    assert len(server.requests) == 1


async def test_a_hung_call_is_a_timeout_within_the_deadline(
    server: OpenAICompatibleServer, provider: OpenAIProvider
) -> None:
    server.default = Hang()

    async with asyncio.timeout(GUARD_S):
        with pytest.raises(ModelError) as raised:
            await provider.complete(ask(timeout_s=0.5))

    assert raised.value.kind == "timeout"
    assert len(server.requests) == 1  # the deadline was spent: no retry after it
    await server.wait_until(lambda: server.in_flight == 0)  # the call was abandoned, not left open


async def test_the_deadline_bounds_the_sdk_retries_and_their_backoff(
    server: OpenAICompatibleServer, provider: OpenAIProvider
) -> None:
    server.default = Fail(429, "slow down", retry_after_ms=60_000)

    async with asyncio.timeout(GUARD_S):
        with pytest.raises(ModelError) as raised:
            await provider.complete(ask(timeout_s=0.5))

    assert raised.value.kind == "timeout"
    assert len(server.requests) == 1


async def test_a_deadline_already_passed_makes_no_call(
    server: OpenAICompatibleServer, provider: OpenAIProvider
) -> None:
    with pytest.raises(ModelError) as raised:
        await provider.complete(ask(timeout_s=0))

    assert raised.value.kind == "timeout"
    assert server.requests == []


async def test_a_held_call_answers_when_released(server: OpenAICompatibleServer, provider: OpenAIProvider) -> None:
    server.script(Hold(Reply("released")))

    call = asyncio.create_task(provider.complete(ask()))
    await server.wait_until(lambda: server.in_flight == 1)
    assert not call.done()
    server.release()

    assert (await call).text == "released"
    assert server.answered.completions == 1


async def test_missing_usage_is_estimated_and_marked_so(
    server: OpenAICompatibleServer, provider: OpenAIProvider
) -> None:
    server.script(Reply("A promising lead with a real budget.", usage=False))
    request = ask(tools=[LOOKUP])

    response = await provider.complete(request)

    assert response.usage == Usage(
        prompt_tokens=estimate_prompt_tokens(request.messages, request.tools),
        completion_tokens=estimate_tokens("A promising lead with a real budget."),
        estimated=True,
    )


async def test_auto_sends_max_tokens_to_a_local_server(
    server: OpenAICompatibleServer, provider: OpenAIProvider
) -> None:
    await provider.complete(ask(max_output_tokens=77))

    assert server.requests[0].body["max_tokens"] == 77
    assert "max_completion_tokens" not in server.requests[0].body


async def test_a_configured_max_completion_tokens_is_sent_as_such(server: OpenAICompatibleServer) -> None:
    provider = OpenAIProvider(API_KEY, server.base_url, max_tokens_param="max_completion_tokens")

    await provider.complete(ask(max_output_tokens=77))
    await provider.close()

    assert server.requests[0].body["max_completion_tokens"] == 77
    assert "max_tokens" not in server.requests[0].body


def refuse_max_tokens(body: Body) -> Fail | Reply:
    """What OpenAI answers for its reasoning models when sent ``max_tokens``."""
    if "max_tokens" in body:
        message = "Unsupported parameter: 'max_tokens' is not supported with this model."
        return Fail(400, message, type="invalid_request_error", code="unsupported_parameter", param="max_tokens")
    return Reply("ok")


async def test_auto_switches_to_the_other_limit_name_for_good_when_the_server_refuses_one(
    server: OpenAICompatibleServer, provider: OpenAIProvider
) -> None:
    server.default = Respond(refuse_max_tokens)

    first = await provider.complete(ask(max_output_tokens=50))
    second = await provider.complete(ask(max_output_tokens=60))

    assert (first.text, second.text) == ("ok", "ok")
    assert [r.body.get("max_completion_tokens") for r in server.requests] == [None, 50, 60]


async def test_a_configured_limit_name_is_not_switched(server: OpenAICompatibleServer) -> None:
    server.default = Respond(refuse_max_tokens)
    provider = OpenAIProvider(API_KEY, server.base_url, max_tokens_param="max_tokens")

    with pytest.raises(ModelError) as raised:
        await provider.complete(ask())
    await provider.close()

    assert "400" in str(raised.value)
    assert len(server.requests) == 1


async def test_a_server_that_is_not_there_is_a_model_error() -> None:
    with socket.socket() as sock:  # a port that was free a moment ago and has nobody listening now
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    provider = OpenAIProvider(API_KEY, f"http://127.0.0.1:{port}/v1", max_retries=0)

    with pytest.raises(ModelError) as raised:
        await provider.complete(ask())
    await provider.close()

    assert raised.value.kind == "model_error"
    assert "connect" in str(raised.value)


async def test_requests_are_told_apart_by_model(server: OpenAICompatibleServer, provider: OpenAIProvider) -> None:
    server.behave("writer", Reply("a draft"))
    server.script(Fail(400, "bad"), model="qualifier")

    with pytest.raises(ModelError):
        await provider.complete(ask(model="qualifier"))
    written = await provider.complete(ask(model="writer"))
    qualified = await provider.complete(ask(model="qualifier"))

    assert (written.text, qualified.text) == ("a draft", "ok")
    assert [r.model for r in server.requests] == ["qualifier", "writer", "qualifier"]
    assert server.max_in_flight == 1


async def test_the_server_measures_the_calls_in_flight_at_once(
    server: OpenAICompatibleServer, provider: OpenAIProvider
) -> None:
    server.default = Hold(Reply("done"))

    calls = [asyncio.create_task(provider.complete(ask(model=m))) for m in ["a"] * 5 + ["b"] * 2]
    await server.wait_until(lambda: server.in_flight == 7)
    server.release()
    await asyncio.gather(*calls)

    assert server.max_in_flight == 7
    assert (server.max_in_flight_by_model["a"], server.max_in_flight_by_model["b"]) == (5, 2)
    assert server.in_flight == 0
    assert server.answered.completions == 7


async def test_a_held_call_whose_client_left_is_neither_answered_nor_counted(
    server: OpenAICompatibleServer, provider: OpenAIProvider
) -> None:
    server.script(Hold(Reply("too late")))

    call = asyncio.create_task(provider.complete(ask()))
    await server.wait_until(lambda: server.in_flight == 1)
    call.cancel()  # the client goes away mid-call, as a killed process does
    await server.wait_until(lambda: server.in_flight == 0)
    server.release()
    after = await provider.complete(ask())

    assert after.text == "ok"
    assert len(server.requests) == 2
    assert server.answered.completions == 1
