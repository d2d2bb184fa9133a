"""Server-Sent Events read from a streamed response line by line, as the event-stream format has them: ``event:``
names the event, ``data:`` lines are joined, a blank line ends the event, a line starting with ``:`` is a comment
(the gateway's keep-alives). The gateway's data is a JSON object; anything else is kept as ``{"text": ...}``. An
event the stream breaks off in the middle of is dropped."""

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class ServerEvent:
    kind: str
    data: dict[str, Any]


def parse(lines: Iterable[str]) -> Iterator[ServerEvent]:
    kind, data = "", list[str]()
    for line in lines:
        if not line:
            if data:
                yield ServerEvent(kind or "message", _decode("\n".join(data)))
            kind, data = "", []
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "event":
            kind = value
        elif field == "data":
            data.append(value)


def _decode(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError:
        return {"text": text}
    return value if isinstance(value, dict) else {"text": text}
