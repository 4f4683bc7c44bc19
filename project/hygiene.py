"""Input that can never be right is refused at the door with a clear 4xx, never a 500.

PostgreSQL text cannot hold NUL, and a lone surrogate cannot be encoded: either one reaching the
database used to answer 500 (and, over the socket, `unavailable`, which makes a client resend
forever). `RejectUnstorableInput` answers such a request 400 before a view sees it;
`services.expression_validate` refuses such an expression with `invalid_frame`. `RefuseUnrouted`
turns a WebSocket path that matches no route into a refused handshake (HTTP 403), logged in one
line, instead of a 500 with a traceback. `StaticFiles` answers an encoded traversal
(`/static/..%2f…`) 400 instead of letting Django's static handler raise.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from asgiref.sync import sync_to_async
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler
from django.core.exceptions import SuspiciousOperation
from django.core.handlers.exception import response_for_exception
from django.http import HttpRequest, HttpResponse, JsonResponse

from rooms.services import unstorable

logger = logging.getLogger("calcrooms.hygiene")


def _values(request: HttpRequest) -> Iterable[str]:
    yield request.path
    queries = [request.GET, request.POST] if request.method == "POST" else [request.GET]
    for query in queries:
        for key, values in query.lists():
            yield key
            yield from values


class RejectUnstorableInput:
    """400 for a request whose path, query or form holds a NUL or a lone surrogate."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if any(unstorable(value) for value in _values(request)):
            message = "The request holds a NUL character or an invalid character; remove it."
            if "application/json" in request.headers.get("Accept", ""):
                return JsonResponse({"error": {"code": "invalid", "message": message}}, status=400)
            return HttpResponse(message, status=400, content_type="text/plain; charset=utf-8")
        return self.get_response(request)


class RefuseUnrouted:
    """Wraps the WebSocket router: a path no route matches is refused (403), not a 500."""

    def __init__(self, router: Any) -> None:
        self.router = router

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        try:
            await self.router(scope, receive, send)
        except ValueError as exc:
            if not str(exc).startswith("No route found for path"):
                raise
            logger.info("refused a socket: no route for %r", scope.get("path"))
            message = await receive()
            if message.get("type") == "websocket.connect":
                await send({"type": "websocket.close", "code": 1008})


class StaticFiles(ASGIStaticFilesHandler):
    """Django's ASGI static handler, with a path that escapes the static root answered 400."""

    async def get_response_async(self, request: HttpRequest) -> HttpResponse:
        try:
            return await super().get_response_async(request)
        except SuspiciousOperation as exc:
            return await sync_to_async(response_for_exception, thread_sensitive=False)(request, exc)
