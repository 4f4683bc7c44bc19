"""Events inside the server: group names, typed payloads, and the one place that sends them.

Channel-layer events are named `<entity>.<past verb>`; Channels maps `entry.created` to the
consumer method `entry_created`. Only services call `send_event` / `asend_event`, and only after
their transaction commits.
"""

from __future__ import annotations

from typing import Any, Literal, TypedDict

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer


class EntryDict(TypedDict):
    seq: int
    author: str
    expression: str
    result: str | None
    error: str | None
    client_id: str | None
    created: str


class EntryCreated(TypedDict):
    type: Literal["entry.created"]
    entry: EntryDict
    html: str


class PresenceChanged(TypedDict):
    type: Literal["presence.changed"]
    room_id: int
    version: int
    online: list[dict[str, Any]]


class AccessRevoked(TypedDict):
    """A user lost access to a room (removed, left, or the room was deleted)."""

    type: Literal["access.revoked"]
    room_id: int
    user_id: int | None  # None: everyone (the room is gone)


class SessionEnded(TypedDict):
    type: Literal["session.ended"]
    session_key: str


Event = EntryCreated | PresenceChanged | AccessRevoked | SessionEnded


def room_group(room_id: int) -> str:
    """The group every socket open on a room listens to."""
    return f"room.{room_id}"


def user_group(user_id: int) -> str:
    """The group every socket of one user listens to (logout, access changes)."""
    return f"user.{user_id}"


async def asend_event(group: str, event: Event) -> None:
    layer = get_channel_layer()
    if layer is not None:
        await layer.group_send(group, dict(event))


def send_event(group: str, event: Event) -> None:
    async_to_sync(asend_event)(group, event)
