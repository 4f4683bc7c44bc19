"""The per-person socket quota, both backends: a claim holds a place until its TTL unless renewed;
a room's tick renews every local socket's claim in one call."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from django.conf import settings

from rooms.throttle import MemorySocketQuota, RedisSocketQuota

needs_redis = pytest.mark.skipif(not settings.REDIS_URL, reason="needs Redis")


@pytest.fixture(params=["memory", pytest.param("redis", marks=needs_redis)])
def quota(request):
    if request.param == "memory":
        return MemorySocketQuota()
    return RedisSocketQuota(
        settings.REDIS_URL, prefix=f"{settings.REDIS_KEY_PREFIX}:quota-test-{uuid.uuid4().hex[:8]}"
    )


async def test_renewed_claims_hold_their_places_and_the_others_expire(quota) -> None:
    for conn in ("a1", "a2", "a3"):
        assert await quota.claim(1, conn, cap=3, ttl=0.5)
    assert await quota.claim(2, "b1", cap=3, ttl=0.5)
    assert not await quota.claim(1, "a4", cap=3, ttl=30)  # alice holds three
    await quota.renew_many({1: ["a1", "a2"], 2: ["b1"]}, ttl=30)
    await asyncio.sleep(0.7)  # a3's claim expires; the renewed ones hold
    assert await quota.claim(1, "a4", cap=3, ttl=30)  # a1, a2, a4
    assert not await quota.claim(1, "a5", cap=3, ttl=30)
    assert not await quota.claim(2, "b2", cap=1, ttl=30)  # bob's renewed b1 still counts
    await quota.renew_many({}, ttl=30)  # nothing to renew: no call, no error
