"""Asking a service's read models over NATS request/reply, scoped to the caller's workspace."""

from typing import Any

from contracts import ErrorCode, Query
from gateway.errors import ApiError
from gateway.workspaces import Principal
from servicekit.bus import Bus
from servicekit.http import REQUEST_ID, REQUEST_ID_HEADER
from servicekit.queries import QueryFailed, ask


class QueryClient:
    def __init__(self, bus: Bus, timeout_s: float) -> None:
        self._bus = bus
        self._timeout_s = timeout_s

    async def ask(self, principal: Principal, query: Query) -> Any:
        request_id = REQUEST_ID.get()
        headers = {REQUEST_ID_HEADER: request_id} if request_id else None
        try:
            return await ask(self._bus, principal.workspace_id, query, self._timeout_s, headers=headers)
        except QueryFailed as exc:
            if exc.code is ErrorCode.SERVICE_UNAVAILABLE:
                raise ApiError(exc.code, f"The {query.service} service did not answer in time.") from exc
            if exc.code is ErrorCode.INTERNAL_ERROR:  # the service logged what went wrong under the request id
                raise ApiError(exc.code, f"The {query.service} service could not answer.") from exc
            raise ApiError(exc.code, str(exc) or "The query failed.") from exc
