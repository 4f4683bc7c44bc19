"""The check psycopg's pool makes before it hands out a connection.

Django's `CONN_HEALTH_CHECKS` hands the pool `ConnectionPool.check_connection`: an empty query
before every checkout, so that the connections a PostgreSQL restart broke are replaced instead of
failing once each. Under ASGI every unit of work checks a connection out (CONN_MAX_AGE=0), so
that was a round trip (175 µs here) before each of them, while the connection stood idle in
between: at a reconnect storm the pool's connections, not the server's CPU, were what the
handshakes and the catch-up requests waited for (docs/performance.md).

`FreshCheck` skips the query for a connection that passed it less than `seconds` ago and shows
nothing wrong since (not broken, no transaction left). A restart takes longer than that window:
a connection it broke is checked again by the time PostgreSQL is back. Django's pool takes no
`check` of its own beside `CONN_HEALTH_CHECKS`', and is made again whenever it is closed (the test
database, a pool closed on error), so `install` puts this one in whichever pool a new connection
came from (the `connection_created` signal); without a pool (SQLite, `DATABASE_POOL=0`) it does
nothing.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable
from typing import Any

from django.db.backends.signals import connection_created
from psycopg import pq
from psycopg_pool import ConnectionPool


class FreshCheck:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._checked: weakref.WeakKeyDictionary[Any, float] = weakref.WeakKeyDictionary()

    def __call__(self, conn: Any) -> None:
        now = time.monotonic()
        checked = self._checked.get(conn)
        if (
            checked is not None
            and now - checked < self.seconds
            and not conn.broken
            and conn.info.transaction_status == pq.TransactionStatus.IDLE
        ):
            return
        ConnectionPool.check_connection(conn)  # raises for a broken one: the pool replaces it
        self._checked[conn] = time.monotonic()


def install(seconds: Callable[[], float]) -> None:
    """From now on, the pool of every connection Django opens checks with `FreshCheck`, over
    `seconds()` (read when a pool gets it)."""
    connection_created.connect(_fresh_pool(seconds), weak=False, dispatch_uid=__name__)


def _fresh_pool(seconds: Callable[[], float]) -> Callable[..., None]:
    def on_created(sender: Any, connection: Any, **kwargs: Any) -> None:
        pool = getattr(connection, "pool", None)
        if pool is not None and not isinstance(pool._check, FreshCheck):
            pool._check = FreshCheck(seconds())  # where psycopg_pool keeps its check

    return on_created
