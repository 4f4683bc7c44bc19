"""`selectors.room_grants_locked`, the store's access check for many people at once, gives each
person the access `room_access` gives them, in every case the rule knows; and it locks the row."""

from __future__ import annotations

import threading

import pytest
from django.db import connection, connections, transaction

from rooms import selectors
from rooms.models import Membership, Room, RoomBar
from tests.factories import RoomFactory, UserFactory

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.mark.parametrize("visibility", [Room.Visibility.PUBLIC, Room.Visibility.PRIVATE])
def test_each_person_gets_what_room_access_gives_them(visibility):
    room = RoomFactory(visibility=visibility)
    member, stranger, barred, barred_member = UserFactory.create_batch(4)
    Membership.objects.create(room=room, user=member, role=Membership.Role.MEMBER)
    Membership.objects.create(room=room, user=barred_member, role=Membership.Role.MEMBER)
    for person in (barred, barred_member):
        RoomBar.objects.create(room=room, user=person, barred_by=room.owner)
    people = [room.owner, member, stranger, barred, barred_member]

    with transaction.atomic():
        locked, grants = selectors.room_grants_locked(
            room_id=room.pk, user_ids=[p.pk for p in people] + [member.pk]
        )
    expected = {p.pk: selectors.room_access(room_id=room.pk, user=p).access for p in people}
    assert grants == expected
    # The rule's every branch is among them.
    assert set(expected.values()) >= {selectors.Access.OWNER, selectors.Access.MEMBER}
    assert (locked.pk, locked.slug, locked.last_seq) == (room.pk, room.slug, room.last_seq)
    assert locked.is_public == (visibility == Room.Visibility.PUBLIC)


def test_a_room_that_is_gone_has_no_grants():
    person = UserFactory()
    with transaction.atomic():
        assert selectors.room_grants_locked(room_id=10**9, user_ids=[person.pk]) == (None, {})


@pytest.mark.skipif(connection.vendor != "postgresql", reason="row locks")
def test_it_holds_the_rooms_row_until_the_transaction_ends():
    room = RoomFactory()
    locked = threading.Event()
    release = threading.Event()

    def hold():
        try:
            with transaction.atomic():
                selectors.room_grants_locked(room_id=room.pk, user_ids=[room.owner_id])
                locked.set()
                release.wait(10)
        finally:
            connections.close_all()

    holder = threading.Thread(target=hold)
    holder.start()
    assert locked.wait(10)
    with connection.cursor() as cursor:
        cursor.execute("SET lock_timeout = '200ms'")
        with pytest.raises(Exception, match="lock"), transaction.atomic():
            Room.objects.select_for_update().get(pk=room.pk)
        cursor.execute("SET lock_timeout = 0")
    release.set()
    holder.join(10)
    with transaction.atomic():
        assert Room.objects.select_for_update().get(pk=room.pk).pk == room.pk
