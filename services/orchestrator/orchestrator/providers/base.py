"""The one interface every model provider implements, and what crosses it.

A provider turns a ``ModelRequest`` (the system prompt, the conversation, the output schema, the tools and the call's
limits) into a ``ModelResponse`` with the usage the provider reported (or, where it reported none, an estimate that
says so). It raises ``ModelError`` with an error kind the runtime records on the step: ``timeout`` when the deadline
passed, ``model_error`` for anything else the provider refused or failed at. Retries that the provider's client does
itself (the openai SDK's backoff on 429 and 5xx) happen inside ``complete``; the step's retry policy is the outer one.
"""

import json
import math
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

ErrorKind = Literal["model_error", "timeout"]
ChatRole = Literal["system", "user", "assistant", "tool"]


@dataclass(frozen=True, slots=True)
class ChatMessage:
    role: ChatRole
    content: str
    tool_calls: list["ToolCall"] = field(default_factory=list)
    """On an assistant message: the tool calls the model made in it (sent back so the next turn can answer them)."""
    tool_call_id: str = ""
    """On a tool message: the id of the tool call it answers."""


@dataclass(frozen=True, slots=True)
class Tool:
    """A function the model may call: its name, what it is for, and the JSON Schema of its arguments."""

    name: str
    description: str
    parameters: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ToolCall:
    id: str
    name: str
    arguments: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ModelRequest:
    model: str
    messages: list[ChatMessage]
    max_output_tokens: int
    timeout_s: float
    temperature: float = 0.2
    output_schema: dict[str, Any] | None = None
    """JSON Schema the answer must follow (structured output); ``ModelResponse.output`` then holds it parsed."""
    tools: list[Tool] = field(default_factory=list)
    role: str = ""
    """The agent's role: the local provider shapes its answer by it; model providers ignore it."""


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    estimated: bool = False
    """True when the provider reported no usage and the figures are ``estimate_tokens`` of the text."""

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True, slots=True)
class ModelResponse:
    text: str
    usage: Usage
    model: str
    output: Any = None
    """The parsed JSON answer when the request had an output schema (not yet validated against it)."""
    tool_calls: list[ToolCall] = field(default_factory=list)


class ModelError(Exception):
    """A call that did not give an answer. ``kind`` is recorded on the step; ``usage`` is what it cost, if known."""

    def __init__(self, message: str, kind: ErrorKind = "model_error", usage: Usage | None = None) -> None:
        super().__init__(message)
        self.kind: ErrorKind = kind
        self.usage = usage


class ModelProvider(Protocol):
    name: str

    async def complete(self, request: ModelRequest) -> ModelResponse: ...

    async def close(self) -> None: ...


CHARS_PER_TOKEN = 4
MESSAGE_OVERHEAD_TOKENS = 4
REQUEST_OVERHEAD_TOKENS = 3


def estimate_tokens(text: str) -> int:
    """A documented estimate, not a tokenizer: one token per four characters, rounded up (tiktoken's encoding files
    cannot be fetched here). Used where a provider reports no usage, and by the local provider."""
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def worst_case_prompt_tokens(
    messages: list[ChatMessage], output_schema: dict[str, Any] | None = None, tools: list[Tool] | None = None
) -> int:
    """An upper bound of what a model's tokenizer counts for the prompt: a byte-level BPE token is at least one
    byte of UTF-8, so the bytes of the messages (with the tool calls they carry), of the output schema (sent again
    as the response format), of the tools' schemas and the chat template's overhead per message. Budgets reserve
    this for real models (the local provider counts ``estimate_prompt_tokens`` itself)."""
    total = REQUEST_OVERHEAD_TOKENS
    for m in messages:
        total += MESSAGE_OVERHEAD_TOKENS + len(m.content.encode()) + len(m.tool_call_id.encode())
        for call in m.tool_calls:
            total += MESSAGE_OVERHEAD_TOKENS + len((call.id + call.name + json.dumps(call.arguments)).encode())
    if output_schema is not None:
        total += len(json.dumps(output_schema).encode())
    for tool in tools or []:
        total += MESSAGE_OVERHEAD_TOKENS + len((tool.name + tool.description + json.dumps(tool.parameters)).encode())
    return total


def estimate_prompt_tokens(messages: list[ChatMessage], tools: list[Tool] | None = None) -> int:
    """The prompt's size in estimated tokens: its messages with their chat-template overhead, plus the tools'
    schemas. Budgets reserve this plus the call's max output tokens before the call."""
    total = REQUEST_OVERHEAD_TOKENS + sum(MESSAGE_OVERHEAD_TOKENS + estimate_tokens(m.content) for m in messages)
    for tool in tools or []:
        total += estimate_tokens(tool.name + tool.description + json.dumps(tool.parameters, sort_keys=True))
    return total
