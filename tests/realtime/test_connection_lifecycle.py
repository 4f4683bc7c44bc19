"""Every task, group and record a connection starts ends when it ends, however it ends."""

from __future__ import annotations

import asyncio

import pytest
from django.conf import settings
from redis.exceptions import ConnectionError as RedisConnectionError

from realtime import outage
from realtime.hub import get_hub
from realtime.outage import Outage
from rooms.consumers import RoomConsumer
from tests.realtime.leftovers import consumer_tasks, leftovers, nothing_left

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not settings.REDIS_URL, reason="reads subscriptions and presence in Redis"),
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
    subscription = ["(redis subscription)"]
    assert found.room_group == found.presence + subscription
    assert found.user_groups[alice.id] == found.presence + subscription
    # An idle socket holds no task of its own: its writer runs only while its outbox holds
    # something (thousands of idle sockets cost no task each).
    assert not found.tasks, found.tasks
    assert found.ticking
    await ws.close()
    assert (await nothing_left(lobby.id, [alice.id])).none


async def test_a_socket_that_cannot_subscribe_closes_1012_and_leaves_nothing_behind(
    connect, lobby, alice, fast_heartbeat, caplog, monkeypatch
):
    hub = get_hub()

    async def refused(topic: str) -> None:
        raise RedisConnectionError("Error 111 connecting to Redis. Connection refused.")

    monkeypatch.setattr(hub, "_subscribed", refused)
    monkeypatch.setattr(outage, "REDIS", Outage("Redis"))
    ws = await connect(alice, "lobby")
    assert not ws.connected and ws.close_code == 1012  # refused: the client comes back
    found = await nothing_left(lobby.id, [alice.id])
    assert found.none, found
    await asyncio.sleep(1)  # several heartbeats later, nothing has come back to life
    assert (await leftovers(lobby.id, [alice.id])).none
    assert "Traceback" not in caplog.text
    assert caplog.text.count("Connection refused") == 1


async def test_a_handler_that_raises_leaves_nothing_behind(
    connect, lobby, alice, bob, fast_heartbeat, monkeypatch
):
    alice_ws = await connect(alice, "lobby")
    bob_ws = await connect(bob, "lobby")
    await alice_ws.receive_type("sync")
    await bob_ws.receive_type("sync")

    async def broken(self, event):
        raise RuntimeError("a bug in a handler")

    monkeypatch.setattr(RoomConsumer, "access_revoked", broken)
    # An event for alice's sockets reaches her broken handler (bob hears nothing of it).
    await get_hub().publish(
        f"user.{alice.id}", {"type": "access.revoked", "room_id": 0, "user_id": alice.id}
    )
    assert await alice_ws.receive_close(timeout=5) == 1011
    await asyncio.sleep(1)  # several heartbeats later: her record and subscriptions are gone
    left = await leftovers(lobby.id, [alice.id])
    assert not left.user_groups[alice.id], left
    assert len(left.presence) == 1  # bob's socket goes on
    assert not left.tasks, left.tasks  # her writer ended with her socket; bob's is idle
    await bob_ws.send({"type": "expression", "expression": "1+1"})
    assert (await bob_ws.receive_type("entry"))["entry"]["result"] == "2"


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


async def test_a_socket_writer_runs_only_while_its_outbox_holds_something(
    connect, lobby, alice, fast_heartbeat
):
    """An event with a handler goes through the socket's writer, which ends once it is handled;
    the socket goes on, and the next event starts a writer again."""
    ws = await connect(alice, "lobby")
    await ws.receive_type("sync")
    for _ in range(2):
        # The process was cut off from Redis and is back: the handler asks for a resync, and
        # the room's next tick tells the socket the room's last seq.
        await get_hub().publish(f"user.{alice.id}", {"type": "live.resumed"})
        assert (await ws.receive_type("sync", timeout=2))["type"] == "sync"
        assert not [name for name in consumer_tasks() if name.endswith(":outbox")]
    await ws.send({"type": "expression", "expression": "6*7"})
    assert (await ws.receive_type("entry"))["entry"]["result"] == "42"
