"""A turn with a model that calls tools (any OpenAI-compatible endpoint): the model chooses the tools and chains them;
Neptune runs each through the gateway and gives the result back, an error included, so the model explains or
corrects; the answer is the model's.

Model calls are slow, costly and flaky, so each one has a deadline (``model_timeout_s``, the SDK's retries of 429,
5xx and connection errors inside it), its usage is recorded on the turn, and it is made only if the turn's token
budget (``turn_max_tokens``) still holds its worst case (the prompt as estimated plus ``max_output_tokens``): the
budget is reserved before the call, settled to the usage after it. The rounds of tool calls are bounded
(``max_tool_rounds``; the last round is offered no tools). When the model cannot be reached, the turn falls back to
the offline parser and says so.

The system prompt states what Neptune can do and carries the workspace's live context (teams, workflows, runs in
flight, waiting approvals, recent failures, budget left), read through the gateway at the turn's start; the
conversation so far is trimmed to ``history_max_tokens`` (``domain.history``).
"""

import json
import logging
from dataclasses import dataclass, field
from typing import Any

from openai import APIError, AsyncOpenAI, omit

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
        try:
            response = await llm.chat.completions.create(
                model=settings.neptune_model,
                messages=messages,  # type: ignore[arg-type]
                tools=offered or omit,  # type: ignore[arg-type]  # no tools: the field left out, not null
                max_tokens=settings.max_output_tokens,
                timeout=settings.model_timeout_s,
            )
        except APIError as exc:
            spend.left += worst
            log.warning("the model did not answer a turn: %s", exc)
            fallback = await offline_turn(client, content, _quiet_message(emit))
            answer = f"(The model could not be reached, so I read your message myself.) {fallback.answer}"
            return await _answer(emit, answer, fallback.tools, spend, intent=f"offline:{fallback.intent}")
        spend.calls += 1
        if response.usage is not None:
            spend.prompt_tokens += response.usage.prompt_tokens
            spend.completion_tokens += response.usage.completion_tokens
            spend.left += worst - (response.usage.prompt_tokens + response.usage.completion_tokens)
        else:
            spend.left += settings.max_output_tokens // 2  # unknown usage: keep most of the worst case counted
        choice = response.choices[0].message
        calls = list(choice.tool_calls or []) if offered else []
        if not calls:
            return await _answer(emit, choice.content or _done(uses), uses, spend)
        messages.append(
            {
                "role": "assistant",
                "content": choice.content,
                "tool_calls": [
                    {
                        "id": c.id,
                        "type": "function",
                        "function": {"name": c.function.name, "arguments": c.function.arguments},
                    }
                    for c in calls
                    if c.type == "function"
                ],
            }
        )
        for call in calls:
            if call.type != "function":
                continue
            try:
                arguments = json.loads(call.function.arguments or "{}")
            except ValueError:
                arguments = None
            if not isinstance(arguments, dict):
                use = ToolUse(
                    call_id=call.id,
                    name=call.function.name,
                    arguments={},
                    ok=False,
                    result={"error": "the arguments are not a JSON object"},
                )
            else:
                use = await call_tool(client, call.function.name, arguments, call.id, emit)
            uses.append(use)
            messages.append({"role": "tool", "tool_call_id": call.id, "content": json.dumps(use.result, default=str)})
    return await _answer(emit, _done(uses), uses, spend)


def _done(uses: list[ToolUse]) -> str:
    done = [str(u.result.get("summary")) for u in uses if u.ok and u.result.get("summary")]
    return " ".join(done) if done else "I did not get to an answer."


def _quiet_message(emit: Emit) -> Emit:
    """``emit`` without the offline turn's own final message (the model turn sends the answer)."""

    async def forward(event: TurnEvent) -> None:
        if event.type != "message":
            await emit(event)

    return forward


async def _answer(emit: Emit, answer: str, uses: list[ToolUse], spend: Spend, intent: str = "model") -> TurnResult:
    await emit(TurnEvent(type="delta", data={"content": answer}))
    await emit(TurnEvent(type="message", data={"content": answer, "usage": spend.usage()}))
    return TurnResult(intent, uses, answer, spend.usage())
