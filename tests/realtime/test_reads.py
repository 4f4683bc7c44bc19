"""The reads a socket's handshake waits for run on read threads of their own (realtime/reads.py):
one that waits on PostgreSQL does not hold up another person's join, and every read gives its
pooled connection back."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import connections

from rooms import selectors
from tests.factories import RoomFactory

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        settings.DATABASE_READ_THREADS < 2, reason="the read threads are on with PostgreSQL"
    ),
]


def _pool_in_use() -> int:
    stats = connections["default"].pool.get_stats()
    return stats["pool_size"] - stats["pool_available"]


async def test_a_join_whose_read_waits_does_not_hold_up_anothers(
    connect: Any, alice: Any, bob: Any, lobby: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    vault = await sync_to_async(RoomFactory)(owner=alice, slug="vault")
    stuck = threading.Event()
    release = threading.Event()
    threads: dict[str, str] = {}
    room_access = selectors.room_access

    def slow_access(**kwargs: Any) -> Any:
        threads[kwargs.get("slug") or "?"] = threading.current_thread().name
        if kwargs.get("slug") == vault.slug:
            stuck.set()
            release.wait(10)  # a read that waits on a slow PostgreSQL
        return room_access(**kwargs)

    monkeypatch.setattr(selectors, "room_access", slow_access)
    slow = asyncio.ensure_future(connect(alice, vault.slug))
    try:
        assert await asyncio.to_thread(stuck.wait, 5)
        # Bob joins the lobby meanwhile and is live at once: his reads took another thread.
        ws = await asyncio.wait_for(connect(bob, "lobby"), 5)
        await ws.receive_type("sync")
        assert not slow.done()
    finally:
        release.set()
    ws_alice = await asyncio.wait_for(slow, 5)
    await ws_alice.receive_type("sync")
    assert threads[vault.slug].startswith("database-read")
    assert threads["lobby"].startswith("database-read")


async def test_every_read_thread_gives_its_connection_back(
    connect: Any, alice: Any, lobby: Any
) -> None:
    first = await connect(alice, "lobby")  # the shared database thread keeps one of its own
    await first.receive_type("sync")
    in_use_before = await sync_to_async(_pool_in_use)()
    sockets = await asyncio.gather(*(connect(alice, "lobby") for _ in range(12)))
    for ws in sockets:
        await ws.receive_type("sync")
    # Twelve handshakes at once, three reads each, spread over the read threads: none of them
    # holds a connection afterwards.
    assert await sync_to_async(_pool_in_use)() == in_use_before
