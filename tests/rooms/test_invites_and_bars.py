"""Invites that can be reset and bars that hold, through the real HTTP stack and sockets.

alice owns the rooms, bob is a member of lobby, carol is a stranger who gets an invite.
"""

from __future__ import annotations

import re
import secrets
from datetime import timedelta
from pathlib import Path

import pytest
from channels.db import database_sync_to_async
from django.conf import settings
from django.test import Client
from django.utils import timezone

from accounts.models import User
from rooms import services
from rooms.models import Membership, Room, RoomBar, RoomInvite

pytestmark = pytest.mark.django_db

TEMPLATES = Path(settings.BASE_DIR) / "templates" / "rooms"
INVITE_LINK = re.compile(r'<a id="invite-link" href="([^"]+)">')


def signed_in(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def invite_path(owner: User, room: Room) -> str:
    """The link the members page shows (as a path), read from the page as the owner sees it."""
    page = signed_in(owner).get(f"/rooms/{room.slug}/members/")
    assert page.status_code == 200
    url = INVITE_LINK.search(page.content.decode()).group(1)
    return url.removeprefix("http://testserver")


def remove(owner: User, room: Room, user: User) -> None:
    response = signed_in(owner).post(
        f"/rooms/{room.slug}/members/{user.id}/remove/", {"confirm": "yes"}
    )
    assert response.status_code == 302


# --- The link ---------------------------------------------------------------------------------


def test_invite_page_names_the_room_and_who_invited_before_joining(alice, carol, vault):
    link = invite_path(alice, vault)
    page = signed_in(carol).get(link)
    assert page.status_code == 200
    body = page.content.decode()
    assert "alice invited you to <strong>Vault</strong>" in body
    assert 'id="accept-invite"' in body
    assert not Membership.objects.filter(room=vault, user=carol).exists()  # GET joins nothing
    response = signed_in(carol).post(link)
    assert response["Location"] == "/rooms/vault/"
    assert Membership.objects.get(room=vault, user=carol).role == "member"


def test_members_page_shows_one_stable_link_across_visits(alice, carol, vault):
    links = {invite_path(alice, vault) for _ in range(3)}
    assert len(links) == 1
    assert RoomInvite.objects.filter(room=vault).count() == 1
    (link,) = links
    assert re.fullmatch(r"/invite/[A-Za-z0-9_-]{43}/", link)  # random, not the room's id
    assert signed_in(carol).get(link).status_code == 200


def test_a_reset_link_is_refused_on_get_with_400_saying_so(alice, carol, vault):
    old = invite_path(alice, vault)
    response = signed_in(alice).post("/rooms/vault/invite/reset/")
    assert response["Location"] == "/rooms/vault/members/"
    new = invite_path(alice, vault)
    assert new != old
    client = signed_in(carol)
    refused = client.get(old)
    assert refused.status_code == 400
    assert "was reset by the owner" in refused.content.decode()
    assert b'data-code="reset"' in refused.content
    assert b"accept-invite" not in refused.content
    assert client.post(old).status_code == 400
    assert not Membership.objects.filter(room=vault, user=carol).exists()
    assert client.get(new).status_code == 200
    assert client.post(new)["Location"] == "/rooms/vault/"


def test_reset_ends_every_earlier_link_not_just_the_current_one(alice, carol, vault):
    first = invite_path(alice, vault)
    signed_in(alice).post("/rooms/vault/invite/reset/")
    second = invite_path(alice, vault)
    signed_in(alice).post("/rooms/vault/invite/reset/")
    client = signed_in(carol)
    for link in (first, second):
        assert client.get(link).status_code == 400
    assert RoomInvite.objects.filter(room=vault, revoked_at__isnull=True).count() == 1


def test_an_expired_link_is_refused_on_get_saying_so_and_the_page_makes_a_new_one(
    alice, carol, vault, settings
):
    old = invite_path(alice, vault)
    RoomInvite.objects.filter(room=vault).update(
        created=timezone.now() - timedelta(seconds=settings.INVITE_MAX_AGE_SECONDS + 1)
    )
    refused = signed_in(carol).get(old)
    assert refused.status_code == 400
    assert "has expired" in refused.content.decode()
    assert b'data-code="expired"' in refused.content
    assert signed_in(carol).post(old).status_code == 400
    new = invite_path(alice, vault)
    assert new != old
    assert signed_in(carol).get(new).status_code == 200


def test_the_expiry_is_the_setting(alice, carol, vault, settings):
    link = invite_path(alice, vault)
    settings.INVITE_MAX_AGE_SECONDS = 0
    assert signed_in(carol).get(link).status_code == 400


@pytest.mark.parametrize(
    "token",
    [
        secrets.token_urlsafe(32),  # well formed, never issued
        "x",
        "a" * 500,
        "%2e%2e",
        "not-a-token-but-long-enough-to-look-like-one-0000000",
    ],
)
def test_a_bad_link_is_refused_on_get_with_400_saying_so(alice, carol, vault, token):
    invite_path(alice, vault)  # the room has a working link; this is not it
    response = signed_in(carol).get(f"/invite/{token}/")
    assert response.status_code == 400
    assert "not valid" in response.content.decode()
    assert b'data-code="invalid"' in response.content
    assert signed_in(carol).post(f"/invite/{token}/").status_code == 400
    assert not Membership.objects.filter(room=vault, user=carol).exists()


def test_a_tampered_link_is_bad(alice, carol, vault):
    link = invite_path(alice, vault)
    assert signed_in(carol).get(link.rstrip("/") + "x/").status_code == 400


def test_only_the_owner_sees_resets_and_unbars(alice, bob, carol, lobby):
    client = signed_in(bob)
    assert client.get("/rooms/lobby/members/").status_code == 403
    assert client.post("/rooms/lobby/invite/reset/").status_code == 403
    RoomBar.objects.create(room=lobby, user=carol, barred_by=alice)
    assert client.post(f"/rooms/lobby/members/{carol.id}/unbar/").status_code == 403
    assert RoomBar.objects.filter(room=lobby, user=carol).exists()
    assert not RoomInvite.objects.exists()


# --- Bars ----------------------------------------------------------------------------------------


def test_a_removed_member_replaying_their_old_link_is_refused(alice, carol, vault):
    link = invite_path(alice, vault)
    carol_client = signed_in(carol)
    carol_client.post(link)
    assert Membership.objects.filter(room=vault, user=carol).exists()
    remove(alice, vault, carol)
    assert RoomBar.objects.get(room=vault, user=carol).barred_by == alice
    page = carol_client.get(link)
    assert page.status_code == 403
    assert "You were removed from Vault" in page.content.decode()
    assert b"accept-invite" not in page.content
    replay = carol_client.post(link)
    assert replay.status_code == 403
    assert "You were removed from Vault" in replay.content.decode()
    assert not Membership.objects.filter(room=vault, user=carol).exists()
    assert carol_client.get("/rooms/vault/").status_code == 404
    assert carol_client.get("/rooms/vault/entries/").status_code == 404


def test_a_removed_member_is_refused_by_a_new_link_too(alice, carol, vault):
    signed_in(carol).post(invite_path(alice, vault))
    remove(alice, vault, carol)
    signed_in(alice).post("/rooms/vault/invite/reset/")
    new = invite_path(alice, vault)
    assert signed_in(carol).post(new).status_code == 403
    assert not Membership.objects.filter(room=vault, user=carol).exists()


def test_a_removed_member_is_refused_by_the_join_button(alice, bob, lobby):
    remove(alice, lobby, bob)
    client = signed_in(bob)
    page = client.get("/rooms/lobby/")  # a public room: its page, as a visitor, saying why
    assert page.status_code == 200
    assert 'id="join"' not in page.content.decode()
    assert "You were removed from Lobby" in page.content.decode()
    response = client.post("/rooms/lobby/join/")
    assert response.status_code == 403
    assert "You were removed from Lobby" in response.content.decode()
    assert not Membership.objects.filter(room=lobby, user=bob).exists()
    assert client.get("/rooms/lobby/entries/").status_code == 403


def test_a_membership_written_past_the_services_does_not_lift_a_bar(alice, bob, lobby):
    remove(alice, lobby, bob)
    Membership.objects.create(room=lobby, user=bob)  # the admin, a shell
    client = signed_in(bob)
    assert client.get("/rooms/lobby/entries/").status_code == 403
    assert client.post("/rooms/lobby/entries/", {"expression": "1+1"}).status_code == 403


def test_the_members_page_lists_barred_people_with_an_unbar_button(alice, bob, lobby):
    remove(alice, lobby, bob)
    body = signed_in(alice).get("/rooms/lobby/members/").content.decode()
    barred = body[body.index('id="barred"') :]
    assert 'data-username="bob"' in barred
    assert f'action="/rooms/lobby/members/{bob.id}/unbar/"' in barred
    members = body[body.index('id="members"') : body.index('id="barred"')]
    assert 'data-username="bob"' not in members


def test_unbar_lets_them_back_through_the_join_button_and_a_link(alice, bob, carol, lobby, vault):
    remove(alice, lobby, bob)
    response = signed_in(alice).post(f"/rooms/lobby/members/{bob.id}/unbar/")
    assert response["Location"] == "/rooms/lobby/members/"
    assert not RoomBar.objects.filter(room=lobby, user=bob).exists()
    assert not Membership.objects.filter(room=lobby, user=bob).exists()  # not re-added by it
    assert signed_in(bob).post("/rooms/lobby/join/")["Location"] == "/rooms/lobby/"

    link = invite_path(alice, vault)
    signed_in(carol).post(link)
    remove(alice, vault, carol)
    assert signed_in(carol).post(link).status_code == 403
    signed_in(alice).post(f"/rooms/vault/members/{carol.id}/unbar/")
    assert signed_in(carol).post(link)["Location"] == "/rooms/vault/"
    assert signed_in(carol).get("/rooms/vault/entries/").status_code == 200


def test_leaving_does_not_bar(bob, lobby):
    client = signed_in(bob)
    client.post("/rooms/lobby/leave/", {"confirm": "yes"})
    assert not RoomBar.objects.exists()
    assert client.post("/rooms/lobby/join/")["Location"] == "/rooms/lobby/"


def test_the_owner_cannot_be_removed_or_barred(alice, lobby):
    signed_in(alice).post(f"/rooms/lobby/members/{alice.id}/remove/", {"confirm": "yes"})
    assert Membership.objects.filter(room=lobby, user=alice, role="owner").exists()
    assert not RoomBar.objects.exists()


def test_removing_an_unknown_person_is_refused_cleanly(alice, lobby):
    response = signed_in(alice).post("/rooms/lobby/members/999999/remove/", {"confirm": "yes"})
    assert response.status_code == 302
    assert not RoomBar.objects.exists()


# --- Confirmation ------------------------------------------------------------------------------


def test_removing_asks_for_confirmation_first(alice, bob, lobby):
    client = signed_in(alice)
    for ask in (client.get, client.post):
        page = ask(f"/rooms/lobby/members/{bob.id}/remove/")
        assert page.status_code == 200
        body = page.content.decode()
        assert "Remove bob from Lobby?" in body
        assert 'name="confirm" value="yes"' in body
        assert Membership.objects.filter(room=lobby, user=bob).exists()
    assert (
        client.post(f"/rooms/lobby/members/{bob.id}/remove/", {"confirm": "no"}).status_code == 200
    )
    assert Membership.objects.filter(room=lobby, user=bob).exists()
    remove(alice, lobby, bob)
    assert not Membership.objects.filter(room=lobby, user=bob).exists()


def test_leaving_asks_for_confirmation_first(bob, lobby):
    client = signed_in(bob)
    for ask in (client.get, client.post):
        page = ask("/rooms/lobby/leave/")
        assert page.status_code == 200
        assert "Leave Lobby?" in page.content.decode()
        assert Membership.objects.filter(room=lobby, user=bob).exists()
    assert client.post("/rooms/lobby/leave/", {"confirm": "yes"})["Location"] == "/"
    assert not Membership.objects.filter(room=lobby, user=bob).exists()


def test_the_confirmation_pages_are_strangers_404_and_members_403(bob, carol, vault, lobby):
    assert signed_in(carol).get("/rooms/vault/leave/").status_code == 404
    assert signed_in(bob).get(f"/rooms/lobby/members/{bob.id}/remove/").status_code == 403


@pytest.mark.parametrize(
    "name",
    ["room_members.html", "invite.html", "room_join.html", "room_list.html", "room_create.html",
     "confirm.html", "partials/room_pager.html"],
)  # fmt: skip
def test_the_templates_have_no_inline_event_handlers(name):
    text = (TEMPLATES / name).read_text()
    assert not re.search(r"\son[a-z]+\s*=", text, re.IGNORECASE), name


# --- Sockets ----------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
async def test_a_removed_member_is_closed_and_refused_at_the_handshake(connect, alice, bob, lobby):
    bob_ws = await connect(bob, "lobby")
    assert bob_ws.connected
    await database_sync_to_async(services.member_remove)(room=lobby, actor=alice, user_id=bob.id)
    assert await bob_ws.receive_close(timeout=10) == 4403
    # Re-added past the services (the admin): the bar still holds at the handshake.
    await Membership.objects.acreate(room=lobby, user=bob)
    again = await connect(bob, "lobby")
    assert not again.connected


@pytest.mark.django_db(transaction=True)
async def test_a_member_re_added_past_a_bar_is_closed_by_the_room_tick(connect, alice, bob, lobby):
    bob_ws = await connect(bob, "lobby")
    assert bob_ws.connected
    await RoomBar.objects.acreate(room=lobby, user=bob, barred_by=alice)  # membership left in place
    limit = settings.ROOM_TICK_SECONDS + 5
    assert await bob_ws.receive_close(timeout=limit) == 4403


@pytest.mark.django_db(transaction=True)
def test_members_page_visits_at_the_same_moment_make_one_link():
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from django.db import connection

    from tests.factories import RoomFactory, UserFactory

    owner = UserFactory(username="erin")
    room = RoomFactory(owner=owner, slug="race", visibility=Room.Visibility.PRIVATE)
    start = threading.Barrier(4)

    def visit(_: int) -> str:
        try:
            client = signed_in(owner)
            start.wait()
            page = client.get("/rooms/race/members/").content.decode()
            return INVITE_LINK.search(page).group(1)
        finally:
            connection.close()

    with ThreadPoolExecutor(4) as pool:
        links = set(pool.map(visit, range(4)))
    assert len(links) == 1
    assert RoomInvite.objects.filter(room=room).count() == 1


def test_admin_lists_invites_and_bars_and_lifting_a_bar_there_works(alice, bob, lobby):
    alice.is_staff = alice.is_superuser = True
    alice.save()
    invite_path(alice, lobby)
    remove(alice, lobby, bob)
    client = signed_in(alice)
    for url in ("/admin/rooms/roominvite/", "/admin/rooms/roombar/"):
        page = client.get(url)
        assert page.status_code == 200, url
    assert client.get("/admin/rooms/roominvite/add/").status_code == 403  # made on the page only
    bar = RoomBar.objects.get(room=lobby, user=bob)
    client.post(f"/admin/rooms/roombar/{bar.pk}/delete/", {"post": "yes"})
    assert signed_in(bob).post("/rooms/lobby/join/")["Location"] == "/rooms/lobby/"
