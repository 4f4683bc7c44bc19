"""factory-boy factories. Personas: alice owns the room, bob is a member, carol is a stranger."""

from __future__ import annotations

import factory
from django.contrib.auth.hashers import make_password

from accounts.models import User
from rooms.models import Entry, Membership, Room

PASSWORD = "calcrooms-test-password"
_PASSWORD_HASH = make_password(PASSWORD)


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = User
        django_get_or_create = ("username",)

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda u: f"{u.username}@example.com")
    password = _PASSWORD_HASH


class RoomFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Room
        skip_postgeneration_save = True

    name = factory.Sequence(lambda n: f"Room {n}")
    slug = factory.Sequence(lambda n: f"room-{n}")
    owner = factory.SubFactory(UserFactory)
    visibility = Room.Visibility.PUBLIC

    @factory.post_generation
    def owner_membership(self, create: bool, extracted: object, **kwargs: object) -> None:
        if create:
            Membership.objects.get_or_create(
                room=self, user=self.owner, defaults={"role": Membership.Role.OWNER}
            )


class MembershipFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Membership

    room = factory.SubFactory(RoomFactory)
    user = factory.SubFactory(UserFactory)
    role = Membership.Role.MEMBER


class EntryFactory(factory.django.DjangoModelFactory):
    """Entries written straight to the table (history set-up); live writes use entry_submit."""

    class Meta:
        model = Entry

    room = factory.SubFactory(RoomFactory)
    author = factory.SubFactory(UserFactory)
    seq = factory.Sequence(lambda n: n + 1)
    expression = "1+1"
    result = "2"
    error = None
