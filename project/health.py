"""Health: is this process alive, and is each part it depends on answering?

- `/healthz/live` (liveness): the process answers; it touches nothing, so a database or Redis
  outage never makes a supervisor restart a process that would recover by itself.
- `/healthz/ready` (readiness), and `/healthz`, the same: the database and Redis, each checked
  within CHECK_TIMEOUT_SECONDS, `{"database": ..., "redis": ...}` with `"ok"`, `"error: ..."` or
  `"not configured"` (no REDIS_URL: the in-memory layer, nothing to check); 503 when a
  configured part fails.
"""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis
from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import connection
from django.http import HttpRequest, JsonResponse

from realtime.redis import bounded_pool, redis_pool_options

CHECK_TIMEOUT_SECONDS = 2.0
NOT_CONFIGURED = "not configured"


def _check_database() -> str:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception as exc:
        return f"error: {type(exc).__name__}"
    finally:
        connection.close()
    return "ok"


async def _check_redis() -> str:
    if not settings.REDIS_URL:
        return NOT_CONFIGURED  # in-memory layer and presence: nothing external to check
    # The pools' own options: with REDIS_SENTINELS this asks the Sentinels for the master.
    options = {
        **redis_pool_options(settings, name=f"{settings.REDIS_KEY_PREFIX}:health"),
        "max_connections": 1,
        "socket_connect_timeout": CHECK_TIMEOUT_SECONDS,
        "socket_timeout": CHECK_TIMEOUT_SECONDS,
    }
    client = aioredis.Redis.from_pool(bounded_pool(settings.REDIS_URL, **options))
    try:
        await asyncio.wait_for(client.ping(), CHECK_TIMEOUT_SECONDS)
    except Exception as exc:
        return f"error: {type(exc).__name__}"
    finally:
        await client.aclose()
    return "ok"


async def _database_within_timeout() -> str:
    check = sync_to_async(_check_database, thread_sensitive=False)()
    try:
        return await asyncio.wait_for(check, CHECK_TIMEOUT_SECONDS)
    except TimeoutError:
        return "error: timeout"


async def healthz_ready(request: HttpRequest) -> JsonResponse:
    database, redis_status = await asyncio.gather(_database_within_timeout(), _check_redis())
    body = {"database": database, "redis": redis_status}
    ready = all(value in ("ok", NOT_CONFIGURED) for value in body.values())
    return JsonResponse(body, status=200 if ready else 503)


healthz = healthz_ready  # `/healthz`: what it always answered, readiness


async def healthz_live(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})
