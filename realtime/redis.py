"""Redis connections: bounded pools that wait instead of failing, one client per event loop.

redis-py's default pool raises once it holds ``max_connections``, and keeps every connection it
ever opened. A burst (a thousand sockets closing at once) then either fails half its work or leaves
the process holding a thousand idle connections, and with them a thousand file descriptors. The
pool here waits for a free connection instead, and closes idle ones past a small number as they
come back, so after a burst the process returns to its resting handful.

With Sentinel (``sentinels`` and ``service_name`` among the options, see `sentinel_options`) the
same pool asks the Sentinels where the master is before each new connection (and, at most once a
second, before handing out a pooled one), drops connections to an address that is no longer the
master, and takes a demoted master's READONLY answer for a broken connection: the command is sent
again to the master the Sentinels name now.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

import redis
import redis.asyncio as aioredis
from redis.asyncio.connection import Connection
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool, SentinelManagedConnection
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ReadOnlyError
from redis.exceptions import TimeoutError as RedisTimeoutError

logger = logging.getLogger(__name__)

DEFAULT_MAX_CONNECTIONS = 50
DEFAULT_MAX_IDLE = 4
# Idle connections past max_idle that no command took for this long are closed.
DEFAULT_IDLE_SECONDS = 2.0
DEFAULT_WAIT_SECONDS = 20.0
DEFAULT_SENTINEL_MASTER = "mymaster"
# A Sentinel that does not answer within this is skipped for the next one.
SENTINEL_TIMEOUT_SECONDS = 2.0
# A command that met a demoted master is sent again this often (after 0.05 s, 0.1 s, 0.2 s...).
DEMOTED_MASTER_RETRIES = 5
# A pool asks the Sentinels where the master is at most this often before it hands out a pooled
# connection, so that a connection to a master that was replaced, but is still up and still takes
# writes until the Sentinels demote it, is not used for more than about this long.
MASTER_CHECK_SECONDS = 1.0


class BoundedPool(aioredis.BlockingConnectionPool):
    """A blocking pool (waits up to ``timeout`` for a free connection) that keeps at most
    ``max_idle`` idle connections open once the load that needed more has passed.

    The extra idle connections close ``idle_seconds`` after there were more than ``max_idle``,
    and only those that stayed unused all that time: the pool hands out its most recently used
    connection first, so the ones at the bottom of its stack that no command took in the window
    are the ones a steady load does not need. Closing them as soon as they came back instead
    made a steady load of a few concurrent commands open and close a connection for most of them
    (bench/live.py's throughput phase: a third of the process's Redis time in connecting).
    """

    def __init__(
        self,
        *,
        max_idle: int = DEFAULT_MAX_IDLE,
        idle_seconds: float = DEFAULT_IDLE_SECONDS,
        **kwargs: Any,
    ) -> None:
        # redis-py reads its own version from the package metadata for every new connection
        # unless it is given; the metadata parse cost more than the connect.
        kwargs.setdefault("lib_version", redis.__version__)
        super().__init__(**kwargs)
        self.max_idle = max_idle
        self.idle_seconds = idle_seconds
        self._untouched = 0  # idle connections at the stack's bottom no command took since
        self._reaper: asyncio.TimerHandle | None = None

    async def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        connection = await super().get_connection(*args, **kwargs)
        self._untouched = min(self._untouched, len(self._available_connections))
        return connection

    async def release(self, connection: Any) -> None:
        await super().release(connection)
        if len(self._available_connections) > self.max_idle and self._reaper is None:
            self._untouched = len(self._available_connections)
            self._reaper = asyncio.get_running_loop().call_later(self.idle_seconds, self._reap)

    def _reap(self) -> None:
        self._reaper = None
        extra = min(self._untouched, len(self._available_connections) - self.max_idle)
        if extra > 0:
            closing = self._available_connections[:extra]
            del self._available_connections[:extra]
            task = asyncio.ensure_future(_disconnect_all(closing))
            task.add_done_callback(_retrieve)
        if len(self._available_connections) > self.max_idle:  # used in the window: look again
            self._untouched = len(self._available_connections)
            self._reaper = asyncio.get_running_loop().call_later(self.idle_seconds, self._reap)

    async def disconnect(self, inuse_connections: bool = True) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
            self._reaper = None
        await super().disconnect(inuse_connections)

    def open_connections(self) -> int:
        """Connections of this pool that hold a socket now (idle or in use)."""
        return _connected(self)


async def _disconnect_all(connections: list[Any]) -> None:
    for connection in connections:
        await connection.disconnect()


class DemotedMasterError(RedisConnectionError):
    """The server this connection reached answered READONLY: it is a replica now."""


class _MasterConnection(SentinelManagedConnection):
    """A connection to the master the Sentinels name. A READONLY answer means this server was
    demoted since the connection was made: the connection is closed (the next connect asks the
    Sentinels again) and the error is one the pool's retry sends the command again on."""

    async def _connect_retry(self) -> None:
        if not self.is_connected:
            await self.connect_check_health(
                check_health=self.connection_pool.check_connection, retry_socket_connect=False
            )

    async def _connect(self) -> None:
        # Every connect asks the Sentinels first, however it is reached: redis-py reconnects a
        # closed connection from send_packed_command too, and that path would otherwise go back
        # to the address the connection had (the demoted master).
        self.host, self.port = await self.connection_pool.get_master_address()
        await super()._connect()

    async def read_response(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return await Connection.read_response(self, *args, **kwargs)
        except ReadOnlyError as exc:
            await self.disconnect()
            raise DemotedMasterError(f"{self.host}:{self.port} is no longer the master") from exc


class BoundedSentinelPool(SentinelConnectionPool, BoundedPool):
    """A `BoundedPool` whose connections go to the master a set of Sentinels name.

    redis-py's Sentinel pool asks the Sentinels for the master on every new connection and closes
    its idle connections when the answer changes; this one also asks them again before handing
    out a pooled connection when it last asked more than ``master_check_seconds`` ago, closes any
    connection to an address that is no longer the master before handing it out, and closes the
    Sentinel connections with its own.
    """

    def __init__(
        self,
        service_name: str,
        sentinel_manager: Sentinel,
        *,
        master_check_seconds: float = MASTER_CHECK_SECONDS,
        **kwargs: Any,
    ) -> None:
        self.master_check_seconds = master_check_seconds
        self._master_checked_at = -float("inf")
        self._discovery: asyncio.Future[Any] | None = None
        kwargs.setdefault("connection_class", _MasterConnection)
        kwargs.setdefault(
            "retry",
            Retry(
                ExponentialBackoff(cap=1.0, base=0.05),
                DEMOTED_MASTER_RETRIES,
                supported_errors=(DemotedMasterError,),
            ),
        )
        super().__init__(service_name, sentinel_manager, **kwargs)

    async def get_master_address(self) -> Any:
        # One question to the Sentinels at a time, whoever asks: a burst of new connections waits
        # for the same answer instead of opening a Sentinel connection each.
        if self._discovery is None or self._discovery.done():
            self._master_checked_at = time.monotonic()
            self._discovery = asyncio.ensure_future(super().get_master_address())
            self._discovery.add_done_callback(_retrieve)
        return await asyncio.shield(self._discovery)

    async def ensure_connection(self, connection: Any) -> None:
        since = time.monotonic() - self._master_checked_at
        if connection.is_connected and since >= self.master_check_seconds:
            try:
                # Closes the idle connections when the answer changed.
                await self.get_master_address()
            except (RedisConnectionError, RedisTimeoutError) as exc:
                # No Sentinel answers: keep to the master this connection knows (if it is gone
                # too, the command fails on its own).
                logger.debug("Sentinels not answering: %s", exc)
        if (
            connection.is_connected
            and self.master_address is not None
            and (connection.host, connection.port) != self.master_address
        ):
            await connection.disconnect()  # to the old master: reconnect to the new one
        await super().ensure_connection(connection)

    async def disconnect(self, inuse_connections: bool = True) -> None:
        await super().disconnect(inuse_connections)
        if inuse_connections:  # the whole pool closes (not just a master change)
            for sentinel in self.sentinel_manager.sentinels:
                await sentinel.connection_pool.disconnect()

    def open_connections(self) -> int:
        sentinel_pools = [sentinel.connection_pool for sentinel in self.sentinel_manager.sentinels]
        return super().open_connections() + sum(map(_connected, sentinel_pools))


def _retrieve(future: asyncio.Future[Any]) -> None:
    # Its waiters may all have been cancelled: the error is theirs to see, not the event loop's.
    if not future.cancelled():
        future.exception()


def _connected(pool: Any) -> int:
    everything = [*pool._available_connections, *pool._in_use_connections]
    return sum(1 for conn in everything if conn.is_connected)


def parse_sentinels(value: Any) -> list[tuple[str, int]]:
    """``"host:port,host:port"``, or a list of ``host:port`` strings or (host, port) pairs, as
    (host, port) pairs; an IPv6 host is written in brackets (``[::1]:26379``). Raises ValueError
    on anything else."""
    items = value.split(",") if isinstance(value, str) else list(value or [])
    pairs: list[tuple[str, int]] = []
    for item in items:
        if isinstance(item, (tuple, list)):
            host, port = str(item[0]), str(item[1])
        else:
            if not item.strip():
                continue
            host, _, port = item.strip().rpartition(":")
            host = host.removeprefix("[").removesuffix("]")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"a Sentinel is host:port, not {item!r}")
        pairs.append((host, int(port)))
    return pairs


