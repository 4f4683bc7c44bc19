"""Cookie sockets are accepted only from the origins the site is served on, exactly.

A browser sends the session cookie to any page's WebSocket on the same host name, whatever the
page's port or scheme: `http://127.0.0.1:9999` or `http://localhost:3000` could otherwise open a
socket as the signed-in person. So the Origin must equal one of `settings.ALLOWED_ORIGINS` in
scheme, host and port (default ports made explicit). A port of `*` in a configured origin matches
any port of that scheme and host: an explicit opt-in for local setups with proxies on other ports,
never a default. Every refusal is logged with the reason, the user and the origin.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlsplit

from django.conf import settings

from realtime.connection import scope_header

logger = logging.getLogger("calcrooms.origins")

DEFAULT_PORTS = {"http": 80, "https": 443}


def _parts(origin: str) -> tuple[str, str, str] | None:
    """(scheme, host, port) of an origin (port `*` for a configured wildcard), or None."""
    text = origin.strip()
    wildcard = text.endswith(":*")
    parsed = urlsplit(text[:-2] if wildcard else text)
    try:
        port = "*" if wildcard else str(parsed.port or DEFAULT_PORTS.get(parsed.scheme.lower(), ""))
    except ValueError:  # a port that is not a number
        return None
    scheme = parsed.scheme.lower()
    if scheme not in DEFAULT_PORTS or not parsed.hostname or parsed.path not in ("", "/"):
        return None
    return scheme, parsed.hostname.lower(), port


def origin_refusal(origin: str | None, allowed: list[str]) -> str | None:
    """Why `origin` may not open a cookie socket, or None if it may."""
    if not origin:
        return "no Origin header"
    parts = _parts(origin)
    if parts is None:
        return "not an origin"
    scheme, host, port = parts
    candidates = [p for p in (_parts(a) for a in allowed) if p is not None]
    same_host = [c for c in candidates if c[1] == host]
    if not same_host:
        return "host not served here"
    same_scheme = [c for c in same_host if c[0] == scheme]
    if not same_scheme:
        return "scheme differs"
    if not any(c[2] in (port, "*") for c in same_scheme):
        return "port differs"
    return None


class OriginCheck:
    """ASGI middleware for cookie sockets (inside the session middleware, so it knows the user)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        origin = scope_header(scope, b"origin") or None
        why = origin_refusal(origin, settings.ALLOWED_ORIGINS)
        if why is None:
            return await self.app(scope, receive, send)
        user = scope.get("user")
        who = user.username if getattr(user, "is_authenticated", False) else "anonymous"
        path = scope.get("path")
        logger.info("refused a socket on %s from origin %r: %s (user %s)", path, origin, why, who)
        message = await receive()
        if message.get("type") == "websocket.connect":
            await send({"type": "websocket.close", "code": 1008})  # before accept: HTTP 403
        return None
