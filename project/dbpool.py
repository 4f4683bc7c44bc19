"""When psycopg's pool checks a connection before handing it out.

Checking every connection (one empty query, a round trip to PostgreSQL) before each unit of work
doubled the round trips of the short ones: a socket's handshake makes three such units, and the
check was 42 % of the database thread's samples in a join storm. A connection last handed out
less than `idle_seconds` ago worked then (one whose unit of work found it broken is discarded on
its return, never handed out again), so under load, when each connection goes out many times a
second, it goes out as it is. One last handed out longer ago is checked first, and one that a
restart broke is replaced instead of failing a request. The window (0.1 s by default) is shorter
than a restart takes, so every connection that went through one is checked once PostgreSQL is
back; during the outage, a connection reused within the window fails its unit of work, as any
unit of work then would (503, or `unavailable` on a socket, which pages retry).
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

from psycopg_pool import ConnectionPool


def check_unless_recent(idle_seconds: float) -> Callable[[Any], None]:
    """The pool's `check`: try a connection only if it was last handed out `idle_seconds` ago
    or more (0: always). (Not the pool's `reset` hook to note returns: with one, psycopg hands
    each returned connection to a worker thread before it is free again.)"""
    handed_out: weakref.WeakKeyDictionary[Any, float] = weakref.WeakKeyDictionary()
    lock = threading.Lock()

    def check(conn: Any) -> None:
        now = time.monotonic()
        with lock:
            last = handed_out.get(conn)
            handed_out[conn] = now
        if last is not None and now - last < idle_seconds:
            return
        ConnectionPool.check_connection(conn)

    return check
