"""Token buckets: expressions per person per room, typing frames per person per room.

``take(key, capacity=..., refill_per_second=...)`` takes one token from the bucket named ``key``
and says whether it could. A bucket starts full (``capacity`` tokens) and refills continuously at
``refill_per_second`` up to ``capacity``. Product uses:

* expressions: capacity 10, refill 1/s; every expression frame takes a token, excess is refused;
* typing frames: capacity 1, refill 1/s, i.e. at most one per second (excess dropped).

``RedisThrottle`` holds the limit across every process sharing Redis: one Lua script (atomic, one
round trip) for the takes of one turn of the event loop, on Redis server time; a bucket's key
expires once it would be full again, since a missing bucket is a full one. ``MemoryThrottle`` is
the single-process twin.

This module does not import Django; ``get_throttle`` reads settings lazily.
"""

from __future__ import annotations

import abc
import threading
import time
from collections.abc import Callable
from typing import Any

from realtime.backends import ProcessWide
from realtime.batch import TurnBatch
from realtime.redis import LoopLocalRedis, delete_matching

Clock = Callable[[], float]


def _validate(capacity: int, refill_per_second: float) -> None:
    if capacity < 1:
        raise ValueError("capacity must be at least 1")
    if not refill_per_second > 0:
        raise ValueError("refill_per_second must be positive")


class Throttle(abc.ABC):
    @abc.abstractmethod
    async def take(self, key: str, *, capacity: int, refill_per_second: float) -> bool:
        """Take one token from bucket ``key``; True if there was one."""

    @abc.abstractmethod
    async def clear(self) -> None:
        """Forget every bucket (for tests)."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook, nothing to close by default
        """Release resources bound to the current event loop."""


class MemoryThrottle(Throttle):
    """Token buckets in this process's memory."""

    _SWEEP_EVERY = 1024

    def __init__(self, clock: Clock | None = None) -> None:
        self._clock: Clock = clock or time.monotonic
        # key -> (tokens, updated_at, seconds_until_full_from_updated_at)
        self._buckets: dict[str, tuple[float, float, float]] = {}
        self._lock = threading.Lock()
        self._takes = 0

    async def take(self, key: str, *, capacity: int, refill_per_second: float) -> bool:
        _validate(capacity, refill_per_second)
        with self._lock:
            now = self._clock()
            tokens, updated, _ = self._buckets.get(key, (float(capacity), now, 0.0))
            if now > updated:
                tokens = min(float(capacity), tokens + (now - updated) * refill_per_second)
            allowed = tokens >= 1
            if allowed:
                tokens -= 1
            full_in = (capacity - tokens) / refill_per_second
            self._buckets[key] = (tokens, max(now, updated), full_in)
            self._takes += 1
            if self._takes % self._SWEEP_EVERY == 0:
                self._sweep(now)
            return allowed

    def _sweep(self, now: float) -> None:
        """Drop buckets that are full again (a missing bucket is a full one)."""
        for key, (_, updated, full_in) in list(self._buckets.items()):
            if now >= updated + full_in:
                del self._buckets[key]

    async def clear(self) -> None:
        with self._lock:
            self._buckets.clear()


# KEYS: the buckets (HASH tokens, ts in ms). ARGV: for each bucket, its capacity and refill per
# ms. Returns 1 or 0 for each, taken in order (a bucket named twice gives its second token).
_LUA_TAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local out = {}
for i = 1, #KEYS do
  local key = KEYS[i]
  local capacity = tonumber(ARGV[2 * i - 1])
  local rate = tonumber(ARGV[2 * i])
  local data = redis.call('HMGET', key, 'tokens', 'ts')
  local tokens = tonumber(data[1])
  local ts = tonumber(data[2])
  if tokens == nil or ts == nil then
    tokens = capacity
    ts = now
  end
  if now > ts then
    tokens = math.min(capacity, tokens + (now - ts) * rate)
    ts = now
  end
  local allowed = 0
  if tokens >= 1 then
    tokens = tokens - 1
    allowed = 1
  end
  redis.call('HSET', key,
    'tokens', string.format('%.17g', tokens), 'ts', string.format('%.17g', ts))
  redis.call('PEXPIRE', key, math.max(1, math.ceil((capacity - tokens) / rate)))
  out[i] = allowed
