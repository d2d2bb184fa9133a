"""A small OpenAI-compatible server for tests: real HTTP on a free localhost port, scriptable per request.

It serves ``POST /v1/chat/completions`` in the test's own event loop (uvicorn + Starlette), so the openai SDK's
real request path runs: its headers, its retries and backoff, its timeouts. What it answers is a *behaviour*:

- ``Reply``: a completion (text, tool calls or JSON content) with the usage it reports, or none;
- ``Fail``: an OpenAI-style error with a status code (429, 500, 400...);
- ``Hang``: no answer until the client gives up or the server stops;
- ``Hold``: no answer until the test calls ``release()``, then the behaviour it wraps (a process can be killed
  mid-call in between);
- ``Respond``: a behaviour computed from the request body.

A request with ``"stream": true`` gets its ``Reply`` as Server-Sent Events in OpenAI's chunk format
(``chat.completion.chunk``): the role, the content a word at a time, each tool call as fragments (its index, id and
name first, then its arguments a few characters at a time), the finish reason, the usage when
``stream_options.include_usage`` asks for it, then ``data: [DONE]``. ``Reply(stall_after_chunks=n)`` stops sending
after ``n`` chunks and keeps the stream open, as a server that stalls mid-answer does; ``chunk_interval_s`` spaces
the chunks out (a stream too slow as a whole, though no single read waits long).

Which behaviour a request gets: the next one scripted for its ``model`` (``script(..., model=m)``), else the next
one scripted for any model (``script(...)``), else the model's standing behaviour (``behave(m, ...)``), else
``default``. So agents configured with different models can be driven differently in one test.

What it saw is kept for the test: every request (body and headers), the requests in flight now and the most
ever in flight at once (in all and per model), and the usage it reported in the completions it answered
(``answered``), so usage sums recorded elsewhere can be compared exactly. A completion whose client had already
gone when it was ready is not answered and not counted; a streamed one counts once its last chunk is sent (a stalled
stream never does), and a streamed request is in flight until its stream ends.

    async with OpenAICompatibleServer() as server:
        server.script(Fail(429, retry_after_ms=10), Reply("hello"))
        provider = OpenAIProvider(api_key="test", base_url=server.base_url)
"""

import asyncio
import contextlib
import json
import re
import socket
from collections import Counter, deque
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

Body = dict[str, Any]
POLL_S = 0.02
ARGUMENT_PIECE_CHARS = 7
"""A streamed tool call's arguments come this many characters a chunk (split mid-token, as models do)."""


@dataclass(frozen=True)
class FunctionCall:
    name: str
    arguments: str
    """As the model would send it: a JSON text (or, to test bad output, anything else)."""


@dataclass(frozen=True)
class Reply:
    content: str | None = "ok"
    tool_calls: tuple[FunctionCall, ...] = ()
    prompt_tokens: int | None = None
    """The usage reported; None: derived from the request (a quarter of its messages' JSON length)."""
    completion_tokens: int | None = None
    """None: derived from the answer (a quarter of its length, at least 1)."""
    usage: bool = True
    """False: the response carries no usage, as some servers do."""
    delay_s: float = 0.0
    """Time taken before answering (to keep calls in flight together)."""
    finish_reason: str | None = None
    stall_after_chunks: int | None = None
    """Streamed requests only: send this many chunks, then nothing more until the client goes (no ``[DONE]``)."""
    chunk_interval_s: float = 0.0
    """Streamed requests only: time between two chunks (a slow stream, whose every read is quick enough)."""


def reply_json(value: Any, **kwargs: Any) -> Reply:
    """A completion whose content is ``value`` as JSON (a structured output)."""
    return Reply(content=json.dumps(value), **kwargs)


def reply_tool_call(name: str, arguments: dict[str, Any] | str, **kwargs: Any) -> Reply:
    text = arguments if isinstance(arguments, str) else json.dumps(arguments)
    return Reply(content=None, tool_calls=(FunctionCall(name, text),), **kwargs)


