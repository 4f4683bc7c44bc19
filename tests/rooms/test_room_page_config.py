"""What the room page gets from the server: its timings and limits (room.js has none of its own),
and one person's history a page at a time for the input's ↑/↓ recall."""

from __future__ import annotations

import json
import re

import pytest
from django.test import Client, override_settings

from rooms.models import Room
from tests.factories import EntryFactory

pytestmark = pytest.mark.django_db


def signed_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def page_config(client: Client, slug: str) -> dict:
    body = client.get(f"/rooms/{slug}/").content.decode()
    found = re.search(r'<script id="room-config" type="application/json">(.*?)</script>', body)
    assert found, "the room page carries its config"
    return json.loads(found.group(1))


def test_the_page_gets_every_timing_and_limit_from_settings(bob, lobby) -> None:
    config = page_config(signed_in(bob), "lobby")
    assert config["connectionDeadAfterMs"] == 25_000  # the 20 s sync is the heartbeat
    assert config["reconnectMinMs"] == 1_000
    assert config["reconnectCapMs"] == 10_000
    assert config["resendMinMs"] == 1_000
    assert config["resendCapMs"] == 10_000
    assert config["expressionBucketCapacity"] == 10
    assert config["expressionRefillPerSecond"] == 1
    assert config["expressionMaxLength"] == 500
    assert config["pageEntries"] == 50
    assert config["loginUrl"] == "/accounts/login/?next=%2Frooms%2Flobby%2F"
    assert config["roomsUrl"] == "/"

    with override_settings(CONNECTION_DEAD_AFTER_SECONDS=6, RESEND_CAP_SECONDS=3):
        config = page_config(signed_in(bob), "lobby")
    assert config["connectionDeadAfterMs"] == 6_000
    assert config["resendCapMs"] == 3_000


def test_a_silent_socket_is_dead_only_after_a_heartbeat_was_missed(settings) -> None:
    # The page may only call a socket dead once a sync it was due has not come.
    assert settings.SYNC_INTERVAL_SECONDS < settings.CONNECTION_DEAD_AFTER_SECONDS < 30


def _mixed_history(room: Room, alice, bob) -> None:
    for seq in range(1, 131):
        author = bob if seq % 2 else alice
        EntryFactory(room=room, author=author, seq=seq, expression=f"{seq}+0", result=str(seq))
    Room.objects.filter(pk=room.pk).update(last_seq=130)


def test_entries_before_with_author_pages_back_through_one_persons_history(
    alice, bob, lobby
) -> None:
    _mixed_history(lobby, alice, bob)
    client = signed_in(bob)
    page = client.get("/rooms/lobby/entries/?format=json&before=131&author=bob&limit=50").json()
    seqs = [e["seq"] for e in page["entries"]]
    assert seqs == list(range(31, 131, 2))  # bob's newest 50, oldest first
    assert {e["author"] for e in page["entries"]} == {"bob"}
    assert page["has_more"] is True
    assert page["last_seq"] == 130

    page = client.get(f"/rooms/lobby/entries/?format=json&before={seqs[0]}&author=bob").json()
    assert [e["seq"] for e in page["entries"]] == list(range(1, 31, 2))
    assert page["has_more"] is False


def test_entries_after_with_author_and_an_unknown_author(alice, bob, lobby) -> None:
    _mixed_history(lobby, alice, bob)
    client = signed_in(bob)
    page = client.get("/rooms/lobby/entries/?format=json&after=120&author=alice").json()
    assert [e["seq"] for e in page["entries"]] == [122, 124, 126, 128, 130]
    nobody = client.get("/rooms/lobby/entries/?format=json&before=131&author=nobody").json()
    assert nobody["entries"] == []
    assert nobody["has_more"] is False
    # Without `author`, every entry, as before.
    everyone = client.get("/rooms/lobby/entries/?format=json&after=125").json()
    assert [e["seq"] for e in everyone["entries"]] == [126, 127, 128, 129, 130]
