"""Two uvicorn processes sharing Redis and PostgreSQL: one room across both, then one killed.

The servers run with a 3 s presence TTL and a 1 s heartbeat so that a SIGKILLed process's ghosts
are gone within seconds; clients are plain `websockets` connections, as a browser's would be.
Frames that must come are waited for with generous deadlines, never timed.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import redis.asyncio as aioredis
from django.conf import settings

from tests.live import ServerProcess, join

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not settings.REDIS_URL, reason="several processes share Redis"),
]

TTL = 3
HEARTBEAT = 1
SERVER_ENV = {"PRESENCE_TTL_SECONDS": str(TTL), "PRESENCE_HEARTBEAT_SECONDS": str(HEARTBEAT)}
# "Eventually", for frames that must come: many times what the servers need.
DEADLINE = 10
# A killed process's ghost goes once its records expire (TTL) and a survivor's heartbeat or room
# tick (at most 2 s) notices, plus a coalescing window: some 6 s, waited for three times over.
GHOST_GONE = 3 * (TTL + 2 + 1)

Frame = dict[str, Any]


@pytest.fixture
def servers(lobby) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    """Servers A and B, started side by side once lobby and its people are committed."""
    pair = (ServerProcess(env=SERVER_ENV), ServerProcess(env=SERVER_ENV))
    try:
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(ServerProcess.start, pair))
        yield pair
    finally:
        for server in pair:
            server.stop()


@pytest.fixture
async def redis_client() -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(settings.REDIS_URL, decode_responses=True)
    yield client
    await client.aclose()


def online(frame: Frame) -> dict[str, bool]:
    return {person["username"]: person["typing"] for person in frame["online"]}


def everyone(*names: str) -> Callable[[Frame], bool]:
    return lambda frame: set(online(frame)) == set(names)


async def presence_keys(client: aioredis.Redis) -> list[str]:
    return [key async for key in client.scan_iter(match=f"{settings.REDIS_KEY_PREFIX}:p:*")]


async def test_people_on_two_processes_share_entries_presence_and_typing(
    servers, lobby, alice, bob
):
    server_a, server_b = servers
    alice_ws = await join(server_a, alice)
    bob_ws = await join(server_b, bob)
    try:
        for ws in (alice_ws, bob_ws):
            frame = await ws.next("presence", everyone("alice", "bob"), within=DEADLINE)
            assert frame["count"] == 2

        client_id = str(uuid.uuid4())
        await alice_ws.send({"type": "expression", "expression": "2**10", "client_id": client_id})
        mine = (await alice_ws.next("entry", within=DEADLINE))["entry"]
        theirs = (await bob_ws.next("entry", within=DEADLINE))["entry"]
        assert theirs == mine
        assert (theirs["seq"], theirs["author"], theirs["result"]) == (1, "alice", "1024")
        assert theirs["client_id"] == client_id

        await bob_ws.send({"type": "typing"})
        await alice_ws.next("presence", lambda f: online(f).get("bob") is True, within=DEADLINE)
        await bob_ws.send({"type": "typing.stop"})
        await alice_ws.next("presence", lambda f: online(f).get("bob") is False, within=DEADLINE)
    finally:
        await alice_ws.close()
        await bob_ws.close()


async def test_a_killed_process_leaves_no_ghost_in_the_room_or_in_redis(
    servers, lobby, alice, bob, redis_client
):
    server_a, server_b = servers
    alice_ws = await join(server_a, alice)
    bob_ws = await join(server_b, bob)
    users_key = f"{settings.REDIS_KEY_PREFIX}:p:{lobby.id}:users"
    conns_key = f"{settings.REDIS_KEY_PREFIX}:p:{lobby.id}:conns"
    try:
        await bob_ws.next("presence", everyone("alice", "bob"), within=DEADLINE)
        await alice_ws.send({"type": "typing"})  # a ghost that was typing must go too
        await bob_ws.next("presence", lambda f: online(f).get("alice") is True, within=DEADLINE)
        assert sorted((await redis_client.hgetall(users_key)).values()) == ["alice", "bob"]

        server_a.kill()  # SIGKILL: no close frame, no leave, records stay behind
        frame = await bob_ws.next("presence", everyone("bob"), within=GHOST_GONE)
        assert frame["online"] == [{"username": "bob", "typing": False}]

        # Only bob's connection is left in the room's records, and nothing else under p:.
        users = await redis_client.hgetall(users_key)
        assert list(users.values()) == ["bob"]
        assert await redis_client.zrange(conns_key, 0, -1) == list(users)
        prefix = f"{settings.REDIS_KEY_PREFIX}:p:{lobby.id}:"
        assert all(key.startswith(prefix) for key in await presence_keys(redis_client))
    finally:
        await bob_ws.close()

    # bob leaves cleanly: the empty room leaves nothing behind (once server B has seen the close).
    for _ in range(DEADLINE * 10):  # every 0.1 s, for DEADLINE seconds at least
        if not (keys := await presence_keys(redis_client)):
            break
        await asyncio.sleep(0.1)
    assert keys == [], f"left behind: {keys}, connections {await redis_client.hgetall(users_key)}"
