"""The store threads (ENTRY_STORE_THREADS) hand their database connection back after each entry.

Each thread lives as long as the process. A connection it kept between submissions is one pooled
connection fewer for every request and socket of the process: with a thread per lane holding
one, a pool of DATABASE_POOL_MAX_SIZE runs dry under load it served before, and requests wait for
the pool's timeout and answer 503.
"""

from __future__ import annotations

from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import connections

from rooms.models import Entry
from tests.factories import RoomFactory

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        "pool" not in settings.DATABASES["default"].get("OPTIONS", {}),
        reason="only a pooled database lends connections to threads",
    ),
]


def _pool_in_use() -> int:
    stats = connections["default"].pool.get_stats()
    return stats["pool_size"] - stats["pool_available"]


async def test_every_store_thread_gives_its_connection_back(connect: Any, alice: Any) -> None:
    lanes = settings.ENTRY_STORE_THREADS
    assert lanes >= 2, "the store threads are on in this configuration"

    def rooms_on_every_lane() -> list[str]:
        rooms = [RoomFactory(owner=alice) for _ in range(lanes * 2)]
        assert {room.pk % lanes for room in rooms} == set(range(lanes))
        return [room.slug for room in rooms]

    slugs = await sync_to_async(rooms_on_every_lane)()
    sockets = [await connect(alice, slug) for slug in slugs]
    for ws in sockets:
        await ws.receive_type("sync")
    in_use_before = await sync_to_async(_pool_in_use)()

    for round_ in range(3):
        for ws in sockets:
            await ws.send({"type": "expression", "expression": f"{round_} + 1"})
            entry = (await ws.receive_type("entry"))["entry"]
            assert entry["result"] == str(round_ + 1)

    assert await sync_to_async(Entry.objects.count)() == 3 * len(slugs)
    # Every lane stored entries; none of its threads holds a connection now.
    assert await sync_to_async(_pool_in_use)() == in_use_before
