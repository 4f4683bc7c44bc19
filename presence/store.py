"""Who is online and who is typing, per room: a Redis store and an in-memory twin.

Contract (both stores, same contract tests):

* Every WebSocket connection has its own record, refreshed by a heartbeat and expiring
  ``ttl_seconds`` after its last refresh. A person with several connections is ONE occupant.
* ``leave`` removes the record at once; the person stays online while another of their
  connections remains, otherwise their typing flag is cleared too.
* Records of a killed process expire on their own. Every call purges the room's expired records
  and typing flags, and reports ``changed=True`` when that purge altered what the room displays,
  so a surviving connection's heartbeat can announce the leave.
* A person is typing until ``typing_ttl_seconds`` after their last typing signal, or until
  cleared. Only people who are online can be typing: a typing signal from someone who is not
  online is ignored.
* ``join``, ``leave`` and ``set_typing`` each have a ``*_mark`` twin that makes the same change
  and answers only its `PresenceMark` (room, version, changed), not the whole state: a socket's
  join in a room of thousands need not read and parse thousands of names it will not use (the
  room's feed reads the state once for every socket that joined meanwhile).
* ``version`` increases whenever the room's stored presence changes (a connection added or
  removed, expiry purge, typing on/off) and never decreases. ``changed`` is narrower: the set of
  online usernames or of typing usernames differs from what the previous call reported.

The Redis store runs each operation as one Lua script (one round trip, atomic), reads the time
from Redis (``TIME``) so several hosts agree, and keeps one ``redis.asyncio`` client per running
event loop (`realtime.redis`). Its room keys carry a PEXPIRE slightly longer than the longest
record, and are deleted as soon as a room is empty, so abandoned rooms leave nothing behind in
Redis. Versions are derived from Redis server time in microseconds, so they keep increasing even
after an empty room's keys vanish.

This module does not import Django; ``get_presence_store`` reads settings lazily.
"""

from __future__ import annotations

import abc
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from realtime.backends import ProcessWide
from realtime.redis import LoopLocalRedis, delete_matching

DEFAULT_TTL_SECONDS = 30.0
DEFAULT_TYPING_TTL_SECONDS = 5.0
# Room keys outlive the longest record by this much; records are what decide who is online.
KEY_SLACK_MS = 1000

Clock = Callable[[], float]


# --------------------------------------------------------------------------------------------
# State objects
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Occupant:
    username: str
    typing: bool


@dataclass(frozen=True)
class PresenceState:
    room_id: int
    online: tuple[Occupant, ...]
    version: int
    changed: bool

    @property
    def count(self) -> int:
        return len(self.online)

    def typing_usernames(self) -> tuple[str, ...]:
        return tuple(o.username for o in self.online if o.typing)

    def as_dict(self, room_slug: str) -> dict[str, Any]:
        return {
            "room": room_slug,
            "online": [{"username": o.username, "typing": o.typing} for o in self.online],
            "count": self.count,
        }


@dataclass(frozen=True)
class PresenceMark:
    """What one change did, without the state: the room's version after it, and whether what the
    room shows changed."""

    room_id: int
    version: int
    changed: bool


def _mark(state: PresenceState) -> PresenceMark:
    return PresenceMark(room_id=state.room_id, version=state.version, changed=state.changed)


def _sort_key(username: str) -> tuple[str, str]:
    return (username.casefold(), username)


def build_state(
    room_id: int,
    online: Iterable[str],
    typing: Iterable[str],
    *,
    version: int,
    changed: bool,
) -> PresenceState:
    """One occupant per distinct username, sorted by casefolded username."""
    typing_set = set(typing)
    occupants = tuple(
        Occupant(username=name, typing=name in typing_set)
        for name in sorted(set(online), key=_sort_key)
    )
    return PresenceState(room_id=room_id, online=occupants, version=version, changed=changed)


