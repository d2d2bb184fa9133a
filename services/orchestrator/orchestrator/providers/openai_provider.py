"""The ``openai`` provider: Chat Completions through the official openai SDK, against OpenAI or any
OpenAI-compatible server (Ollama, vLLM, LM Studio, llama-cpp-python's server).

Chat Completions is the most portable API across such servers. Tools go as ``tools=[{"type": "function"}]`` and
come back as ``ToolCall`` with parsed JSON arguments; an output schema goes as a ``json_schema`` response format,
``strict`` when the schema meets OpenAI's strict subset (or, for llama-cpp-python's server, as ``json_object`` with
the schema beside it), and the answer's content is parsed as JSON.

Timeouts and retries are set on purpose. The SDK retries 408, 409, 429, 5xx and connection errors ``max_retries``
times with exponential backoff (honouring ``retry-after``) and never retries other 4xx. Each call gets the task's
remaining deadline (``ModelRequest.timeout_s``) twice over: as the SDK's per-request timeout, and as one bound around
the call with all its retries and backoff, since the SDK's timeout applies to each attempt and each read, not to the
whole. A call that misses its deadline raises ``ModelError(kind="timeout")``; any other failure
``ModelError(kind="model_error")`` with a short message (status code and the server's error code, never a key).
"""

import asyncio
import json
import re
from typing import Any, Literal, cast
from urllib.parse import urlsplit

import openai
from openai import AsyncOpenAI, omit
from openai.types.chat import (
    ChatCompletion,
    ChatCompletionFunctionToolParam,
    ChatCompletionMessageFunctionToolCall,
    ChatCompletionMessageFunctionToolCallParam,
    ChatCompletionMessageParam,
)
from openai.types.chat.completion_create_params import ResponseFormat

from orchestrator.providers.base import (
    ChatMessage,
    ModelError,
    ModelRequest,
    ModelResponse,
    Tool,
    ToolCall,
    Usage,
    estimate_prompt_tokens,
    estimate_tokens,
)

MaxTokensParam = Literal["auto", "max_completion_tokens", "max_tokens"]
"""How the output limit is sent. OpenAI wants ``max_completion_tokens`` (its reasoning models refuse ``max_tokens``);
many local servers know only ``max_tokens`` and some ignore an unknown field silently, which would leave the output
unbounded. ``auto`` sends ``max_completion_tokens`` to OpenAI and ``max_tokens`` elsewhere, and switches to the
other name for good when a server refuses the one it got."""

ResponseFormatStyle = Literal["json_schema", "json_object"]
"""How an output schema is sent. ``json_schema`` is OpenAI's form, which vLLM, Ollama, LM Studio and llama.cpp's own
server also take. ``json_object`` is ``{"type": "json_object", "schema": ...}``, the form of llama-cpp-python's server
(which refuses ``json_schema``, with a 500) and some hosted ones: the schema constrains the output all the same."""

NO_KEY = "no-key"
"""Sent when no key is configured: local servers accept any key, and OpenAI answers 401 (a clear error)."""
OUTPUT_FORMAT_NAME = "output"
OPENAI_HOST = "api.openai.com"
REFUSED_PARAM_WORDS = ("unsupported", "unrecognized", "not supported", "unknown", "extra", "not permitted")
STATUS_TEXT = {
    400: "bad request",
    401: "authentication failed",
    403: "permission denied",
    404: "not found (is the model name right?)",
    408: "request timeout",
    409: "conflict",
    413: "request too large",
    422: "request not understood",
    429: "rate limited",
}
SAFE_CODE = re.compile(r"[A-Za-z0-9_.\-]{1,64}")

# JSON Schema keywords that OpenAI's strict structured outputs support; a schema using any other is sent non-strict.
STRICT_KEYWORDS = frozenset(
    {
        "type", "properties", "required", "additionalProperties", "items", "enum", "const", "anyOf", "$ref", "$defs",
        "definitions", "description", "title", "pattern", "format", "minimum", "maximum", "exclusiveMinimum",
        "exclusiveMaximum", "multipleOf", "minItems", "maxItems",
    }
)  # fmt: skip
SCHEMA_METADATA = ("$schema", "$id")


