"""Personal access tokens: scripts and bots acting as a person, over HTTP and the JSON socket.

A token is `cr_` and 43 URL-safe characters (32 random bytes). Only its SHA-256 is stored, so a
leaked database does not leak tokens; the token is shown once, when it is made. Every request or
handshake that carries `Authorization: Bearer <token>` is that token's owner, narrowed by its
scope: `read` may only read (safe methods, no `expression` frames), `write` also submits. Which
rooms the owner may read or write is still `rooms.selectors.room_access`'s answer alone: a token
only ever narrows it.

- HTTP: `BearerTokenMiddleware` (after Django's AuthenticationMiddleware). A token request carries
  no cookie, so it is exempt from CSRF; a bad or revoked token is 401 JSON. Account management
  (`/accounts/`, `/admin/`) needs a browser session: a leaked token must not mint tokens, change
  the email address or reach the admin.
- WebSocket: `BearerTokenSocketMiddleware` sends a handshake with the header straight to the
  router as the token's owner (the Origin check guards cookie sockets only: a browser cannot put
  an Authorization header on a WebSocket), and every other handshake through the cookie stack.
  The socket's seat carries the token's id, so revoking it closes the socket at once
  (`token.revoked`) or at the room's next tick (`rooms.selectors.rooms_seats_recheck`).
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import unicodedata
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from channels.db import database_sync_to_async
from channels.security.websocket import WebsocketDenier
from django.conf import settings
from django.db import transaction
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils import timezone

from accounts.models import AccessToken, User
from realtime.connection import scope_header
from realtime.events import TokenRevoked, send_event_on_commit, user_group

logger = logging.getLogger(__name__)

TOKEN_PREFIX = "cr_"
_TOKEN_LENGTH = len(TOKEN_PREFIX) + 43  # secrets.token_urlsafe(32)
NAME_MAX_LENGTH = AccessToken._meta.get_field("name").max_length
# Paths a token may not use: the account (tokens, email, password) and the admin need a person
# at a browser. `/metrics` checks its own bearer token (METRICS_TOKEN), not a personal one.
_ACCOUNT_PREFIXES = ("/accounts/", "/admin/")
_NOT_OURS = ("/metrics",)


class TokenRefused(Exception):
    """A token could not be made; `message` says why, for the person making it."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class TokenGrant:
    """What a request or socket authenticated by a token carries: the token's id and scope."""

    id: int
    scope: str

    @property
    def writes(self) -> bool:
        return self.scope == AccessToken.Scope.WRITE


def token_hash(raw: str) -> str:
    return hashlib.sha256(raw.encode("utf-8", "surrogatepass")).hexdigest()


# --- Services ---------------------------------------------------------------------------------


def token_create(*, owner: User, name: object, scope: object) -> tuple[AccessToken, str]:
    """A new token for `owner`: the row, and the token itself (shown once, never stored)."""
    name = name.strip() if isinstance(name, str) else ""
    if not name:
        raise TokenRefused("Give the token a name, so you know later what uses it.")
    if len(name) > NAME_MAX_LENGTH:
        raise TokenRefused(f"A token's name is at most {NAME_MAX_LENGTH} characters.")
    if any(unicodedata.category(char) in ("Cc", "Cs") for char in name):
        raise TokenRefused("A token's name cannot contain control characters.")
    if scope not in AccessToken.Scope.values:
        raise TokenRefused("Choose what the token may do: read, or read and write.")
    active = AccessToken.objects.filter(owner=owner, revoked__isnull=True).count()
    if active >= settings.ACCESS_TOKENS_PER_USER_MAX:
        raise TokenRefused(
            f"You have {active} active tokens, the most there can be: revoke one you no longer use."
        )
    raw = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = AccessToken.objects.create(
        owner=owner, name=name, scope=scope, token_hash=token_hash(raw)
    )
    return token, raw


def token_revoke(*, owner: User, token_id: int) -> AccessToken:
    """Revoke one of `owner`'s tokens and close its sockets (4401), within a second.

    Raises AccessToken.DoesNotExist for a token that is not theirs. Revoking twice is harmless.
    Should the event be lost, each room's tick closes the sockets anyway (`rooms_seats_recheck`).
    """
    with transaction.atomic():
        token = AccessToken.objects.select_for_update().get(pk=token_id, owner=owner)
        if token.revoked is None:
            token.revoked = timezone.now()
            token.save(update_fields=["revoked"])
            event: TokenRevoked = {"type": "token.revoked", "token_id": token.pk}
            send_event_on_commit(user_group(owner.pk), event)
    return token