def sentinel_options(
    sentinels: Any,
    *,
    master: str | None = None,
    sentinel_password: str | None = None,
    password: str | None = None,
    db: int = 0,
) -> dict[str, Any]:
    """The options that make `bounded_pool` (and `LoopLocalRedis`, and the channel layer's hosts)
    connect through ``sentinels`` to the master named ``master``; empty without sentinels.
    ``sentinel_password`` is the Sentinels' own, ``password`` and ``db`` the master's."""
    pairs = parse_sentinels(sentinels)
    if not pairs:
        return {}
    options: dict[str, Any] = {
        "sentinels": pairs,
        "service_name": master or DEFAULT_SENTINEL_MASTER,
        "db": db,
    }
    if sentinel_password:
        options["sentinel_password"] = sentinel_password
    if password:
        options["password"] = password
    return options


def sentinel_url(options: dict[str, Any]) -> str:
    """A description of a Sentinel setup as a URL (``redis+sentinel://h1:p1,h2:p2/master/db``).
    No client opens it: code that does not go through this module fails loudly on it instead of
    connecting somewhere else."""
    hosts = ",".join(
        f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        for host, port in options["sentinels"]
    )
    return f"redis+sentinel://{hosts}/{options['service_name']}/{options.get('db', 0)}"


def _sentinel_pool(**options: Any) -> BoundedSentinelPool:
    sentinels = options.pop("sentinels")
    service_name = options.pop("service_name", DEFAULT_SENTINEL_MASTER)
    # The Sentinels are asked with short timeouts of their own (the layer's connections have
    # none), once each: a Sentinel that is down is skipped for the next.
    sentinel_kwargs: dict[str, Any] = {
        "socket_connect_timeout": SENTINEL_TIMEOUT_SECONDS,
        "socket_timeout": SENTINEL_TIMEOUT_SECONDS,
        "retry": Retry(NoBackoff(), 0),
        **options.pop("sentinel_kwargs", {}),
    }
    if "client_name" in options:
        sentinel_kwargs.setdefault("client_name", f"{options['client_name']}:sentinel")
    if "sentinel_password" in options:
        sentinel_kwargs["password"] = options.pop("sentinel_password")
    manager = Sentinel(parse_sentinels(sentinels), sentinel_kwargs=sentinel_kwargs)
    return BoundedSentinelPool(service_name, manager, **options)