class PresenceStore(abc.ABC):
    """Presence of people in rooms; see the module docstring for the contract."""

    ttl_seconds: float
    typing_ttl_seconds: float

    @abc.abstractmethod
    async def join(self, room_id: int, conn_id: str, username: str) -> PresenceState:
        """Add (or re-add) this connection's record, expiring ``ttl_seconds`` from now."""

    @abc.abstractmethod
    async def refresh(self, room_id: int, conn_id: str, username: str) -> PresenceState:
        """Heartbeat: extend this connection's record (re-creating it if it had expired)."""

    @abc.abstractmethod
    async def refresh_many(self, room_id: int, conns: list[tuple[str, str]]) -> PresenceState:
        """Heartbeat of many connections of one room at once (`(conn_id, username)` pairs): one
        call per room per process instead of one per socket; like `refresh` for each."""

    @abc.abstractmethod
    async def leave(self, room_id: int, conn_id: str) -> PresenceState:
        """Remove this connection's record at once."""

    @abc.abstractmethod
    async def set_typing(self, room_id: int, username: str, typing: bool) -> PresenceState:
        """True: typing until ``typing_ttl_seconds`` from now (online people only). False: clear."""

    @abc.abstractmethod
    async def state(self, room_id: int) -> PresenceState:
        """The room's state, after purging expired records and typing flags."""

    @abc.abstractmethod
    async def counts(self, room_ids: Iterable[int]) -> dict[int, int]:
        """Online person counts for many rooms (no purge; expired records are not counted)."""

    @abc.abstractmethod
    async def clear(self) -> None:
        """Remove everything this store holds (for tests)."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook, nothing to close by default
        """Release resources bound to the current event loop."""

    # The same changes, answering only their mark. A store that can skip reading the state back
    # overrides these; by default they make the change and drop the state.
    async def join_mark(self, room_id: int, conn_id: str, username: str) -> PresenceMark:
        return _mark(await self.join(room_id, conn_id, username))

    async def leave_mark(self, room_id: int, conn_id: str) -> PresenceMark:
        return _mark(await self.leave(room_id, conn_id))

    async def typing_mark(self, room_id: int, username: str, typing: bool) -> PresenceMark:
        return _mark(await self.set_typing(room_id, username, typing))


def _validate_ttls(ttl_seconds: float, typing_ttl_seconds: float) -> None:
    if ttl_seconds <= 0 or typing_ttl_seconds <= 0:
        raise ValueError("ttl_seconds and typing_ttl_seconds must be positive")


# --------------------------------------------------------------------------------------------
# In-memory store (single process)
# --------------------------------------------------------------------------------------------


@dataclass
class _MemoryRoom:
    conns: dict[str, tuple[str, float]]  # conn_id -> (username, expires_at)
    typing: dict[str, float]  # username -> expires_at


class MemoryPresenceStore(PresenceStore):
    """The same contract in one process's memory (the embedded single-process default).

    Operations never await, so each is atomic on its event loop; a lock makes them atomic
    across threads too (sync views run them on their own loops).
    """

    def __init__(
        self,
        *,
        ttl_seconds: float = DEFAULT_TTL_SECONDS,
        typing_ttl_seconds: float = DEFAULT_TYPING_TTL_SECONDS,
        clock: Clock | None = None,
    ) -> None:
        _validate_ttls(ttl_seconds, typing_ttl_seconds)
        self.ttl_seconds = float(ttl_seconds)
        self.typing_ttl_seconds = float(typing_ttl_seconds)
        self._clock: Clock = clock or time.monotonic
        self._rooms: dict[int, _MemoryRoom] = {}
        # Versions outlive empty rooms so they never go backwards.
        self._versions: dict[int, int] = {}
        self._lock = threading.Lock()

    # Each operation: snapshot what was stored (= what the previous call reported), purge,
    # apply, drop typing of people no longer online, snapshot again, compare.
    def _apply(
        self,
        room_id: int,
        op: Callable[[_MemoryRoom, float], bool],
        keep: str | set[str] | None = None,
    ) -> PresenceState:
        room_id = int(room_id)
        with self._lock:
            now = self._clock()
            room = self._rooms.get(room_id) or _MemoryRoom(conns={}, typing={})
            before_online = {name for name, _ in room.conns.values()}
            before_typing = set(room.typing) & before_online

            mutated = False
            kept = keep if isinstance(keep, set) else {keep}
            for conn_id, (_, expires_at) in list(room.conns.items()):
                if expires_at <= now and conn_id not in kept:
                    del room.conns[conn_id]
                    mutated = True
            for name, expires_at in list(room.typing.items()):
                if expires_at <= now:
                    del room.typing[name]
                    mutated = True

            mutated = op(room, now) or mutated

            after_online = {name for name, _ in room.conns.values()}
            for name in list(room.typing):
                if name not in after_online:
                    del room.typing[name]
                    mutated = True
            after_typing = set(room.typing)

            version = self._versions.get(room_id, 0)
            if mutated:
                version += 1
                self._versions[room_id] = version
            if room.conns:
                self._rooms[room_id] = room
            else:
                self._rooms.pop(room_id, None)
            changed = before_online != after_online or before_typing != after_typing
            return build_state(
                room_id, after_online, after_typing, version=version, changed=changed
            )

    def _upsert(self, conn_id: str, username: str) -> Callable[[_MemoryRoom, float], bool]:
        def op(room: _MemoryRoom, now: float) -> bool:
            previous = room.conns.get(conn_id)
            room.conns[conn_id] = (username, now + self.ttl_seconds)
            return previous is None or previous[0] != username

        return op

    async def join(self, room_id: int, conn_id: str, username: str) -> PresenceState:
        return self._apply(room_id, self._upsert(conn_id, username), keep=conn_id)

    async def refresh(self, room_id: int, conn_id: str, username: str) -> PresenceState:
        return self._apply(room_id, self._upsert(conn_id, username), keep=conn_id)

    async def refresh_many(self, room_id: int, conns: list[tuple[str, str]]) -> PresenceState:
        keep = {conn_id for conn_id, _ in conns}

        def op(room: _MemoryRoom, now: float) -> bool:
            mutated = False
            for conn_id, username in conns:
                mutated = self._upsert(conn_id, username)(room, now) or mutated
            return mutated

        return self._apply(room_id, op, keep=keep)

    async def leave(self, room_id: int, conn_id: str) -> PresenceState:
        def op(room: _MemoryRoom, now: float) -> bool:
            return room.conns.pop(conn_id, None) is not None

        return self._apply(room_id, op)

    async def set_typing(self, room_id: int, username: str, typing: bool) -> PresenceState:
        def op(room: _MemoryRoom, now: float) -> bool:
            if not typing:
                return room.typing.pop(username, None) is not None
            if not any(name == username for name, _ in room.conns.values()):
                return False
            was_typing = username in room.typing
            room.typing[username] = now + self.typing_ttl_seconds
            return not was_typing

        return self._apply(room_id, op)

    async def state(self, room_id: int) -> PresenceState:
        return self._apply(room_id, lambda room, now: False)

    async def counts(self, room_ids: Iterable[int]) -> dict[int, int]:
        with self._lock:
            now = self._clock()
            result: dict[int, int] = {}
            for room_id in room_ids:
                room = self._rooms.get(int(room_id))
                live = set()
                if room is not None:
                    live = {name for name, exp in room.conns.values() if exp > now}
                result[int(room_id)] = len(live)
            return result

    async def clear(self) -> None:
        with self._lock:
            self._rooms.clear()
            self._versions.clear()


# --------------------------------------------------------------------------------------------
# Redis store
# --------------------------------------------------------------------------------------------

# KEYS: conns (ZSET conn_id -> expiry ms), users (HASH conn_id -> username),
#       typing (ZSET username -> expiry ms), ver (STRING)
# ARGV: ttl ms, typing ttl ms, key ttl ms, then the operation's own arguments from ARGV[4].
_LUA_PRELUDE = """
local conns, users, typing, verkey = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local ttl_ms = tonumber(ARGV[1])
local typing_ms = tonumber(ARGV[2])
local key_ms = tonumber(ARGV[3])
local t = redis.call('TIME')
local now_us = tonumber(t[1]) * 1000000 + tonumber(t[2])
local now = math.floor(now_us / 1000)

