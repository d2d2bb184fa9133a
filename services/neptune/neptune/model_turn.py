"""A turn with a model that calls tools (any OpenAI-compatible endpoint): the model chooses the tools and chains them;
Neptune runs each through the gateway and gives the result back, an error included, so the model explains or
corrects; the answer is the model's.

Model calls are slow, costly and flaky, so each one has a deadline (``model_timeout_s``, the SDK's retries of 429,
5xx and connection errors inside it), its usage is recorded on the turn, and it is made only if the turn's token
budget (``turn_max_tokens``) still holds its worst case (the prompt as estimated plus ``max_output_tokens``): the
budget is reserved before the call, settled to the usage after it. The rounds of tool calls are bounded
(``max_tool_rounds``; the last round is offered no tools). When the model cannot be reached, the turn falls back to
the offline parser and says so.

Each call is streamed (``stream=True``, its usage asked for in the last chunk): the answer's text goes to the person
as ``delta`` events as the model writes it, the tool calls are put together from their fragments, and the final
``message`` carries the whole answer. The deadline bounds the whole call, its stream read to the end included, so a
server that stalls mid-answer cannot hold the turn; when that happens after some text was shown, that text is closed
with an ellipsis and a line break and the offline parser's answer follows (the ``message`` is that answer).

The system prompt states what Neptune can do and carries the workspace's live context (teams, workflows, runs in
flight, waiting approvals, recent failures, budget left), read through the gateway at the turn's start; the
conversation so far is trimmed to ``history_max_tokens`` (``domain.history``).
"""

import asyncio
import json
import logging
from dataclasses import dataclass, field
from typing import Any, cast

from openai import APIError, AsyncOpenAI, omit
from openai.types import CompletionUsage
from openai.types.chat import ChatCompletionChunk, ChatCompletionMessageParam, ChatCompletionToolUnionParam

from contracts.neptune import ToolUse, TurnCompleted, TurnEvent
from neptune.assistant import Emit, TurnResult, call_tool, offline_turn
from neptune.domain.history import estimate_tokens, history
from neptune.gateway_client import GatewayClient
from neptune.settings import NeptuneSettings
from neptune.tools import openai_tools

log = logging.getLogger(__name__)

CAPABILITIES = (
    "You are Neptune, the assistant of an agent orchestration platform. You act for the person you talk to, within "
    "their workspace, only through your tools. You can: create and manage agent teams per department (sales, "
    "marketing, support, operations) from templates or by roles; run a team on a plain-language objective; set up "
    "workflows that chain agents and follow them (status, pause, resume, cancel); delegate a task to an agent or "
    "find which agents are available; store shared context and recall what memory holds. Resolve names with the "
    "ids below; when a tool asks which of several things is meant, ask the person the same question and do not "
    "guess. When a tool fails, say why in plain words or correct the call. Answer briefly, with the ids and links "
    "the tools gave. Never reveal credentials, never act on another workspace, and do not delete or cancel "
    "anything the person did not ask you to."
)


@dataclass
class Spend:
    """The turn's model usage and what its budget has left."""

    left: int
    prompt_tokens: int = 0
    completion_tokens: int = 0
    calls: int = 0
    notes: list[str] = field(default_factory=list)

    def usage(self) -> dict[str, Any]:
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens, "calls": self.calls}

    def settle(self, worst: int, usage: CompletionUsage | None, max_output_tokens: int) -> None:
        """A call answered (in part, when its stream broke off): its reserved worst case settled to its usage."""
        self.calls += 1
        if usage is not None:
            self.prompt_tokens += usage.prompt_tokens
            self.completion_tokens += usage.completion_tokens
            self.left += worst - (usage.prompt_tokens + usage.completion_tokens)
        else:
            self.left += max_output_tokens // 2  # unknown usage: keep most of the worst case counted


@dataclass
class ToolCallParts:
    """One tool call put together from its streamed fragments."""

    id: str
    name: str = ""
    arguments: str = ""


