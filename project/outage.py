"""While PostgreSQL is down, every page and data route answers a clear 503, never a 500.

Where the failure comes from: Django loads the session and the user lazily, the first time
something reads `request.user`. `SessionBase._get_session` loads inside its `except
AttributeError` (the cache is missing), so when the database is down the load raises an
`OperationalError` chained to `'SessionStore' object has no attribute '_session_cache'`, the
session stays unloaded, and every later read of `request.user` (a view, a template, another
middleware) fails again wherever it happens to be, most of them places that can only answer 500.

So `DatabaseOutage`, placed right after AuthenticationMiddleware, takes a connection and loads the
session and the user up front, where a failure can be answered: 503 with `Retry-After`, JSON
(`{"error": {"code": "unavailable", "message"}}`, the shape of every JSON error) for clients that
want JSON, a small page otherwise. A view that fails on the database later is answered the same
way (`process_exception`), and so is anything else the outage breaks on the way (`server_error`,
the project's handler500).

Logging: one warning when this process first sees the database fail, one when it answers again
(with how long and how many requests were answered 503): not a traceback per request. And
`OutageWithoutTraceback`, on the console handler, keeps any other line about an outage (a
socket's frame, the room tick) to one line without a traceback.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from django.conf import settings
from django.db import InterfaceError, OperationalError, connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.template.loader import render_to_string

try:
    from psycopg_pool import PoolTimeout
except ImportError:  # SQLite only: no pool
    PoolTimeout = OperationalError  # type: ignore[misc,assignment]

logger = logging.getLogger("calcrooms.outage")

# A database that is down or unreachable (django.db wraps psycopg's errors in these; a pool that
# found no working connection in time raises PoolTimeout, which Django wraps too).
DATABASE_DOWN = (OperationalError, InterfaceError, PoolTimeout)
# Routes that answer without the database, or say themselves what is down.
NOT_OURS = ("/healthz", "/metrics", settings.STATIC_URL)
MESSAGE = "The database is unavailable just now; nothing was changed. Try again in a few seconds."


def database_down(exc: BaseException | None) -> bool:
    """True when `exc`, or what it was raised from, is the database being away."""
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, DATABASE_DOWN):
            return True
        exc, seen = exc.__cause__, seen + 1
    return False


class _Outage:
    """This process's view of the database: up, or down since when (and how many 503s)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.down_since: float | None = None
        self.refused = 0

    def failed(self, exc: BaseException) -> None:
        with self._lock:
            self.refused += 1
            if self.down_since is not None:
                return
            self.down_since = time.monotonic()
        logger.warning(
            "database unavailable (%s: %s): answering 503 until it is back",
            type(exc).__name__,
            " ".join(str(exc).split())[:300],
        )

    def served(self) -> None:
        if self.down_since is None:  # the common case, without the lock
            return
        with self._lock:
            if self.down_since is None:
                return
            lasted = time.monotonic() - self.down_since
            refused, self.down_since, self.refused = self.refused, None, 0
        logger.warning(
            "database available again after %.1f s (%d requests answered 503 meanwhile)",
            lasted,
            refused,
        )


outage = _Outage()


def _wants_json(request: HttpRequest) -> bool:
    from rooms.views import wants_json  # the app's one rule for who gets JSON

    try:
        if request.headers.get("Authorization", "").startswith("Bearer "):
            # A script with a token (maybe not looked up yet): JSON unless it asks for HTML.
            return "text/html" not in request.headers.get("Accept", "")
        return wants_json(request) or request.path_info.endswith(".json")
    except Exception:  # a malformed Accept header must not turn a 503 into a 500
        return False


def unavailable_response(request: HttpRequest, exc: BaseException) -> HttpResponse:
    """The 503 of an outage, counted (and logged once per outage)."""
    outage.failed(exc)
    retry_after = settings.DATABASE_OUTAGE_RETRY_AFTER_SECONDS
    response: HttpResponse
    if _wants_json(request):
        response = JsonResponse({"error": {"code": "unavailable", "message": MESSAGE}}, status=503)
    else:
        # No request context: the page must not read the user (the database is what is down).
        page = render_to_string("503.html", {"message": MESSAGE, "retry_after": retry_after})
        response = HttpResponse(page, status=503)
    response["Retry-After"] = str(retry_after)
    response["Cache-Control"] = "no-store"
    # Logged once per outage above: Django's own "Service Unavailable: <path>" line per request
    # would bury it.
    response._has_been_logged = True  # type: ignore[attr-defined]
    return response


