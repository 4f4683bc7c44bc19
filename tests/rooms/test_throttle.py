"""Token buckets: the same tests against the Redis throttle and the in-memory throttle.

Redis runs at ``$REDIS_URL`` (default redis://127.0.0.1:6379/0); every test uses its own random
key prefix and clears it afterwards. Redis buckets refill in real time (short sleeps); the memory
throttle runs on a fake clock.

Nothing here assumes the machine is fast. A token that must come back is waited for
(`until_taken`), and "no more than the bucket allows" is bounded by the time that really passed
(`refills`): on the fake clock that is exact; on a slow machine it only ever allows more.
"""

from __future__ import annotations

import asyncio
import math
import os
import socket
import time
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

    def now(self) -> float:
        """The time the throttle goes by (Redis's passes as fast as this machine's clock)."""
        return time.monotonic() if self.kind == "redis" else self.clock.now

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


def refills(seconds: float, refill_per_second: float) -> int:
    """Whole tokens a bucket can have got back in `seconds`."""
    return math.floor(seconds * refill_per_second + 1e-9)


async def until_taken(harness: Harness, throttle: Throttle, key: str, **bucket: float) -> None:
    """Take a token from `key` as soon as it has one again (a refused take costs nothing)."""
    for _ in range(200):  # every 0.05 s, for 10 s at least
        if await throttle.take(key, **bucket):  # type: ignore[arg-type]
            return
        await harness.sleep(0.05)
    pytest.fail(f"bucket {key} never refilled")


async def test_ten_expressions_pass_the_eleventh_is_refused_then_one_per_second(
    harness: Harness, throttle: Throttle
) -> None:
    rate = EXPRESSIONS["refill_per_second"]
    started = harness.now()
    assert await takes(throttle, "expr:alice:7", 10, **EXPRESSIONS) == [True] * 10
    refused = await takes(throttle, "expr:alice:7", 3, **EXPRESSIONS)
    # The eleventh and the next two are refused (unless a second went by meanwhile).
    assert sum(refused) <= refills(harness.now() - started, rate), refused

    await harness.sleep(1.05)
    later = await takes(throttle, "expr:alice:7", 2, **EXPRESSIONS)
    assert later[0]  # a second later, one more passes...
    passed = 10 + sum(refused) + sum(later)
    assert passed <= 10 + refills(harness.now() - started, rate), later  # ...one a second


async def test_buckets_are_independent(throttle: Throttle) -> None:
    assert await takes(throttle, "expr:alice:7", 11, **EXPRESSIONS) == [True] * 10 + [False]
    assert await throttle.take("expr:bob:7", **EXPRESSIONS)
    assert await throttle.take("expr:alice:8", **EXPRESSIONS)
    assert await throttle.take("typing:alice:7", **TYPING)


async def test_typing_one_frame_per_second(harness: Harness, throttle: Throttle) -> None:
    started = harness.now()
    burst = await takes(throttle, "typing:alice:7", 3, **TYPING)
    assert burst[0]
    await harness.sleep(0.5)
    half_a_second_later = await throttle.take("typing:alice:7", **TYPING)
    await until_taken(harness, throttle, "typing:alice:7", **TYPING)  # one comes back...
    right_after = await throttle.take("typing:alice:7", **TYPING)
    # ...and no more than one a second passed, from the first on (exactly [True, False, False],
    # False, then True after a second and False on the fake clock).
    passed = sum(burst) + half_a_second_later + 1 + right_after
    elapsed = harness.now() - started
    assert passed <= 1 + refills(elapsed, TYPING["refill_per_second"]), (burst, elapsed)


async def test_idle_bucket_refills_only_up_to_capacity(
    harness: Harness, throttle: Throttle
) -> None:
    assert await takes(throttle, "k", 2, capacity=2, refill_per_second=10) == [True, True]
    await harness.sleep(1.0)  # 10 tokens' worth of time, but the bucket holds 2
    started = harness.now()
    burst = await takes(throttle, "k", 5, capacity=2, refill_per_second=10)
    assert burst[:2] == [True, True]
    # Two, and only what came back during the burst itself (nothing, on the fake clock).
    assert sum(burst) <= 2 + refills(harness.now() - started, 10), burst


async def test_limit_holds_across_processes(harness: Harness) -> None:
    one, two = harness.make(), harness.make()
    started = harness.now()
    results = [await (one if i % 2 else two).take("expr:alice:7", **EXPRESSIONS) for i in range(12)]
    assert results[:10] == [True] * 10
    refilled = refills(harness.now() - started, EXPRESSIONS["refill_per_second"])
    assert sum(results) <= 10 + refilled, results  # the last two refused, unless a second passed


