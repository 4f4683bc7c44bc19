"""Who opens a cookie socket: its session cookie's session, and that session's user.

What Channels' `AuthMiddlewareStack` does for a socket, in one step and one copy of the scope:
its three layers (cookies, session, user) each keep a copy of the scope for as long as the socket
is open, with lazy wrappers around the session and the user and a `send` that looks at the
session on every message, in case an HTTP response has a cookie to set. A socket never changes
its session and never sets a cookie, so here the scope gets the session store and the user as
they are, and `send` goes through untouched. The user is checked as Channels checks it
(`channels.auth.get_user`: the session's user, with the session's auth hash verified).
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from channels.auth import get_user
from django.conf import settings
from django.http import parse_cookie

from realtime.connection import scope_header


class SessionSocketMiddleware:
    """Puts `session` (a session store for the cookie's key, None without one) and `user` (the
    signed-in user, or `AnonymousUser`) in the scope, then runs `app`."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        store = import_module(settings.SESSION_ENGINE).SessionStore
        scope = {**scope, "session": store(session_key_of(scope))}
        scope["user"] = await get_user(scope)
        return await self.app(scope, receive, send)


def session_key_of(scope: dict[str, Any]) -> str | None:
    """The session cookie's value in the handshake's (first) Cookie header, as Django reads it."""
    cookie = scope_header(scope, b"cookie", first=True)
    if cookie is None:
        return None
    return parse_cookie(cookie).get(settings.SESSION_COOKIE_NAME)
