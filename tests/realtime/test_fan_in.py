"""A thousand sockets closing at once: every leave completes, and the pools shrink back after.

redis-py's plain pool raises once it is full: 2,000 sockets closing together used to fail half
their group discards (dead channels stayed in the room's group for a day) and leave the process
holding a Redis connection, and a file descriptor, per socket afterwards.
"""

from __future__ import annotations

import asyncio
import logging

import pytest
from channels.db import database_sync_to_async
from django.conf import settings

from tests.conftest import session_cookie
from tests.factories import MembershipFactory, UserFactory
from tests.realtime.leftovers import nothing_left, presence_conns, redis_client

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not settings.REDIS_URL, reason="counts the process's Redis connections"),
]

SOCKETS = 1000
PEOPLE = 20


async def our_redis_connections() -> int:
    """Connections this test run's pools hold open (each pool names its connections)."""
    client = redis_client()
    try:
        clients = await client.client_list()
    finally:
        await client.aclose()
    return sum(1 for c in clients if c.get("name", "").startswith(settings.REDIS_KEY_PREFIX))


async def test_a_thousand_sockets_closing_at_once_leave_nothing_and_pools_shrink(
    connect, lobby, caplog, settings
):
    caplog.set_level(logging.WARNING)
    settings.WS_MAX_SOCKETS_PER_USER = SOCKETS  # fifty tabs each: past the per-person cap

    def people() -> list[tuple[int, str]]:
        found = []
        for n in range(PEOPLE):
            user = UserFactory(username=f"reader{n:02}")
            MembershipFactory(room=lobby, user=user)
            found.append((user, session_cookie(user)))
        return found

    readers = await database_sync_to_async(people)()
    sockets = []
    for start in range(0, SOCKETS, 100):  # open in waves, as a room fills
        batch = [
            connect(user, "lobby", cookie=cookie)
            for user, cookie in (readers[n % PEOPLE] for n in range(start, start + 100))
        ]
        sockets += await asyncio.gather(*batch)
    assert all(socket.connected for socket in sockets)
    assert len(await presence_conns(lobby.id)) == SOCKETS

    peak = 0
    sampling = True

    async def sample() -> None:
        nonlocal peak
        while sampling:
            peak = max(peak, await our_redis_connections())
            await asyncio.sleep(0.02)

    sampler = asyncio.ensure_future(sample())

    async def close(socket) -> None:
        # The client goes away; the server's connection ends (and cleans up) on its own time.
        await socket.communicator.send_input({"type": "websocket.disconnect", "code": 1001})
        await socket.communicator.wait(timeout=120)

    await asyncio.gather(*(close(socket) for socket in sockets))
    found = await nothing_left(lobby.id, [user.id for user, _ in readers], within=30)
    sampling = False
    await sampler
    assert found.none, found
    failures = [r.getMessage() for r in caplog.records if "ending a socket" in r.getMessage()]
    assert failures == []

    # Waiting, not failing: the pools never grew past their bound ...
    pools = 3  # the layer, presence and throttles, on this event loop
    assert peak <= pools * settings.REDIS_MAX_CONNECTIONS + PEOPLE
    # ... and they are back to a resting handful, not a connection per socket that was open.
    resting = pools * settings.REDIS_MAX_IDLE_CONNECTIONS + 1
    now = await our_redis_connections()
    for _ in range(100):  # up to 10 s for the last idle connections to close
        if now <= resting:
            break
        await asyncio.sleep(0.1)
        now = await our_redis_connections()
    print(f"\nRedis connections: peak {peak}, after {now} (resting bound {resting})")
    assert now <= resting, f"{now} Redis connections held after every socket left"
