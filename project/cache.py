"""Django's Redis cache through Redis Sentinel.

Django's `RedisCache` opens a URL and cannot ask Sentinels where the master is. This backend is
that cache with one change: its connection pool is redis-py's Sentinel pool, so every new
connection goes to the master the Sentinels name now, and a demoted master's READONLY answer
closes the connection and sends the command again to the new master (as `realtime.redis` does for
the asyncio pools). ``LOCATION`` is only a description; ``OPTIONS`` carry what
`realtime.redis.sentinel_options` gives (``sentinels``, ``service_name``, and optionally
``sentinel_password``, ``password``, ``db``).
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

from django.core.cache.backends.redis import RedisCache, RedisCacheClient
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.connection import Connection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ReadOnlyError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry
from redis.sentinel import Sentinel, SentinelConnectionPool, SentinelManagedConnection

from realtime.redis import (
    DEMOTED_MASTER_RETRIES,
    MASTER_CHECK_SECONDS,
    SENTINEL_TIMEOUT_SECONDS,
    DemotedMasterError,
    parse_sentinels,
)


class _MasterConnection(SentinelManagedConnection):
    def _connect_retry(self) -> None:
        if self._sock is None:
            self.connect_check_health(
                check_health=self.connection_pool.check_connection, retry_socket_connect=False
            )

    def _connect(self) -> Any:
        # Every connect asks the Sentinels first, however it is reached (see realtime.redis).
        self.host, self.port = self.connection_pool.get_master_address()
        return super()._connect()

    def read_response(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return Connection.read_response(self, *args, **kwargs)
        except ReadOnlyError as exc:
            self.disconnect()
            raise DemotedMasterError(f"{self.host}:{self.port} is no longer the master") from exc


class _MasterPool(SentinelConnectionPool):
    """Asks the Sentinels again at most every ``master_check_seconds`` before handing out a
    pooled connection, and never hands out one to another address (as `realtime.redis`)."""

    def __init__(self, *args: Any, master_check_seconds: float, **kwargs: Any) -> None:
        self.master_check_seconds = master_check_seconds
        self._master_checked_at = -float("inf")
        super().__init__(*args, **kwargs)

    def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        if time.monotonic() - self._master_checked_at >= self.master_check_seconds:
            self._master_checked_at = time.monotonic()
            # No Sentinel answers: keep to the master the connections know.
            with contextlib.suppress(RedisConnectionError, RedisTimeoutError):
                self.get_master_address()  # closes the idle connections when it changed
        connection = super().get_connection()
        if self.master_address is not None and (connection.host, connection.port) != (
            self.master_address
        ):
            connection.disconnect()
            connection.connect()
        return connection


class SentinelRedisCacheClient(RedisCacheClient):
    def __init__(
        self,
        servers: Any,
        *,
        sentinels: Any,
        service_name: str,
        sentinel_password: str | None = None,
        master_check_seconds: float = MASTER_CHECK_SECONDS,
        **options: Any,
    ) -> None:
        super().__init__(servers, **options)
        self._master_check_seconds = master_check_seconds
        sentinel_kwargs: dict[str, Any] = {
            "socket_connect_timeout": SENTINEL_TIMEOUT_SECONDS,
            "socket_timeout": SENTINEL_TIMEOUT_SECONDS,
            # Once each: a Sentinel that is down is skipped for the next, not retried with backoff.
            "retry": Retry(NoBackoff(), 0),
        }
        if sentinel_password:
            sentinel_kwargs["password"] = sentinel_password
        self._sentinel = Sentinel(parse_sentinels(sentinels), sentinel_kwargs=sentinel_kwargs)
        self._service_name = service_name
        self._pool: SentinelConnectionPool | None = None

    def _get_connection_pool(self, write: bool) -> SentinelConnectionPool:
        # One pool, to the master: reads on a replica could miss a write just made (a login
        # attempt counted a moment ago).
        if self._pool is None:
            options = {
                "connection_class": _MasterConnection,
                "retry": Retry(
                    ExponentialBackoff(cap=1.0, base=0.05),
                    DEMOTED_MASTER_RETRIES,
                    supported_errors=(DemotedMasterError,),
                ),
                **self._pool_options,
            }
            self._pool = _MasterPool(
                self._service_name,
                self._sentinel,
                master_check_seconds=self._master_check_seconds,
                **options,
            )
        return self._pool


class SentinelRedisCache(RedisCache):
    def __init__(self, server: str, params: dict[str, Any]) -> None:
        super().__init__(server, params)
        self._class = SentinelRedisCacheClient
