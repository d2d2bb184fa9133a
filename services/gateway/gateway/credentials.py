"""Short-lived credentials the gateway mints for Neptune, one per chat turn.

Neptune acts through the gateway's REST API on behalf of the person chatting, never with their API key: for each
turn the gateway mints a token that names the caller's workspace and key and expires within minutes, signed with
HMAC-SHA256 under the gateway's secret (``NEPTUNE_TOKEN_SECRET``, the same on every replica). A request that
presents it is the caller, with two rights fewer: it cannot start Neptune conversations or turns (no credential
mints another), and it expires. Whatever Neptune is told, it can do no more than the caller could.
"""

import base64
import hashlib
import hmac
import json
import time

from gateway.workspaces import Principal

PREFIX = "npt_"
VIA_NEPTUNE = "neptune"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def mint(secret: bytes, principal: Principal, ttl_s: float, now: float | None = None) -> str:
    claims = {"ws": principal.workspace_id, "key": principal.key_id, "exp": int((now or time.time()) + ttl_s)}
    body = _b64(json.dumps(claims, separators=(",", ":"), sort_keys=True).encode())
    signature = _b64(hmac.new(secret, body.encode(), hashlib.sha256).digest())
    return f"{PREFIX}{body}.{signature}"


def verify(secret: bytes, token: str, now: float | None = None) -> Principal | None:
    """The principal a token stands for, or None when it is not one of ours, was altered or has expired."""
    if not token.startswith(PREFIX) or len(token) > 1000 or token.count(".") != 1:
        return None
    body, signature = token.removeprefix(PREFIX).split(".")
    expected = _b64(hmac.new(secret, body.encode(), hashlib.sha256).digest())
    if not hmac.compare_digest(expected, signature):
        return None
    try:
        claims = json.loads(_unb64(body))
        workspace_id, key_id, expires = str(claims["ws"]), str(claims["key"]), int(claims["exp"])
    except (ValueError, KeyError, TypeError):
        return None
    if expires <= (now or time.time()):
        return None
    return Principal(workspace_id, key_id, via=VIA_NEPTUNE)