class OpenAIProvider:
    name = "openai"

    def __init__(
        self,
        api_key: str | None,
        base_url: str | None = None,
        *,
        max_retries: int = 2,
        max_tokens_param: MaxTokensParam = "auto",
        response_format: ResponseFormatStyle = "json_schema",
    ) -> None:
        """``api_key`` and ``base_url`` come from the caller's settings (OPENAI_API_KEY, OPENAI_BASE_URL; no base
        URL means OpenAI). ``max_retries`` is the SDK's own retry count for 429, 5xx and connection errors."""
        self._client = AsyncOpenAI(api_key=api_key or NO_KEY, base_url=base_url or None, max_retries=max_retries)
        self._response_format: ResponseFormatStyle = response_format
        self._adapt_max_tokens = max_tokens_param == "auto"
        if max_tokens_param == "auto":
            host = urlsplit(base_url).hostname if base_url else OPENAI_HOST
            max_tokens_param = "max_completion_tokens" if host == OPENAI_HOST else "max_tokens"
        self._max_tokens_param: Literal["max_completion_tokens", "max_tokens"] = max_tokens_param

    async def complete(self, request: ModelRequest) -> ModelResponse:
        if request.timeout_s <= 0:
            raise ModelError("the task's deadline had passed before the model call", kind="timeout")
        messages = [_message(m) for m in request.messages]
        try:
            async with asyncio.timeout(request.timeout_s):
                completion = await self._create(request, messages)
        except (TimeoutError, openai.APITimeoutError):
            raise ModelError(f"no answer from the model within {request.timeout_s:g} s", kind="timeout") from None
        except openai.APIStatusError as error:
            raise ModelError(_describe_status(error)) from None
        except openai.APIConnectionError:
            raise ModelError("could not connect to the model server") from None
        except openai.OpenAIError as error:
            raise ModelError(f"model call failed ({type(error).__name__})") from None
        return _response(completion, request)

    async def close(self) -> None:
        await self._client.close()

    async def _create(self, request: ModelRequest, messages: list[ChatCompletionMessageParam]) -> ChatCompletion:
        try:
            return await self._send(request, messages, self._max_tokens_param)
        except openai.APIStatusError as error:
            if not (self._adapt_max_tokens and _refuses_param(error, self._max_tokens_param)):
                raise
        self._max_tokens_param = (
            "max_tokens" if self._max_tokens_param == "max_completion_tokens" else "max_completion_tokens"
        )
        self._adapt_max_tokens = False
        return await self._send(request, messages, self._max_tokens_param)

    async def _send(
        self,
        request: ModelRequest,
        messages: list[ChatCompletionMessageParam],
        max_tokens_param: Literal["max_completion_tokens", "max_tokens"],
    ) -> ChatCompletion:
        limit = request.max_output_tokens
        return await self._client.chat.completions.create(
            model=request.model,
            messages=messages,
            temperature=request.temperature,
            max_completion_tokens=limit if max_tokens_param == "max_completion_tokens" else omit,
            max_tokens=limit if max_tokens_param == "max_tokens" else omit,
            tools=[_tool(t) for t in request.tools] if request.tools else omit,
            response_format=(
                _response_format(request.output_schema, self._response_format)
                if request.output_schema is not None
                else omit
            ),
            timeout=request.timeout_s,
        )


def _message(message: ChatMessage) -> ChatCompletionMessageParam:
    match message.role:
        case "system":
            return {"role": "system", "content": message.content}
        case "user":
            return {"role": "user", "content": message.content}
        case "assistant":
            if not message.tool_calls:
                return {"role": "assistant", "content": message.content}
            calls: list[ChatCompletionMessageFunctionToolCallParam] = [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": json.dumps(call.arguments)},
                }
                for call in message.tool_calls
            ]
            return {"role": "assistant", "content": message.content or None, "tool_calls": calls}
        case "tool":
            if not message.tool_call_id:
                raise ModelError("a tool message needs the id of the tool call it answers")
            return {"role": "tool", "content": message.content, "tool_call_id": message.tool_call_id}


def _tool(tool: Tool) -> ChatCompletionFunctionToolParam:
    return {
        "type": "function",
        "function": {"name": tool.name, "description": tool.description, "parameters": tool.parameters},
    }


def _response_format(schema: dict[str, Any], style: ResponseFormatStyle) -> ResponseFormat:
    sent = {k: v for k, v in schema.items() if k not in SCHEMA_METADATA}
    if style == "json_object":
        # Not in the SDK's types; the SDK sends a response format's keys as they are.
        return cast(ResponseFormat, {"type": "json_object", "schema": sent})
    return {
        "type": "json_schema",
        "json_schema": {"name": OUTPUT_FORMAT_NAME, "schema": sent, "strict": strict_allowed(sent)},
    }


