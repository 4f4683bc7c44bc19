"""`selectors.rooms_grants_locked`, the store's access check for many rooms and people at once,
gives each person the access `room_access` gives them, in every case the rule knows; and it locks
the rooms' rows."""

from __future__ import annotations

import threading

import pytest
from django.db import connection, connections, transaction

from rooms import selectors
from rooms.models import Membership, Room, RoomBar
from tests.factories import RoomFactory, UserFactory

pytestmark = pytest.mark.django_db(transaction=True)


def _two_rooms_and_every_kind_of_person():
    """A public and a private room, each with a member, a barred stranger and a barred member;
    and a stranger to both."""
    public = RoomFactory(visibility=Room.Visibility.PUBLIC)
    private = RoomFactory(visibility=Room.Visibility.PRIVATE)
    member, stranger, barred, barred_member = UserFactory.create_batch(4)
    for room in (public, private):
        Membership.objects.create(room=room, user=member, role=Membership.Role.MEMBER)
        Membership.objects.create(room=room, user=barred_member, role=Membership.Role.MEMBER)
        for person in (barred, barred_member):
            RoomBar.objects.create(room=room, user=person, barred_by=room.owner)
    return public, private, member, stranger, barred, barred_member


def test_each_person_gets_what_room_access_gives_them_in_each_room():
    public, private, member, stranger, barred, barred_member = _two_rooms_and_every_kind_of_person()
    # The private room's member is a stranger to the public one, and the other way round.
    Membership.objects.create(room=private, user=public.owner, role=Membership.Role.MEMBER)
    people = [public.owner, private.owner, member, stranger, barred, barred_member]

    with transaction.atomic():
        found = selectors.rooms_grants_locked(
            {room.pk: [p.pk for p in people] + [member.pk] for room in (public, private)}
        )
    assert set(found) == {public.pk, private.pk}
    for room in (public, private):
        locked, grants = found[room.pk]
        expected = {p.pk: selectors.room_access(room_id=room.pk, user=p).access for p in people}
        assert grants == expected
        assert (locked.pk, locked.slug, locked.last_seq) == (room.pk, room.slug, room.last_seq)
        assert locked.is_public == (room is public)
    # The rule's every branch is among them.
    assert {access for _, grants in found.values() for access in grants.values()} == set(
        selectors.Access
    )


def test_a_room_that_is_gone_has_no_grants():
    room, person = RoomFactory(), UserFactory()
    with transaction.atomic():
        found = selectors.rooms_grants_locked({10**9: [person.pk], room.pk: [room.owner_id]})
    assert set(found) == {room.pk}
    assert found[room.pk][1] == {room.owner_id: selectors.Access.OWNER}


@pytest.mark.skipif(connection.vendor != "postgresql", reason="row locks")
def test_it_holds_the_rooms_rows_until_the_transaction_ends():
    room, other = RoomFactory(), RoomFactory()
    locked = threading.Event()
    release = threading.Event()

    def hold():
        try:
            with transaction.atomic():
                selectors.rooms_grants_locked(
                    {room.pk: [room.owner_id], other.pk: [other.owner_id]}
                )
                locked.set()
                release.wait(10)
        finally:
            connections.close_all()

    holder = threading.Thread(target=hold)
    holder.start()
    assert locked.wait(10)
    with connection.cursor() as cursor:
        cursor.execute("SET lock_timeout = '200ms'")
        for held in (room, other):
            with pytest.raises(Exception, match="lock"), transaction.atomic():
                Room.objects.select_for_update().get(pk=held.pk)
        cursor.execute("SET lock_timeout = 0")
    release.set()
    holder.join(10)
    with transaction.atomic():
        assert Room.objects.select_for_update().get(pk=room.pk).pk == room.pk


@pytest.mark.skipif(connection.vendor != "postgresql", reason="the plain-SQL path")
@pytest.mark.parametrize("lock", [False, True])
def test_room_access_in_plain_sql_answers_as_the_orm_does(lock):
    """PostgreSQL asks `room_access` in plain SQL, every other database through the ORM: the
    same room (its owner loaded, unless locking), the same access and the same bar for every
    kind of person, by slug and by id, and nothing for a room that is not there."""
    public, private, member, stranger, barred, barred_member = _two_rooms_and_every_kind_of_person()
    people = [public.owner, member, stranger, barred, barred_member]

    def fields(room):
        return {f.attname: getattr(room, f.attname) for f in Room._meta.concrete_fields}

    seen = set()
    with transaction.atomic():
        for room in (public, private):
            for person in people:
                for where in (
                    {"slug": room.slug, "room_id": None},
                    {"slug": None, "room_id": room.pk},
                ):
                    args = (person.pk, where["slug"], where["room_id"], lock)
                    plain, orm = (
                        selectors._room_access_sql(*args),
                        selectors._room_access_orm(*args),
                    )
                    assert (plain.access, plain.barred) == (orm.access, orm.barred)
                    assert fields(plain.room) == fields(orm.room)
                    if not lock:
                        assert plain.room.owner.username == room.owner.username
                    seen.add(plain.access)
        for gone in ({"slug": "no-such-room", "room_id": None}, {"slug": None, "room_id": 10**9}):
            args = (member.pk, gone["slug"], gone["room_id"], lock)
            assert selectors._room_access_sql(*args) == selectors._room_access_orm(*args)
    assert seen == set(selectors.Access)
