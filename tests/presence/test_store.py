"""Presence contract: the same tests against the Redis store and the in-memory store.

Redis runs at ``$REDIS_URL`` (default redis://127.0.0.1:6379/0); every test uses its own random
key prefix and clears it afterwards. Expiry against Redis uses small TTLs and short real sleeps;
the memory store runs on a fake clock.

Nothing here assumes the machine is fast: a record or flag that must still be alive after a sleep
was written with a TTL that outlives the test (by "another process", `Harness.another_process`),
and what must expire is waited for, never expected at an exact moment.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis
from asgiref.sync import async_to_sync
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from presence.store import (
    MemoryPresenceStore,
    Occupant,
    PresenceState,
    PresenceStore,
    RedisPresenceStore,
    get_presence_store,
    reset_presence_store,
)

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
ROOM = 7
OTHER_ROOM = 8


def _redis_reachable() -> bool:
    try:
        client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1, socket_timeout=1)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except redis.RedisError:
        return False


REDIS_UP = _redis_reachable()
needs_redis = pytest.mark.skipif(not REDIS_UP, reason=f"Redis not reachable at {REDIS_URL}")


def new_prefix() -> str:
    return f"test-presence-{uuid.uuid4().hex}"


class FakeClock:
    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class _MemoryProcess(PresenceStore):
    """The memory store belongs to one process; "another process" with other TTLs is the same
    store writing with those TTLs (its operations never await, so the swap is atomic)."""

    def __init__(self, store: MemoryPresenceStore, *, ttl: float, typing_ttl: float) -> None:
        self._store = store
        self.ttl_seconds = ttl
        self.typing_ttl_seconds = typing_ttl

    async def _call(self, name: str, *args: Any) -> Any:
        store = self._store
        saved = store.ttl_seconds, store.typing_ttl_seconds
        store.ttl_seconds, store.typing_ttl_seconds = self.ttl_seconds, self.typing_ttl_seconds
        try:
            return await getattr(store, name)(*args)
        finally:
            store.ttl_seconds, store.typing_ttl_seconds = saved

    async def join(self, room_id: int, conn_id: str, username: str) -> PresenceState:
        return await self._call("join", room_id, conn_id, username)

    async def refresh(self, room_id: int, conn_id: str, username: str) -> PresenceState:
        return await self._call("refresh", room_id, conn_id, username)

    async def refresh_many(self, room_id: int, conns: list[tuple[str, str]]) -> PresenceState:
        return await self._call("refresh_many", room_id, conns)

    async def leave(self, room_id: int, conn_id: str) -> PresenceState:
        return await self._call("leave", room_id, conn_id)

    async def set_typing(self, room_id: int, username: str, typing: bool) -> PresenceState:
        return await self._call("set_typing", room_id, username, typing)

    async def state(self, room_id: int) -> PresenceState:
        return await self._call("state", room_id)

    async def counts(self, room_ids: Any) -> dict[int, int]:
        return await self._call("counts", room_ids)

    async def clear(self) -> None:
        await self._store.clear()


class Harness:
    """Builds stores of one kind and lets time pass for them (real sleep for Redis)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.clock = FakeClock()
        self.prefix = new_prefix()
        self.stores: list[PresenceStore] = []

    def make(self, *, ttl: float = 30, typing_ttl: float = 5) -> PresenceStore:
        store: PresenceStore
        if self.kind == "redis":
            store = RedisPresenceStore(
                REDIS_URL, prefix=self.prefix, ttl_seconds=ttl, typing_ttl_seconds=typing_ttl
            )
        else:
            store = MemoryPresenceStore(
                ttl_seconds=ttl, typing_ttl_seconds=typing_ttl, clock=self.clock
            )
        self.stores.append(store)
        return store

    def another_process(
        self, of: PresenceStore, *, ttl: float = 30, typing_ttl: float = 5
    ) -> PresenceStore:
        """A second process on the presence `of` holds, with TTLs of its own (Redis: a store on
        the same key prefix; memory: `of` writing with these TTLs)."""
        if self.kind == "redis":
            return self.make(ttl=ttl, typing_ttl=typing_ttl)
        assert isinstance(of, MemoryPresenceStore)
        return _MemoryProcess(of, ttl=ttl, typing_ttl=typing_ttl)

    async def until(self, call: Callable[[], Any], done: Callable[[Any], bool], what: str) -> Any:
        """`await call()` every 0.05 s (harness time) until `done` says so, for 10 s at most."""
        for _ in range(200):
            result = await call()
            if done(result):
                return result
            await self.sleep(0.05)
        pytest.fail(f"{what}: not within 10 s; last {result}")

    async def sleep(self, seconds: float) -> None:
        if self.kind == "redis":
            await asyncio.sleep(seconds)
        else:
            self.clock.advance(seconds)

    async def leftovers(self, room_id: int) -> list[str]:
        """What the backend still holds for the room (Redis keys / memory room entries)."""
        if self.kind == "redis":
            client = aioredis.Redis.from_url(REDIS_URL, decode_responses=True)
            try:
                return sorted(await client.keys(f"{self.prefix}:p:{room_id}:*"))
            finally:
                await client.aclose()
        leftovers: list[str] = []
        for store in self.stores:
            assert isinstance(store, MemoryPresenceStore)
            if room_id in store._rooms:
                leftovers.append(f"memory room {room_id}")
        return leftovers

    async def close(self) -> None:
        for store in self.stores:
            await store.clear()
            await store.aclose()


