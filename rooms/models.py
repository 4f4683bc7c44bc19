"""Rooms, who belongs to them, and their durable, gap-free history of entries."""

from __future__ import annotations

from django.conf import settings
from django.db import models


class Room(models.Model):
    class Visibility(models.TextChoices):
        PUBLIC = "public", "Public"
        PRIVATE = "private", "Private"

    slug = models.SlugField(max_length=60, unique=True)
    name = models.CharField(max_length=100)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="owned_rooms"
    )
    visibility = models.CharField(
        max_length=10, choices=Visibility.choices, default=Visibility.PUBLIC
    )
    # The seq of the newest entry. Incremented under this row's lock in the entry's own
    # transaction, so seqs have no gaps and commit in seq order.
    last_seq = models.BigIntegerField(default=0)
    created = models.DateTimeField(auto_now_add=True)
    # When the newest entry was stored (None: no entry yet): the room list orders by it.
    last_activity = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def is_public(self) -> bool:
        return self.visibility == self.Visibility.PUBLIC


class Membership(models.Model):
    class Role(models.TextChoices):
        OWNER = "owner", "Owner"
        MEMBER = "member", "Member"

    room = models.ForeignKey(Room, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships"
    )
    role = models.CharField(max_length=10, choices=Role.choices, default=Role.MEMBER)
    joined = models.DateTimeField(auto_now_add=True)
    # The person's read position: every entry with seq <= this has been shown to them on a
    # visible room page. Only moves forward (services.read_position_advance); seqs have no gaps,
    # so the room's unread count is `room.last_seq - last_read_seq`.
    last_read_seq = models.BigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["room", "user"], name="membership_room_user_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.user} in {self.room} ({self.role})"


class Entry(models.Model):
    # No index of its own: (room, seq) leads with room and serves every lookup by room.
    room = models.ForeignKey(Room, on_delete=models.CASCADE, related_name="entries", db_index=False)
    seq = models.BigIntegerField()
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="entries"
    )
    client_id = models.UUIDField(null=True, blank=True)
    expression = models.CharField(max_length=settings.EXPRESSION_MAX_LENGTH)
    result = models.TextField(null=True, blank=True)
    error = models.TextField(null=True, blank=True)
    created = models.DateTimeField(auto_now_add=True)
    # What the expression read and set, fixed when it was stored (resolved under the room's row
    # lock against exactly the entries with a smaller seq): the seqs it read through ans, #N and
    # variables, in order of first use; the variable it defined; whether its result was rounded.
    refs = models.JSONField(default=list, blank=True)
    defines = models.CharField(max_length=settings.EXPRESSION_MAX_LENGTH, null=True, blank=True)
    rounded = models.BooleanField(default=False)
    # The calculator rules it was evaluated by (rooms.calculator.RULES): entries stored before
    # shared results are 1 and keep their results; a replay recomputes only the current rules.
    rules = models.PositiveSmallIntegerField(default=2)

    class Meta:
        ordering = ["room", "seq"]
        verbose_name_plural = "entries"
        constraints = [
            # Also the index behind every "after N" / "before N" page of a room.
            models.UniqueConstraint(fields=["room", "seq"], name="entry_room_seq_unique"),
            models.UniqueConstraint(
                fields=["room", "author", "client_id"], name="entry_room_author_client_id_unique"
            ),
            models.CheckConstraint(
                condition=(
                    models.Q(result__isnull=False, error__isnull=True)
                    | models.Q(result__isnull=True, error__isnull=False)
                ),
                name="entry_result_xor_error",
            ),
            models.CheckConstraint(condition=models.Q(seq__gte=1), name="entry_seq_positive"),
            models.CheckConstraint(
                condition=models.Q(defines__isnull=True) | models.Q(result__isnull=False),
                name="entry_defines_only_with_result",
            ),
        ]
        indexes = [
            # History filtered by author pages in seq order.
            models.Index(fields=["room", "author", "seq"], name="entry_room_author_seq"),
            # `ans`: the newest entry with a result before seq N, one probe however many errors.
            models.Index(
                fields=["room", "seq"],
                name="entry_room_result_seq",
                condition=models.Q(error__isnull=True),
            ),
            # A variable: its newest definition before seq N, one probe however many there are.
            models.Index(
                fields=["room", "defines", "seq"],
                name="entry_room_defines_seq",
                condition=models.Q(defines__isnull=False),
            ),
        ]

    def __str__(self) -> str:
        return f"#{self.seq} {self.expression}"


class RoomInvite(models.Model):
    """A room's invite link. The room has one current link (the newest one not revoked); the
    owner's reset revokes every earlier one, and a link older than INVITE_MAX_AGE_SECONDS is
    refused as expired."""

    room = models.ForeignKey(Room, on_delete=models.CASCADE, related_name="invites")
    # Random, unguessable, and the whole of the link's secret: the owner sees it again on every
    # visit to the members page, so it is kept rather than hashed.
    token = models.CharField(max_length=64, unique=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+"
    )
    created = models.DateTimeField(auto_now_add=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["room", "-created"]
        indexes = [
            # The room's current link: its newest one that is not revoked.
            models.Index(
                fields=["room", "-created"],
                name="roominvite_room_current",
                condition=models.Q(revoked_at__isnull=True),
            ),
        ]

    def __str__(self) -> str:
        return f"invite to {self.room} by {self.created_by}"


class RoomBar(models.Model):
    """A person removed from a room: no invite link and no Join button lets them back until the
    owner lifts the bar (deletes this record)."""

    room = models.ForeignKey(Room, on_delete=models.CASCADE, related_name="bars")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="room_bars"
    )
    barred_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["room", "user"]
        constraints = [
            models.UniqueConstraint(fields=["room", "user"], name="roombar_room_user_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.user} barred from {self.room}"
