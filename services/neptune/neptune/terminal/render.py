"""How a turn shows in the terminal: each tool call on one line (``-> name(arg=value, ...)``), its result on the
next (``<- ok: summary`` or ``<- error: ...``), the answer's text as it arrives (text streamed before a tool call
ends its line); an ``error`` event ends the line (the caller reports it on stderr). The final ``message`` adds only
what the deltas have not shown: when the model stopped mid-answer, Neptune closes the broken text and streams the
answer that replaces it, which the message repeats. With ``--json``, every event is a JSON line instead, for scripts."""

import json
from typing import Any, Protocol, TextIO

from rich.console import Console
from rich.text import Text

from neptune.terminal.sse import ServerEvent

MAX_VALUE_CHARS = 60
MAX_LINE_CHARS = 240


class Renderer(Protocol):
    def conversation(self, conversation_id: str, *, new: bool) -> None: ...

    def event(self, event: ServerEvent) -> None: ...


def _short(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _value(value: Any) -> str:
    if isinstance(value, str):
        return _short(value, MAX_VALUE_CHARS)
    if isinstance(value, list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    return _short(json.dumps(value, ensure_ascii=False, separators=(",", ":")), MAX_VALUE_CHARS)


def tool_call_line(name: str, arguments: dict[str, Any]) -> Text:
    call = f"{name}({', '.join(f'{k}={_value(v)}' for k, v in arguments.items())})"
    return Text.assemble(("-> ", "cyan"), _short(call, MAX_LINE_CHARS))


def tool_result_line(ok: bool, result: dict[str, Any]) -> Text:
    if ok:
        said = result.get("summary") or result.get("question") or json.dumps(result, ensure_ascii=False)
        return Text.assemble(("<- ok: ", "green"), _short(str(said), MAX_LINE_CHARS))
    return Text.assemble(("<- error: ", "red"), _short(str(result.get("error", result)), MAX_LINE_CHARS))


class TerminalRenderer:
    def __init__(self, out: Console, err: Console) -> None:
        self._out, self._err = out, err  # the turn on out, what is said about it on err
        self._streamed = ""  # the answer's text the deltas showed so far

    def conversation(self, conversation_id: str, *, new: bool) -> None:
        said = "New conversation" if new else "Conversation"
        self._err.print(Text(f"{said} {conversation_id} (continue it with --conversation {conversation_id})", "dim"))

    def event(self, event: ServerEvent) -> None:
        data = event.data
        if event.kind == "tool_call":
            self._end_line()
            self._out.print(tool_call_line(str(data.get("name")), data.get("arguments") or {}))
        elif event.kind == "tool_result":
            self._end_line()
            self._out.print(tool_result_line(data.get("ok") is True, data.get("result") or {}))
        elif event.kind == "delta":
            text = str(data.get("content", data.get("text", "")))  # the piece of the answer
            self._out.print(Text(text), end="")
            self._streamed += text
        elif event.kind == "message":
            self._answer(str(data.get("content", "")))
        elif event.kind == "error":  # reported by the caller, on stderr
            self._end_line()
        # other events are newer than this client: left out

    def _answer(self, content: str) -> None:
        if self._streamed and content.startswith(self._streamed):
            self._out.print(Text(content[len(self._streamed) :]))
        elif self._streamed.endswith(content):  # streamed in full after the text it replaces
            self._out.print()
        else:
            self._end_line()
            self._out.print(Text(content))
        self._streamed = ""

    def _end_line(self) -> None:
        if self._streamed and not self._streamed.endswith("\n"):
            self._out.print()
        self._streamed = ""


class JsonRenderer:
    def __init__(self, out: TextIO) -> None:
        self._out = out

    def conversation(self, conversation_id: str, *, new: bool) -> None:
        self._line("conversation", {"conversation_id": conversation_id, "new": new})

    def event(self, event: ServerEvent) -> None:
        self._line(event.kind, event.data)

    def _line(self, kind: str, data: dict[str, Any]) -> None:
        self._out.write(json.dumps({"event": kind, "data": data}, ensure_ascii=False) + "\n")
        self._out.flush()
