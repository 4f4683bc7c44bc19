"""Redis through Sentinel: the pools ask the Sentinels where the master is, and a failover (the
master killed mid-stream) loses and doubles nothing.

A Redis set runs on spare ports, in a temporary directory: a master, a replica of it and three
Sentinels (the same redis-server binary in sentinel mode). The failover test has a set of its own,
quick to decide (a master silent for 1 s is down); the others share one that never fails over.
Every process is killed when its tests end.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis
from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import connections
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from project.cache import SentinelRedisCache
from realtime.layer import BoundedRedisChannelLayer
from realtime.redis import (
    BoundedPool,
    BoundedSentinelPool,
    LoopLocalRedis,
    bounded_pool,
    parse_sentinels,
    redis_pool_options,
    sentinel_options,
    sentinel_url,
)
from tests.factories import MembershipFactory
from tests.live import ServerProcess, free_port, join

REDIS_SERVER = shutil.which("redis-server")
pytestmark = pytest.mark.skipif(
    not REDIS_SERVER, reason="redis-server is missing (tests/services.py installs it)"
)

MASTER = "calcrooms"
# "Eventually", for what must happen: many times what it takes.
DEADLINE = 30


@dataclass
class RedisSet:
    """A master, its replica and three Sentinels watching them, as child processes."""

    directory: Path
    # How long the master must be silent for the Sentinels to call it down: short for the test
    # that kills it, long for the others (a busy machine must not fail over under them).
    down_after_ms: int = 1000
    master_port: int = field(default_factory=free_port)
    replica_port: int = field(default_factory=free_port)
    sentinel_ports: list[int] = field(default_factory=lambda: [free_port() for _ in range(3)])
    processes: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def sentinels(self) -> str:
        """The REDIS_SENTINELS setting for this set."""
        return ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)

    def _spawn(self, port: int, *args: str) -> None:
        assert REDIS_SERVER
        self.processes[port] = subprocess.Popen(
            [REDIS_SERVER, *args],
            cwd=self.directory,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def _server(self, port: int, *extra: str) -> None:
        self._spawn(
            port,
            *("--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"),
            *("--dir", str(self.directory), "--logfile", f"redis-{port}.log"),
            *extra,
        )

    def _sentinel(self, port: int) -> None:
        config = self.directory / f"sentinel-{port}.conf"  # Sentinel rewrites its own config
        config.write_text(
            f"port {port}\n"
            "bind 127.0.0.1\n"
            f"dir {self.directory}\n"
            f"logfile sentinel-{port}.log\n"
            f"sentinel monitor {MASTER} 127.0.0.1 {self.master_port} 2\n"
            f"sentinel down-after-milliseconds {MASTER} {self.down_after_ms}\n"
            f"sentinel failover-timeout {MASTER} 10000\n"
            f"sentinel parallel-syncs {MASTER} 1\n"
        )
        self._spawn(port, str(config), "--sentinel")

    def start(self) -> RedisSet:
        self._server(self.master_port)
        self._server(self.replica_port, "--replicaof", "127.0.0.1", str(self.master_port))
        for port in self.sentinel_ports:
            self._sentinel(port)
        self.until(self._ready, "the replica in sync and every Sentinel seeing the others")
        return self

    def _ready(self) -> bool:
        info = self.client(self.replica_port).info("replication")
        if info.get("master_link_status") != "up":
            return False
        for port in self.sentinel_ports:
            state = self.client(port).sentinel_master(MASTER)
            if state["num-slaves"] < 1 or state["num-other-sentinels"] < 2:
                return False
        return True

    def until(self, condition: Any, what: str) -> None:
        deadline = time.monotonic() + DEADLINE
        while time.monotonic() < deadline:
            try:
                if condition():
                    return
            except redis.RedisError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"not within {DEADLINE}s: {what}")

    def client(self, port: int) -> redis.Redis:
        return redis.Redis(port=port, socket_timeout=5, decode_responses=True)

    def named_master(self) -> tuple[str, int]:
        """The master the first Sentinel names now."""
        host, port = self.client(self.sentinel_ports[0]).sentinel_get_master_addr_by_name(MASTER)
        return host, int(port)

    def kill(self, port: int) -> None:
        process = self.processes[port]
        process.kill()  # SIGKILL: no goodbye to its clients, no handover
        process.wait(10)

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.kill()
                process.wait(10)


@pytest.fixture
def redis_set(tmp_path: Path) -> Iterator[RedisSet]:
    """A set of its own, for the test that kills its master."""
    started = RedisSet(tmp_path)
    try:
        yield started.start()
    finally:
        started.stop()


@pytest.fixture(scope="module")
def shared_set(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisSet]:
    """One set for the tests that leave its master alone (a set takes seconds to settle)."""
    started = RedisSet(tmp_path_factory.mktemp("redis-set"), down_after_ms=60_000)
    try:
        yield started.start()
    finally:
        started.stop()


def names_on(client: redis.Redis, name: str) -> int:
    """Connections the server holds from clients named `name`."""
    return sum(1 for entry in client.client_list() if entry["name"] == name)


async def eventually_named(client: redis.Redis, name: str, count: int) -> None:
    """The server sees a closed connection go a moment after it is closed: wait for it."""
    deadline = time.monotonic() + DEADLINE
    while (seen := names_on(client, name)) != count:
        assert time.monotonic() < deadline, f"{seen} connections named {name}, not {count}"
        await asyncio.sleep(0.05)


def sentinel_settings(redis_set: RedisSet, **more: Any) -> SimpleNamespace:
    return SimpleNamespace(
        REDIS_SENTINELS=redis_set.sentinels, REDIS_SENTINEL_MASTER=MASTER, **more
    )


# --- The settings --------------------------------------------------------------------------------

ROOT = Path(__file__).resolve().parents[2]
_SHOW_SETTINGS = (
    "import project.settings as s; "
    "print(s.REDIS_URL, s.REDIS_CONFIGURED, s.CHANNEL_LAYERS['default']['CONFIG']['hosts'][0], "
    "s.CACHES['default'])"
)


def _settings_with(**env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "REDIS_"))}
    return subprocess.run(
        [sys.executable, "-c", _SHOW_SETTINGS],
        cwd=ROOT,
        env={**clean, "DJANGO_DEBUG": "1", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_sentinels_alone_configure_redis_for_the_layer_and_the_cache():
    done = _settings_with(REDIS_SENTINELS="10.0.0.1:26379, 10.0.0.2:26380", REDIS_SENTINEL_DB="2")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("redis+sentinel://10.0.0.1:26379,10.0.0.2:26380/mymaster/2 True")
    assert "'sentinels': [('10.0.0.1', 26379), ('10.0.0.2', 26380)]" in done.stdout
    assert "'service_name': 'mymaster'" in done.stdout
    assert "'socket_timeout': None" in done.stdout  # the layer's idle receives still wait
    assert "project.cache.SentinelRedisCache" in done.stdout
    assert "serves ONE process only" not in done.stderr


def test_sentinel_addresses_are_read_as_written():
    written = " 10.0.0.1:26379 ,[::1]:26380,sentinel.example:26381,"
    pairs = parse_sentinels(written)
    assert pairs == [("10.0.0.1", 26379), ("::1", 26380), ("sentinel.example", 26381)]
    options = sentinel_options(written, master="m", password="secret", db=3)
    assert sentinel_url(options) == (
        "redis+sentinel://10.0.0.1:26379,[::1]:26380,sentinel.example:26381/m/3"
    )  # no password in it: the URL is printed in logs and tests
    assert sentinel_options("") == {}
    for wrong in ("10.0.0.1", "10.0.0.1:", "10.0.0.1:port", ":26379", "10.0.0.1:70000"):
        with pytest.raises(ValueError, match="a Sentinel is host:port"):
            parse_sentinels(wrong)


def test_sentinels_and_a_redis_url_together_refuse_to_start():
    done = _settings_with(REDIS_SENTINELS="10.0.0.1:26379", REDIS_URL="redis://10.0.0.9:6379/0")
    assert done.returncode != 0
    assert "Set REDIS_URL or REDIS_SENTINELS, not both" in done.stderr


def test_a_sentinel_without_a_port_refuses_to_start():
    done = _settings_with(REDIS_SENTINELS="10.0.0.1")
    assert done.returncode != 0
    assert "REDIS_SENTINELS: a Sentinel is host:port, not '10.0.0.1'" in done.stderr


# --- The pools ------------------------------------------------------------------------------------


async def test_pool_options_with_sentinels_give_a_bounded_pool_on_the_master(shared_set):
    fake = sentinel_settings(
        shared_set,
        REDIS_MAX_CONNECTIONS=2,
        REDIS_MAX_IDLE_CONNECTIONS=1,
        REDIS_POOL_TIMEOUT_SECONDS=0.5,
    )
    options = redis_pool_options(fake, name="sentinel-pool-test")
    assert options["sentinels"] == [("127.0.0.1", port) for port in shared_set.sentinel_ports]
    assert options["service_name"] == MASTER
    pool = bounded_pool(sentinel_url(options), **options)
    assert isinstance(pool, BoundedSentinelPool)
    assert isinstance(pool, BoundedPool)
    client = aioredis.Redis.from_pool(pool)
    master = shared_set.client(shared_set.master_port)
    try:
        await client.set("where", "on the master")
        assert master.get("where") == "on the master"

        # Bounded: with both connections in use the next caller waits (0.5 s here), then fails...
        one = await pool.get_connection()
        two = await pool.get_connection()
        with pytest.raises(redis.ConnectionError, match="No connection available"):
            await pool.get_connection()
        # ...and a caller that waits gets the one given back.
        waiting = asyncio.create_task(pool.get_connection())
        await pool.release(one)
        assert await asyncio.wait_for(waiting, DEADLINE) is one
        assert names_on(master, "sentinel-pool-test") == 2

        # Trimmed: given back, they are closed down to the one idle connection allowed.
        await pool.release(one)
        await pool.release(two)
        await eventually_named(master, "sentinel-pool-test", 1)
    finally:
        await client.aclose()
    await eventually_named(master, "sentinel-pool-test", 0)
    for port in shared_set.sentinel_ports:  # its connections to the Sentinels are closed too
        await eventually_named(shared_set.client(port), "sentinel-pool-test:sentinel", 0)


async def test_a_burst_of_new_connections_asks_the_sentinels_one_question_at_a_time(shared_set):
    options = {
        **sentinel_options(shared_set.sentinels, master=MASTER),
        "client_name": "sentinel-burst-test",
        "max_idle": 40,  # keep them, to count them
    }
    client = aioredis.Redis.from_pool(bounded_pool(None, **options))
    master = shared_set.client(shared_set.master_port)
    try:
        assert all(await asyncio.gather(*(client.ping() for _ in range(40))))
        assert names_on(master, "sentinel-burst-test") == 40  # a connection each, at once
        # ...but one connection to a Sentinel (the first that answered), not one per connection.
        asked = [
            names_on(shared_set.client(port), "sentinel-burst-test:sentinel")
            for port in shared_set.sentinel_ports
        ]
        assert sum(asked) == 1, asked
    finally:
        await client.aclose()


async def test_presence_and_layer_clients_reach_the_master_through_the_sentinels(shared_set):
    options = sentinel_options(shared_set.sentinels, master=MASTER)
    master = shared_set.client(shared_set.master_port)

    # What presence and the throttles hold: one client per event loop; a Sentinel that is down
    # (nothing listens on its port) is skipped for the next.
    down = f"127.0.0.1:{free_port()}"
    loop_local = LoopLocalRedis(
        None,  # type: ignore[arg-type]
        **sentinel_options(f"{down},{shared_set.sentinels}", master=MASTER),
    )
    try:
        await loop_local.client().set("presence-test", "here")
        assert master.get("presence-test") == "here"
    finally:
        await loop_local.aclose()

    # The channel layer, with the hosts the settings give it.
    layer = BoundedRedisChannelLayer(
        hosts=[{"address": sentinel_url(options), "socket_timeout": None, **options}],
        prefix=f"sentinel-test-{uuid.uuid4().hex[:8]}",
    )
    try:
        channel = await layer.new_channel()
        await layer.send(channel, {"type": "hello"})
        assert await asyncio.wait_for(layer.receive(channel), DEADLINE) == {"type": "hello"}
    finally:
        await layer.flush()


class _PointingManager:
    """Stands in for the Sentinels: names whichever server the test says is the master."""

    def __init__(self, port: int) -> None:
        self.address = ("127.0.0.1", port)
        self.sentinels: list[Any] = []

    async def discover_master(self, service_name: str) -> tuple[str, int]:
        return self.address


async def test_a_demoted_master_answering_readonly_is_left_for_the_new_master(shared_set):
    # The pool first reaches the replica as if it were the master: what a pool holds after its
    # master was demoted (and before its connections were closed).
    # It does not ask again before the write (the write comes within its master check interval).
    manager = _PointingManager(shared_set.replica_port)
    pool = BoundedSentinelPool(
        MASTER,
        manager,  # type: ignore[arg-type]
        max_connections=2,
        timeout=5,
        master_check_seconds=3600,
    )
    client = aioredis.Redis.from_pool(pool)
    try:
        assert await client.ping()
        manager.address = ("127.0.0.1", shared_set.master_port)  # the Sentinels name the other

        # The write meets the pooled connection to the replica, which answers READONLY: the
        # connection is dropped and the write goes to the master, with no error to the caller.
        await client.set("after-failover", "stored")
        assert shared_set.client(shared_set.master_port).get("after-failover") == "stored"
        assert await client.get("after-failover") == b"stored"
    finally:
        await client.aclose()


async def test_after_a_failover_pooled_connections_to_the_old_master_are_not_used(redis_set):
    old = redis_set.client(redis_set.master_port)
    new = redis_set.client(redis_set.replica_port)
    options = {
        **sentinel_options(redis_set.sentinels, master=MASTER),
        "client_name": "failover-test",
        # Ask the Sentinels before every use (by default at most once a second).
        "master_check_seconds": 0,
    }
    client = aioredis.Redis.from_pool(bounded_pool(None, **options))
    cache = SentinelRedisCache(
        sentinel_url(options),
        {
            "OPTIONS": {**sentinel_options(redis_set.sentinels, master=MASTER), **options},
            "KEY_PREFIX": "failover-cache",
        },
    )
    try:
        # Pooled connections to the master, idle.
        await asyncio.gather(*(client.set(f"before-{i}", "old") for i in range(3)))
        await asyncio.to_thread(cache.set, "attempts", 1)
        assert names_on(old, "failover-test") >= 2

        # The master is replaced while it is still up (still taking writes until the Sentinels
        # turn it into a replica).
        # (A Sentinel that has not yet judged the replica fit answers NOGOODSLAVE: ask again.)
        sentinel = redis_set.client(redis_set.sentinel_ports[0])
        redis_set.until(lambda: sentinel.sentinel_failover(MASTER), "a failover accepted")

        def every_sentinel_names_the_replica() -> bool:
            return all(
                int(redis_set.client(port).sentinel_get_master_addr_by_name(MASTER)[1])
                == redis_set.replica_port
                for port in redis_set.sentinel_ports
            )

        redis_set.until(every_sentinel_names_the_replica, "every Sentinel naming the replica")

        # No error, and every write on the new master; nothing of the pool left on the old one.
        for i in range(5):
            await client.set(f"after-{i}", "new")
        assert [new.get(f"after-{i}") for i in range(5)] == ["new"] * 5
        await asyncio.to_thread(cache.set, "attempts", 2)
        assert await asyncio.to_thread(cache.get, "attempts") == 2
        assert len(new.keys("failover-cache*")) == 1
        await eventually_named(old, "failover-test", 0)
    finally:
        await client.aclose()


def test_django_cache_goes_through_the_sentinels(shared_set):
    options = sentinel_options(shared_set.sentinels, master=MASTER)
    cache = SentinelRedisCache(
        sentinel_url(options), {"OPTIONS": dict(options), "KEY_PREFIX": "sentinel-cache-test"}
    )
    cache.set("attempts", 3, timeout=60)
    assert cache.get("attempts") == 3
    stored = [key for key in shared_set.client(shared_set.master_port).keys("sentinel-cache-test*")]
    assert len(stored) == 1


# --- A failover under a live room ---------------------------------------------------------------


@dataclass
class Person:
    """One person's socket streaming submissions, reconnecting whenever it has to."""

    user: Any
    sent: list[str] = field(default_factory=list)  # client_ids, each once
    acknowledged: set[str] = field(default_factory=set)
    reconnects: int = 0
    # When (monotonic) this socket last had its own submission stored and saw someone else's.
    last_own: float = 0.0
    last_other: float = 0.0
    errors: Counter[str] = field(default_factory=Counter)
    closes: Counter[Any] = field(default_factory=Counter)

    async def stream(self, server: ServerProcess, stop: asyncio.Event) -> None:
        pending: str | None = None
        while not stop.is_set():
            try:
                ws = await join(server, self.user)
            except (OSError, InvalidHandshake, TimeoutError):
                await asyncio.sleep(0.5)
                continue
            self.reconnects += 1
            try:
                while not stop.is_set():
                    if pending is None:
                        pending = str(uuid.uuid4())
                        self.sent.append(pending)
                    expression = f"{len(self.sent)} + 0"
                    await ws.send(
                        {"type": "expression", "expression": expression, "client_id": pending}
                    )
                    if await self._answer(ws, pending):
                        self.acknowledged.add(pending)
                        pending = None
                        await asyncio.sleep(0.2)
                    else:
                        await asyncio.sleep(0.5)  # refused for now: the same client_id again
            except ConnectionClosed as closed:
                self.closes[closed.rcvd.code if closed.rcvd else None] += 1
            except TimeoutError:
                self.closes["no answer"] += 1
            finally:
                await ws.close()

    async def _answer(self, ws: Any, client_id: str) -> bool:
        """True once `client_id` is stored, False when refused; raises TimeoutError when the
        socket says nothing of it for 5 s."""
        async with asyncio.timeout(5):
            while True:
                frame = json.loads(await ws.ws.recv())
                if frame["type"] == "entry":
                    entry = frame["entry"]
                    if entry["author"] != self.user.username:
                        self.last_other = time.monotonic()
                    elif entry["client_id"] == client_id:
                        self.last_own = time.monotonic()
                        return True
                elif frame["type"] == "error" and frame.get("client_id") == client_id:
                    self.errors[frame["code"]] += 1
                    return False


