"""The HTTP routes of rooms: pages, entries (HTML and JSON), presence, membership."""

from __future__ import annotations

import json
import re
import uuid

import pytest
from django.test import Client

from rooms.models import Entry, Membership, Room, RoomInvite
from rooms.services import entry_submit_sync
from tests.factories import EntryFactory, MembershipFactory, RoomFactory, UserFactory

pytestmark = pytest.mark.django_db


def signed_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def fill(room: Room, author, count: int) -> None:
    for seq in range(room.last_seq + 1, room.last_seq + count + 1):
        EntryFactory(room=room, author=author, seq=seq, expression=f"{seq}*1", result=str(seq))
    room.last_seq += count
    room.save(update_fields=["last_seq"])


# --- Room list and pages -------------------------------------------------------------------------


def test_room_list_shows_my_rooms_and_public_rooms_with_online_counts(alice, bob, lobby, vault):
    other_private = RoomFactory(name="Secret", visibility=Room.Visibility.PRIVATE)
    body = signed_in(bob).get("/").content.decode()
    assert "Lobby" in body
    assert "Vault" not in body  # alice's private room
    assert other_private.name not in body
    assert "0 online" in body
    assert "Vault" in signed_in(alice).get("/").content.decode()


def test_create_room_makes_me_the_owner(alice):
    client = signed_in(alice)
    response = client.post("/rooms/new/", {"name": "Tax 2026", "visibility": "private"})
    room = Room.objects.get(name="Tax 2026")
    assert response["Location"] == f"/rooms/{room.slug}/"
    assert room.slug == "tax-2026"
    assert room.visibility == "private"
    assert Membership.objects.get(room=room, user=alice).role == "owner"


def test_create_room_refuses_a_blank_name(alice):
    response = signed_in(alice).post("/rooms/new/", {"name": "  ", "visibility": "public"})
    assert response.status_code == 400
    assert not Room.objects.exists()


def test_room_names_that_slugify_alike_get_distinct_slugs(alice):
    client = signed_in(alice)
    client.post("/rooms/new/", {"name": "Budget", "visibility": "public"})
    client.post("/rooms/new/", {"name": "budget!", "visibility": "public"})
    assert len(set(Room.objects.values_list("slug", flat=True))) == 2


def test_room_page_shows_latest_50_entries_oldest_first(alice, lobby):
    fill(lobby, alice, 60)
    body = signed_in(alice).get("/rooms/lobby/").content.decode()
    assert 'id="entry-11"' in body and 'id="entry-60"' in body
    assert 'id="entry-10"' not in body
    assert body.index('id="entry-11"') < body.index('id="entry-60"')
    assert 'id="load-older"' in body
    assert 'name="expression"' in body
    for hook in ('id="online"', 'id="typing"', 'id="connection"'):
        assert hook in body


def test_private_room_is_404_to_strangers_everywhere(carol, vault):
    client = signed_in(carol)
    for url in ("/rooms/vault/", "/rooms/vault/entries/", "/rooms/vault/presence/"):
        assert client.get(url).status_code == 404, url
    assert client.post("/rooms/vault/join/").status_code == 404
    assert client.post("/rooms/vault/entries/", {"expression": "1"}).status_code == 404


def test_public_room_shows_strangers_a_join_button_and_refuses_its_data(carol, lobby):
    client = signed_in(carol)
    page = client.get("/rooms/lobby/")
    assert page.status_code == 200
    assert b'id="join"' in page.content
    assert b"entry-" not in page.content
    assert client.get("/rooms/lobby/entries/").status_code == 403
    assert client.get("/rooms/lobby/presence/").status_code == 403
    assert client.get("/rooms/lobby/entries/?format=json").json()["error"]["code"] == "forbidden"


def test_joining_a_public_room_makes_you_a_member(carol, lobby):
    client = signed_in(carol)
    assert client.post("/rooms/lobby/join/")["Location"] == "/rooms/lobby/"
    assert Membership.objects.filter(room=lobby, user=carol, role="member").exists()
    assert client.get("/rooms/lobby/entries/").status_code == 200


