"""Each room's tick re-checks its sockets: one that lost its place by any path is closed.

Nothing here sends a revocation event: the membership, session or user changes the way the admin,
a shell or a password change would, or the event is dropped by the layer, and the tick alone must
close the socket (4403 access, 4401 session) within one tick; after that it receives nothing.
"""

from __future__ import annotations

from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from django.conf import settings
from django.contrib.auth import HASH_SESSION_KEY
from django.contrib.sessions.backends.db import SessionStore
from django.contrib.sessions.models import Session
from django.db import connection

from accounts.models import User
from presence import services as presence_services
from rooms import consumers, selectors, services
from rooms.models import Membership
from rooms.selectors import Lost, Seat
from tests.conftest import session_cookie
from tests.factories import MembershipFactory, RoomFactory, UserFactory
from tests.rooms.test_room_grants import _two_rooms_and_every_kind_of_person

pytestmark = pytest.mark.django_db(transaction=True)

TICK_DEADLINE = 5  # the product's bound is one tick (0.2 s here); generous for a busy machine


@pytest.fixture(autouse=True)
def fast_tick(settings: Any) -> None:
    settings.ROOM_TICK_SECONDS = 0.2


async def _bob_and_alice(connect, bob, alice):
    cookie = await sync_to_async(session_cookie)(bob)
    bob_ws = await connect(bob, "lobby", cookie=cookie)
    alice_ws = await connect(alice, "lobby")
    await bob_ws.receive_type("sync")
    await alice_ws.receive_type("sync")
    return bob_ws, alice_ws, cookie


async def _closed_then_silent(socket, code: int, alice_ws) -> None:
    assert await socket.receive_close(timeout=TICK_DEADLINE) == code
    # The room goes on: alice's next entry reaches her, and nothing more reaches the closed one.
    await alice_ws.send({"type": "expression", "expression": "6*7"})
    assert (await alice_ws.receive_type("entry"))["entry"]["result"] == "42"
    assert await socket.communicator.receive_nothing(timeout=0.5)


async def test_membership_deleted_outside_the_services_closes_with_4403(connect, lobby, alice, bob):
    bob_ws, alice_ws, _ = await _bob_and_alice(connect, bob, alice)
    await Membership.objects.filter(room=lobby, user=bob).adelete()  # the admin, a shell
    await _closed_then_silent(bob_ws, 4403, alice_ws)


async def test_a_dropped_revocation_event_still_closes_with_4403(
    connect, lobby, alice, bob, sent_events
):
    bob_ws, _alice_ws, _ = await _bob_and_alice(connect, bob, alice)
    await database_sync_to_async(services.member_remove)(room=lobby, actor=alice, user_id=bob.id)
    assert [event["type"] for _, event in sent_events] == ["access.revoked"]  # never delivered
    sent_events.clear()
    assert await bob_ws.receive_close(timeout=TICK_DEADLINE) == 4403


async def test_a_deleted_session_closes_with_4401(connect, lobby, alice, bob):
    bob_ws, alice_ws, cookie = await _bob_and_alice(connect, bob, alice)
    await Session.objects.filter(session_key=cookie).adelete()  # logged out elsewhere, cleared
    await _closed_then_silent(bob_ws, 4401, alice_ws)


async def test_an_expired_session_closes_with_4401(connect, lobby, alice, bob):
    from django.utils import timezone

    bob_ws, alice_ws, cookie = await _bob_and_alice(connect, bob, alice)
    await Session.objects.filter(session_key=cookie).aupdate(expire_date=timezone.now())
    await _closed_then_silent(bob_ws, 4401, alice_ws)


async def test_a_password_change_closes_the_other_sessions_with_4401(connect, lobby, alice, bob):
    bob_ws, alice_ws, _ = await _bob_and_alice(connect, bob, alice)

    def change_password() -> None:
        user = User.objects.get(pk=bob.pk)
        user.set_password("a brand new passphrase")
        user.save()

    await database_sync_to_async(change_password)()
    await _closed_then_silent(bob_ws, 4401, alice_ws)


async def test_the_session_that_changed_the_password_stays(connect, lobby, alice, bob):
    """Django keeps the changer's session valid (update_session_auth_hash); so does the tick."""
    bob_ws, alice_ws, cookie = await _bob_and_alice(connect, bob, alice)

    def change_password_in_this_session() -> None:
        user = User.objects.get(pk=bob.pk)
        user.set_password("a brand new passphrase")
        user.save()
        session = SessionStore(session_key=cookie)
        session[HASH_SESSION_KEY] = user.get_session_auth_hash()
        session.save()

    await database_sync_to_async(change_password_in_this_session)()
    assert await bob_ws.nothing("error", within=1.0)  # several ticks pass, still open
    await alice_ws.send({"type": "expression", "expression": "1+1"})
    assert (await bob_ws.receive_type("entry"))["entry"]["result"] == "2"


async def test_a_deactivated_user_is_closed_with_4401(connect, lobby, alice, bob):
    bob_ws, alice_ws, _ = await _bob_and_alice(connect, bob, alice)
    await User.objects.filter(pk=bob.pk).aupdate(is_active=False)
    await _closed_then_silent(bob_ws, 4401, alice_ws)


async def test_a_deleted_room_closes_every_socket_with_4403(
    connect, lobby, alice, bob, sent_events
):
    bob_ws, alice_ws, _ = await _bob_and_alice(connect, bob, alice)
    await database_sync_to_async(services.room_delete)(room=lobby, actor=alice)  # event dropped
    assert await bob_ws.receive_close(timeout=TICK_DEADLINE) == 4403
    assert await alice_ws.receive_close(timeout=TICK_DEADLINE) == 4403