@pytest.fixture(params=["memory", pytest.param("redis", marks=needs_redis)])
async def harness(request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    h = Harness(request.param)
    yield h
    await h.close()


@pytest.fixture
def store(harness: Harness) -> PresenceStore:
    return harness.make()


def names(state: PresenceState) -> list[str]:
    return [o.username for o in state.online]


# --------------------------------------------------------------------------------------------
# Online people
# --------------------------------------------------------------------------------------------


async def test_two_tabs_of_one_person_count_once(store: PresenceStore) -> None:
    first = await store.join(ROOM, "tab-1", "alice")
    assert first.changed
    assert names(first) == ["alice"]

    second = await store.join(ROOM, "tab-2", "alice")
    assert not second.changed  # the room displays the same thing
    assert second.count == 1
    assert second.online == (Occupant("alice", typing=False),)
    assert await store.counts([ROOM]) == {ROOM: 1}


async def test_online_sorted_by_casefolded_username(store: PresenceStore) -> None:
    for conn, user in [("c1", "bob"), ("c2", "Carol"), ("c3", "alice"), ("c4", "Bea")]:
        await store.join(ROOM, conn, user)
    state = await store.state(ROOM)
    assert names(state) == ["alice", "Bea", "bob", "Carol"]
    assert state.as_dict("maths") == {
        "room": "maths",
        "online": [
            {"username": "alice", "typing": False},
            {"username": "Bea", "typing": False},
            {"username": "bob", "typing": False},
            {"username": "Carol", "typing": False},
        ],
        "count": 4,
    }


async def test_closing_one_of_two_tabs_keeps_the_person(store: PresenceStore) -> None:
    await store.join(ROOM, "tab-1", "alice")
    await store.join(ROOM, "tab-2", "alice")
    await store.join(ROOM, "b-1", "bob")

    state = await store.leave(ROOM, "tab-1")
    assert not state.changed
    assert names(state) == ["alice", "bob"]


async def test_closing_the_last_tab_removes_the_person_at_once(
    harness: Harness, store: PresenceStore
) -> None:
    await store.join(ROOM, "tab-1", "alice")
    await store.join(ROOM, "b-1", "bob")

    state = await store.leave(ROOM, "tab-1")
    assert state.changed
    assert names(state) == ["bob"]
    assert (await store.state(ROOM)).online == (Occupant("bob", typing=False),)

    last = await store.leave(ROOM, "b-1")
    assert last.changed
    assert last.online == ()
    assert last.count == 0
    assert await harness.leftovers(ROOM) == []  # no ghost left behind


async def test_a_change_answered_by_its_mark_is_the_same_change(harness: Harness) -> None:
    """A socket's join, leave and typing answer only their mark (version, changed): the same
    change as the calls that read the whole state back, whose state says what it did."""
    store = harness.make()
    joined = await store.join_mark(ROOM, "tab-1", "alice")
    state = await store.state(ROOM)
    assert (joined.room_id, joined.changed) == (ROOM, True)
    assert names(state) == ["alice"] and state.version == joined.version

    second_tab = await store.join_mark(ROOM, "tab-2", "alice")
    assert not second_tab.changed and second_tab.version > joined.version  # stored, not shown
    bob = await store.join_mark(ROOM, "b-1", "bob")
    assert bob.changed and bob.version > second_tab.version

    typing = await store.typing_mark(ROOM, "alice", True)
    state = await store.state(ROOM)
    assert typing.changed and state.version == typing.version
    assert state.typing_usernames() == ("alice",)
    stranger = await store.typing_mark(ROOM, "mallory", True)  # not online: ignored
    assert not stranger.changed and stranger.version == typing.version

    one_tab_left = await store.leave_mark(ROOM, "tab-1")
    assert not one_tab_left.changed  # alice is still online (and typing) in her other tab
    assert (await store.state(ROOM)).typing_usernames() == ("alice",)
    gone = await store.leave_mark(ROOM, "tab-2")
    state = await store.state(ROOM)
    assert gone.changed and names(state) == ["bob"] and state.typing_usernames() == ()
    assert gone.version > one_tab_left.version
    last = await store.leave_mark(ROOM, "b-1")
    assert last.changed and await harness.leftovers(ROOM) == []


async def test_leave_of_unknown_connection_changes_nothing(store: PresenceStore) -> None:
    await store.join(ROOM, "tab-1", "alice")
    state = await store.leave(ROOM, "nope")
    assert not state.changed
    assert names(state) == ["alice"]
    empty = await store.leave(OTHER_ROOM, "nope")
    assert not empty.changed
    assert empty.online == ()


async def test_rooms_are_independent(store: PresenceStore) -> None:
    await store.join(ROOM, "a-1", "alice")
    await store.join(OTHER_ROOM, "b-1", "bob")
    await store.set_typing(ROOM, "alice", True)

    assert names(await store.state(ROOM)) == ["alice"]
    other = await store.state(OTHER_ROOM)
    assert names(other) == ["bob"]
    assert other.typing_usernames() == ()


async def test_heartbeat_of_a_live_record_reports_no_change(store: PresenceStore) -> None:
    joined = await store.join(ROOM, "tab-1", "alice")
    refreshed = await store.refresh(ROOM, "tab-1", "alice")
    assert not refreshed.changed
    assert refreshed.version == joined.version
    assert names(refreshed) == ["alice"]


async def test_heartbeat_of_unknown_connection_recreates_it(store: PresenceStore) -> None:
    state = await store.refresh(ROOM, "tab-1", "alice")
    assert state.changed
    assert names(state) == ["alice"]


# --------------------------------------------------------------------------------------------
# Expiry (a process killed with SIGKILL never says goodbye)
# --------------------------------------------------------------------------------------------


async def test_one_heartbeat_for_many_connections_refreshes_them_all(harness: Harness) -> None:
    """A process refreshes every connection it holds in a room in one call: they all stay, the
    ones it no longer holds expire, and a record Redis lost (a restart) comes back."""
    survivor = harness.make(ttl=30, typing_ttl=5)
    short = harness.another_process(survivor, ttl=1, typing_ttl=5)
    await short.join(ROOM, "alice-1", "alice")
    await short.join(ROOM, "bob-1", "bob")
    await short.join(ROOM, "carol-1", "carol")

    beat = await short.refresh_many(ROOM, [("alice-1", "alice"), ("bob-1", "bob")])
    assert names(beat) == ["alice", "bob", "carol"]
    assert not beat.changed
    # carol's record is not refreshed and expires; the batch keeps alice and bob.
    counts = await harness.until(
        lambda: survivor.counts([ROOM]), lambda c: c == {ROOM: 0}, "the short records expiring"
    )
    assert counts == {ROOM: 0}
    renewed = await survivor.refresh_many(
        ROOM, [("alice-1", "alice"), ("bob-1", "bob"), ("dave-1", "dave")]
    )
    assert names(renewed) == ["alice", "bob", "dave"]  # carol purged, dave (re)created
    assert renewed.changed
    again = await survivor.refresh_many(ROOM, [("alice-1", "alice"), ("bob-1", "bob")])
    assert names(again) == ["alice", "bob", "dave"] and not again.changed


@pytest.mark.parametrize("purger", ["refresh", "state"])
async def test_killed_connection_expires_and_survivor_announces_it(
    harness: Harness, purger: str
) -> None:
    # bob's process survives (its records outlive the test); alice's gives hers a second to live
    # and is killed: no refresh, no leave.
    survivor = harness.make(ttl=30, typing_ttl=5)
    killed = harness.another_process(survivor, ttl=1, typing_ttl=5)
    await killed.join(ROOM, "alice-1", "alice")
    await killed.set_typing(ROOM, "alice", True)
    await survivor.join(ROOM, "bob-1", "bob")

    beat = await survivor.refresh(ROOM, "bob-1", "bob")
    assert not beat.changed
    assert names(beat) == ["alice", "bob"]

    # alice's record goes past its TTL, bob's does not; counts never include expired records
    # (and never purge, so waiting on them announces nothing).
    counts = await harness.until(
        lambda: survivor.counts([ROOM]), lambda c: c == {ROOM: 1}, "alice's record expiring"
    )
    assert counts == {ROOM: 1}

    if purger == "refresh":
        purged = await survivor.refresh(ROOM, "bob-1", "bob")
    else:
        purged = await survivor.state(ROOM)
    assert purged.changed
    assert purged.version > beat.version
    assert purged.online == (Occupant("bob", typing=False),)

    again = await survivor.refresh(ROOM, "bob-1", "bob")
    assert not again.changed  # announced once
    assert again.version == purged.version

    # A late heartbeat of the purged connection brings alice back, without her old typing flag.
    back = await killed.refresh(ROOM, "alice-1", "alice")
    assert back.changed
    assert back.online == (Occupant("alice", typing=False), Occupant("bob", typing=False))


async def test_everything_expired_leaves_no_ghost(harness: Harness) -> None:
    store = harness.make(ttl=1, typing_ttl=0.5)
    await store.join(ROOM, "a-1", "alice")
    await store.join(ROOM, "b-1", "bob")
    await store.set_typing(ROOM, "bob", True)
    before = await store.state(ROOM)

    await harness.sleep(1.1)
    assert await store.counts([ROOM]) == {ROOM: 0}
    state = await store.state(ROOM)
    assert state.changed
    assert state.online == ()
    assert state.version > before.version
    assert await harness.leftovers(ROOM) == []

    quiet = await store.state(ROOM)
    assert not quiet.changed
    assert quiet.version >= state.version


@needs_redis
async def test_redis_keys_of_an_abandoned_room_expire_by_themselves() -> None:
    prefix = new_prefix()
    store = RedisPresenceStore(REDIS_URL, prefix=prefix, ttl_seconds=0.2, typing_ttl_seconds=0.2)
    client = aioredis.Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        await store.join(ROOM, "a-1", "alice")
        await store.set_typing(ROOM, "alice", True)
        keys = await client.keys(f"{prefix}:*")
        assert len(keys) == 4
        for key in keys:
            assert 0 < await client.pttl(key) <= 1200  # every key carries an expiry

        # Nobody calls the store again: the keys go by themselves (1.2 s), and are waited for.
        for _ in range(200):  # every 0.05 s, for 10 s at least
            if not await client.keys(f"{prefix}:*"):
                break
            await asyncio.sleep(0.05)
        assert await client.keys(f"{prefix}:*") == []
    finally:
        await store.clear()
        await store.aclose()
        await client.aclose()


# --------------------------------------------------------------------------------------------
# Typing
# --------------------------------------------------------------------------------------------


async def test_typing_on_and_off(store: PresenceStore) -> None:
    await store.join(ROOM, "a-1", "alice")
    await store.join(ROOM, "b-1", "bob")

    on = await store.set_typing(ROOM, "bob", True)
    assert on.changed
    assert on.typing_usernames() == ("bob",)
    assert on.online == (Occupant("alice", typing=False), Occupant("bob", typing=True))

    again = await store.set_typing(ROOM, "bob", True)  # still typing: nothing to announce
    assert not again.changed
    assert again.version == on.version

    off = await store.set_typing(ROOM, "bob", False)
    assert off.changed
    assert off.typing_usernames() == ()
    assert off.version > on.version

    off_again = await store.set_typing(ROOM, "bob", False)
    assert not off_again.changed


async def test_typing_expires_after_last_signal(harness: Harness) -> None:
    # alice types on a process whose typing expiry is short, and on one whose outlives the test.
    short = harness.make(ttl=30, typing_ttl=0.4)
    lasting = harness.another_process(short, ttl=30, typing_ttl=30)
    await short.join(ROOM, "a-1", "alice")
    await short.set_typing(ROOM, "alice", True)
    extended = await lasting.set_typing(ROOM, "alice", True)  # keeps typing
    assert not extended.changed
    await harness.sleep(0.5)  # the first signal's expiry is past: the later one counts
    still = await short.state(ROOM)
    assert still.typing_usernames() == ("alice",)
    assert not still.changed

    await short.set_typing(ROOM, "alice", True)  # her last signal: typing ends 0.4 s after it
    expired = await harness.until(
        lambda: short.state(ROOM), lambda s: not s.typing_usernames(), "typing expiring"
    )
    assert expired.changed
    assert expired.typing_usernames() == ()
    assert names(expired) == ["alice"]


async def test_typing_of_someone_not_online_is_ignored(store: PresenceStore) -> None:
    await store.join(ROOM, "a-1", "alice")
    state = await store.set_typing(ROOM, "mallory", True)
    assert not state.changed
    assert names(state) == ["alice"]
    assert state.typing_usernames() == ()

    joined = await store.join(ROOM, "m-1", "mallory")
    assert joined.typing_usernames() == ()

    nobody = await store.set_typing(OTHER_ROOM, "mallory", True)
    assert not nobody.changed
    assert nobody.online == ()


async def test_leaving_clears_typing_but_another_tab_keeps_it(
    harness: Harness, store: PresenceStore
) -> None:
    await store.join(ROOM, "a-1", "alice")
    await store.join(ROOM, "a-2", "alice")
    await store.join(ROOM, "b-1", "bob")
    await store.set_typing(ROOM, "alice", True)

    one_tab = await store.leave(ROOM, "a-1")
    assert not one_tab.changed
    assert one_tab.typing_usernames() == ("alice",)

    gone = await store.leave(ROOM, "a-2")
    assert gone.changed
    assert gone.online == (Occupant("bob", typing=False),)

    back = await store.join(ROOM, "a-3", "alice")
    assert back.typing_usernames() == ()

    await store.leave(ROOM, "a-3")
    await store.leave(ROOM, "b-1")
    assert await harness.leftovers(ROOM) == []


# --------------------------------------------------------------------------------------------
# Versions and counts
# --------------------------------------------------------------------------------------------


async def test_version_increases_with_every_change_and_never_decreases(
    store: PresenceStore,
) -> None:
    states: list[PresenceState] = []
    bumping = [
        store.join(ROOM, "a-1", "alice"),  # new person
        store.join(ROOM, "a-2", "alice"),  # new connection of the same person
        store.set_typing(ROOM, "alice", True),
        store.set_typing(ROOM, "alice", False),
        store.leave(ROOM, "a-2"),
        store.leave(ROOM, "a-1"),  # room empty: its keys vanish
        store.join(ROOM, "b-1", "bob"),  # ...and versions still go up
    ]
    for call in bumping:
        state = await call
        if states:
            assert state.version > states[-1].version
        states.append(state)

    for call in [store.refresh(ROOM, "b-1", "bob"), store.state(ROOM), store.leave(ROOM, "zz")]:
        state = await call
        assert state.version == states[-1].version
        assert not state.changed
        states.append(state)

    await store.leave(ROOM, "b-1")
    empty = [await store.state(ROOM), await store.state(ROOM)]
    assert all(s.version >= states[-1].version for s in empty)
    assert empty[1].version >= empty[0].version


async def test_counts_for_several_rooms(store: PresenceStore) -> None:
    await store.join(1, "a-1", "alice")
    await store.join(1, "a-2", "alice")
    await store.join(1, "b-1", "bob")
    await store.join(2, "c-1", "carol")
    await store.join(3, "d-1", "dave")
    await store.leave(3, "d-1")

    assert await store.counts([1, 2, 3, 4]) == {1: 2, 2: 1, 3: 0, 4: 0}
    assert await store.counts([]) == {}
    assert await store.counts(iter([2])) == {2: 1}


async def test_clear_removes_everything(harness: Harness, store: PresenceStore) -> None:
    await store.join(ROOM, "a-1", "alice")
    await store.set_typing(ROOM, "alice", True)
    await store.clear()
    assert (await store.state(ROOM)).online == ()
    assert await harness.leftovers(ROOM) == []


async def test_many_connections_joining_concurrently(store: PresenceStore) -> None:
    users = [f"user{i}" for i in range(20)]
    await asyncio.gather(
        *(store.join(ROOM, f"{u}-{tab}", u) for u in users for tab in range(2)),
    )
    state = await store.state(ROOM)
    assert state.count == 20
    await asyncio.gather(*(store.leave(ROOM, f"{u}-0") for u in users))
    assert (await store.counts([ROOM]))[ROOM] == 20
    results = await asyncio.gather(*(store.leave(ROOM, f"{u}-1") for u in users))
    assert all(r.changed for r in results)  # each last-tab leave is announced
    assert (await store.state(ROOM)).online == ()


# --------------------------------------------------------------------------------------------
# Redis specifics: event loops, other processes
# --------------------------------------------------------------------------------------------


@needs_redis
def test_redis_store_works_from_several_event_loops() -> None:
    store = RedisPresenceStore(REDIS_URL, prefix=new_prefix())

    async def join(conn: str, user: str) -> PresenceState:
        return await store.join(ROOM, conn, user)

    try:
        assert names(asyncio.run(join("a-1", "alice"))) == ["alice"]
        assert names(asyncio.run(join("b-1", "bob"))) == ["alice", "bob"]
        # A sync caller (a Django view) goes through async_to_sync, on a fresh loop.
        assert names(async_to_sync(store.state)(ROOM)) == ["alice", "bob"]

        seen: list[list[str]] = []
        thread = threading.Thread(
            target=lambda: seen.append(names(asyncio.run(store.state(ROOM)))),
        )
        thread.start()
        thread.join()
        assert seen == [["alice", "bob"]]
        # Each loop's client was closed when its loop shut down.
        assert store._redis._entries == {}
    finally:
        asyncio.run(store.clear())


@needs_redis
async def test_two_processes_share_presence() -> None:
    prefix = new_prefix()
    one = RedisPresenceStore(REDIS_URL, prefix=prefix)
    two = RedisPresenceStore(REDIS_URL, prefix=prefix)
    try:
        await one.join(ROOM, "a-1", "alice")
        joined = await two.join(ROOM, "a-2", "alice")
        assert not joined.changed
        assert (await two.leave(ROOM, "a-1")).count == 1
        assert (await one.leave(ROOM, "a-2")).changed
    finally:
        await one.clear()
        await one.aclose()
        await two.aclose()


# --------------------------------------------------------------------------------------------
# Factory
# --------------------------------------------------------------------------------------------


def test_factory_reads_settings_lazily(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = SimpleNamespace(
        REDIS_URL=None,
        REDIS_KEY_PREFIX="x",
        PRESENCE_TTL_SECONDS=12,
        TYPING_EXPIRY_SECONDS=3,
    )
    monkeypatch.setattr("django.conf.settings", fake)
    reset_presence_store()
    try:
        memory = get_presence_store()
        assert isinstance(memory, MemoryPresenceStore)
        assert (memory.ttl_seconds, memory.typing_ttl_seconds) == (12, 3)
        assert get_presence_store() is memory

        fake.REDIS_URL = REDIS_URL
        assert get_presence_store() is memory  # cached until reset
        reset_presence_store()
        shared = get_presence_store()
        assert isinstance(shared, RedisPresenceStore)
        assert shared.prefix == "x"
    finally:
        reset_presence_store()


def test_importing_the_stores_does_not_import_django() -> None:
    code = (
        "import sys, presence.store, rooms.throttle; "
        "sys.exit(any(m == 'django' or m.startswith('django.') for m in sys.modules))"
    )
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run([sys.executable, "-c", code], cwd=root, check=False)
    assert result.returncode == 0


# --------------------------------------------------------------------------------------------
# Random sequences: memory store against a simple model; Redis against memory
# --------------------------------------------------------------------------------------------

ROOMS = st.sampled_from([1, 2])
CONNS = st.sampled_from(["c1", "c2", "c3", "c4"])
USERS = st.sampled_from(["ann", "Bob", "cy"])


class PresenceModel:
    """What a room should display, from the rules in words."""

    def __init__(self, ttl: float, typing_ttl: float) -> None:
        self.ttl = ttl
        self.typing_ttl = typing_ttl
        self.conns: dict[tuple[int, str], tuple[str, float]] = {}
        self.typing: dict[tuple[int, str], float] = {}
        self.shown: dict[int, tuple[frozenset[str], frozenset[str]]] = {}

    def online(self, room: int, now: float) -> set[str]:
        return {u for (r, _), (u, exp) in self.conns.items() if r == room and exp > now}

    def call(self, room: int, now: float, op: Callable[[], None], keep: str | None = None) -> Any:
        # Expired records and typing flags are gone at every call (except a refreshed record).
        for key, (_, exp) in list(self.conns.items()):
            if key[0] == room and exp <= now and key[1] != keep:
                del self.conns[key]
        for key, exp in list(self.typing.items()):
            if key[0] == room and exp <= now:
                del self.typing[key]
        op()
        online = {u for (r, _), (u, _) in self.conns.items() if r == room}
        for key in list(self.typing):  # only online people are typing
            if key[0] == room and key[1] not in online:
                del self.typing[key]
        typing = {u for (r, u) in self.typing if r == room}
        shown = (frozenset(online), frozenset(typing))
        changed = shown != self.shown.get(room, (frozenset(), frozenset()))
        self.shown[room] = shown
        return shown, changed


class MemoryStoreMachine(RuleBasedStateMachine):
    """The memory store (fake clock) must display what the model displays, call after call."""

    @initialize()
    def setup(self) -> None:
        self.clock = FakeClock()
        self.store = MemoryPresenceStore(ttl_seconds=3, typing_ttl_seconds=1, clock=self.clock)
        self.model = PresenceModel(ttl=3, typing_ttl=1)
        self.versions: dict[int, int] = {}

    def check(self, state: PresenceState, expected: tuple[Any, bool]) -> None:
        (online, typing), changed = expected
        assert {o.username for o in state.online} == online
        assert set(state.typing_usernames()) == typing
        assert state.changed == changed
        assert state.count == len(online)
        previous = self.versions.get(state.room_id, 0)
        assert state.version >= previous
        if changed:
            assert state.version > previous
        self.versions[state.room_id] = state.version

    def run(self, coro: Any) -> Any:
        return asyncio.run(coro)

    @rule(room=ROOMS, conn=CONNS, user=USERS, heartbeat=st.booleans())
    def join_or_refresh(self, room: int, conn: str, user: str, heartbeat: bool) -> None:
        now = self.clock()

        def op() -> None:
            self.model.conns[(room, conn)] = (user, now + self.model.ttl)

        expected = self.model.call(room, now, op, keep=conn)
        method = self.store.refresh if heartbeat else self.store.join
        self.check(self.run(method(room, conn, user)), expected)

    @rule(room=ROOMS, conn=CONNS)
    def leave(self, room: int, conn: str) -> None:
        expected = self.model.call(
            room, self.clock(), lambda: self.model.conns.pop((room, conn), None)
        )
        self.check(self.run(self.store.leave(room, conn)), expected)

    @rule(room=ROOMS, user=USERS, typing=st.booleans())
    def set_typing(self, room: int, user: str, typing: bool) -> None:
        now = self.clock()

        def op() -> None:
            if not typing:
                self.model.typing.pop((room, user), None)
            elif user in self.model.online(room, now):
                self.model.typing[(room, user)] = now + self.model.typing_ttl

        expected = self.model.call(room, now, op)
        self.check(self.run(self.store.set_typing(room, user, typing)), expected)

    @rule(room=ROOMS)
    def state(self, room: int) -> None:
        expected = self.model.call(room, self.clock(), lambda: None)
        self.check(self.run(self.store.state(room)), expected)

    @rule(seconds=st.sampled_from([0.3, 0.9, 1.0, 2.5, 3.0]))
    def time_passes(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @invariant()
    def counts_match(self) -> None:
        if not hasattr(self, "store"):
            return
        now = self.clock()
        expected = {room: len(self.model.online(room, now)) for room in (1, 2)}
        assert self.run(self.store.counts([1, 2])) == expected


MemoryStoreMachine.TestCase.settings = settings(
    max_examples=60, stateful_step_count=30, deadline=None
)
TestMemoryStoreAgainstModel = MemoryStoreMachine.TestCase


OPS = st.lists(
    st.one_of(
        st.tuples(st.just("join"), ROOMS, CONNS, USERS),
        st.tuples(st.just("refresh"), ROOMS, CONNS, USERS),
        st.tuples(st.just("leave"), ROOMS, CONNS),
        st.tuples(st.just("typing"), ROOMS, USERS, st.booleans()),
        st.tuples(st.just("state"), ROOMS),
    ),
    max_size=25,
)


async def _apply(store: PresenceStore, op: tuple[Any, ...]) -> PresenceState:
    kind, room, *args = op
    if kind == "join":
        return await store.join(room, *args)
    if kind == "refresh":
        return await store.refresh(room, *args)
    if kind == "leave":
        return await store.leave(room, *args)
    if kind == "typing":
        return await store.set_typing(room, *args)
    return await store.state(room)


@needs_redis
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=OPS)
def test_redis_store_displays_what_memory_store_displays(ops: list[tuple[Any, ...]]) -> None:
    async def compare() -> None:
        redis_store = RedisPresenceStore(REDIS_URL, prefix=new_prefix())
        memory_store = MemoryPresenceStore()
        try:
            last: dict[tuple[str, int], int] = {}
            for op in ops:
                got = await _apply(redis_store, op)
                want = await _apply(memory_store, op)
                assert (got.online, got.changed) == (want.online, want.changed), op
                for name, state in (("redis", got), ("memory", want)):
                    assert state.version >= last.get((name, state.room_id), 0)
                    last[(name, state.room_id)] = state.version
            assert await redis_store.counts([1, 2]) == await memory_store.counts([1, 2])
        finally:
            await redis_store.clear()
            await redis_store.aclose()

    asyncio.run(compare())
