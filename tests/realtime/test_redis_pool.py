"""The bounded Redis pool under a steady load and after it: it keeps the connections a steady
load needs, and closes the rest once the load that needed them has passed.

Counted from Redis itself (`CLIENT LIST`: each connection's id and the pool's client name), so
a connection closed and opened again shows as a new id.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest
from django.conf import settings

from realtime.redis import bounded_pool
from tests.realtime.leftovers import redis_client

pytestmark = pytest.mark.skipif(not settings.REDIS_URL, reason="counts Redis's own connections")

CONCURRENT = 8
MAX_IDLE = 2
IDLE_SECONDS = 0.5


async def connection_ids(name: str) -> set[int]:
    client = redis_client()
    try:
        return {int(c["id"]) for c in await client.client_list() if c.get("name") == name}
    finally:
        await client.aclose()


@pytest.fixture
async def pool_client():
    import redis.asyncio as aioredis

    name = f"{settings.REDIS_KEY_PREFIX}-pool-{uuid.uuid4().hex[:8]}"
    pool = bounded_pool(
        settings.REDIS_URL,
        client_name=name,
        max_connections=20,
        max_idle=MAX_IDLE,
        idle_seconds=IDLE_SECONDS,
    )
    client = aioredis.Redis(connection_pool=pool)
    yield name, pool, client
    await client.aclose()
    await pool.disconnect()


async def burst(client) -> None:
    # Each command holds a connection until its answer: eight at once need eight connections.
    answers = await asyncio.gather(*(client.ping() for _ in range(CONCURRENT)))
    assert answers == [True] * CONCURRENT


async def test_a_steady_load_keeps_its_connections_instead_of_reopening_them(pool_client):
    name, _, client = pool_client
    await burst(client)
    opened = await connection_ids(name)
    assert len(opened) == CONCURRENT
    for _ in range(40):  # 2 s of bursts, each well inside the idle window of the one before
        await burst(client)
        await asyncio.sleep(0.05)
    # The same connections served every burst: none was closed and opened again.
    assert await connection_ids(name) == opened


async def test_after_the_load_only_the_resting_handful_stays_open(pool_client):
    name, pool, client = pool_client
    await burst(client)
    assert len(await connection_ids(name)) == CONCURRENT
    for _ in range(60):  # up to 3 s: one or two idle windows
        await asyncio.sleep(0.05)
        if len(await connection_ids(name)) <= MAX_IDLE:
            break
    assert len(await connection_ids(name)) == MAX_IDLE
    assert pool.open_connections() == MAX_IDLE
    # What stayed still works, and a new burst opens what it needs again.
    await burst(client)
    assert len(await connection_ids(name)) == CONCURRENT


async def test_connections_one_command_at_a_time_uses_never_exceed_one(pool_client):
    name, _, client = pool_client
    for _ in range(50):
        assert await client.ping()
    assert len(await connection_ids(name)) == 1