local function online_set()
  local set, list = {}, {}
  for _, name in ipairs(redis.call('HVALS', users)) do
    if not set[name] then
      set[name] = true
      list[#list + 1] = name
    end
  end
  return set, list
end

local function typing_set(online)
  local set, list = {}, {}
  for _, name in ipairs(redis.call('ZRANGE', typing, 0, -1)) do
    if online[name] then
      set[name] = true
      list[#list + 1] = name
    end
  end
  return set, list
end

local function same(a_list, b_set, b_list)
  if #a_list ~= #b_list then return false end
  for _, k in ipairs(a_list) do
    if not b_set[k] then return false end
  end
  return true
end

-- What is stored is what the previous call reported.
local before_online, before_online_list = online_set()
local _, before_typing_list = typing_set(before_online)
local mutated = false

local function purge(keep)
  for _, c in ipairs(redis.call('ZRANGEBYSCORE', conns, '-inf', now)) do
    if c ~= keep then
      redis.call('ZREM', conns, c)
      redis.call('HDEL', users, c)
      mutated = true
    end
  end
  if redis.call('ZREMRANGEBYSCORE', typing, '-inf', now) > 0 then
    mutated = true
  end
end

local function upsert(conn, username)
  purge(conn)
  local previous = redis.call('HGET', users, conn)
  redis.call('ZADD', conns, now + ttl_ms, conn)
  redis.call('HSET', users, conn, username)
  if previous ~= username then mutated = true end
end
"""

_LUA_EPILOGUE = """
local after_online, after_online_list = online_set()
for _, name in ipairs(redis.call('ZRANGE', typing, 0, -1)) do
  if not after_online[name] then
    redis.call('ZREM', typing, name)
    mutated = true
  end
end
local after_typing, after_typing_list = typing_set(after_online)
local changed = not (same(before_online_list, after_online, after_online_list)
  and same(before_typing_list, after_typing, after_typing_list))

local ver = tonumber(redis.call('GET', verkey) or '0')
if mutated then
  ver = math.max(ver + 1, now_us)
end
if #after_online_list == 0 then
  -- Nobody left: no ghost in Redis. Time-based versions stay monotonic without the key.
  redis.call('DEL', conns, users, typing, verkey)
  ver = math.max(ver, now_us)
else
  if mutated then
    redis.call('SET', verkey, string.format('%.0f', ver))
  end
  redis.call('PEXPIRE', conns, key_ms)
  redis.call('PEXPIRE', users, key_ms)
  redis.call('PEXPIRE', typing, key_ms)
  redis.call('PEXPIRE', verkey, key_ms)
end
"""
_LUA_RETURN_STATE = "return {ver, changed and 1 or 0, after_online_list, after_typing_list}\n"
_LUA_RETURN_MARK = "return {ver, changed and 1 or 0}\n"


def _lua(body: str, *, mark: bool = False) -> str:
    """An operation's script; `mark`: it answers only the version and whether the room changed."""
    return _LUA_PRELUDE + body + _LUA_EPILOGUE + (_LUA_RETURN_MARK if mark else _LUA_RETURN_STATE)


_UPSERT_BODY = "upsert(ARGV[4], ARGV[5])\n"
_LUA_UPSERT = _lua(_UPSERT_BODY)
_LUA_UPSERT_MARK = _lua(_UPSERT_BODY, mark=True)

# ARGV[4], ARGV[5], ...: conn_id, username pairs. Two commands per thousand connections (one
# ZADD and one HSET of many members each), not three per connection: a room's heartbeat costs
# Redis the same few commands however many sockets a process holds in it.
_LUA_REFRESH_MANY = _lua(
    """
local keep = {}
for i = 4, #ARGV, 2 do keep[ARGV[i]] = true end
for _, c in ipairs(redis.call('ZRANGEBYSCORE', conns, '-inf', now)) do
  if not keep[c] then
    redis.call('ZREM', conns, c)
    redis.call('HDEL', users, c)
    mutated = true
  end
end
if redis.call('ZREMRANGEBYSCORE', typing, '-inf', now) > 0 then mutated = true end
local score = now + ttl_ms
local z, h = {}, {}
local function flush()
  if #z > 0 then redis.call('ZADD', conns, unpack(z)) end
  if #h > 0 and redis.call('HSET', users, unpack(h)) > 0 then mutated = true end
  z, h = {}, {}
end
for i = 4, #ARGV, 2 do
  z[#z + 1] = score
  z[#z + 1] = ARGV[i]
  h[#h + 1] = ARGV[i]
  h[#h + 1] = ARGV[i + 1]
  if #z >= 2000 then flush() end
end
flush()
"""
)

_LEAVE_BODY = """
purge(nil)
redis.call('HDEL', users, ARGV[4])
if redis.call('ZREM', conns, ARGV[4]) == 1 then mutated = true end
"""
_LUA_LEAVE = _lua(_LEAVE_BODY)
_LUA_LEAVE_MARK = _lua(_LEAVE_BODY, mark=True)

_TYPING_BODY = """
purge(nil)
local username = ARGV[4]
if ARGV[5] == '1' then
  local online = online_set()
  if online[username] then
    if redis.call('ZADD', typing, now + typing_ms, username) == 1 then mutated = true end
  end
else
  if redis.call('ZREM', typing, username) == 1 then mutated = true end
end
"""
_LUA_TYPING = _lua(_TYPING_BODY)
_LUA_TYPING_MARK = _lua(_TYPING_BODY, mark=True)

_LUA_STATE = _lua("purge(nil)\n")

# KEYS: conns, users of each room in turn. Returns live person counts, purging nothing.
_LUA_COUNTS = """
local t = redis.call('TIME')
local now = math.floor((tonumber(t[1]) * 1000000 + tonumber(t[2])) / 1000)
local result = {}
for i = 1, #KEYS, 2 do
  local seen, n = {}, 0
  for _, c in ipairs(redis.call('ZRANGEBYSCORE', KEYS[i], '(' .. now, '+inf')) do
    local name = redis.call('HGET', KEYS[i + 1], c)
    if name and not seen[name] then
      seen[name] = true
      n = n + 1
    end
  end
  result[#result + 1] = n
end
return result
"""


class RedisPresenceStore(PresenceStore):
    """Presence shared by every process through Redis (see the module docstring)."""

    def __init__(
        self,
        url: str,
        *,
        prefix: str,
        ttl_seconds: float = DEFAULT_TTL_SECONDS,
        typing_ttl_seconds: float = DEFAULT_TYPING_TTL_SECONDS,
        clock: Clock | None = None,  # accepted for symmetry; Redis server time is used
        **redis_options: Any,
    ) -> None:
        _validate_ttls(ttl_seconds, typing_ttl_seconds)
        self.url = url
        self.prefix = prefix
        self.ttl_seconds = float(ttl_seconds)
        self.typing_ttl_seconds = float(typing_ttl_seconds)
        self._ttl_ms = max(1, round(self.ttl_seconds * 1000))
        self._typing_ms = max(1, round(self.typing_ttl_seconds * 1000))
        self._key_ms = max(self._ttl_ms, self._typing_ms) + KEY_SLACK_MS
        self._redis = LoopLocalRedis(url, **redis_options)

    def room_keys(self, room_id: int) -> list[str]:
        base = f"{self.prefix}:p:{int(room_id)}"
        return [f"{base}:conns", f"{base}:users", f"{base}:typing", f"{base}:ver"]

    async def _call(self, lua: str, room_id: int, *args: str) -> list[Any]:
        client, script = self._redis.script(lua)
        return await script(
            keys=self.room_keys(room_id),
            args=[self._ttl_ms, self._typing_ms, self._key_ms, *args],
            client=client,
        )

    async def _run(self, lua: str, room_id: int, *args: str) -> PresenceState:
        version, changed, online, typing = await self._call(lua, room_id, *args)
        return build_state(
            int(room_id), online, typing, version=int(version), changed=bool(changed)
        )

    async def _run_mark(self, lua: str, room_id: int, *args: str) -> PresenceMark:
        version, changed = await self._call(lua, room_id, *args)
        return PresenceMark(room_id=int(room_id), version=int(version), changed=bool(changed))

    async def join(self, room_id: int, conn_id: str, username: str) -> PresenceState:
        return await self._run(_LUA_UPSERT, room_id, conn_id, username)

    async def join_mark(self, room_id: int, conn_id: str, username: str) -> PresenceMark:
        return await self._run_mark(_LUA_UPSERT_MARK, room_id, conn_id, username)

    async def leave_mark(self, room_id: int, conn_id: str) -> PresenceMark:
        return await self._run_mark(_LUA_LEAVE_MARK, room_id, conn_id)

    async def typing_mark(self, room_id: int, username: str, typing: bool) -> PresenceMark:
        return await self._run_mark(_LUA_TYPING_MARK, room_id, username, "1" if typing else "0")

    async def refresh(self, room_id: int, conn_id: str, username: str) -> PresenceState:
        return await self._run(_LUA_UPSERT, room_id, conn_id, username)

    async def refresh_many(self, room_id: int, conns: list[tuple[str, str]]) -> PresenceState:
        args = [part for pair in conns for part in pair]
        return await self._run(_LUA_REFRESH_MANY, room_id, *args)

    async def leave(self, room_id: int, conn_id: str) -> PresenceState:
        return await self._run(_LUA_LEAVE, room_id, conn_id)

    async def set_typing(self, room_id: int, username: str, typing: bool) -> PresenceState:
        return await self._run(_LUA_TYPING, room_id, username, "1" if typing else "0")

    async def state(self, room_id: int) -> PresenceState:
        return await self._run(_LUA_STATE, room_id)

    async def counts(self, room_ids: Iterable[int]) -> dict[int, int]:
        ids = list(dict.fromkeys(int(r) for r in room_ids))
        if not ids:
            return {}
        keys: list[str] = []
        for room_id in ids:
            keys.extend(self.room_keys(room_id)[:2])
        client, script = self._redis.script(_LUA_COUNTS)
        values = await script(keys=keys, args=[], client=client)
        return {room_id: int(n) for room_id, n in zip(ids, values, strict=True)}

    async def clear(self) -> None:
        await delete_matching(self._redis.client(), f"{self.prefix}:p:")

    async def aclose(self) -> None:
        await self._redis.aclose()


# --------------------------------------------------------------------------------------------
# Factory
# --------------------------------------------------------------------------------------------


def _ttls() -> dict[str, float]:
    from django.conf import settings

    return {
        "ttl_seconds": float(getattr(settings, "PRESENCE_TTL_SECONDS", DEFAULT_TTL_SECONDS)),
        "typing_ttl_seconds": float(
            getattr(settings, "TYPING_EXPIRY_SECONDS", DEFAULT_TYPING_TTL_SECONDS)
        ),
    }


_store: ProcessWide[PresenceStore] = ProcessWide(
    "presence",
    on_redis=lambda url, **options: RedisPresenceStore(url, **_ttls(), **options),
    in_memory=lambda: MemoryPresenceStore(**_ttls()),
)


def get_presence_store() -> PresenceStore:
    """The process-wide store: Redis when ``settings.REDIS_URL`` is set, else in memory."""
    return _store.get()


def reset_presence_store() -> None:
    """Forget the process-wide store (tests; after changing settings)."""
    _store.reset()