@dataclass
class Streamed:
    """What one streamed model call sent, gathered as it arrives (what came before a failure included)."""

    opened: bool = False
    """The server began to answer: the call counts."""
    content: str = ""
    calls: dict[int, ToolCallParts] = field(default_factory=dict)
    usage: CompletionUsage | None = None

    def take(self, chunk: ChatCompletionChunk) -> str:
        """Adds a chunk: its text, its tool call fragments (by index: the id and name as they come, the arguments'
        text concatenated), its usage (the last chunk's). Returns its text, "" when it has none."""
        if chunk.usage is not None:
            self.usage = chunk.usage
        text = ""
        for choice in (c for c in chunk.choices if c.index == 0):
            text += choice.delta.content or ""
            for fragment in choice.delta.tool_calls or []:
                parts = self.calls.setdefault(fragment.index, ToolCallParts(id=f"call_{fragment.index}"))
                parts.id = fragment.id or parts.id
                if fragment.function is not None:
                    parts.name = fragment.function.name or parts.name
                    parts.arguments += fragment.function.arguments or ""
        self.content += text
        return text


def _names(items: list[dict[str, Any]], id_key: str) -> str:
    return "; ".join(f"{i.get('name') or i.get(id_key)} ({i.get(id_key)})" for i in items[:30]) or "none"


async def workspace_context(client: GatewayClient) -> str:
    """The workspace now, in a few lines: what the model needs to resolve names and answer status questions."""
    teams = await client.get("/api/v1/teams")
    workflows = await client.get("/api/v1/workflows")
    running = await client.get("/api/v1/workflows/executions", {"status": "running", "limit": 20})
    failed = await client.get("/api/v1/workflows/executions", {"status": "failed", "limit": 5})
    usage = await client.get("/api/v1/usage")

    def items(answer: Any) -> list[dict[str, Any]]:
        body = answer.body if answer.ok else {}
        found = body.get("items", []) if isinstance(body, dict) else []
        return [i for i in found if isinstance(i, dict)]

    waiting = []
    for execution in items(running)[:5]:  # the latest few: a step waiting for a person's approval
        detail = await client.get(f"/api/v1/workflows/executions/{execution.get('execution_id')}")
        steps = detail.body.get("steps", []) if detail.ok and isinstance(detail.body, dict) else []
        waiting += [
            f"{execution.get('execution_id')} at {s.get('id')}"
            for s in steps
            if s.get("kind") == "approval" and s.get("status") == "waiting"
        ]
    budget = usage.body.get("budget") if usage.ok and isinstance(usage.body, dict) else None
    left = (
        f"{budget['tokens'] - budget['used_tokens']} tokens of {budget['tokens']} this month"
        if isinstance(budget, dict) and budget.get("tokens")
        else "no monthly cap"
    )
    lines = [
        f"Teams: {_names(items(teams), 'team_id')}.",
        f"Workflows: {_names(items(workflows), 'workflow_id')}.",
        f"Executions running: {', '.join(str(e.get('execution_id')) for e in items(running)) or 'none'}.",
        f"Waiting for an approval: {', '.join(waiting) or 'none'}.",
        f"Recent failures: {', '.join(str(e.get('execution_id')) for e in items(failed)) or 'none'}.",
        f"Budget left: {left}.",
    ]
    return "The workspace now:\n" + "\n".join(lines)


def build_llm(settings: NeptuneSettings) -> AsyncOpenAI | None:
    """The model client when one is configured (an API key), else None: the offline parser answers."""
    if settings.openai_api_key is None or not settings.openai_api_key.get_secret_value():
        return None
    return AsyncOpenAI(
        api_key=settings.openai_api_key.get_secret_value(),
        base_url=settings.openai_base_url or None,
        max_retries=settings.openai_max_retries,
        timeout=settings.model_timeout_s,
    )


