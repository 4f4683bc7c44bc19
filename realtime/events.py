"""The event bus inside the server: group names, typed events, and the one place that sends them.

Events are named `<entity>.<past verb>`; a socket maps `entry.created` to its method
`entry_created`. They travel through the process's hub (`realtime.hub`: one subscription per
topic per process, a local fan-out to its sockets); the group names below are its topics.
Services send them after their transaction commits, through `send_event_on_commit`: delivery is
at most once, so a send that fails is logged and left to `sync` and catch-up to heal; it never
turns work that was done into an error.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, Literal, TypedDict

from asgiref.sync import async_to_sync
from django.db import transaction

from realtime.hub import get_hub, publish_failed

logger = logging.getLogger(__name__)


class EntryDict(TypedDict):
    """An entry as every transport shows it (DESIGN.md, "JSON entry shape")."""

    seq: int
    author: str
    expression: str
    result: str | None
    error: str | None
    client_id: str | None
    created: str
    refs: list[int]  # the seqs it read through ans, #N and variables, in order of first use
    defines: str | None  # the room variable it set
    rounded: bool  # its result had to be rounded (shown as ≈)


class EntryFrames(TypedDict):
    """The entry's frame in each wire mode, built once per broadcast (not once per socket)."""

    json: str
    html: str


class EntryCreated(TypedDict):
    type: Literal["entry.created"]
    room_id: int
    entry: EntryDict
    frames: EntryFrames


class PresenceChanged(TypedDict):
    """A room's presence changed; `version` orders the changes (the state itself is read from the
    store by whoever shows it, once per room per process)."""

    type: Literal["presence.changed"]
    room_id: int
    version: int


class AccessRevoked(TypedDict):
    """A user lost access to a room (removed, left, or the room was deleted)."""

    type: Literal["access.revoked"]
    room_id: int
    user_id: int | None  # None: everyone (the room is gone)


class SessionEnded(TypedDict):
    type: Literal["session.ended"]
    session_key: str


class TokenRevoked(TypedDict):
    """A personal access token was revoked: its sockets close (4401), sent to its owner's group."""

    type: Literal["token.revoked"]
    token_id: int


class UnreadChanged(TypedDict):
    """A person's read position in a room moved: sent to that person's room lists (`me_group`)."""

    type: Literal["unread.changed"]
    room: str  # the room's slug
    room_id: int
    read_seq: int  # the person's read position now
    unread: int
    activity: str | None  # always None: a new entry is a `room.activity`


class RoomActivity(TypedDict):
    """A new entry in a room, for the room lists of its members (`activity_group`): one event per
    entry, whatever the room's size; each room-list socket works out its person's unread count
    from the read position it holds."""

    type: Literal["room.activity"]
    room: str  # the room's slug
    room_id: int
    last_seq: int
    activity: str  # ISO time of the entry


Event = (
    EntryCreated
    | PresenceChanged
    | AccessRevoked
    | SessionEnded
    | TokenRevoked
    | UnreadChanged
    | RoomActivity
)


def room_group(room_id: int) -> str:
    """The group every socket open on a room listens to."""
    return f"room.{room_id}"


def user_group(user_id: int) -> str:
    """The group every socket of one user listens to (logout, access changes)."""
    return f"user.{user_id}"


def me_group(user_id: int) -> str:
    """The group of one user's room-list sockets (`/ws/me/`): unread counts and activity.

    Apart from `user_group` so that the room sockets of a member do not each receive (and drop)
    an event per entry of every other room they belong to.
    """
    return f"me.{user_id}"


def activity_group(room_id: int) -> str:
    """The topic the room lists of a room's members listen to: one event per new entry."""
    return f"activity.{room_id}"


async def asend_event(group: str, event: Event) -> None:
    """Send `event` to every socket listening to `group`, in every process (`realtime.hub`);
    raises when Redis does (callers that may not fail catch)."""
    await get_hub().publish(group, dict(event))


def _publish(events: list[tuple[str, Event]]) -> None:
    """From synchronous code (a commit hook): hand the events to the server's event loop without
    waiting for Redis, or, with no loop to hand them to (a command, a sync test), send them here."""
    hub = get_hub()
    committed = time.time()
    batch = [(group, _stamped(event, committed)) for group, event in events]
    if not batch or hub.publish_soon(batch):
        return
    try:
        async_to_sync(hub.publish_many)(batch)
    except Exception as exc:
        publish_failed(batch, exc)


def _stamped(event: Event, committed: float) -> dict[str, Any]:
    """An entry's event carries when it committed, for the fan-out time (`realtime.metrics`)."""
    stamped = dict(event)
    if stamped["type"] == "entry.created":
        stamped["committed_at"] = committed
    return stamped


def send_events_on_commit(build: Callable[[], list[tuple[str, Event]]]) -> None:
    """Send many events once the current transaction commits (`build` runs then, so it reads
    what committed). A failure is logged (once per outage); committed work stays done."""

    def run() -> None:
        try:
            events = build()
        except Exception as exc:  # building the events failed (the database went away)
            logger.warning("could not build events: %s: %s", type(exc).__name__, exc)
            return
        _publish(events)

    transaction.on_commit(run, robust=True)


def send_event_on_commit(group: str, event: Event | Callable[[], Event]) -> None:
    """Send once the current transaction commits (at once outside one); a failure is logged.

    `event` may be a function that builds it, so nothing is rendered for a rolled-back write.
    """
    send_events_on_commit(lambda: [(group, event() if callable(event) else event)])