end
return out
"""


class RedisThrottle(Throttle):
    """Token buckets shared by every process through Redis. The takes asked in one turn of the
    event loop go as one script call (`TurnBatch`): a busy process hears many frames a turn, and
    a round trip through redis-py for each was the largest cost of admitting an expression."""

    def __init__(self, url: str, *, prefix: str, **redis_options: Any) -> None:
        self.url = url
        self.prefix = prefix
        self._redis = LoopLocalRedis(url, **redis_options)
        self._takes: TurnBatch[tuple[str, int, str], bool] = TurnBatch(self._take_many)

    def bucket_key(self, key: str) -> str:
        return f"{self.prefix}:t:{key}"

    async def take(self, key: str, *, capacity: int, refill_per_second: float) -> bool:
        _validate(capacity, refill_per_second)
        rate_per_ms = repr(float(refill_per_second) / 1000.0)
        return await self._takes((self.bucket_key(key), int(capacity), rate_per_ms))

    async def _take_many(self, takes: list[tuple[str, int, str]]) -> list[bool]:
        client, script = self._redis.script(_LUA_TAKE)
        args: list[Any] = []
        for _, capacity, rate_per_ms in takes:
            args += [capacity, rate_per_ms]
        allowed = await script(keys=[key for key, _, _ in takes], args=args, client=client)
        return [bool(one) for one in allowed]

    async def clear(self) -> None:
        await delete_matching(self._redis.client(), f"{self.prefix}:t:")

    async def aclose(self) -> None:
        await self._redis.aclose()


_throttle: ProcessWide[Throttle] = ProcessWide(
    "throttle",
    on_redis=lambda url, **options: RedisThrottle(url, **options),
    in_memory=lambda: MemoryThrottle(),
)


def get_throttle() -> Throttle:
    """The process-wide throttle: Redis when ``settings.REDIS_URL`` is set, else in memory."""
    return _throttle.get()


def reset_throttle() -> None:
    """Forget the process-wide throttle (tests; after changing settings)."""
    _throttle.reset()


# --- The product's buckets ------------------------------------------------------------------------
# One spelling of each rule, whichever transport (socket or HTTP) the frame came through.


def expression_bucket_key(user_id: int, room_id: int) -> str:
    return f"expr:{user_id}:{room_id}"


async def take_expression_token(*, user_id: int, room_id: int) -> bool:
    """Expressions per person per room: a bucket of 10 refilling one a second (settings)."""
    from django.conf import settings

    return await get_throttle().take(
        expression_bucket_key(user_id, room_id),
        capacity=settings.EXPRESSION_BUCKET_CAPACITY,
        refill_per_second=settings.EXPRESSION_BUCKET_REFILL_PER_SECOND,
    )


async def take_typing_token(*, user_id: int, room_id: int) -> bool:
    """Typing processed at most once an interval per person per room."""
    from django.conf import settings

    return await get_throttle().take(
        f"typing:{user_id}:{room_id}",
        capacity=1,
        refill_per_second=1 / settings.TYPING_MIN_INTERVAL_SECONDS,
    )


async def take_abuse_token(*, user_id: int) -> bool:
    """Refused frames per person, across every socket and process: the WS_ABUSE_LIMIT-th within
    WS_ABUSE_WINDOW_SECONDS finds the bucket empty. Reconnecting does not refill it."""
    from django.conf import settings

    return await get_throttle().take(
        f"abuse:{user_id}",
        capacity=max(1, settings.WS_ABUSE_LIMIT - 1),
        refill_per_second=settings.WS_ABUSE_LIMIT / settings.WS_ABUSE_WINDOW_SECONDS,
    )


# --- Open sockets per person ----------------------------------------------------------------------
# Each open socket holds a claim that expires unless its heartbeat renews it, so the sockets of a
# process that died stop counting after the presence TTL.


class SocketQuota(abc.ABC):
    @abc.abstractmethod
    async def claim(self, user_id: int, conn_id: str, *, cap: int | None, ttl: float) -> bool:
        """Hold (or renew) `conn_id`'s claim; False if the person already holds `cap` others."""

    @abc.abstractmethod
    async def release(self, user_id: int, conn_id: str) -> None:
        """Give the claim back (the socket closed)."""

    @abc.abstractmethod
    async def renew_many(self, claims: dict[int, list[str]], *, ttl: float) -> None:
        """Renew the claims of many sockets at once (a room's sockets in this process, each
        heartbeat): one call, not one per socket; no cap applies to a renewal."""