def strict_allowed(schema: dict[str, Any]) -> bool:
    """Whether OpenAI's strict structured outputs accept the schema as it is: an object at the root, every object
    closed (``additionalProperties: false``) with all its properties required, and only supported keywords. A
    schema that is not is sent non-strict rather than rewritten (rewriting would change what it means); the
    runtime validates the answer against it either way."""
    return schema.get("type") == "object" and _strict_node(schema)


def _strict_node(node: Any) -> bool:
    if not isinstance(node, dict) or not set(node) <= STRICT_KEYWORDS:
        return False
    types = node.get("type")
    if types == "object" or (isinstance(types, list) and "object" in types):
        properties = node.get("properties")
        if not isinstance(properties, dict) or node.get("additionalProperties") is not False:
            return False
        if sorted(node.get("required", [])) != sorted(properties):
            return False
        if not all(_strict_node(p) for p in properties.values()):
            return False
    if "items" in node and not _strict_node(node["items"]):
        return False
    if "anyOf" in node and not (isinstance(node["anyOf"], list) and all(_strict_node(s) for s in node["anyOf"])):
        return False
    for key in ("$defs", "definitions"):
        if key in node and not (isinstance(node[key], dict) and all(_strict_node(s) for s in node[key].values())):
            return False
    return True


def _response(completion: ChatCompletion, request: ModelRequest) -> ModelResponse:
    choice = completion.choices[0] if completion.choices else None
    message = choice.message if choice is not None else None
    text = (message.content or "") if message is not None else ""
    raw_calls = (message.tool_calls or []) if message is not None else []
    function_calls = [c.function for c in raw_calls if isinstance(c, ChatCompletionMessageFunctionToolCall)]
    answered = text + "".join(f.name + f.arguments for f in function_calls)
    if completion.usage is not None:
        usage = Usage(completion.usage.prompt_tokens, completion.usage.completion_tokens)
    else:
        usage = Usage(
            estimate_prompt_tokens(request.messages, request.tools), estimate_tokens(answered), estimated=True
        )
    if message is None:
        raise ModelError("the model server answered with no choices", usage=usage)
    if message.refusal:
        raise ModelError(f"the model refused: {message.refusal[:200]}", usage=usage)
    tool_calls = [_tool_call(c, usage) for c in raw_calls]
    output = _parse_json(text) if request.output_schema is not None else None
    return ModelResponse(
        text=text, usage=usage, model=completion.model or request.model, output=output, tool_calls=tool_calls
    )


def _tool_call(call: object, usage: Usage) -> ToolCall:
    if not isinstance(call, ChatCompletionMessageFunctionToolCall):
        raise ModelError("the model made a tool call of a kind we never offered", usage=usage)
    name = call.function.name
    try:
        arguments = json.loads(call.function.arguments) if call.function.arguments.strip() else {}
    except json.JSONDecodeError:
        raise ModelError(f"the model called tool {name!r} with arguments that are not JSON", usage=usage) from None
    if not isinstance(arguments, dict):
        raise ModelError(f"the model called tool {name!r} with arguments that are not a JSON object", usage=usage)
    return ToolCall(id=call.id, name=name, arguments=cast(dict[str, Any], arguments))


def _parse_json(text: str) -> Any:
    """The answer as JSON, or None when it is not (the runtime then records ``invalid_output``). A ```json fence
    around it, which small models add, is taken off first."""
    body = text.strip()
    if body.startswith("```"):
        body = body.removeprefix("```json").removeprefix("```").removesuffix("```").strip()
    try:
        return json.loads(body)
    except json.JSONDecodeError:
        return None


def _refuses_param(error: openai.APIStatusError, param: str) -> bool:
    if error.status_code not in (400, 422):
        return False
    said = f"{error.param or ''} {error.message}".lower()
    return param in said and any(word in said for word in REFUSED_PARAM_WORDS)


def _describe_status(error: openai.APIStatusError) -> str:
    status = error.status_code
    what = STATUS_TEXT.get(status) or ("server error" if status >= 500 else "request refused")
    code = f" ({error.code})" if error.code and SAFE_CODE.fullmatch(error.code) else ""
    return f"the model server answered {status} {what}{code}"