async def test_concurrent_takes_never_exceed_capacity(harness: Harness, throttle: Throttle) -> None:
    started = harness.now()
    results = await asyncio.gather(*(throttle.take("burst", **EXPRESSIONS) for _ in range(30)))
    refilled = refills(harness.now() - started, EXPRESSIONS["refill_per_second"])
    assert 10 <= sum(results) <= 10 + refilled  # exactly 10, unless a second passed


async def test_clear_forgets_buckets(harness: Harness, throttle: Throttle) -> None:
    started = harness.now()
    pair = await takes(throttle, "typing:alice:7", 2, **TYPING)
    refilled = refills(harness.now() - started, TYPING["refill_per_second"])
    assert pair[0] and sum(pair) <= 1 + refilled, pair  # [True, False], unless a second passed
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
        assert await throttle.take("typing:alice:7", capacity=1, refill_per_second=1)
        assert 0 < await client.pttl(key) <= 1000  # no longer than until it is full again
        for _ in range(200):  # full again within a second: nothing left in Redis (10 s at most)
            if not await client.exists(key):
                break
            await asyncio.sleep(0.05)
        assert await client.exists(key) == 0
        assert await throttle.take("typing:alice:7", capacity=1, refill_per_second=1)
    finally:
        await throttle.clear()
        await throttle.aclose()
        await client.aclose()


@needs_redis
def test_redis_throttle_works_from_several_event_loops() -> None:
    throttle = RedisThrottle(REDIS_URL, prefix=f"test-throttle-{uuid.uuid4().hex}")
    try:
        started = time.monotonic()
        outcomes = [asyncio.run(throttle.take("typing:alice:7", **TYPING)) for _ in range(3)]
        refilled = refills(time.monotonic() - started, TYPING["refill_per_second"])
        assert outcomes[0] and sum(outcomes) <= 1 + refilled, outcomes  # [True, False, False]
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


async def test_takes_asked_at_once_are_counted_exactly(
    harness: Harness, throttle: Throttle
) -> None:
    """Many frames heard in the same moment: each bucket gives exactly what it holds, in the
    order asked, and one person's burst does not touch another's bucket."""
    started = harness.now()
    asked = [("expr:alice:7", EXPRESSIONS)] * 14 + [("expr:bob:7", EXPRESSIONS), ("t:c", TYPING)]
    outcomes = await asyncio.gather(*(throttle.take(key, **b) for key, b in asked))  # type: ignore[arg-type]
    alices = outcomes[:14]
    refilled = refills(harness.now() - started, EXPRESSIONS["refill_per_second"])
    assert alices[:10] == [True] * 10
    assert 10 <= sum(alices) <= 10 + refilled, alices
    assert outcomes[14:] == [True, True]


@needs_redis
async def test_the_takes_of_one_loop_turn_are_one_call_to_redis(monkeypatch) -> None:
    throttle = RedisThrottle(REDIS_URL, prefix=f"test-throttle-{uuid.uuid4().hex}")
    calls: list[int] = []
    real = throttle._take_many

    async def counted(batch):
        calls.append(len(batch))
        return await real(batch)

    monkeypatch.setattr(throttle._takes, "_run", counted)
    try:
        first = await asyncio.gather(*(throttle.take(f"k{i % 3}", **TYPING) for i in range(30)))
        assert calls == [30]
        assert first[:3] == [True] * 3 and not any(first[3:])  # typing: one per bucket
        assert await throttle.take("k9", **TYPING)  # a lone take goes on its own
        assert calls == [30, 1]
    finally:
        await throttle.clear()
        await throttle.aclose()


async def test_redis_away_fails_every_take_of_the_turn() -> None:
    """Each caller hears the outage (the consumer answers `unavailable`), none hangs."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nothing listens here
    throttle = RedisThrottle(f"redis://127.0.0.1:{port}/0", prefix="test-throttle-away")
    try:
        outcomes = await asyncio.wait_for(
            asyncio.gather(
                *(throttle.take(f"k{i}", **TYPING) for i in range(5)), return_exceptions=True
            ),
            timeout=10,
        )
        assert all(isinstance(o, redis.ConnectionError) for o in outcomes), outcomes
    finally:
        await throttle.aclose()