def token_authenticate(*, raw: str) -> AccessToken | None:
    """The live token `raw` names (with its active owner), or None. One indexed lookup.

    `last_used` is written at most once an interval per token, so a busy script costs reads only.
    """
    if not raw.startswith(TOKEN_PREFIX) or len(raw) != _TOKEN_LENGTH or not raw.isascii():
        return None
    token = (
        AccessToken.objects.select_related("owner")
        .filter(token_hash=token_hash(raw), revoked__isnull=True)
        .first()
    )
    if token is None or not token.owner.is_active:
        return None
    now = timezone.now()
    interval = timedelta(seconds=settings.ACCESS_TOKEN_LAST_USED_INTERVAL_SECONDS)
    if token.last_used is None or token.last_used < now - interval:
        AccessToken.objects.filter(pk=token.pk).update(last_used=now)
        token.last_used = now
    return token


def _bearer(value: str | None) -> str | None:
    """The credentials of an `Authorization: Bearer <credentials>` value, else None."""
    if not value:
        return None
    scheme, _, credentials = value.strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return credentials.strip()


# --- HTTP -------------------------------------------------------------------------------------


def _json_error(status: int, code: str, message: str) -> JsonResponse:
    return JsonResponse({"error": {"code": code, "message": message}}, status=status)


class BearerTokenMiddleware:
    """Authenticate `Authorization: Bearer <token>` requests as the token's owner.

    Placed after AuthenticationMiddleware, so the token's owner replaces whatever the session
    said. CsrfViewMiddleware checks in `process_view`, after this has run: the exemption holds.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        raw = _bearer(request.headers.get("Authorization"))
        if raw is None or request.path_info.startswith(_NOT_OURS):
            return self.get_response(request)
        token = token_authenticate(raw=raw)
        if token is None:
            response = _json_error(
                401, "unauthenticated", "That access token is not valid (revoked or mistyped)."
            )
            response["WWW-Authenticate"] = 'Bearer realm="calcrooms", error="invalid_token"'
            return response
        if request.path_info.startswith(_ACCOUNT_PREFIXES):
            return _json_error(
                403, "forbidden", "Access tokens cannot manage an account: sign in with a browser."
            )
        grant = TokenGrant(id=token.pk, scope=token.scope)
        if not grant.writes and request.method not in ("GET", "HEAD", "OPTIONS"):
            return _json_error(
                403, "forbidden", "This token is read-only: make a read-and-write token to submit."
            )
        owner = token.owner

        async def auser() -> User:
            return owner

        request.user = owner
        request.auser = auser
        request.access_token = grant
        # No cookie travels with a token, so there is no session for a forged request to ride.
        request._dont_enforce_csrf_checks = True
        return self.get_response(request)


# --- WebSocket --------------------------------------------------------------------------------

ASGIApp = Callable[
    [dict[str, Any], Callable[..., Awaitable[Any]], Callable[..., Awaitable[Any]]], Any
]


class BearerTokenSocketMiddleware:
    """Handshakes with `Authorization: Bearer <token>` go to `token_app` as the token's owner
    (with `access_token` in the scope); every other handshake goes to `cookie_app` (the Origin
    check and the session). A bad or revoked token refuses the handshake (HTTP 403)."""

    def __init__(self, cookie_app: ASGIApp, *, token_app: ASGIApp) -> None:
        self.cookie_app = cookie_app
        self.token_app = token_app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        value = scope_header(scope, b"authorization")
        raw = _bearer(value) if value is not None else None
        if raw is None:
            return await self.cookie_app(scope, receive, send)
        token = await database_sync_to_async(token_authenticate)(raw=raw)
        if token is None:
            logger.info("refused a token socket on %s: the token is not valid", scope.get("path"))
            return await WebsocketDenier()(scope, receive, send)
        scope = dict(
            scope, user=token.owner, access_token=TokenGrant(id=token.pk, scope=token.scope)
        )
        return await self.token_app(scope, receive, send)