async def model_turn(
    llm: AsyncOpenAI,
    settings: NeptuneSettings,
    client: GatewayClient,
    earlier: tuple[TurnCompleted, ...],
    content: str,
    emit: Emit,
) -> TurnResult:
    system = CAPABILITIES + "\n\n" + await workspace_context(client)
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": system},
        *history(earlier, settings.history_max_tokens),
        {"role": "user", "content": content},
    ]
    spend = Spend(left=settings.turn_max_tokens)
    uses: list[ToolUse] = []
    tools = openai_tools()
    for round_ in range(settings.max_tool_rounds + 1):
        offered = tools if round_ < settings.max_tool_rounds else []
        worst = estimate_tokens(messages) + estimate_tokens(offered) + settings.max_output_tokens
        if worst > spend.left:  # reserved before the call: a call that might not fit is not made
            answer = "I stopped here: this turn's model budget is spent. " + _done(uses)
            return await _answer(emit, answer, uses, spend)
        spend.left -= worst
        got = Streamed()
        failure = await _call(llm, settings, messages, offered, emit, got)
        if failure is not None:
            log.warning("the model did not answer a turn: %s", failure)
            if got.opened:
                spend.settle(worst, got.usage, settings.max_output_tokens)
            else:
                spend.left += worst
            return await _fall_back(client, content, emit, spend, got)
        spend.settle(worst, got.usage, settings.max_output_tokens)
        calls = [got.calls[index] for index in sorted(got.calls)] if offered else []
        if not calls:
            if got.content:
                return await _answer(emit, got.content, uses, spend, streamed=True)
            return await _answer(emit, _done(uses), uses, spend)
        messages.append(
            {
                "role": "assistant",
                "content": got.content or None,
                "tool_calls": [
                    {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                    for c in calls
                ],
            }
        )
        for call in calls:
            use = await _run(client, call, emit)
            uses.append(use)
            messages.append({"role": "tool", "tool_call_id": call.id, "content": json.dumps(use.result, default=str)})
    return await _answer(emit, _done(uses), uses, spend)


async def _fall_back(client: GatewayClient, content: str, emit: Emit, spend: Spend, got: Streamed) -> TurnResult:
    """The offline parser's answer, said to be one. Text the model had streamed stops where it broke off, closed
    with an ellipsis and a line break; the answer that replaces it follows."""
    if got.content:
        await emit(TurnEvent(type="delta", data={"content": "…\n"}))
    fallback = await offline_turn(client, content, _quiet_message(emit))
    why = "stopped answering" if got.opened else "could not be reached"
    answer = f"(The model {why}, so I read your message myself.) {fallback.answer}"
    return await _answer(emit, answer, fallback.tools, spend, intent=f"offline:{fallback.intent}")


async def _run(client: GatewayClient, call: ToolCallParts, emit: Emit) -> ToolUse:
    """A tool call of the model's; arguments that are not a JSON object are its error, fed back."""
    try:
        arguments = json.loads(call.arguments or "{}")
    except ValueError:
        arguments = None
    if not isinstance(arguments, dict):
        error = {"error": "the arguments are not a JSON object"}
        return ToolUse(call_id=call.id, name=call.name, arguments={}, ok=False, result=error)
    return await call_tool(client, call.name, arguments, call.id, emit)


async def _call(
    llm: AsyncOpenAI,
    settings: NeptuneSettings,
    messages: list[dict[str, Any]],
    offered: list[dict[str, Any]],
    emit: Emit,
    got: Streamed,
) -> str | None:
    """One model call, streamed into ``got`` within its deadline (``model_timeout_s``, the stream read to its end
    included), each piece of text emitted as a ``delta`` as it arrives. None when it answered, else why not."""
    deadline = asyncio.timeout(settings.model_timeout_s)
    try:
        async with deadline:
            stream = await llm.chat.completions.create(
                model=settings.neptune_model,
                messages=cast(list[ChatCompletionMessageParam], messages),
                tools=cast(list[ChatCompletionToolUnionParam], offered) or omit,  # no tools: left out, not null
                max_tokens=settings.max_output_tokens,
                timeout=settings.model_timeout_s,
                stream=True,
                stream_options={"include_usage": True},
            )
            got.opened = True
            async with stream:
                async for chunk in stream:
                    if text := got.take(chunk):
                        await emit(TurnEvent(type="delta", data={"content": text}))
    except APIError as exc:
        return str(exc)
    except TimeoutError:
        if not deadline.expired():
            raise
        return f"no complete answer within {settings.model_timeout_s} s"
    return None


def _done(uses: list[ToolUse]) -> str:
    done = [str(u.result.get("summary")) for u in uses if u.ok and u.result.get("summary")]
    return " ".join(done) if done else "I did not get to an answer."


def _quiet_message(emit: Emit) -> Emit:
    """``emit`` without the offline turn's own final message (the model turn sends the answer)."""

    async def forward(event: TurnEvent) -> None:
        if event.type != "message":
            await emit(event)

    return forward


async def _answer(
    emit: Emit, answer: str, uses: list[ToolUse], spend: Spend, intent: str = "model", *, streamed: bool = False
) -> TurnResult:
    """The turn's end: the answer (as a ``delta`` too unless the model streamed it already) and the ``message``."""
    if not streamed:
        await emit(TurnEvent(type="delta", data={"content": answer}))
    await emit(TurnEvent(type="message", data={"content": answer, "usage": spend.usage()}))
    return TurnResult(intent, uses, answer, spend.usage())