def bounded_pool(url: str | None, **options: Any) -> BoundedPool:
    """A `BoundedPool` for ``url``; ``max_connections``, ``max_idle`` and ``timeout`` (seconds to
    wait for a free connection) come from ``options`` or the defaults.

    With ``sentinels`` (and ``service_name``) among the options, a `BoundedSentinelPool` to that
    master instead: ``url`` is then only a description and is not opened."""
    options.setdefault("max_connections", DEFAULT_MAX_CONNECTIONS)
    options.setdefault("timeout", DEFAULT_WAIT_SECONDS)
    if options.get("sentinels"):
        return _sentinel_pool(**options)
    for key in (
        "sentinels",
        "service_name",
        "sentinel_password",
        "sentinel_kwargs",
        "master_check_seconds",
    ):
        options.pop(key, None)
    if not url:
        raise ValueError("a Redis URL, or sentinels, are needed")
    return BoundedPool.from_url(url, **options)


def redis_pool_options(settings: Any, *, name: str) -> dict[str, Any]:
    """Pool options from Django settings (passed in: this module does not import Django), with
    the Sentinel options when ``REDIS_SENTINELS`` names Sentinels."""
    return {
        "max_connections": getattr(settings, "REDIS_MAX_CONNECTIONS", DEFAULT_MAX_CONNECTIONS),
        "max_idle": getattr(settings, "REDIS_MAX_IDLE_CONNECTIONS", DEFAULT_MAX_IDLE),
        "timeout": getattr(settings, "REDIS_POOL_TIMEOUT_SECONDS", DEFAULT_WAIT_SECONDS),
        "client_name": name,
        **sentinel_options(
            getattr(settings, "REDIS_SENTINELS", None),
            master=getattr(settings, "REDIS_SENTINEL_MASTER", None),
            sentinel_password=getattr(settings, "REDIS_SENTINEL_PASSWORD", None),
            password=getattr(settings, "REDIS_SENTINEL_MASTER_PASSWORD", None),
            db=getattr(settings, "REDIS_SENTINEL_DB", 0),
        ),
    }


