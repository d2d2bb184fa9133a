"""The conversation as a model reads it: earlier turns turned into chat messages, trimmed to a token budget.

Pure. Turns are dropped oldest first until the rest fits. A dropped turn's tool results are not all lost: those
whose ids a kept turn mentions (the person says "run it", the model wrote the team's id in a later answer) stay as
one short note, so the model can still refer to what it made. Tokens are estimated at four characters each.
"""

import json
import re
from collections.abc import Sequence
from typing import Any

from contracts.neptune import TurnCompleted

Message = dict[str, Any]
IDS = re.compile(r"\b[a-z]{2,5}_[0-9a-f]{8,}\b")


def estimate_tokens(messages: Sequence[Message]) -> int:
    return sum(len(json.dumps(m, ensure_ascii=False, default=str)) for m in messages) // 4 + 1


def turn_messages(turn: TurnCompleted) -> list[Message]:
    """A turn as the chat messages the model made and saw: the person's, each tool call and result, the answer."""
    messages: list[Message] = [{"role": "user", "content": turn.content}]
    if turn.tools:
        calls = [
            {
                "id": use.call_id,
                "type": "function",
                "function": {"name": use.name, "arguments": json.dumps(use.arguments, ensure_ascii=False)},
            }
            for use in turn.tools
        ]
        messages.append({"role": "assistant", "content": None, "tool_calls": calls})
        for use in turn.tools:
            result = json.dumps(use.result, ensure_ascii=False, default=str)
            messages.append({"role": "tool", "tool_call_id": use.call_id, "content": result})
    messages.append({"role": "assistant", "content": turn.answer})
    return messages


def history(turns: Sequence[TurnCompleted], budget_tokens: int) -> list[Message]:
    """The latest turns that fit in ``budget_tokens``, preceded by a note of what the dropped ones made that the
    kept ones refer to."""
    kept: list[list[Message]] = []
    used = 0
    index = len(turns)
    while index > 0:
        messages = turn_messages(turns[index - 1])
        cost = estimate_tokens(messages)
        if used + cost > budget_tokens:
            break
        kept.insert(0, messages)
        used += cost
        index -= 1
    dropped = turns[:index]
    flat = [m for messages in kept for m in messages]
    mentioned = set(IDS.findall(json.dumps(flat, ensure_ascii=False, default=str)))
    notes = [
        f"{use.name} -> {json.dumps(use.result, ensure_ascii=False, default=str)[:400]}"
        for turn in dropped
        for use in turn.tools
        if mentioned & set(IDS.findall(json.dumps(use.result, default=str)))
    ]
    if notes:
        flat.insert(0, {"role": "user", "content": "Earlier in this conversation (tool results):\n" + "\n".join(notes)})
        flat.insert(1, {"role": "assistant", "content": "Noted."})
    return flat