def test_leaving_a_room_ends_access(bob, lobby):
    client = signed_in(bob)
    client.post("/rooms/lobby/leave/", {"confirm": "yes"})
    assert not Membership.objects.filter(room=lobby, user=bob).exists()
    assert client.get("/rooms/lobby/entries/").status_code == 403


def test_owner_cannot_leave_their_room(alice, lobby):
    signed_in(alice).post("/rooms/lobby/leave/", {"confirm": "yes"})
    assert Membership.objects.filter(room=lobby, user=alice).exists()


def test_signed_out_requests_redirect_or_get_401_json(lobby):
    client = Client()
    assert client.get("/rooms/lobby/")["Location"].startswith("/accounts/login/")
    response = client.get("/rooms/lobby/entries/", HTTP_ACCEPT="application/json")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthenticated"
    assert client.get("/rooms/lobby/presence/?format=json").status_code == 401


# --- Invites and members -------------------------------------------------------------------------


def test_invite_link_lets_a_stranger_into_a_private_room(alice, carol, vault):
    members_page = signed_in(alice).get("/rooms/vault/members/").content.decode()
    token = RoomInvite.objects.get(room=vault).token
    assert f"/invite/{token}/" in members_page
    client = signed_in(carol)
    assert client.get(f"/invite/{token}/").status_code == 200
    assert client.post(f"/invite/{token}/")["Location"] == "/rooms/vault/"
    assert client.get("/rooms/vault/entries/").status_code == 200


def test_tampered_or_expired_invite_is_refused(alice, carol, vault, settings):
    signed_in(alice).get("/rooms/vault/members/")
    client = signed_in(carol)
    token = RoomInvite.objects.get(room=vault).token
    assert client.post(f"/invite/{token}x/").status_code == 400
    settings.INVITE_MAX_AGE_SECONDS = -1
    response = client.post(f"/invite/{token}/")
    assert response.status_code == 400
    assert b"expired" in response.content
    assert not Membership.objects.filter(room=vault, user=carol).exists()


def test_only_the_owner_sees_members_and_removes_them(alice, bob, lobby):
    assert signed_in(bob).get("/rooms/lobby/members/").status_code == 403
    client = signed_in(alice)
    assert b"bob" in client.get("/rooms/lobby/members/").content
    client.post(f"/rooms/lobby/members/{bob.id}/remove/", {"confirm": "yes"})
    assert not Membership.objects.filter(room=lobby, user=bob).exists()
    assert signed_in(bob).get("/rooms/lobby/entries/").status_code == 403


# --- Entries -------------------------------------------------------------------------------------


def test_entries_after_returns_json_in_seq_order_with_has_more(alice, lobby):
    fill(lobby, alice, 7)
    client = signed_in(alice)
    body = client.get("/rooms/lobby/entries/?after=2&limit=3", HTTP_ACCEPT="application/json")
    data = body.json()
    assert data["room"] == "lobby"
    assert data["last_seq"] == 7
    assert [e["seq"] for e in data["entries"]] == [3, 4, 5]
    assert data["has_more"] is True
    tail = client.get("/rooms/lobby/entries/?after=5&format=json").json()
    assert [e["seq"] for e in tail["entries"]] == [6, 7]
    assert tail["has_more"] is False
    entry = tail["entries"][0]
    assert set(entry) == {
        "seq", "author", "expression", "result", "error", "client_id", "created",
        "refs", "defines", "rounded",
    }  # fmt: skip
    assert entry["author"] == "alice"
    assert entry["client_id"] is None
    assert entry["created"].endswith("Z")


def test_a_catch_up_page_never_says_the_room_is_behind_what_it_holds(alice, lobby, monkeypatch):
    """The page's last_seq is the room's as its access check read it, or the page's newest
    entry when one was stored in between: a client never sees an entry past last_seq."""
    from rooms import selectors

    fill(lobby, alice, 3)
    real_page = selectors.entries_after

    def stored_meanwhile(**kwargs):
        fill(Room.objects.get(pk=lobby.pk), alice, 2)  # after the access check, before the page
        return real_page(**kwargs)

    monkeypatch.setattr(selectors, "entries_after", stored_meanwhile)
    data = signed_in(alice).get("/rooms/lobby/entries/?after=1&format=json").json()
    assert [e["seq"] for e in data["entries"]] == [2, 3, 4, 5]
    assert data["last_seq"] == 5
    assert data["has_more"] is False