@dataclass
class _LoopClient:
    loop: asyncio.AbstractEventLoop
    client: aioredis.Redis
    closer: asyncio.Task[None] | None
    scripts: dict[str, AsyncScript]


class LoopLocalRedis:
    """Hands out one ``redis.asyncio`` client per running event loop; never shares a connection
    across loops.

    A sync Django view reaches async code through ``async_to_sync``, which may run it on a fresh
    event loop that is closed right after. Each client therefore comes with a small guard task on
    its loop: when the loop shuts down (``asyncio.run`` / ``asyncio.Runner`` cancel remaining
    tasks), the guard closes the client's connections on that loop. Clients of loops that were
    closed without that courtesy are dropped on the next call.
    """

    def __init__(self, url: str, **options: Any) -> None:
        self.url = url
        self.options: dict[str, Any] = {
            "decode_responses": True,
            "socket_connect_timeout": 5,
            # Every command used here answers at once; a dead peer must not hang a request.
            "socket_timeout": 5,
            "health_check_interval": 30,
            **options,
        }
        if "sentinels" not in self.options:  # a Sentinel pool brings a retry of its own
            # A pooled connection that an outage or a restart broke fails once and is replaced:
            # the command is sent again on a new one instead of failing (after a Redis restart,
            # a clean close's presence leave would otherwise fail and linger until the TTL).
            self.options.setdefault(
                "retry",
                Retry(
                    ExponentialBackoff(cap=0.5, base=0.05),
                    2,
                    supported_errors=(RedisConnectionError,),
                ),
            )
        self._entries: dict[int, _LoopClient] = {}
        self._lock = threading.Lock()

    def _entry(self) -> _LoopClient:
        loop = asyncio.get_running_loop()
        with self._lock:
            entry = self._entries.get(id(loop))
            if entry is not None and entry.loop is loop:
                return entry
            for key, other in list(self._entries.items()):
                if other.loop.is_closed():
                    del self._entries[key]
            entry = _LoopClient(
                loop=loop,
                client=aioredis.Redis.from_pool(bounded_pool(self.url, **self.options)),
                closer=None,
                scripts={},
            )
            self._entries[id(loop)] = entry
        # The entry holds the task strongly: asyncio itself only keeps weak references.
        entry.closer = loop.create_task(self._close_with_loop(entry), name="redis-loop-closer")
        return entry

    async def _close_with_loop(self, entry: _LoopClient) -> None:
        try:
            await asyncio.get_running_loop().create_future()  # until the loop shuts down
        finally:
            with self._lock:
                if self._entries.get(id(entry.loop)) is entry:
                    del self._entries[id(entry.loop)]
            await entry.client.aclose()

    def client(self) -> aioredis.Redis:
        """The client of the running event loop (created on first use)."""
        return self._entry().client

    def script(self, lua: str) -> tuple[aioredis.Redis, AsyncScript]:
        """The running loop's client and ``lua`` registered on it."""
        entry = self._entry()
        script = entry.scripts.get(lua)
        if script is None:
            script = entry.scripts[lua] = entry.client.register_script(lua)
        return entry.client, script

    async def aclose(self) -> None:
        """Close the running loop's client (a new one is created on next use)."""
        loop = asyncio.get_running_loop()
        with self._lock:
            entry = self._entries.get(id(loop))
            if entry is None or entry.loop is not loop:
                return
            del self._entries[id(loop)]
        if entry.closer is not None:
            entry.closer.cancel()
        await entry.client.aclose()


def scan_delete_pattern(prefix: str) -> str:
    """A SCAN MATCH pattern for every key starting with ``prefix`` (glob characters escaped)."""
    escaped = "".join("\\" + ch if ch in "*?[]\\" else ch for ch in prefix)
    return escaped + "*"


async def delete_matching(client: aioredis.Redis, prefix: str) -> None:
    """Delete every key starting with ``prefix``."""
    batch: list[str] = []
    async for key in client.scan_iter(match=scan_delete_pattern(prefix), count=500):
        batch.append(key)
        if len(batch) >= 500:
            await client.unlink(*batch)
            batch = []
    if batch:
        await client.unlink(*batch)
