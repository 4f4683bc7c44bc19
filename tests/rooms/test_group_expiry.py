"""channels-redis forgets group members after `group_expiry`; the presence heartbeat re-adds each
socket to its groups, so a socket open longer than that still gets live entries. Run on a real
uvicorn process with the expiry shortened to 2 s."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from django.conf import settings

from tests.live import ServerProcess, join

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not settings.REDIS_URL, reason="channels-redis group expiry"),
]

GROUP_EXPIRY = 2


def _server(heartbeat: float) -> ServerProcess:
    return ServerProcess(
        env={
            "CHANNEL_LAYER_GROUP_EXPIRY_SECONDS": str(GROUP_EXPIRY),
            "PRESENCE_HEARTBEAT_SECONDS": str(heartbeat),
            "PRESENCE_TTL_SECONDS": str(max(30, heartbeat * 3)),
            "SYNC_INTERVAL_SECONDS": "1",
        }
    )


async def _entry_after_expiry(server: ServerProcess, alice, bob):
    bob_ws = await join(server, bob)
    await asyncio.sleep(GROUP_EXPIRY * 2.5)  # bob's original group membership has expired
    alice_ws = await join(server, alice)
    client_id = str(uuid.uuid4())
    await alice_ws.send({"type": "expression", "expression": "6*7", "client_id": client_id})
    await alice_ws.next("entry")
    return bob_ws, alice_ws


async def test_heartbeat_keeps_a_long_open_socket_in_its_room(lobby, alice, bob):
    server = _server(heartbeat=0.5)
    await asyncio.to_thread(server.start)
    try:
        bob_ws, alice_ws = await _entry_after_expiry(server, alice, bob)
        entry = (await bob_ws.next("entry", within=3))["entry"]
        assert (entry["seq"], entry["result"]) == (1, "42")
        await bob_ws.close()
        await alice_ws.close()
    finally:
        server.stop()


async def test_without_a_fresh_membership_the_sync_frame_still_reveals_the_entry(lobby, alice, bob):
    """The control: with the heartbeat slower than the expiry the live entry is lost, and the
    `sync` frame (here every second) tells the client to fetch it."""
    server = _server(heartbeat=60)
    await asyncio.to_thread(server.start)
    try:
        bob_ws, alice_ws = await _entry_after_expiry(server, alice, bob)
        sync = await bob_ws.next("sync", lambda frame: frame["last_seq"] == 1, within=3)
        assert sync["last_seq"] == 1
        await bob_ws.close()
        await alice_ws.close()
    finally:
        server.stop()