@dataclass(frozen=True)
class Fail:
    status: int
    message: str = "scripted failure"
    type: str = "server_error"
    code: str | None = None
    param: str | None = None
    retry_after_ms: int | None = None
    """Sent as ``retry-after-ms``, which the openai SDK honours: keeps retry tests quick."""


@dataclass(frozen=True)
class Hang:
    """Never answers: the request stays in flight until its client disconnects or the server stops."""


@dataclass(frozen=True)
class Hold:
    """Waits until ``release()`` (or the server stops, or the client disconnects), then behaves as ``then``."""

    then: "Behaviour" = field(default_factory=Reply)


@dataclass(frozen=True)
class Respond:
    """A behaviour chosen from the request body, e.g. an answer derived from the prompt."""

    choose: Callable[[Body], "Behaviour"]


Behaviour = Reply | Fail | Hang | Hold | Respond


@dataclass(frozen=True)
class ReceivedRequest:
    body: Body
    headers: dict[str, str]

    @property
    def model(self) -> str:
        return str(self.body.get("model", ""))


@dataclass
class AnsweredUsage:
    completions: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """The test process keeps its own signal handlers (Ctrl+C stops pytest, not this server)."""
        yield


class OpenAICompatibleServer:
    def __init__(self, default: Behaviour | None = None) -> None:
        self.default: Behaviour = default if default is not None else Reply()
        self.requests: list[ReceivedRequest] = []
        self.answered = AnsweredUsage()
        self.in_flight = 0
        self.max_in_flight = 0
        self.in_flight_by_model: Counter[str] = Counter()
        self.max_in_flight_by_model: Counter[str] = Counter()
        self._queues: dict[str | None, deque[Behaviour]] = {}
        self._behaviours: dict[str, Behaviour] = {}
        self._released = asyncio.Event()
        self._stopping = asyncio.Event()
        self._changed = asyncio.Condition()
        self._server: _Server | None = None
        self._task: asyncio.Task[None] | None = None
        self._completion_numbers = 0
        self.port = 0

    @property
    def base_url(self) -> str:
        """What OPENAI_BASE_URL is set to for this server."""
        return f"http://127.0.0.1:{self.port}/v1"

    # -- scripting -----------------------------------------------------------------------------------------------

    def script(self, *behaviours: Behaviour, model: str | None = None) -> None:
        """Queue behaviours, one per request, for requests naming ``model`` (None: any model)."""
        self._queues.setdefault(model, deque()).extend(behaviours)

    def behave(self, model: str, behaviour: Behaviour) -> None:
        """The standing behaviour for ``model`` once its scripted queue is empty."""
        self._behaviours[model] = behaviour

    def release(self) -> None:
        """Let every held request (and every later one, until ``hold()``) answer."""
        self._released.set()

    def hold(self) -> None:
        """Hold requests with a ``Hold`` behaviour again after a ``release()``."""
        self._released.clear()

    def requests_for(self, model: str | None = None) -> list[ReceivedRequest]:
        return [r for r in self.requests if model is None or r.model == model]

    async def wait_until(self, condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
        """Wait (bounded) until ``condition()`` on the server's state holds, e.g. ``lambda: server.in_flight == 1``;
        it is checked whenever a request arrives or ends."""
        async with asyncio.timeout(timeout_s), self._changed:
            await self._changed.wait_for(condition)

    # -- lifecycle -----------------------------------------------------------------------------------------------

    async def start(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        app = Starlette(routes=[Route("/v1/chat/completions", self._chat_completions, methods=["POST"])])
        config = uvicorn.Config(app, lifespan="off", log_level="warning", access_log=False, timeout_graceful_shutdown=2)
        self._server = _Server(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]))
        async with asyncio.timeout(10):
            while not self._server.started:
                if self._task.done():
                    await self._task  # raises what stopped it
                await asyncio.sleep(POLL_S)

    async def stop(self) -> None:
        self._stopping.set()
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            await asyncio.wait_for(self._task, timeout=10)

    async def __aenter__(self) -> "OpenAICompatibleServer":
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    # -- serving -------------------------------------------------------------------------------------------------

    def _next(self, model: str) -> Behaviour:
        for key in (model, None):
            queue = self._queues.get(key)
            if queue:
                return queue.popleft()
        return self._behaviours.get(model, self.default)

    async def _chat_completions(self, request: Request) -> Response:
        body: Body = await request.json()
        received = ReceivedRequest(body=body, headers=dict(request.headers))
        self.requests.append(received)
        model = received.model
        self.in_flight += 1
        self.in_flight_by_model[model] += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        self.max_in_flight_by_model[model] = max(self.max_in_flight_by_model[model], self.in_flight_by_model[model])
        await self._notify()

        async def leave() -> None:
            self.in_flight -= 1
            self.in_flight_by_model[model] -= 1
            await self._notify()

        try:
            answer = await self._perform(self._next(model), body, request)
        except BaseException:
            await leave()
            raise
        if isinstance(answer, Response):
            await leave()
            return answer
        return _EventStream(answer, closed=leave)  # in flight until the stream ends

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def _perform(self, behaviour: Behaviour, body: Body, request: Request) -> Response | AsyncGenerator[str]:
        """The response, or for a streamed reply the SSE text it sends, piece by piece."""
        gone = Response(status_code=503)  # nobody reads it: the client left, or the server is stopping
        match behaviour:
            case Respond(choose=choose):
                return await self._perform(choose(body), body, request)
            case Hang():
                await self._wait(request)
                return gone
            case Hold(then=then):
                if not await self._wait(request, gate=self._released):
                    return gone
                return await self._perform(then, body, request)
            case Fail():
                return _error(behaviour)
            case Reply():
                if not await self._wait(request, duration_s=behaviour.delay_s):
                    return gone
                if body.get("stream") is True:
                    return self._chunks(behaviour, body, request)
                return self._completion(behaviour, body)

    async def _wait(self, request: Request, gate: asyncio.Event | None = None, duration_s: float | None = None) -> bool:
        """Wait until ``gate`` is set or ``duration_s`` has passed (with neither: for ever). False when the client
        went away or the server began stopping first."""
        loop = asyncio.get_running_loop()
        until = None if duration_s is None else loop.time() + duration_s
        while True:
            if self._stopping.is_set() or await request.is_disconnected():
                return False
            if (gate is not None and gate.is_set()) or (until is not None and loop.time() >= until):
                return True
            await asyncio.sleep(POLL_S if until is None else max(0.0, min(POLL_S, until - loop.time())))

    def _usage(self, reply: Reply, body: Body) -> dict[str, int]:
        """The usage the reply reports."""
        answer_text = (reply.content or "") + "".join(c.name + c.arguments for c in reply.tool_calls)
        prompt_tokens = (
            reply.prompt_tokens
            if reply.prompt_tokens is not None
            else max(1, len(json.dumps(body.get("messages", []))) // 4)
        )
        completion_tokens = (
            reply.completion_tokens if reply.completion_tokens is not None else max(1, len(answer_text) // 4)
        )
        return {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }

    def _count(self, usage: dict[str, int] | None) -> None:
        """A completion answered, with the usage it reported."""
        self.answered.completions += 1
        if usage is not None:
            self.answered.prompt_tokens += usage["prompt_tokens"]
            self.answered.completion_tokens += usage["completion_tokens"]

    def _number(self) -> int:
        self._completion_numbers += 1
        return self._completion_numbers

    def _completion(self, reply: Reply, body: Body) -> Response:
        number = self._number()
        message: dict[str, Any] = {"role": "assistant", "content": reply.content}
        if reply.tool_calls:
            message["tool_calls"] = [
                {
                    "id": _call_id(number, i),
                    "type": "function",
                    "function": {"name": call.name, "arguments": call.arguments},
                }
                for i, call in enumerate(reply.tool_calls)
            ]
        payload: dict[str, Any] = {
            "id": f"chatcmpl-{number}",
            "object": "chat.completion",
            "created": 1_800_000_000,
            "model": str(body.get("model", "")),
            "choices": [{"index": 0, "message": message, "finish_reason": _finish(reply), "logprobs": None}],
        }
        usage = self._usage(reply, body) if reply.usage else None
        if usage is not None:
            payload["usage"] = usage
        self._count(usage)
        return JSONResponse(payload)

    async def _chunks(self, reply: Reply, body: Body, request: Request) -> AsyncGenerator[str]:
        """A streamed completion: each chunk as an SSE ``data:`` line, then ``[DONE]``; counted in ``answered`` once
        its last chunk is sent."""
        number = self._number()
        options = body.get("stream_options")
        with_usage = isinstance(options, dict) and options.get("include_usage") is True

        def chunk(delta: dict[str, Any] | None, finish_reason: str | None = None) -> dict[str, Any]:
            choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish_reason}]
            found: dict[str, Any] = {
                "id": f"chatcmpl-{number}",
                "object": "chat.completion.chunk",
                "created": 1_800_000_000,
                "model": str(body.get("model", "")),
                "choices": choices,
            }
            if with_usage:
                found["usage"] = None  # as OpenAI sends it on every chunk but the last
            return found

        chunks = [chunk({"role": "assistant", "content": ""})]
        chunks += [chunk({"content": piece}) for piece in words(reply.content or "")]
        for i, call in enumerate(reply.tool_calls):
            head = {"index": i, "id": _call_id(number, i), "type": "function"}
            chunks.append(chunk({"tool_calls": [{**head, "function": {"name": call.name, "arguments": ""}}]}))
            chunks += [
                chunk({"tool_calls": [{"index": i, "function": {"arguments": piece}}]})
                for piece in _pieces(call.arguments, ARGUMENT_PIECE_CHARS)
            ]
        chunks.append(chunk({}, _finish(reply)))
        usage = self._usage(reply, body) if with_usage and reply.usage else None
        if usage is not None:
            chunks.append({**chunk(None), "usage": usage})  # the last chunk: no choices, the usage
        stall = reply.stall_after_chunks
        for sent, data in enumerate(chunks[:stall]):
            if sent and reply.chunk_interval_s and not await self._wait(request, duration_s=reply.chunk_interval_s):
                return  # the client went
            yield f"data: {json.dumps(data)}\n\n"
        if stall is not None and stall <= len(chunks):
            await self._wait(request)  # stalled: until the client gives up or the server stops
            return
        self._count(usage)  # every chunk sent
        yield "data: [DONE]\n\n"


def words(text: str) -> list[str]:
    """``text`` in pieces of one word each with the white space before it; joined, they are ``text`` again."""
    return re.findall(r"\s*\S+|\s+\Z", text)


def _pieces(text: str, size: int) -> list[str]:
    return [text[at : at + size] for at in range(0, len(text), size)]


def _call_id(number: int, index: int) -> str:
    return f"call_{number}_{index}"


def _finish(reply: Reply) -> str:
    return reply.finish_reason or ("tool_calls" if reply.tool_calls else "stop")


class _EventStream(StreamingResponse):
    """A streamed completion; ``closed`` is awaited when it ends, however it ends (sent, client gone, server
    stopping)."""

    def __init__(self, chunks: AsyncGenerator[str], closed: Callable[[], Awaitable[None]]) -> None:
        super().__init__(chunks, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        self._chunks = chunks
        self._closed = closed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self._chunks.aclose()
            await self._closed()


def _error(fail: Fail) -> Response:
    headers = {} if fail.retry_after_ms is None else {"retry-after-ms": str(fail.retry_after_ms)}
    error = {"message": fail.message, "type": fail.type, "param": fail.param, "code": fail.code}
    return JSONResponse({"error": error}, status_code=fail.status, headers=headers)
