"""A webhook step's HTTP call, which reaches only the addresses the deployment allows.

Every connection the call makes resolves the host itself, checks each address it resolves to against the policy
(``domain.addresses``), and connects to the checked address: a name that resolves to a public address for a check
and to an internal one for the connection (DNS rebinding) gets nowhere, as the connection is made to what was
checked. TLS still verifies the certificate for the host name and sends it as SNI, and the Host header is the
URL's. Redirects are not followed (a 3xx fails the attempt), environment proxies are ignored, and a host named in
the allow-list is reached wherever it resolves.
"""

import asyncio
import socket
from collections.abc import Iterable
from typing import Any

import httpcore
import httpx

from workflow_engine.domain.addresses import AddressPolicy, parse_address

MAX_WEBHOOK_TIMEOUT_S = 120.0
MAX_RESPONSE_CHARS = 10_000


class ForbiddenAddress(Exception):
    """The call would connect to an address the policy does not allow."""


class GuardedNetwork(httpcore.AsyncNetworkBackend):
    """httpcore's network backend, connecting only to checked addresses."""

    def __init__(self, policy: AddressPolicy, inner: httpcore.AsyncNetworkBackend | None = None) -> None:
        self._policy = policy
        self._inner = inner or httpcore.AnyIOBackend()

    async def resolve(self, host: str, port: int, within_s: float | None) -> list[str]:
        """The addresses to connect to for ``host``, each checked; raises ForbiddenAddress when any is refused."""
        if self._policy.allows_host(host):
            return [host]
        literal = parse_address(host)
        if literal is not None:
            found = [host]
        else:
            async with asyncio.timeout(within_s):
                infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
            found = list(dict.fromkeys(str(info[4][0]) for info in infos))
        for text in found:
            address = parse_address(text)
            reason = "not an address" if address is None else self._policy.refusal(address)
            if reason is not None:
                raise ForbiddenAddress(f"{host} is {reason}" if literal else f"{host} resolves to {text}, {reason}")
        return found

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            addresses = await self.resolve(host, port, timeout)
        except (OSError, TimeoutError) as exc:
            raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from exc
        failure: Exception | None = None
        for address in addresses:
            try:
                return await self._inner.connect_tcp(
                    address, port, timeout=timeout, local_address=local_address, socket_options=socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
        assert failure is not None
        raise failure

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109 - httpcore's interface
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise ForbiddenAddress("a webhook cannot use a local socket")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class GuardedTransport(httpx.AsyncHTTPTransport):
    """httpx's transport over the guarded network (httpx has no public setting for httpcore's network backend)."""

    def __init__(self, policy: AddressPolicy) -> None:
        super().__init__(trust_env=False)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(trust_env=False),
            max_connections=1,
            network_backend=GuardedNetwork(policy),
        )


async def call_webhook(
    url: str, method: str, headers: dict[str, str], body: dict[str, Any], timeout_s: float, policy: AddressPolicy
) -> tuple[bool, Any, str | None, str]:
    """Make a webhook step's call; returns (ok, output, error, error kind)."""
    timeout = min(timeout_s, MAX_WEBHOOK_TIMEOUT_S)
    try:
        async with httpx.AsyncClient(
            transport=GuardedTransport(policy), timeout=timeout, follow_redirects=False, trust_env=False
        ) as client:
            response = await client.request(method, url, headers=headers, json=body if method != "GET" else None)
    except ForbiddenAddress as exc:
        return False, None, f"webhook refused: {exc}", "forbidden_address"
    except httpx.TimeoutException as exc:
        return False, None, f"webhook timed out: {exc!r}", "timeout"
    except httpx.HTTPError as exc:
        return False, None, f"webhook failed: {exc!r}", "connection"
    try:
        payload: Any = response.json()
    except ValueError:
        payload = response.text[:MAX_RESPONSE_CHARS]
    if response.is_success:
        return True, {"status": response.status_code, "body": payload}, None, ""
    return False, None, f"webhook answered {response.status_code}", f"http_{response.status_code}"
