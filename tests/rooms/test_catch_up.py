"""Catch-up on the server side: a lost broadcast is noticed through `sync` and healed over HTTP."""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async
from django.test import Client

from rooms import services

pytestmark = pytest.mark.django_db(transaction=True)


def _fetch_after(user, slug: str, after: int) -> dict:
    client = Client()
    client.force_login(user)
    return client.get(f"/rooms/{slug}/entries/?after={after}&format=json").json()


async def test_dropped_broadcast_is_revealed_by_sync_and_fetched_over_http(
    connect, lobby, alice, bob, settings, monkeypatch
):
    settings.SYNC_INTERVAL_SECONDS = 0.5
    settings.PRESENCE_HEARTBEAT_SECONDS = 0.5
    bob_ws = await connect(bob, "lobby")
    assert (await bob_ws.receive_type("sync"))["last_seq"] == 0

    # The broadcast is lost (as one is while a process is cut off from Redis).
    def dropped(events):
        return None

    with monkeypatch.context() as patch:
        patch.setattr("realtime.events._publish", dropped)
        await services.entry_submit(
            room_id=lobby.id, author=alice, expression="40+2", client_id=None
        )
    assert await bob_ws.nothing("entry", within=0.3)

    sync = await bob_ws.receive_type("sync", timeout=3)
    assert sync["last_seq"] == 1  # ahead of what bob has: he fetches the gap
    page = await sync_to_async(_fetch_after)(bob, "lobby", 0)
    assert [(e["seq"], e["result"]) for e in page["entries"]] == [(1, "42")]
    assert page["has_more"] is False

    # Later live entries still arrive; seq 2 follows the healed seq 1.
    await bob_ws.send({"type": "expression", "expression": "1+1"})
    assert (await bob_ws.receive_type("entry"))["entry"]["seq"] == 2


async def test_sync_is_sent_periodically_on_an_idle_socket(connect, lobby, bob, settings):
    settings.SYNC_INTERVAL_SECONDS = 0.3
    settings.PRESENCE_HEARTBEAT_SECONDS = 0.3
    ws = await connect(bob, "lobby")
    await ws.receive_type("sync")
    assert (await ws.receive_type("sync", timeout=2))["last_seq"] == 0
    assert (await ws.receive_type("sync", timeout=2))["last_seq"] == 0