class DatabaseOutage:
    """Loads the session and the user where a failure can be answered, and answers it 503."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.path_info.startswith(NOT_OURS):
            return self.get_response(request)
        try:
            connection.ensure_connection()  # even a page that reads nothing answers 503
            request.user.is_authenticated  # noqa: B018 - the session and the user, loaded now
        except DATABASE_DOWN as exc:
            return unavailable_response(request, exc)
        response = self.get_response(request)
        if response.status_code != 503:
            outage.served()
        return response

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if database_down(exception):
            return unavailable_response(request, exception)
        return None


Message = MutableMapping[str, Any]


class _Tracked:
    """A socket's receive and send, noting how far its handshake got (held as long as the
    socket is open: slots, not a dict and two closures)."""

    __slots__ = ("_receive", "_send", "accepted", "answered", "connect")

    def __init__(
        self,
        receive: Callable[[], Awaitable[Message]],
        send: Callable[[Message], Awaitable[None]],
    ) -> None:
        self._receive = receive
        self._send = send
        self.connect = self.accepted = self.answered = False

    async def receive(self) -> Message:
        message = await self._receive()
        if message["type"] == "websocket.connect":
            self.connect = True
        return message

    async def send(self, message: Message) -> None:
        if message["type"] == "websocket.accept":
            self.accepted = True
            outage.served()
        elif message["type"] in ("websocket.close", "websocket.http.response.start"):
            self.answered = True
        await self._send(message)


class SocketOutage:
    """Wraps the WebSocket application: a handshake that the database being down breaks is
    closed with 1012 ("a backend is down": clients reconnect with their backoff) and counted in
    the outage, instead of a 500 and a traceback per attempt.

    The session middleware loads the session (and the user) before any consumer runs, so a
    handshake during an outage fails there, in the same lazy session load as the HTTP routes did.
    """

    def __init__(self, app: Callable[..., Awaitable[None]]) -> None:
        self.app = app

    async def __call__(
        self,
        scope: dict[str, Any],
        receive: Callable[[], Awaitable[Message]],
        send: Callable[[Message], Awaitable[None]],
    ) -> None:
        tracked = _Tracked(receive, send)
        try:
            await self.app(scope, tracked.receive, tracked.send)
        except Exception as exc:
            if not database_down(exc):
                raise
            outage.failed(exc)
            if tracked.answered:
                return
            if tracked.accepted:
                await send({"type": "websocket.close", "code": 1012})
                return
            if not tracked.connect and (await receive())["type"] != "websocket.connect":
                return
            await self._refuse(scope, send)

    async def _refuse(
        self, scope: dict[str, Any], send: Callable[[Message], Awaitable[None]]
    ) -> None:
        """Accepted and closed at once with 1012 (a backend is down): every client reconnects
        on it with its backoff. (An HTTP 503 to the handshake would say the same, but uvicorn
        logs an error line for each one.)"""
        offered = scope.get("subprotocols") or []
        accept: Message = {"type": "websocket.accept"}
        if offered:
            accept["subprotocol"] = offered[0]
        await send(accept)
        await send({"type": "websocket.close", "code": 1012, "reason": "database unavailable"})


def server_error(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
    """handler500: an outage that broke something outside a view is still a 503."""
    import sys

    from django.views import defaults

    exc = sys.exc_info()[1]
    if database_down(exc):
        assert exc is not None
        return unavailable_response(request, exc)
    return defaults.server_error(request, *args, **kwargs)


class OutageWithoutTraceback(logging.Filter):
    """A log handler's filter: a record whose exception is the database being down keeps its
    line, with the error named, and loses the traceback (an outage is not a bug in the code, and
    a socket's periodic work would print one every few seconds while it lasts)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and database_down(record.exc_info[1]):
            exc = record.exc_info[1]
            assert exc is not None
            error = " ".join(str(exc).split())[:300]
            record.msg = f"{record.getMessage()} ({type(exc).__name__}: {error})"
            record.args = ()
            record.exc_info = None
            record.exc_text = None
        return True
