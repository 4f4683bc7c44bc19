"""Abuse that costs the abuser: rooms per person per hour, a paged room list, and a CSV export
that no spreadsheet runs."""

from __future__ import annotations

import csv
import io
import json
import re
import threading
from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from accounts.models import User
from rooms.models import Room
from rooms.services import entry_submit_sync
from tests.factories import EntryFactory, MembershipFactory, RoomFactory, UserFactory

pytestmark = pytest.mark.django_db

DATA_ROOM = re.compile(r'data-room="([^"]+)"')


def signed_in(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


# --- Rooms per person per hour -------------------------------------------------------------------


def test_rooms_created_per_person_per_hour_are_capped(alice, bob, settings):
    settings.ROOMS_PER_HOUR = 3
    client = signed_in(alice)
    for n in range(3):
        assert (
            client.post("/rooms/new/", {"name": f"R{n}", "visibility": "public"}).status_code == 302
        )
    refused = client.post("/rooms/new/", {"name": "One more", "visibility": "private"})
    assert refused.status_code == 429
    body = refused.content.decode()
    assert "at most 3 rooms an hour" in body
    assert 'value="One more"' in body  # the form again, as typed
    assert Room.objects.filter(owner=alice).count() == 3
    # The cap is per person: bob is not held back by alice.
    assert (
        signed_in(bob).post("/rooms/new/", {"name": "Bob's", "visibility": "public"}).status_code
        == 302
    )


def test_rooms_older_than_an_hour_do_not_count(alice, settings):
    settings.ROOMS_PER_HOUR = 2
    client = signed_in(alice)
    for n in range(2):
        client.post("/rooms/new/", {"name": f"Old {n}", "visibility": "public"})
    assert (
        client.post("/rooms/new/", {"name": "Blocked", "visibility": "public"}).status_code == 429
    )
    Room.objects.filter(owner=alice).update(created=timezone.now() - timedelta(hours=1, seconds=1))
    assert client.post("/rooms/new/", {"name": "Fresh", "visibility": "public"}).status_code == 302


def test_the_default_cap_is_ten_an_hour(alice):
    client = signed_in(alice)
    statuses = [
        client.post("/rooms/new/", {"name": f"Room {n}", "visibility": "public"}).status_code
        for n in range(11)
    ]
    assert statuses == [302] * 10 + [429]


# --- The room list is paged ----------------------------------------------------------------------


def _slugs(client: Client, query: str, section: str) -> list[str]:
    body = client.get("/" + query).content.decode()
    start = body.find(f'id="{section}"')
    if start < 0:
        return []
    return DATA_ROOM.findall(body[start : body.index("</ul>", start)])


def test_the_public_room_list_is_paged(alice, carol, settings):
    settings.ROOM_LIST_PAGE_SIZE = 5
    rooms = [RoomFactory(owner=alice, name=f"Public {n:02d}") for n in range(12)]
    client = signed_in(carol)
    pages = [_slugs(client, f"?page={n}", "public-rooms") for n in (1, 2, 3)]
    assert [len(page) for page in pages] == [5, 5, 2]
    assert [slug for page in pages for slug in page] == [room.slug for room in rooms]
    body = client.get("/?page=2").content.decode()
    assert 'href="?page=1"' in body and 'href="?page=3"' in body
    assert "Page 2 of 3" in body
    # A page past the end or not a number answers a page, never an error.
    assert _slugs(client, "?page=99", "public-rooms") == pages[2]
    assert _slugs(client, "?page=abc", "public-rooms") == pages[0]


def test_your_rooms_are_paged_on_their_own(alice, bob, settings):
    settings.ROOM_LIST_PAGE_SIZE = 3
    for n in range(4):
        MembershipFactory(room=RoomFactory(owner=alice, name=f"Mine {n}"), user=bob)
    for n in range(4):
        RoomFactory(owner=alice, name=f"Theirs {n}")
    client = signed_in(bob)
    assert len(_slugs(client, "", "my-rooms")) == 3
    assert len(_slugs(client, "?mine=2", "my-rooms")) == 1
    assert len(_slugs(client, "?mine=2", "public-rooms")) == 3  # public stays on its page 1
    both = client.get("/?mine=2&page=2").content.decode()
    assert 'href="?mine=1&amp;page=2"' in both  # each pager keeps the other's page
    mine = set(_slugs(client, "", "my-rooms") + _slugs(client, "?mine=2", "my-rooms"))
    public = set(_slugs(client, "", "public-rooms") + _slugs(client, "?page=2", "public-rooms"))
    assert len(mine) == 4 and len(public) == 4 and not mine & public


def test_the_room_list_costs_the_same_however_many_rooms_exist(
    alice, carol, settings, django_assert_max_num_queries
):
    settings.ROOM_LIST_PAGE_SIZE = 10
    client = signed_in(carol)
    for n in range(5):
        RoomFactory(owner=alice, name=f"Few {n}")
    client.get("/")  # warm the session
    with django_assert_max_num_queries(8) as few:
        response = client.get("/")
    assert response.status_code == 200
    Room.objects.bulk_create(
        Room(slug=f"many-{n}", name=f"Many {n:03d}", owner=alice) for n in range(300)
    )
    with django_assert_max_num_queries(len(few.captured_queries)):
        response = client.get("/")
    assert len(DATA_ROOM.findall(response.content.decode())) == 10


# --- CSV export ----------------------------------------------------------------------------------

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _csv(client: Client, slug: str) -> list[list[str]]:
    response = client.get(f"/rooms/{slug}/export.csv")
    assert response.status_code == 200
    text = b"".join(response).decode()
    return list(csv.reader(io.StringIO(text, newline="")))


def test_csv_export_neutralises_every_cell_a_spreadsheet_would_run(alice, lobby):
    hostile = UserFactory(username="-eve")  # usernames may start with - + @
    MembershipFactory(room=lobby, user=hostile)
    # Through the service (evaluated: results and error texts as the calculator writes them).
    for author, expression in [
        (alice, '=HYPERLINK("http://evil.example","click")'),
        (alice, "-5*2"),
        (alice, "+7"),
        (alice, "@SUM(1)"),
        (hostile, "1+1"),
    ]:
        entry_submit_sync(room_id=lobby.id, author=author, expression=expression, client_id=None)
    # Straight to the table: what a stored row could hold however it got there.
    seq = lobby.last_seq = lobby.entries.count()
    for expression, result, error in [
        ("\t=1+1", "=2", None),
        ("\r=cmd|' /C calc'!A0", None, "=error"),
        ("2", "@x", None),
    ]:
        seq += 1
        EntryFactory(room=lobby, author=alice, seq=seq, expression=expression, result=result,
                     error=error)  # fmt: skip
    rows = _csv(signed_in(alice), "lobby")
    header, body = rows[0], rows[1:]
    assert header == ["seq", "author", "expression", "result", "error", "client_id", "created"]
    assert len(body) == 8
    for row in rows:
        for cell in row:
            assert not cell.startswith(FORMULA_STARTS), (row, cell)
    # Nothing is lost: each neutralised cell is the stored text after its '.
    json_entries = json.loads(b"".join(signed_in(alice).get("/rooms/lobby/export.json")))["entries"]
    for row, entry in zip(body, json_entries, strict=True):
        for column, cell in zip(header, row, strict=True):
            stored = entry[column]
            stored = "" if stored is None else str(stored)
            if stored.startswith(FORMULA_STARTS):
                assert cell == "'" + stored, (column, cell, stored)
            else:
                assert cell == stored, (column, cell, stored)
    by_expression = {row[2]: row for row in body}
    hyperlink = by_expression['\'=HYPERLINK("http://evil.example","click")']
    assert hyperlink[3] == "" and hyperlink[4]  # the calculator's error text, not a formula
    assert by_expression["'-5*2"][3] == "'-10"
    assert by_expression["1+1"][1] == "'-eve"
    assert by_expression["'\t=1+1"][3] == "'=2"
    assert by_expression["'\r=cmd|' /C calc'!A0"][4] == "'=error"


def test_json_export_is_unchanged(alice, lobby):
    entry_submit_sync(room_id=lobby.id, author=alice, expression="-5*2", client_id=None)
    data = json.loads(b"".join(signed_in(alice).get("/rooms/lobby/export.json")))
    (entry,) = data["entries"]
    assert entry["expression"] == "-5*2"
    assert entry["result"] == "-10"


@pytest.mark.django_db(transaction=True)
def test_the_cap_holds_for_requests_at_the_same_moment(settings):
    from concurrent.futures import ThreadPoolExecutor

    from django.db import connection

    settings.ROOMS_PER_HOUR = 2
    dora = UserFactory(username="dora")
    # One request that fails before the barrier fails the test (its error raised below) instead
    # of leaving the other five waiting for it forever.
    start = threading.Barrier(6, timeout=30)

    def create(n: int) -> int:
        try:
            client = signed_in(dora)
            start.wait()
            return client.post(
                "/rooms/new/", {"name": f"Race {n}", "visibility": "public"}
            ).status_code
        except BaseException:
            start.abort()  # the others stop waiting for this one
            raise
        finally:
            connection.close()

    with ThreadPoolExecutor(6) as pool:
        futures = [pool.submit(create, n) for n in range(6)]
    failures = [f.exception() for f in futures if f.exception() is not None]
    causes = [e for e in failures if not isinstance(e, threading.BrokenBarrierError)]
    if failures:
        raise (causes or failures)[0]
    statuses = sorted(f.result() for f in futures)
    assert statuses == [302, 302, 429, 429, 429, 429]
    assert Room.objects.filter(owner=dora).count() == 2
