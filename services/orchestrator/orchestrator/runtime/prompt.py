"""The prompt of a task: who the agent is, what the step asks, what it is given, and what memory recalls.

The input and the handoff (earlier steps' outputs) are written as JSON blocks under fixed headings, so that a model
reads them as data and the local provider finds them.
"""

import json
from typing import Any

from contracts.agents import AgentSpec
from contracts.workflows import AgentTask
from orchestrator.providers.base import ChatMessage

MAX_CONTEXT_CHARS = 20_000
MAX_MEMORY_ITEMS = 8


def _json(value: Any, limit: int) -> str:
    text = json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)
    return text if len(text) <= limit else text[:limit] + " ...(truncated)"


def build_messages(
    spec: AgentSpec,
    task: AgentTask,
    memories: list[str],
    shared: dict[str, Any] | None = None,
    received: list[dict[str, Any]] | None = None,
) -> list[ChatMessage]:
    """``shared``: a team run's shared context by key (its working memory), which every member reads;
    ``received``: the messages the agent received during the run (MessageView documents)."""
    system = [f"You are {spec.name}, a {spec.role}."]
    if spec.instructions:
        system.append(spec.instructions)
    if task.output_schema is not None:
        system.append("Answer with one JSON value that follows this JSON Schema:\n" + _json(task.output_schema, 8000))
    else:
        system.append("Answer with one JSON object; put your main answer in a `summary` field.")
    user = [f"# Task: {task.step_name or task.step_id}"]
    if task.instructions:
        user.append(task.instructions)
    user.append("## Input\n```json\n" + _json(task.input, MAX_CONTEXT_CHARS) + "\n```")
    if task.context:
        user.append("## Earlier steps' outputs\n```json\n" + _json(task.context, MAX_CONTEXT_CHARS) + "\n```")
    if shared:
        user.append("## The run's shared context\n```json\n" + _json(shared, MAX_CONTEXT_CHARS) + "\n```")
    if received:
        lines = [
            f"- from {m['sender']['kind']} {m['sender']['id']} (thread {m['thread_id']}, {m['posted_at']}): "
            + _json(m["body"], 1000)
            for m in received
        ]
        user.append("## Messages you received during this run\n" + "\n".join(lines))
    if memories:
        user.append("## What memory recalls\n" + "\n".join(f"- {m[:1000]}" for m in memories[:MAX_MEMORY_ITEMS]))
    return [ChatMessage("system", "\n\n".join(system)), ChatMessage("user", "\n\n".join(user))]
