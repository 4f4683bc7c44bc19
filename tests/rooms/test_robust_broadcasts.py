"""A broadcast that fails after commit is logged and healed; it never turns done work into an error.

Publishing is down here (Redis refuses): the work is committed, the answer says
so, the failure is one log line, and `sync` plus catch-up bring the room up to date later.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
from django.conf import settings
from django.contrib.sessions.models import Session
from django.test import Client
from redis.exceptions import ConnectionError as RedisConnectionError

from realtime import outage
from realtime.hub import get_hub
from realtime.outage import Outage
from rooms.models import Entry, Membership, Room

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def layer_refuses(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> Any:
    """Redis refuses what the services publish after commit (presence still gets through, so
    sockets can open)."""
    hub = get_hub()
    real_publish_many = hub.publish_many

    async def publish_many(events: list[tuple[str, dict[str, Any]]]) -> None:
        if all(event["type"] == "presence.changed" for _, event in events):
            return await real_publish_many(events)
        raise RedisConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    monkeypatch.setattr(hub, "publish_many", publish_many)
    monkeypatch.setattr(outage, "REDIS", Outage("Redis"))
    caplog.set_level(logging.WARNING, logger="realtime.outage")
    return caplog


def _client(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_an_http_submission_is_answered_with_its_stored_entry(lobby, alice, layer_refuses):
    response = _client(alice).post(
        "/rooms/lobby/entries/?format=json", {"expression": "6*7"}, HTTP_ACCEPT="application/json"
    )
    assert response.status_code == 201
    assert response.json()["entry"]["result"] == "42"
    assert Entry.objects.filter(room=lobby).count() == 1
    assert "entry.created" in layer_refuses.text
    assert "Traceback" not in layer_refuses.text


def test_removing_a_member_is_done_and_says_so(lobby, alice, bob, layer_refuses):
    response = _client(alice).post(f"/rooms/lobby/members/{bob.id}/remove/", {"confirm": "yes"})
    assert response.status_code == 302
    assert not Membership.objects.filter(room=lobby, user=bob).exists()
    assert "access.revoked" in layer_refuses.text


def test_deleting_a_room_is_done_and_says_so(lobby, alice, layer_refuses):
    response = _client(alice).post("/rooms/lobby/delete/", {"confirm": "lobby"})
    assert response.status_code == 302
    assert not Room.objects.filter(slug="lobby").exists()


def test_logging_out_is_done_and_says_so(lobby, alice, layer_refuses):
    client = _client(alice)
    key = client.cookies[settings.SESSION_COOKIE_NAME].value
    response = client.post("/accounts/logout/")
    assert response.status_code == 302
    assert not Session.objects.filter(session_key=key).exists()
    assert "session.ended" in layer_refuses.text


async def test_a_socket_submission_is_never_answered_unavailable_once_stored(
    connect, lobby, alice, bob, layer_refuses, settings
):
    settings.SYNC_INTERVAL_SECONDS = 0.3
    alice_ws = await connect(alice, "lobby")
    bob_ws = await connect(bob, "lobby")
    await alice_ws.send({"type": "expression", "expression": "40+2", "client_id": None})
    # No error for the author (the old answer was `unavailable`, which makes clients resend) ...
    assert await alice_ws.nothing("error", within=0.5)
    assert await Entry.objects.filter(room=lobby).acount() == 1
    # ... and the room heals: the next sync tells both sockets seq 1 exists, to fetch.
    for socket in (alice_ws, bob_ws):
        frame = await socket.receive_type("sync", timeout=5)
        while frame["last_seq"] < 1:
            frame = await socket.receive_type("sync", timeout=5)
        assert frame["last_seq"] == 1
