"""Every task, group and record a connection starts ends when it ends, however it ends."""

from __future__ import annotations

import asyncio

import pytest
from channels.layers import get_channel_layer
from django.conf import settings
from redis.exceptions import ConnectionError as RedisConnectionError

from rooms.consumers import RoomConsumer
from tests.realtime.leftovers import leftovers, nothing_left, presence_conns

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not settings.REDIS_URL, reason="reads the layer's groups in Redis"),
]


@pytest.fixture
def fast_heartbeat(settings):
    """Heartbeats and ticks every 0.2 s: a ghost would be refreshed many times within a test."""
    settings.PRESENCE_HEARTBEAT_SECONDS = 0.2
    settings.ROOM_TICK_SECONDS = 0.2
    return settings


async def test_an_open_socket_holds_its_record_groups_tasks_and_tick(connect, lobby, alice):
    ws = await connect(alice, "lobby")
    await ws.receive_type("sync")
    found = await leftovers(lobby.id, [alice.id])
    assert len(found.presence) == 1
    assert found.room_group == found.presence == found.user_groups[alice.id]
    assert any(name.endswith(":heartbeat") for name in found.tasks)
    assert found.ticking
    await ws.close()
    assert (await nothing_left(lobby.id, [alice.id])).none


async def test_a_layer_whose_receive_fails_leaves_nothing_behind(
    connect, lobby, alice, fast_heartbeat, caplog
):
    layer = get_channel_layer()
    real_receive = layer.receive
    redis_gone = asyncio.Event()

    async def receive(channel: str) -> dict:
        # Channels-redis re-raises into the consumer's receive loop when Redis goes away.
        message = asyncio.ensure_future(real_receive(channel))
        outage = asyncio.ensure_future(redis_gone.wait())
        await asyncio.wait({message, outage}, return_when=asyncio.FIRST_COMPLETED)
        if outage.done():
            message.cancel()
            raise RedisConnectionError("Error 111 connecting to Redis. Connection refused.")
        outage.cancel()
        return message.result()

    layer.receive = receive
    ws = await connect(alice, "lobby")
    await ws.receive_type("sync")
    assert len(await presence_conns(lobby.id)) == 1

    redis_gone.set()
    assert await ws.receive_close(timeout=5) == 1012  # the client reconnects and catches up
    found = await nothing_left(lobby.id, [alice.id])
    assert found.none, found
    # Several heartbeats later, nothing has come back to life.
    await asyncio.sleep(1)
    assert (await leftovers(lobby.id, [alice.id])).none
    assert "Traceback" not in caplog.text
    assert "channel layer" in caplog.text or "backend failed" in caplog.text


async def test_a_handler_that_raises_leaves_nothing_behind(
    connect, lobby, alice, bob, fast_heartbeat, monkeypatch
):
    alice_ws = await connect(alice, "lobby")
    await alice_ws.receive_type("sync")

    async def broken(self, event):
        raise RuntimeError("a bug in a handler")

    monkeypatch.setattr(RoomConsumer, "presence_changed", broken)
    bob_ws = await connect(bob, "lobby")  # bob's arrival reaches alice's broken handler
    assert await alice_ws.receive_close(timeout=5) == 1011
    # bob's socket hit the same handler when alice left: both are gone, nothing remains.
    assert await bob_ws.receive_close(timeout=5) == 1011
    found = await nothing_left(lobby.id, [alice.id, bob.id])
    assert found.none, found
    await asyncio.sleep(1)
    assert (await leftovers(lobby.id, [alice.id, bob.id])).none


async def test_a_cancelled_connection_still_cleans_up(connect, lobby, alice, fast_heartbeat):
    """The server shutting down cancels the connection's task: its cleanup still runs."""
    ws = await connect(alice, "lobby")
    await ws.receive_type("sync")
    ws.communicator.future.cancel()
    found = await nothing_left(lobby.id, [alice.id])
    assert found.none, found


async def test_frames_queued_behind_a_close_are_not_handled(connect, lobby, alice, settings):
    """After 1008, nothing more of that socket is processed (the flood behind it is dropped)."""
    settings.WS_ABUSE_LIMIT = 3
    ws = await connect(alice, "lobby")
    await ws.receive_type("sync")
    for _ in range(3):
        await ws.send("not json")
    for n in range(5):
        await ws.send({"type": "expression", "expression": f"{n}+1"})
    errors = 0
    while True:
        try:
            frame = await ws.receive(timeout=5)
        except ConnectionError:
            break
        assert frame["type"] != "entry", "a frame behind the close was stored"
        errors += frame["type"] == "error"
    assert ws.close_code == 1008
    assert errors == 3
    from rooms.models import Entry

    assert not await Entry.objects.filter(room=lobby).aexists()
    await ws.close()  # the server's half of the closing handshake: the connection ends
    assert (await nothing_left(lobby.id, [alice.id])).none
