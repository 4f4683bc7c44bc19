"""Who opens a cookie socket: its session cookie's session, and that session's user.

What Channels' `AuthMiddlewareStack` does for a socket, in one step and one copy of the scope:
its three layers (cookies, session, user) each keep a copy of the scope for as long as the socket
is open, with lazy wrappers around the session and the user and a `send` that looks at the
session on every message, in case an HTTP response has a cookie to set. A socket never changes
its session and never sets a cookie, so here the scope gets the session store and the user as
they are, and `send` goes through untouched. The user is the session's, with the session's auth
hash verified as Django verifies a request's (against the secret key and its fallbacks, as the
rooms' tick re-checks it later), read on a read thread (`realtime.reads`), not on the shared
database thread. A session that no longer holds is refused, not flushed: the socket sets no
cookie, and the next request of the browser finds it as Django would.
"""

from __future__ import annotations

from collections.abc import Iterable
from importlib import import_module
from typing import Any

from django.conf import settings
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY, load_backend
from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.models import AnonymousUser
from django.http import parse_cookie
from django.utils.crypto import constant_time_compare

from realtime.connection import scope_header
from realtime.reads import database_read


class SessionSocketMiddleware:
    """Puts `session` (a session store for the cookie's key, None without one) and `user` (the
    signed-in user, or `AnonymousUser`) in the scope, then runs `app`."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        store = import_module(settings.SESSION_ENGINE).SessionStore
        scope = {**scope, "session": store(session_key_of(scope))}
        scope["user"] = await _session_user(scope["session"])
        return await self.app(scope, receive, send)


@database_read
def _session_user(session: Any) -> AbstractBaseUser | AnonymousUser:
    """The session's user; `AnonymousUser` when it has none, the user is gone or inactive, or
    the session's auth hash is not theirs (a new password, a secret key no longer kept)."""
    try:
        user_id = session[SESSION_KEY]
        backend_path = session[BACKEND_SESSION_KEY]
    except KeyError:
        return AnonymousUser()
    if backend_path not in settings.AUTHENTICATION_BACKENDS:
        return AnonymousUser()
    backend = load_backend(backend_path)
    user = backend.get_user(user_id)
    if user is None:
        return AnonymousUser()
    hashes = (user.get_session_auth_hash(), *user.get_session_auth_fallback_hash())
    return user if holds_auth_hash(session, hashes) else AnonymousUser()


def holds_auth_hash(session: Any, hashes: Iterable[str]) -> bool:
    """Whether the session's auth hash is one of `hashes`, the user's current ones (from the
    password, the secret key and its fallbacks): the check Django's `get_user` makes."""
    session_hash = session.get(HASH_SESSION_KEY)
    return bool(session_hash) and any(constant_time_compare(session_hash, h) for h in hashes)


def session_key_of(scope: dict[str, Any]) -> str | None:
    """The session cookie's value in the handshake's (first) Cookie header, as Django reads it."""
    cookie = scope_header(scope, b"cookie", first=True)
    if cookie is None:
        return None
    return parse_cookie(cookie).get(settings.SESSION_COOKIE_NAME)
