"""Redis connections: bounded pools that wait instead of failing, one client per event loop.

redis-py's default pool raises once it holds ``max_connections``, and keeps every connection it
ever opened. A burst (a thousand sockets closing at once) then either fails half its work or leaves
the process holding a thousand idle connections, and with them a thousand file descriptors. The
pool here waits for a free connection instead, and closes idle ones past a small number as they
come back, so after a burst the process returns to its resting handful.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.commands.core import AsyncScript

DEFAULT_MAX_CONNECTIONS = 50
DEFAULT_MAX_IDLE = 4
DEFAULT_WAIT_SECONDS = 20.0


class BoundedPool(aioredis.BlockingConnectionPool):
    """A blocking pool (waits up to ``timeout`` for a free connection) that keeps at most
    ``max_idle`` idle connections open."""

    def __init__(self, *, max_idle: int = DEFAULT_MAX_IDLE, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.max_idle = max_idle

    async def release(self, connection: Any) -> None:
        await super().release(connection)
        # The oldest idle connections go first; the pool makes new ones when it needs them.
        while len(self._available_connections) > self.max_idle:
            extra = self._available_connections.pop(0)
            await extra.disconnect()

    def open_connections(self) -> int:
        """Connections of this pool that hold a socket now (idle or in use)."""
        everything = [*self._available_connections, *self._in_use_connections]
        return sum(1 for conn in everything if conn.is_connected)


def bounded_pool(url: str, **options: Any) -> BoundedPool:
    """A `BoundedPool` for ``url``; ``max_connections``, ``max_idle`` and ``timeout`` (seconds to
    wait for a free connection) come from ``options`` or the defaults."""
    options.setdefault("max_connections", DEFAULT_MAX_CONNECTIONS)
    options.setdefault("timeout", DEFAULT_WAIT_SECONDS)
    return BoundedPool.from_url(url, **options)


def redis_pool_options(settings: Any, *, name: str) -> dict[str, Any]:
    """Pool options from Django settings (passed in: this module does not import Django)."""
    return {
        "max_connections": getattr(settings, "REDIS_MAX_CONNECTIONS", DEFAULT_MAX_CONNECTIONS),
        "max_idle": getattr(settings, "REDIS_MAX_IDLE_CONNECTIONS", DEFAULT_MAX_IDLE),
        "timeout": getattr(settings, "REDIS_POOL_TIMEOUT_SECONDS", DEFAULT_WAIT_SECONDS),
        "client_name": name,
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