def _cookie(user: Any) -> str:
    from tests.conftest import session_cookie

    try:
        return session_cookie(user)
    finally:
        connections.close_all()


def _get_json(url: str, cookie: str) -> dict[str, Any]:
    request = urllib.request.Request(
        url,
        headers={
            "Cookie": f"{settings.SESSION_COOKIE_NAME}={cookie}",
            "Accept": "application/json",
        },
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def _stored_entries(server: ServerProcess, cookie: str) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = []
    while True:
        after = entries[-1]["seq"] if entries else 0
        page = _get_json(f"{server.url}/rooms/lobby/entries/?after={after}&limit=500", cookie)
        entries += page["entries"]
        if not page["has_more"]:
            return entries


async def _until(condition: Any, what: str, people: list[Person]) -> None:
    """Wait for `condition()` (a bool, or an awaitable of one), failing after DEADLINE."""
    deadline = time.monotonic() + DEADLINE
    while True:
        done = condition()
        if asyncio.iscoroutine(done):
            done = await done
        if done:
            return
        if time.monotonic() > deadline:
            state = {
                p.user.username: (len(p.acknowledged), dict(p.errors), dict(p.closes))
                for p in people
            }
            pytest.fail(f"not within {DEADLINE}s: {what}; (stored, refusals, ends): {state}")
        await asyncio.sleep(0.1)


@pytest.mark.django_db(transaction=True)
async def test_killing_the_master_mid_stream_loses_and_doubles_nothing(
    redis_set, lobby, alice, bob, carol
):
    await sync_to_async(MembershipFactory)(room=lobby, user=carol)
    server = ServerProcess(
        env={
            "REDIS_URL": "",
            "REDIS_SENTINELS": redis_set.sentinels,
            "REDIS_SENTINEL_MASTER": MASTER,
            "PRESENCE_TTL_SECONDS": "6",
            "PRESENCE_HEARTBEAT_SECONDS": "2",
            # The stream, its resends and its reconnects are not what is tested here: no limit
            # may refuse them.
            "EXPRESSION_BUCKET_CAPACITY": "1000",
            "EXPRESSION_BUCKET_REFILL_PER_SECOND": "1000",
            "WS_ABUSE_LIMIT": "100000",
            "WS_MAX_SOCKETS_PER_USER": "1000",
        }
    )
    people = [Person(alice), Person(bob), Person(carol)]
    stop = asyncio.Event()
    streams: list[asyncio.Task[None]] = []
    try:
        await asyncio.to_thread(server.start)
        streams = [asyncio.create_task(person.stream(server, stop)) for person in people]

        # Streaming and live on the first master...
        await _until(
            lambda: all(len(p.acknowledged) >= 5 and p.last_other for p in people),
            "everyone streaming before the failover",
            people,
        )

        # ...which dies mid-stream. The failover is when the Sentinels name the replica.
        assert redis_set.named_master() == ("127.0.0.1", redis_set.master_port)
        killed_at = time.monotonic()
        redis_set.kill(redis_set.master_port)

        async def replica_named() -> bool:
            named = await asyncio.to_thread(redis_set.named_master)
            return named[1] == redis_set.replica_port

        await _until(replica_named, "the Sentinels naming the replica", people)
        failover_at = time.monotonic()

        # Every socket live again: its own submission stored and someone else's seen live, both
        # after the failover.
        await _until(
            lambda: all(min(p.last_own, p.last_other) > failover_at for p in people),
            "everyone live again after the failover",
            people,
        )
        live_again = {p.user.username: max(p.last_own, p.last_other) - failover_at for p in people}

        # Presence right again, with everyone still streaming: each of them listed once.
        cookie = await sync_to_async(_cookie)(alice)
        want = sorted(p.user.username for p in people)
        presence: dict[str, Any] = {}

        async def presence_right() -> bool:
            nonlocal presence
            presence = await asyncio.to_thread(
                _get_json, f"{server.url}/rooms/lobby/presence/", cookie
            )
            return sorted(person["username"] for person in presence["online"]) == want

        await _until(presence_right, "presence listing everyone", people)
        presence_at = time.monotonic()
        assert presence["count"] == len(people)

        # A little more streaming on the new master, then a quiet end.
        counts = {p.user.username: len(p.acknowledged) for p in people}
        await _until(
            lambda: all(len(p.acknowledged) >= counts[p.user.username] + 3 for p in people),
            "streaming on the new master",
            people,
        )
        stop.set()
        await asyncio.wait_for(asyncio.gather(*streams), DEADLINE)

        entries = await asyncio.to_thread(_stored_entries, server, cookie)
        ours = {cid for p in people for cid in p.sent}
        stored = Counter(e["client_id"] for e in entries if e["client_id"] in ours)
        acknowledged = {cid for p in people for cid in p.acknowledged}
        lost = acknowledged - set(stored)
        doubled = [cid for cid, times in stored.items() if times > 1]
        print(
            f"\nmaster killed; Sentinels named the replica {failover_at - killed_at:.1f}s later"
            f"\nacknowledged={len(acknowledged)} stored={sum(stored.values())} "
            f"lost={len(lost)} doubled={len(doubled)}"
            "\nlive again after the failover: "
            + ", ".join(f"{name} {seconds:.1f}s" for name, seconds in live_again.items())
            + f"\npresence right {presence_at - failover_at:.1f}s after the failover\n"
            + "\n".join(
                f"{p.user.username}: sockets opened {p.reconnects}, refusals {dict(p.errors)}, "
                f"ends {dict(p.closes)}"
                for p in people
            )
        )
        assert not lost
        assert not doubled
        assert [e["seq"] for e in entries] == list(range(1, len(entries) + 1))
        assert all(seconds < 15 for seconds in live_again.values()), live_again

    finally:
        stop.set()
        for task in streams:
            task.cancel()
        await asyncio.gather(*streams, return_exceptions=True)
        server.stop()
        print(f"server log: {server.log_path}")