def test_entries_before_pages_back_through_history(alice, lobby):
    fill(lobby, alice, 10)
    data = signed_in(alice).get("/rooms/lobby/entries/?before=8&limit=3&format=json").json()
    assert [e["seq"] for e in data["entries"]] == [5, 6, 7]
    assert data["has_more"] is True


@pytest.mark.parametrize(
    ("accept", "is_json"),
    [
        ("application/json", True),
        ("application/json, text/html;q=0.5", True),
        ("text/html, application/json;q=0.9", False),
        ("*/*", False),
        ("", False),
    ],
)
def test_entries_negotiate_html_or_json(alice, lobby, accept, is_json):
    fill(lobby, alice, 2)
    response = signed_in(alice).get("/rooms/lobby/entries/", HTTP_ACCEPT=accept)
    assert response["Content-Type"].startswith("application/json" if is_json else "text/html")
    if not is_json:
        body = response.content.decode()
        assert 'id="entry-1"' in body and 'data-seq="2"' in body
        assert response["X-Has-More"] == "false"
        assert response["X-Last-Seq"] == "2"


def test_entries_limit_is_capped_at_500_and_defaults_to_100(alice, lobby):
    fill(lobby, alice, 120)
    client = signed_in(alice)
    assert len(client.get("/rooms/lobby/entries/?format=json").json()["entries"]) == 100
    big = client.get("/rooms/lobby/entries/?limit=100000&format=json").json()
    assert len(big["entries"]) == 120


@pytest.mark.parametrize("query", ["after=abc", "after=-1", "limit=ten", "before=1.5"])
def test_malformed_entry_queries_are_a_clear_400(alice, lobby, query):
    response = signed_in(alice).get(f"/rooms/lobby/entries/?{query}&format=json")
    assert response.status_code == 400
    assert response.json()["error"]["message"]


def test_posting_an_entry_stores_it_like_the_socket(alice, lobby):
    client = signed_in(alice)
    client_id = str(uuid.uuid4())
    response = client.post(
        "/rooms/lobby/entries/",
        {"expression": "2**10", "client_id": client_id},
        HTTP_ACCEPT="application/json",
    )
    assert response.status_code == 201
    entry = response.json()["entry"]
    assert entry["seq"] == 1 and entry["result"] == "1024" and entry["client_id"] == client_id
    again = client.post(
        "/rooms/lobby/entries/",
        {"expression": "2**10", "client_id": client_id},
        HTTP_ACCEPT="application/json",
    )
    assert again.status_code == 200
    assert again.json()["entry"] == entry
    assert Entry.objects.filter(room=lobby).count() == 1


