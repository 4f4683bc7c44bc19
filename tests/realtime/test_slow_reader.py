"""A client that reads too slowly never holds up its room: its entries wait in its own outbox, the
excess is dropped for it alone, and once it has caught up it is told the room's last seq, so it
fetches what it missed (a gap that heals, never a stall for everyone else or a wrong room)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from realtime.connection import OUTBOX_LIMIT
from realtime.events import room_group
from realtime.hub import get_hub
from rooms.consumers import room_ticker
from rooms.payloads import entry_frames

pytestmark = pytest.mark.django_db(transaction=True)


def entry_event(room_id: int, seq: int) -> dict[str, Any]:
    entry = {
        "seq": seq,
        "author": "carol",
        "expression": f"{seq}+0",
        "result": str(seq),
        "error": None,
        "client_id": None,
        "created": "2026-12-01T12:00:00+00:00",
        "refs": [],
        "defines": None,
        "rounded": False,
    }
    return {
        "type": "entry.created",
        "room_id": room_id,
        "entry": entry,
        "frames": entry_frames(entry),
    }


async def test_a_stalled_reader_loses_only_its_own_excess_and_is_told_to_catch_up(
    connect, lobby, alice, bob
):
    fast = await connect(alice, "lobby")
    slow = await connect(bob, "lobby")
    await fast.receive_type("sync")
    await slow.receive_type("sync")
    [bobs] = [socket for socket in room_ticker.members(lobby.id) if socket.username == "bob"]

    # bob's client stops reading: every send to it waits (as a full TCP buffer makes it wait).
    reading = asyncio.Event()
    real_send = bobs.frame_send

    async def stalled_send(message: dict[str, Any]) -> None:
        if message["type"] == "websocket.send":
            await reading.wait()
        await real_send(message)

    bobs.frame_send = stalled_send
    total = OUTBOX_LIMIT + 200
    hub = get_hub()
    for seq in range(1, total + 1):
        await hub.publish(room_group(lobby.id), entry_event(lobby.id, seq))

    # alice is not held up by bob: she has every entry, in order.
    seqs = [(await fast.receive_type("entry"))["entry"]["seq"] for _ in range(total)]
    assert seqs == list(range(1, total + 1))

    reading.set()  # bob reads again: what waited for him, then a sync that reveals the gap
    got: list[int] = []
    while True:
        frame = await slow.receive(timeout=5)
        if frame["type"] == "sync":
            break
        if frame["type"] == "entry":
            got.append(frame["entry"]["seq"])
    assert got == list(range(1, len(got) + 1))  # a prefix, in order, nothing from elsewhere
    assert OUTBOX_LIMIT - 1 <= len(got) <= OUTBOX_LIMIT + 1 < total
    assert frame["last_seq"] == total  # he fetches got[-1]+1 .. total over HTTP


async def test_a_reader_that_stays_stalled_is_closed_1013_and_the_room_goes_on(
    connect, lobby, alice, bob, settings
):
    settings.WS_BEHIND_CLOSE_SECONDS = 0.5
    settings.ROOM_TICK_SECONDS = 0.2
    fast = await connect(alice, "lobby")
    slow = await connect(bob, "lobby")
    await fast.receive_type("sync")
    await slow.receive_type("sync")
    [bobs] = [socket for socket in room_ticker.members(lobby.id) if socket.username == "bob"]
    never = asyncio.Event()
    real_send = bobs.frame_send

    async def stalled_send(message: dict[str, Any]) -> None:
        if message["type"] == "websocket.send":
            await never.wait()  # bob's client never reads again
        await real_send(message)

    bobs.frame_send = stalled_send
    hub = get_hub()
    for seq in range(1, OUTBOX_LIMIT + 50):
        await hub.publish(room_group(lobby.id), entry_event(lobby.id, seq))
    assert await slow.receive_close(timeout=10) == 1013  # he reconnects and catches up
    for seq in range(1, OUTBOX_LIMIT + 50):
        assert (await fast.receive_type("entry"))["entry"]["seq"] == seq
    assert fast.connected
