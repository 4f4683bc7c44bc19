"""Database reads a socket waits for, on threads of their own instead of the shared one.

Channels' `database_sync_to_async` runs every call of the process on one thread (asgiref's
thread-sensitive executor), one after another. A handshake reads three times (the session's user,
the person's access to the room, the room's last seq), and each read spends most of its time
waiting for PostgreSQL's answer, the thread idle meanwhile. When 200 clients came back at once,
their handshakes queued there: the process held the GIL less than a third of the time while the
median handshake took 1.5-2 s (bench/live.py's catch-up storm, profiled; docs/performance.md).

`database_read(work)` runs `work` on one of `DATABASE_READ_THREADS` threads, so reads wait for
PostgreSQL side by side (`read_call(work, ...)` for one call). Each call is one unit of work:
the thread's connection goes back to the pool before and after it, as `database_sync_to_async`
does. Only reads that stand alone belong here; work that must see what the shared thread did
just before stays on it. With no read threads (SQLite, the embedded default), the shared thread
runs them as before.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ParamSpec, TypeVar

from channels.db import database_sync_to_async
from django.conf import settings
from django.db import close_old_connections

P = ParamSpec("P")
T = TypeVar("T")

_executor: ThreadPoolExecutor | None = None
_executor_lock = threading.Lock()


def closing_connections(work: Callable[P, T]) -> Callable[P, T]:
    """`work` with the thread's database connection released before and after, so a pooled
    connection goes back to the pool each time.

    Inside the work, not around it: channels' `database_sync_to_async` releases connections
    outside the context asgiref runs the work in, and called from a socket's task it misses the
    connection the work opened, so each store thread kept one checked out for good
    (tests/rooms/test_store_threads.py)."""

    @functools.wraps(work)
    def run(*args: P.args, **kwargs: P.kwargs) -> T:
        return _closing(work, args, kwargs)

    return run


def _read_executor() -> ThreadPoolExecutor | None:
    global _executor
    threads = settings.DATABASE_READ_THREADS
    if threads <= 0:
        return None
    with _executor_lock:
        if _executor is None or _executor._max_workers != threads:
            if _executor is not None:  # the setting changed (tests): the old threads end
                _executor.shutdown(wait=False)
            _executor = ThreadPoolExecutor(threads, thread_name_prefix="database-read")
        return _executor


def database_read(work: Callable[P, T]) -> Callable[P, Awaitable[T]]:
    """`work` as a coroutine function that runs it on a read thread (see the module)."""

    @functools.wraps(work)
    async def read(*args: P.args, **kwargs: P.kwargs) -> T:
        return await read_call(work, *args, **kwargs)

    return read


async def read_call(work: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
    """`work(*args, **kwargs)` on a read thread: for a caller that looks `work` up as it calls
    (no wrapper made per call)."""
    executor = _read_executor()
    if executor is None:
        return await database_sync_to_async(work)(*args, **kwargs)
    context = contextvars.copy_context()
    call: Callable[[], Any] = functools.partial(context.run, _closing, work, args, kwargs)
    return await asyncio.get_running_loop().run_in_executor(executor, call)


def _closing(work: Callable[..., T], args: tuple[Any, ...], kwargs: dict[str, Any]) -> T:
    close_old_connections()
    try:
        return work(*args, **kwargs)
    finally:
        close_old_connections()
