"""`/metrics`: the Prometheus page, closed to the public.

With `METRICS_TOKEN` set, only a request bearing `Authorization: Bearer <METRICS_TOKEN>` gets it
(401 otherwise, from any address). Without it, only requests from `METRICS_ALLOWED_IPS` (addresses
or networks; empty by default, so 403 for everyone until one is configured). The client's address
is `REMOTE_ADDR`, which uvicorn's `--proxy-headers` sets from the trusted proxy's
`X-Forwarded-For`, as for every other per-address rule of the app. A refusal says nothing of the
metrics.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
from functools import cache

from django.conf import settings
from django.db import DatabaseError, InterfaceError
from django.http import HttpRequest, HttpResponse
from django.utils.deprecation import MiddlewareMixin
from django.views.decorators.http import require_GET

from realtime import metrics

logger = logging.getLogger("calcrooms.metrics")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@cache
def _networks(allowed: tuple[str, ...]) -> tuple[Network, ...]:
    return tuple(ipaddress.ip_network(item, strict=False) for item in allowed)


def _address_allowed(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address.split("%")[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip in net for net in _networks(tuple(settings.METRICS_ALLOWED_IPS)))


def _bearer_matches(request: HttpRequest, token: str) -> bool:
    scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not presented:
        return False
    return hmac.compare_digest(presented.strip().encode(), token.encode())


def _refused(status: int, reason: str, address: str) -> HttpResponse:
    logger.info(
        "refused a metrics scrape from %s: %s",
        address,
        reason,
        extra={"event": "metrics.refused", "client": address, "code": status},
    )
    text = "Authentication required." if status == 401 else "Forbidden."
    response = HttpResponse(text, status=status, content_type="text/plain; charset=utf-8")
    if status == 401:
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
    return response


@require_GET
def metrics_page(request: HttpRequest) -> HttpResponse:
    address = request.META.get("REMOTE_ADDR") or ""
    token = settings.METRICS_TOKEN
    if token:
        if not _bearer_matches(request, token):
            return _refused(401, "no valid bearer token", address)
    elif not _address_allowed(address):
        return _refused(403, "address not in METRICS_ALLOWED_IPS", address)
    body, content_type = metrics.exposition()
    response = HttpResponse(body, content_type=content_type)
    response["Cache-Control"] = "no-store"
    return response


class CountDatabaseErrors(MiddlewareMixin):
    """Counts every database error that escapes a view (`calcrooms_database_errors_total`).

    Last in MIDDLEWARE: `process_exception` runs from the last middleware up, so this sees the
    error before any middleware above turns it into an answer (the outage 503). It answers nothing
    itself. Sync and async alike (MiddlewareMixin): no thread hop for async views.
    """

    def process_exception(self, request: HttpRequest, exception: Exception) -> None:
        if isinstance(exception, DatabaseError | InterfaceError):
            metrics.database_error()
