"""Neptune's only way to act: the gateway's REST API, with the turn's short-lived credential.

Every request has a timeout; a command is sent with an Idempotency-Key derived from the turn and the call, so a
turn handled again after a crash gets the first outcome back instead of doing the work twice.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from contracts.neptune import ToolUse


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: Any

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def problem(self) -> str:
        """The gateway's problem in a line: its code and detail."""
        if isinstance(self.body, dict):
            return f"{self.body.get('code', self.status)}: {self.body.get('detail', '')}".strip()
        return f"HTTP {self.status}"


class GatewayClient:
    """The gateway as one turn sees it; ``earlier`` holds the tool calls of the conversation's earlier turns (what a
    tool may build on, e.g. a proposal the person has since confirmed)."""

    def __init__(
        self, client: httpx.AsyncClient, credential: str, idempotency_prefix: str, earlier: Sequence[ToolUse] = ()
    ) -> None:
        self.earlier = tuple(earlier)
        self._client = client
        self._headers = {"Authorization": f"Bearer {credential}"}
        self._prefix = idempotency_prefix
        self._sent = 0

    async def get(self, path: str, params: dict[str, Any] | None = None) -> Answer:
        query = {k: v for k, v in (params or {}).items() if v is not None}
        return await self._call("GET", path, params=query)

    async def post(self, path: str, body: Any) -> Answer:
        self._sent += 1
        headers = {"Idempotency-Key": f"{self._prefix}-{self._sent}"}
        return await self._call("POST", path, json=body, headers=headers)

    async def _call(self, method: str, path: str, **kwargs: Any) -> Answer:
        headers = {**self._headers, **kwargs.pop("headers", {})}
        try:
            resp = await self._client.request(method, path, headers=headers, **kwargs)
        except httpx.HTTPError as exc:
            return Answer(503, {"code": "service_unavailable", "detail": f"the gateway did not answer: {exc}"})
        try:
            body = resp.json()
        except ValueError:
            body = {"code": "bad_gateway", "detail": resp.text[:300]}
        return Answer(resp.status_code, body)
