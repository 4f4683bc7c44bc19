"""`/healthz`: is each part this process depends on answering?"""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis
from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import connection
from django.http import HttpRequest, JsonResponse

CHECK_TIMEOUT_SECONDS = 2.0


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
        return "ok"  # in-memory layer and presence: nothing external to check
    client = aioredis.Redis.from_url(
        settings.REDIS_URL,
        socket_connect_timeout=CHECK_TIMEOUT_SECONDS,
        socket_timeout=CHECK_TIMEOUT_SECONDS,
    )
    try:
        await asyncio.wait_for(client.ping(), CHECK_TIMEOUT_SECONDS)
    except Exception as exc:
        return f"error: {type(exc).__name__}"
    finally:
        await client.aclose()
    return "ok"


async def healthz(request: HttpRequest) -> JsonResponse:
    database, redis_status = await asyncio.gather(
        sync_to_async(_check_database, thread_sensitive=False)(), _check_redis()
    )
    body = {"database": database, "redis": redis_status}
    healthy = all(value == "ok" for value in body.values())
    return JsonResponse(body, status=200 if healthy else 503)