async def test_sockets_that_keep_their_place_stay_open(connect, lobby, alice, bob):
    bob_ws, alice_ws, _ = await _bob_and_alice(connect, bob, alice)
    assert await bob_ws.nothing("error", within=1.0)  # five ticks: nobody is closed
    await bob_ws.send({"type": "expression", "expression": "2+2"})
    assert (await alice_ws.receive_type("entry"))["entry"]["result"] == "4"


def test_the_recheck_costs_two_queries_however_many_sockets(
    lobby, alice, django_assert_max_num_queries
):
    seats = set()
    for n in range(30):
        user = UserFactory(username=f"reader{n}")
        MembershipFactory(room=lobby, user=user)
        seats.add(Seat(user.id, session_cookie(user)))
    gone = UserFactory(username="gone")
    seats.add(Seat(gone.id, session_cookie(gone)))  # signed in, but not a member
    with django_assert_max_num_queries(2):
        lost = selectors.seats_recheck(room_id=lobby.id, seats=seats)
    assert lost == {
        Seat(gone.id, next(s.session_key for s in seats if s.user_id == gone.id)): Lost.ACCESS
    }
    assert settings.SESSION_ENGINE == "django.contrib.sessions.backends.db"


def test_one_recheck_covers_every_room_of_the_process_in_two_queries(
    django_assert_max_num_queries,
):
    """The tick asks once for all the rooms with sockets here: each seat is judged by its own
    room's membership and bars, a room that is gone loses every seat, an ended session loses its
    seat everywhere, and the rooms where nobody lost anything are absent."""
    public, private, member, stranger, barred, barred_member = _two_rooms_and_every_kind_of_person()
    signed_out = UserFactory()
    for room in (public, private):
        MembershipFactory(room=room, user=signed_out)
    people = [public.owner, private.owner, member, stranger, barred, barred_member, signed_out]
    seat = {person.pk: Seat(person.pk, session_cookie(person)) for person in people}
    Session.objects.filter(session_key=seat[signed_out.pk].session_key).delete()
    quiet = RoomFactory()
    MembershipFactory(room=quiet, user=member)
    gone_room = 10**9

    with django_assert_max_num_queries(2):
        lost = selectors.rooms_seats_recheck(
            {
                public.pk: list(seat.values()),
                private.pk: list(seat.values()),
                quiet.pk: [seat[member.pk]],
                gone_room: [seat[member.pk]],
            }
        )

    def kept_only(*keepers):
        out = {s: Lost.ACCESS for uid, s in seat.items() if uid not in {k.pk for k in keepers}}
        out[seat[signed_out.pk]] = Lost.SESSION
        return out

    assert lost == {
        public.pk: kept_only(public.owner, member),
        private.pk: kept_only(private.owner, member),
        gone_room: {seat[member.pk]: Lost.ACCESS},
    }


@pytest.mark.skipif(connection.vendor != "postgresql", reason="the plain-SQL path")
def test_the_recheck_in_plain_sql_reads_what_the_orm_reads():
    public, private, member, stranger, barred, barred_member = _two_rooms_and_every_kind_of_person()
    people = [public.owner.pk, member.pk, stranger.pk, barred.pk, barred_member.pk, 10**9]
    wanted = {public.pk: people, private.pk: people, 10**9: people[:2]}
    plain = selectors._holders_plain(wanted)
    assert plain == selectors._holders_orm(wanted)
    assert {key for key, holder in plain.items() if holder.barred} == {
        (room.pk, person.pk) for room in (public, private) for person in (barred, barred_member)
    }
    assert (public.pk, 10**9) not in plain  # a user who is gone has no row


async def test_one_tick_asks_the_database_once_for_all_the_rooms(
    connect, lobby, vault, alice, bob, monkeypatch
):
    """Bob's sockets in two rooms: both rooms' seats go to the database in one call a tick, and
    one tick closes him in both once he lost both."""
    await database_sync_to_async(MembershipFactory)(room=vault, user=bob)
    calls: list[set[int]] = []
    real = consumers._tick_database

    def counted(**work):
        calls.append(set(work["seats"]))
        return real(**work)

    monkeypatch.setattr(consumers, "_tick_database", counted)
    in_lobby, in_vault = await connect(bob, "lobby"), await connect(bob, "vault")
    await in_lobby.receive_type("sync")
    await in_vault.receive_type("sync")
    await Membership.objects.filter(user=bob).adelete()  # the admin, a shell
    assert await in_lobby.receive_close(timeout=TICK_DEADLINE) == 4403
    assert await in_vault.receive_close(timeout=TICK_DEADLINE) == 4403
    assert calls and {lobby.pk, vault.pk} in calls
    assert all(len(rooms) <= 2 for rooms in calls)  # never a call per room and seat


async def test_a_room_whose_presence_fails_still_closes_who_lost_access(
    connect, lobby, alice, bob, monkeypatch
):
    """Redis is away for the room's presence: the tick still re-checks its sockets."""
    bob_ws, _alice_ws, _ = await _bob_and_alice(connect, bob, alice)

    async def redis_away(**kwargs):
        raise ConnectionError("Redis is away")

    monkeypatch.setattr(presence_services, "presence_check", redis_away)
    monkeypatch.setattr(presence_services, "presence_refresh_many", redis_away)
    await Membership.objects.filter(room=lobby, user=bob).adelete()
    assert await bob_ws.receive_close(timeout=TICK_DEADLINE) == 4403
