"""The pool's check before a checkout (realtime/dbpool.py): one empty query, unless the connection
passed it just now and shows nothing wrong since."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from django.conf import settings
from django.db import connection
from psycopg import OperationalError, pq

from realtime.dbpool import FreshCheck


class _Conn:
    """What the check looks at of a psycopg connection, counting the queries it is sent."""

    def __init__(self) -> None:
        self.autocommit = True
        self.broken = False
        self.info = SimpleNamespace(transaction_status=pq.TransactionStatus.IDLE)
        self.queries = 0
        self.down = False

    def execute(self, query: str) -> None:
        self.queries += 1
        if self.down:
            raise OperationalError("the server closed the connection")


def test_a_connection_checked_just_now_is_handed_out_without_another_query(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = [100.0]
    monkeypatch.setattr("realtime.dbpool.time.monotonic", lambda: now[0])
    check = FreshCheck(0.1)
    conn: Any = _Conn()
    check(conn)
    check(conn)
    now[0] += 0.05
    check(conn)
    assert conn.queries == 1
    now[0] += 0.1  # past the window: asked again
    check(conn)
    assert conn.queries == 2


def test_a_connection_that_shows_trouble_is_always_tried(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("realtime.dbpool.time.monotonic", lambda: 100.0)
    check = FreshCheck(0.1)
    conn: Any = _Conn()
    check(conn)
    conn.info.transaction_status = pq.TransactionStatus.INTRANS  # something left a transaction
    check(conn)
    assert conn.queries == 2
    conn.info.transaction_status = pq.TransactionStatus.IDLE
    conn.broken, conn.down = True, True  # an error broke it: the pool must hear it
    with pytest.raises(OperationalError):
        check(conn)
    assert conn.queries == 3


@pytest.mark.django_db
@pytest.mark.skipif(
    "pool" not in settings.DATABASES["default"].get("OPTIONS", {}),
    reason="only PostgreSQL's pool checks connections",
)
def test_the_apps_pool_checks_with_it() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    check = connection.pool._check
    assert isinstance(check, FreshCheck)
    assert check.seconds == settings.DATABASE_POOL_CHECK_SECONDS
