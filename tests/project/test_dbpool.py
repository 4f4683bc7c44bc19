"""The pool checks a connection before handing it out only when it has sat idle a while.

On the machine's PostgreSQL (the maintenance database; nothing is restarted: a connection is
broken by terminating its backend from another connection, as a restart would break it)."""

from __future__ import annotations

import os
import time
import urllib.parse
from collections.abc import Iterator

import psycopg
import pytest
from psycopg_pool import ConnectionPool

from project.dbpool import check_unless_recent

URL = os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/calcrooms")
MAINTENANCE = urllib.parse.urlsplit(URL)._replace(path="/postgres").geturl()


def _pool(idle_seconds: float, checks: list[int]) -> ConnectionPool:
    check = check_unless_recent(idle_seconds)

    def counted(conn: psycopg.Connection) -> None:
        checks.append(1)
        check(conn)

    return ConnectionPool(MAINTENANCE, min_size=1, max_size=1, check=counted, timeout=5, open=True)


@pytest.fixture
def admin() -> Iterator[psycopg.Connection]:
    try:
        conn = psycopg.connect(MAINTENANCE, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL not reachable at {MAINTENANCE}: {exc}")
    with conn:
        yield conn


def _backend(pool: ConnectionPool) -> int:
    with pool.connection() as conn:
        row = conn.execute("select pg_backend_pid()").fetchone()
        assert row is not None
        return int(row[0])


def _break(admin: psycopg.Connection, pid: int) -> None:
    admin.execute("select pg_terminate_backend(%s)", [pid])
    for _ in range(100):
        gone = admin.execute("select count(*) from pg_stat_activity where pid = %s", [pid])
        if gone.fetchone() == (0,):
            return
        time.sleep(0.05)
    pytest.fail(f"backend {pid} did not end")


def test_a_connection_returned_moments_ago_goes_out_without_a_round_trip(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    queried: list[int] = []  # the checks that went to PostgreSQL (an empty query each)
    real = ConnectionPool.check_connection

    def empty_query(conn: psycopg.Connection) -> None:
        queried.append(1)
        real(conn)

    monkeypatch.setattr(ConnectionPool, "check_connection", staticmethod(empty_query))
    checks: list[int] = []
    with _pool(60, checks) as pool:
        first = _backend(pool)
        for _ in range(5):
            assert _backend(pool) == first
        # Six hand-outs of one connection: the first (new to the pool) was tried, the five
        # that followed its return at once were not.
        assert (len(checks), len(queried)) == (6, 1)


def test_a_connection_broken_while_it_sat_idle_is_replaced_before_anyone_gets_it(
    admin: psycopg.Connection,
) -> None:
    checks: list[int] = []
    with _pool(0.2, checks) as pool:
        broken = _backend(pool)
        _break(admin, broken)  # PostgreSQL restarted, say, while the pool held it
        time.sleep(0.3)  # idle past the window: it is checked, found broken and replaced
        replaced = _backend(pool)  # no error: the unit of work got a working connection
        assert replaced != broken


def test_with_no_window_every_hand_out_is_checked(admin: psycopg.Connection) -> None:
    checks: list[int] = []
    with _pool(0, checks) as pool:
        broken = _backend(pool)
        _break(admin, broken)
        assert _backend(pool) != broken  # at once: no idle time needed for the check


def test_inside_the_window_a_broken_connection_fails_one_unit_of_work_then_is_gone(
    admin: psycopg.Connection,
) -> None:
    """The trade the window makes (docs/operations.md): a restart within a second of a
    connection's last use costs that connection one failed unit of work, never a second."""
    checks: list[int] = []
    with _pool(60, checks) as pool:
        broken = _backend(pool)
        _break(admin, broken)
        with pytest.raises(psycopg.OperationalError), pool.connection() as conn:
            conn.execute("select 1")
        assert _backend(pool) != broken


@pytest.mark.django_db(transaction=True)
def test_the_products_units_of_work_skip_the_check_of_a_connection_just_returned(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Through Django, as every request and socket uses it: each unit of work ends by closing
    (returning) its connection; the next one moments later gets it back with no empty query."""
    from django.conf import settings
    from django.db import connection

    if not settings.ON_POSTGRESQL:
        pytest.skip("PostgreSQL only")
    queried: list[int] = []
    real = ConnectionPool.check_connection

    def empty_query(conn: psycopg.Connection) -> None:
        queried.append(1)
        real(conn)

    monkeypatch.setattr(ConnectionPool, "check_connection", staticmethod(empty_query))

    def unit_of_work() -> int:
        with connection.cursor() as cursor:
            cursor.execute("select pg_backend_pid()")
            pid = cursor.fetchone()[0]
        connection.close()  # back to the pool, as Django does after each unit
        return int(pid)

    size = settings.DATABASES["default"]["OPTIONS"]["pool"]["max_size"]
    for _ in range(size):  # the pool hands its idle connections out in turn: use each once
        unit_of_work()
    before = len(queried)
    pids = {unit_of_work() for _ in range(2 * size)}
    assert len(queried) == before  # none of these went through an empty query first
    assert len(pids) <= size  # and they reused the pool's connections, not new ones
