"""Reading a Server-Sent Events response as the tests need it: each event's type and its JSON data, in order."""

import json
from typing import Any

import httpx


async def read_events(resp: httpx.Response) -> list[tuple[str, dict[str, Any]]]:
    events: list[tuple[str, dict[str, Any]]] = []
    kind = ""
    async for line in resp.aiter_lines():
        if line.startswith("event: "):
            kind = line.removeprefix("event: ")
        elif line.startswith("data: "):
            events.append((kind, json.loads(line.removeprefix("data: "))))
    return events
