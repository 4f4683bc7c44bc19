"""A socket open for a long time still gets live entries: channels-redis forgets group members
after `group_expiry`, but a room's sockets do not depend on groups (the hub holds one subscription
per room per process for as long as a socket listens). Run on a real uvicorn process with the
layer's expiry shortened to 2 s and a heartbeat far slower than it."""

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
            "SYNC_INTERVAL_SECONDS": "20",
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


async def test_a_socket_open_past_the_layers_group_expiry_still_gets_live_entries(
    lobby, alice, bob
):
    server = _server(heartbeat=60)
    await asyncio.to_thread(server.start)
    try:
        bob_ws, alice_ws = await _entry_after_expiry(server, alice, bob)
        entry = (await bob_ws.next("entry", within=3))["entry"]
        assert (entry["seq"], entry["result"]) == (1, "42")
        await bob_ws.close()
        await alice_ws.close()
    finally:
        server.stop()
