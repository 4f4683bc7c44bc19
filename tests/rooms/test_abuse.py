"""Abuse costs the abuser, not the room: counted per person, across sockets and reconnects."""

from __future__ import annotations

import logging

import pytest

from rooms.models import Entry

pytestmark = pytest.mark.django_db(transaction=True)


async def test_refusals_count_per_person_across_sockets_and_reconnects(
    connect, lobby, alice, bob, settings, caplog
):
    settings.WS_ABUSE_LIMIT = 5
    caplog.set_level(logging.INFO)
    bob_ws = await connect(bob, "lobby")
    first = await connect(alice, "lobby")
    second = await connect(alice, "lobby")
    for _ in range(3):
        await first.send("not json")
        assert (await first.receive_type("error"))["code"] == "invalid_frame"
    await second.send("not json")
    assert (await second.receive_type("error"))["code"] == "invalid_frame"
    await second.send("not json")  # the fifth refusal of this person, on another socket
    assert (await second.receive_type("error"))["code"] == "invalid_frame"
    assert await second.receive_close(timeout=5) == 1008

    # Reconnecting does not reset it: the next refusal closes at once.
    third = await connect(alice, "lobby")
    assert third.connected
    await third.send({"type": "expression", "expression": ""})
    assert (await third.receive_type("error"))["code"] == "empty"
    assert await third.receive_close(timeout=5) == 1008

    # Meanwhile the room goes on: bob's entry reaches alice's first socket, stored once.
    await bob_ws.send({"type": "expression", "expression": "6*7"})
    assert (await first.receive_type("entry"))["entry"]["result"] == "42"
    assert await Entry.objects.filter(room=lobby).acount() == 1
    # The flood costs a line per closed socket, not one per frame.
    flood_lines = [r for r in caplog.records if r.name.startswith(("rooms", "realtime"))]
    assert len([r for r in flood_lines if "abuse" in r.getMessage()]) == 2
    assert all(r.levelno < logging.WARNING for r in flood_lines)


async def test_open_sockets_per_person_are_capped_and_freed_on_close(
    connect, lobby, alice, bob, settings
):
    settings.WS_MAX_SOCKETS_PER_USER = 3
    sockets = [await connect(alice, "lobby") for _ in range(3)]
    assert all(socket.connected for socket in sockets)
    over = await connect(alice, "lobby")
    assert not over.connected  # refused at the handshake (HTTP 403)
    assert (await connect(bob, "lobby")).connected  # another person is not affected
    await sockets[0].close()
    assert (await connect(alice, "lobby")).connected
