"""Token buckets: the same tests against the Redis throttle and the in-memory throttle.

Redis runs at ``$REDIS_URL`` (default redis://127.0.0.1:6379/0); every test uses its own random
key prefix and clears it afterwards. Redis buckets refill in real time (short sleeps); the memory
throttle runs on a fake clock.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from types import SimpleNamespace

import pytest
import redis
import redis.asyncio as aioredis

from rooms.throttle import (
    MemoryThrottle,
    RedisThrottle,
    Throttle,
    get_throttle,
    reset_throttle,
)

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
EXPRESSIONS = {"capacity": 10, "refill_per_second": 1.0}
TYPING = {"capacity": 1, "refill_per_second": 1.0}


def _redis_reachable() -> bool:
    try:
        client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1, socket_timeout=1)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except redis.RedisError:
        return False


needs_redis = pytest.mark.skipif(
    not _redis_reachable(), reason=f"Redis not reachable at {REDIS_URL}"
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 500.0

    def __call__(self) -> float:
        return self.now


class Harness:
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.clock = FakeClock()
        self.prefix = f"test-throttle-{uuid.uuid4().hex}"
        self.throttles: list[Throttle] = []

    def make(self) -> Throttle:
        """A throttle; Redis ones made by one harness share buckets, like separate processes."""
        throttle: Throttle
        if self.kind == "redis":
            throttle = RedisThrottle(REDIS_URL, prefix=self.prefix)
        elif self.throttles:
            return self.throttles[0]  # one process: one memory throttle
        else:
            throttle = MemoryThrottle(clock=self.clock)
        self.throttles.append(throttle)
        return throttle

    async def sleep(self, seconds: float) -> None:
        if self.kind == "redis":
            await asyncio.sleep(seconds)
        else:
            self.clock.now += seconds

    async def close(self) -> None:
        for throttle in self.throttles:
            await throttle.clear()
            await throttle.aclose()


@pytest.fixture(params=["memory", pytest.param("redis", marks=needs_redis)])
async def harness(request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    h = Harness(request.param)
    yield h
    await h.close()


@pytest.fixture
def throttle(harness: Harness) -> Throttle:
    return harness.make()


async def takes(throttle: Throttle, key: str, n: int, **bucket: float) -> list[bool]:
    return [await throttle.take(key, **bucket) for _ in range(n)]  # type: ignore[arg-type]


async def test_ten_expressions_pass_the_eleventh_is_refused_then_one_per_second(
    harness: Harness, throttle: Throttle
) -> None:
    assert await takes(throttle, "expr:alice:7", 10, **EXPRESSIONS) == [True] * 10
    assert await takes(throttle, "expr:alice:7", 3, **EXPRESSIONS) == [False] * 3

    await harness.sleep(1.05)
    assert await takes(throttle, "expr:alice:7", 2, **EXPRESSIONS) == [True, False]


async def test_buckets_are_independent(throttle: Throttle) -> None:
    assert await takes(throttle, "expr:alice:7", 11, **EXPRESSIONS) == [True] * 10 + [False]
    assert await throttle.take("expr:bob:7", **EXPRESSIONS)
    assert await throttle.take("expr:alice:8", **EXPRESSIONS)
    assert await throttle.take("typing:alice:7", **TYPING)


async def test_typing_one_frame_per_second(harness: Harness, throttle: Throttle) -> None:
    assert await takes(throttle, "typing:alice:7", 3, **TYPING) == [True, False, False]
    await harness.sleep(0.5)
    assert not await throttle.take("typing:alice:7", **TYPING)
    await harness.sleep(0.55)
    assert await takes(throttle, "typing:alice:7", 2, **TYPING) == [True, False]


async def test_idle_bucket_refills_only_up_to_capacity(
    harness: Harness, throttle: Throttle
) -> None:
    assert await takes(throttle, "k", 2, capacity=2, refill_per_second=10) == [True, True]
    await harness.sleep(1.0)  # 10 tokens' worth of time, but the bucket holds 2
    assert await takes(throttle, "k", 3, capacity=2, refill_per_second=10) == [True, True, False]


async def test_limit_holds_across_processes(harness: Harness) -> None:
    one, two = harness.make(), harness.make()
    results = [await (one if i % 2 else two).take("expr:alice:7", **EXPRESSIONS) for i in range(12)]
    assert results == [True] * 10 + [False] * 2


async def test_concurrent_takes_never_exceed_capacity(throttle: Throttle) -> None:
    results = await asyncio.gather(*(throttle.take("burst", **EXPRESSIONS) for _ in range(30)))
    assert sum(results) == 10


async def test_clear_forgets_buckets(throttle: Throttle) -> None:
    assert await takes(throttle, "typing:alice:7", 2, **TYPING) == [True, False]
    await throttle.clear()
    assert await throttle.take("typing:alice:7", **TYPING)


async def test_invalid_buckets_are_rejected(throttle: Throttle) -> None:
    with pytest.raises(ValueError):
        await throttle.take("k", capacity=0, refill_per_second=1)
    with pytest.raises(ValueError):
        await throttle.take("k", capacity=1, refill_per_second=0)


@needs_redis
async def test_redis_bucket_key_expires_once_full_again() -> None:
    throttle = RedisThrottle(REDIS_URL, prefix=f"test-throttle-{uuid.uuid4().hex}")
    client = aioredis.Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        key = throttle.bucket_key("typing:alice:7")
        assert await throttle.take("typing:alice:7", capacity=1, refill_per_second=5)
        assert 0 < await client.pttl(key) <= 200
        await asyncio.sleep(0.3)
        assert await client.exists(key) == 0  # full again: nothing left in Redis
        assert await throttle.take("typing:alice:7", capacity=1, refill_per_second=5)
    finally:
        await throttle.clear()
        await throttle.aclose()
        await client.aclose()


@needs_redis
def test_redis_throttle_works_from_several_event_loops() -> None:
    throttle = RedisThrottle(REDIS_URL, prefix=f"test-throttle-{uuid.uuid4().hex}")
    try:
        outcomes = [asyncio.run(throttle.take("typing:alice:7", **TYPING)) for _ in range(3)]
        assert outcomes == [True, False, False]
    finally:
        asyncio.run(throttle.clear())


def test_memory_throttle_forgets_full_buckets() -> None:
    clock = FakeClock()
    throttle = MemoryThrottle(clock=clock)

    async def burst() -> None:
        for i in range(MemoryThrottle._SWEEP_EVERY):
            await throttle.take(f"user{i}", **TYPING)
        clock.now += 2
        for _ in range(MemoryThrottle._SWEEP_EVERY):
            await throttle.take("same", **TYPING)

    asyncio.run(burst())
    assert set(throttle._buckets) == {"same"}


def test_factory_reads_settings_lazily(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = SimpleNamespace(REDIS_URL="", REDIS_KEY_PREFIX="x")
    monkeypatch.setattr("django.conf.settings", fake)
    reset_throttle()
    try:
        memory = get_throttle()
        assert isinstance(memory, MemoryThrottle)
        assert get_throttle() is memory
        fake.REDIS_URL = REDIS_URL
        reset_throttle()
        shared = get_throttle()
        assert isinstance(shared, RedisThrottle)
        assert shared.bucket_key("k") == "x:t:k"
    finally:
        reset_throttle()
