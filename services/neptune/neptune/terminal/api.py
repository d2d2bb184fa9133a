"""Neptune's part of the gateway's REST API, as the terminal client calls it, with a timeout on every request.

A refusal (a 4xx or 5xx problem document) is raised as ``Refused`` with the problem's ``code`` and ``detail``; a
gateway that cannot be reached, does not answer in time or breaks off is ``Unreachable``. Each carries the exit
code the command ends with.
"""

from collections.abc import Iterator
from typing import Any

import httpx

from neptune.terminal.sse import ServerEvent, parse

CONNECT_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 180.0  # between two reads of a turn's stream; the gateway sends a keep-alive every 15 s
BASE = "/api/v1/neptune/conversations"

EXIT_REFUSED = 3
EXIT_STREAM_ERROR = 4
EXIT_UNREACHABLE = 5


class ClientError(Exception):
    exit_code = EXIT_UNREACHABLE
    recoverable = False
    """Whether an interactive chat can go on with its next message."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail


class Refused(ClientError):
    """The gateway said no: a bad key (401), an unknown conversation (404), an invalid request (422)..."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(code, detail)
        self.status = status
        self.exit_code = EXIT_REFUSED if status < 500 else EXIT_UNREACHABLE
        self.recoverable = status in {413, 422}  # that message was refused, not the conversation


class Unreachable(ClientError):
    exit_code = EXIT_UNREACHABLE


class TurnFailed(ClientError):
    """The turn's stream ended with an ``error`` event."""

    exit_code = EXIT_STREAM_ERROR
    recoverable = True


def connect(url: str, api_key: str, transport: httpx.BaseTransport | None = None) -> httpx.Client:
    return httpx.Client(
        base_url=url,
        headers={"Authorization": f"Bearer {api_key}", "User-Agent": "neptune-cli"},
        timeout=httpx.Timeout(READ_TIMEOUT_S, connect=CONNECT_TIMEOUT_S),
        transport=transport,
    )


class NeptuneApi:
    def __init__(self, client: httpx.Client) -> None:
        self._client = client

    def start(self, title: str) -> str:
        """A new conversation's id."""
        resp = self._request("POST", BASE, json={"title": title})
        conversation_id = resp.json().get("resource_ids", {}).get("conversation_id")
        if resp.status_code != 201 or not isinstance(conversation_id, str):
            raise Unreachable("pending", "the gateway did not confirm the new conversation in time; try again")
        return conversation_id

    def conversations(self, limit: int) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self._request("GET", BASE, params={"limit": limit}).json()["items"]
        return items

    def conversation(self, conversation_id: str) -> dict[str, Any]:
        view: dict[str, Any] = self._request("GET", f"{BASE}/{conversation_id}").json()
        return view

    def say(self, conversation_id: str, content: str) -> Iterator[ServerEvent]:
        """The turn's events as they arrive; a refusal is raised before the first."""
        try:
            with self._client.stream("POST", f"{BASE}/{conversation_id}/messages", json={"content": content}) as resp:
                if resp.is_error:
                    resp.read()
                    raise _refused(resp)
                yield from parse(resp.iter_lines())
        except httpx.HTTPError as exc:
            raise _unreachable(exc) from exc

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            resp = self._client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise _unreachable(exc) from exc
        if resp.is_error:
            raise _refused(resp)
        return resp


def _refused(resp: httpx.Response) -> Refused:
    try:
        problem = resp.json()
    except ValueError:
        problem = None
    if not isinstance(problem, dict):
        return Refused(resp.status_code, f"http_{resp.status_code}", resp.text[:300] or resp.reason_phrase)
    return Refused(resp.status_code, str(problem.get("code", resp.status_code)), str(problem.get("detail", "")))


def _unreachable(exc: httpx.HTTPError) -> Unreachable:
    if isinstance(exc, httpx.TimeoutException):
        return Unreachable("timeout", f"the gateway did not answer in time ({exc.__class__.__name__})")
    return Unreachable("unreachable", f"cannot talk to the gateway: {exc}")