class MemorySocketQuota(SocketQuota):
    def __init__(self, clock: Clock | None = None) -> None:
        self._clock: Clock = clock or time.monotonic
        self._claims: dict[int, dict[str, float]] = {}
        self._lock = threading.Lock()

    async def claim(self, user_id: int, conn_id: str, *, cap: int | None, ttl: float) -> bool:
        with self._lock:
            now = self._clock()
            claims = {c: exp for c, exp in self._claims.get(user_id, {}).items() if exp > now}
            if conn_id not in claims and cap is not None and len(claims) >= cap:
                self._claims[user_id] = claims
                return False
            claims[conn_id] = now + ttl
            self._claims[user_id] = claims
            return True

    async def renew_many(self, claims: dict[int, list[str]], *, ttl: float) -> None:
        for user_id, conn_ids in claims.items():
            for conn_id in conn_ids:
                await self.claim(user_id, conn_id, cap=None, ttl=ttl)

    async def release(self, user_id: int, conn_id: str) -> None:
        with self._lock:
            claims = self._claims.get(user_id, {})
            claims.pop(conn_id, None)
            if not claims:
                self._claims.pop(user_id, None)


# KEYS: the person's claims (ZSET conn_id -> expiry ms). ARGV: conn_id, ttl ms, cap (0: none).
_LUA_CLAIM = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[2])
local cap = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if cap > 0 and not redis.call('ZSCORE', KEYS[1], ARGV[1])
   and redis.call('ZCARD', KEYS[1]) >= cap then
  return 0
end
redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
redis.call('PEXPIRE', KEYS[1], ttl)
return 1
"""


# KEYS: people's claims. ARGV: ttl ms, then for each key: the number of its conn_ids, and them.
# One ZADD of many members per person (not one per socket).
_LUA_RENEW_MANY = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[1])
local i = 2
for k = 1, #KEYS do
  local n = tonumber(ARGV[i])
  i = i + 1
  local z = {}
  for _ = 1, n do
    z[#z + 1] = now + ttl
    z[#z + 1] = ARGV[i]
    i = i + 1
    if #z >= 2000 then
      redis.call('ZADD', KEYS[k], unpack(z))
      z = {}
    end
  end
  if #z > 0 then redis.call('ZADD', KEYS[k], unpack(z)) end
  redis.call('PEXPIRE', KEYS[k], ttl)
end
return 1
"""


class RedisSocketQuota(SocketQuota):
    def __init__(self, url: str, *, prefix: str, **redis_options: Any) -> None:
        self.prefix = prefix
        self._redis = LoopLocalRedis(url, **redis_options)

    def key(self, user_id: int) -> str:
        return f"{self.prefix}:s:{int(user_id)}"

    async def claim(self, user_id: int, conn_id: str, *, cap: int | None, ttl: float) -> bool:
        client, script = self._redis.script(_LUA_CLAIM)
        allowed = await script(
            keys=[self.key(user_id)],
            args=[conn_id, max(1, round(ttl * 1000)), cap or 0],
            client=client,
        )
        return bool(allowed)

    async def release(self, user_id: int, conn_id: str) -> None:
        await self._redis.client().zrem(self.key(user_id), conn_id)

    async def renew_many(self, claims: dict[int, list[str]], *, ttl: float) -> None:
        claims = {user_id: conn_ids for user_id, conn_ids in claims.items() if conn_ids}
        if not claims:
            return
        args: list[Any] = [max(1, round(ttl * 1000))]
        for conn_ids in claims.values():
            args.append(len(conn_ids))
            args.extend(conn_ids)
        client, script = self._redis.script(_LUA_RENEW_MANY)
        await script(keys=[self.key(user_id) for user_id in claims], args=args, client=client)


_socket_quota: ProcessWide[SocketQuota] = ProcessWide(
    "throttle",  # the throttles' pool
    on_redis=lambda url, **options: RedisSocketQuota(url, **options),
    in_memory=lambda: MemorySocketQuota(),
)


def get_socket_quota() -> SocketQuota:
    """The process-wide socket quota: Redis when ``settings.REDIS_URL`` is set, else in memory."""
    return _socket_quota.get()


def reset_socket_quota() -> None:
    _socket_quota.reset()
