"""Asking a service's read models over NATS request/reply, scoped to the caller's workspace."""

from typing import Any

from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeout

from contracts import ErrorCode, Query, QueryReply
from gateway.errors import ApiError
from gateway.workspaces import Principal
from servicekit.bus import Bus
from servicekit.http import REQUEST_ID, REQUEST_ID_HEADER


class QueryClient:
    def __init__(self, bus: Bus, timeout_s: float) -> None:
        self._bus = bus
        self._timeout_s = timeout_s

    async def ask(self, principal: Principal, query: Query) -> Any:
        subject = self._bus.subjects.query(query.service, principal.workspace_id, query.type_name)
        request_id = REQUEST_ID.get()
        headers = {REQUEST_ID_HEADER: request_id} if request_id else None
        try:
            msg = await self._bus.nc.request(
                subject, query.model_dump_json().encode(), timeout=self._timeout_s, headers=headers
            )
        except (NatsTimeout, NoRespondersError) as exc:
            raise ApiError(
                ErrorCode.SERVICE_UNAVAILABLE, f"The {query.service} service did not answer in time."
            ) from exc
        reply = QueryReply.model_validate_json(msg.data)
        if not reply.ok:
            code = reply.error_code or ErrorCode.INTERNAL_ERROR
            if code is ErrorCode.INTERNAL_ERROR:  # the service logged what went wrong under the request id
                raise ApiError(code, f"The {query.service} service could not answer.")
            raise ApiError(code, reply.error_message or "The query failed.")
        return reply.result