@pytest.mark.parametrize(
    ("expression", "code"), [("", "empty"), ("   ", "empty"), ("9" * 501, "too_long")]
)
def test_posting_a_refused_expression_stores_nothing(alice, lobby, expression, code):
    response = signed_in(alice).post(
        "/rooms/lobby/entries/?format=json", {"expression": expression}
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == code
    assert not Entry.objects.exists()


def test_posting_faster_than_the_bucket_is_rate_limited(alice, lobby):
    client = signed_in(alice)
    codes = [
        client.post("/rooms/lobby/entries/?format=json", {"expression": "1"}).status_code
        for _ in range(11)
    ]
    assert codes[:10] == [201] * 10
    assert codes[10] == 429
    assert Entry.objects.filter(room=lobby).count() == 10


def test_presence_route_answers_json(alice, lobby):
    data = signed_in(alice).get("/rooms/lobby/presence/").json()
    assert data == {"room": "lobby", "online": [], "count": 0}


# --- History and export --------------------------------------------------------------------------


def test_history_page_filters_by_author(alice, bob, lobby):
    entry_submit_sync(room_id=lobby.id, author=alice, expression="1+1", client_id=None)
    entry_submit_sync(room_id=lobby.id, author=bob, expression="2+2", client_id=None)
    carol = UserFactory(username="carol")
    MembershipFactory(room=lobby, user=carol)
    entry_submit_sync(room_id=lobby.id, author=carol, expression="3+3", client_id=None)
    Membership.objects.filter(room=lobby, user=carol).delete()  # left, but wrote here
    body = signed_in(alice).get("/rooms/lobby/history/?author=bob").content.decode()
    assert 'id="entry-2"' in body
    assert 'id="entry-1"' not in body
    assert re.findall(r'<option value="(\w+)"', body) == ["alice", "bob", "carol"]
    nobody = signed_in(alice).get("/rooms/lobby/history/?author=nobody").content.decode()
    assert "entry-" not in nobody


def test_history_downloads_stream_every_entry_as_csv_and_json(alice, lobby):
    fill(lobby, alice, 1205)  # more than one export batch
    client = signed_in(alice)
    csv_response = client.get("/rooms/lobby/export.csv")
    assert csv_response.streaming
    assert "attachment" in csv_response["Content-Disposition"]
    lines = b"".join(csv_response).decode().strip().splitlines()
    assert lines[0] == "seq,author,expression,result,error,client_id,created"
    assert len(lines) == 1206
    assert lines[1].startswith("1,alice,1*1,1,")
    json_response = client.get("/rooms/lobby/export.json")
    data = json.loads(b"".join(json_response))
    assert [e["seq"] for e in data["entries"]] == list(range(1, 1206))


def test_strangers_cannot_download_history(carol, lobby):
    assert signed_in(carol).get("/rooms/lobby/export.csv").status_code == 403


def test_admin_lists_rooms_and_entries(alice, lobby):
    alice.is_staff = alice.is_superuser = True
    alice.save()
    entry_submit_sync(room_id=lobby.id, author=alice, expression="3*3", client_id=None)
    client = signed_in(alice)
    for url in ("/admin/rooms/room/", "/admin/rooms/entry/", "/admin/rooms/membership/"):
        assert client.get(url).status_code == 200, url


def test_membership_is_unique_per_room_and_user(lobby, bob):
    from django.db import IntegrityError, transaction

    with pytest.raises(IntegrityError), transaction.atomic():
        MembershipFactory(room=lobby, user=bob)
    assert UserFactory(username="zed")


def test_owner_deletes_a_room_after_confirming_its_address(alice, bob, lobby):
    client = signed_in(alice)
    client.post("/rooms/lobby/delete/", {"confirm": "wrong"})
    assert Room.objects.filter(slug="lobby").exists()
    assert signed_in(bob).post("/rooms/lobby/delete/", {"confirm": "lobby"}).status_code == 403
    client.post("/rooms/lobby/delete/", {"confirm": "lobby"})
    assert not Room.objects.filter(slug="lobby").exists()
    assert client.get("/rooms/lobby/").status_code == 404


def test_not_found_and_forbidden_pages_explain_themselves(carol, bob, vault, lobby, settings):
    settings.DEBUG = False
    client = signed_in(carol)
    missing = client.get("/rooms/vault/")
    assert missing.status_code == 404
    assert b"invite link" in missing.content
    forbidden = signed_in(bob).get("/rooms/lobby/members/")
    assert forbidden.status_code == 403
    assert b"Not allowed" in forbidden.content
    assert b"Only the room&#x27;s owner can do that." in forbidden.content


def test_hostile_expression_text_is_shown_escaped_everywhere(alice, lobby):
    hostile = '<img src=x onerror="alert(1)">'
    entry_submit_sync(room_id=lobby.id, author=alice, expression=hostile, client_id=None)
    client = signed_in(alice)
    for url in ("/rooms/lobby/", "/rooms/lobby/entries/?after=0", "/rooms/lobby/history/"):
        body = client.get(url).content.decode()
        assert "<img" not in body, url
        assert "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in body, url


def test_create_room_refuses_an_overlong_name_instead_of_cutting_it(alice):
    response = signed_in(alice).post("/rooms/new/", {"name": "x" * 101, "visibility": "public"})
    assert response.status_code == 400
    assert b"at most 100 characters" in response.content
    assert ("x" * 101).encode() in response.content  # the typed name is still in the form
    assert not Room.objects.exists()


def test_create_room_refuses_an_unknown_visibility(alice):
    response = signed_in(alice).post("/rooms/new/", {"name": "Odd", "visibility": "secret"})
    assert response.status_code == 400
    assert not Room.objects.exists()
