"""Presence changes that the room must see: store them, then tell the room the new version.

A change answers its version (and whether the room shows something else now) from the same
atomic store call; the broadcast carries the version only, and each process reads the room's
state once when it next shows it. A socket's own changes (join, leave, typing) do not read the
state back at all (`PresenceMark`): in a room of thousands that read was most of a join's cost.
"""

from __future__ import annotations

from typing import TypeVar

from asgiref.sync import async_to_sync

from presence.store import PresenceMark, PresenceState, get_presence_store
from realtime.events import PresenceChanged, asend_event, room_group

_Change = TypeVar("_Change", PresenceState, PresenceMark)


def state_payload(state: PresenceState) -> list[dict[str, object]]:
    return [{"username": o.username, "typing": o.typing} for o in state.online]


async def _announce(state: _Change) -> _Change:
    if state.changed:
        # The version only: each process reads the state once when it next shows it.
        event: PresenceChanged = {
            "type": "presence.changed",
            "room_id": state.room_id,
            "version": state.version,
        }
        await asend_event(room_group(state.room_id), event)
    return state


async def presence_join(*, room_id: int, conn_id: str, username: str) -> PresenceMark:
    return await _announce(await get_presence_store().join_mark(room_id, conn_id, username))


async def presence_leave(*, room_id: int, conn_id: str) -> PresenceMark:
    return await _announce(await get_presence_store().leave_mark(room_id, conn_id))


async def presence_heartbeat(*, room_id: int, conn_id: str, username: str) -> PresenceState:
    """Refresh this connection's record; announces leaves of records that expired meanwhile."""
    return await _announce(await get_presence_store().refresh(room_id, conn_id, username))


async def presence_refresh_many(*, room_id: int, conns: list[tuple[str, str]]) -> PresenceState:
    """The heartbeat of every connection of a room in this process, in one store call."""
    return await _announce(await get_presence_store().refresh_many(room_id, conns))


async def presence_check(*, room_id: int) -> PresenceState:
    """Read the room's state, announcing it if expired records or typing were purged."""
    return await _announce(await get_presence_store().state(room_id))


async def presence_typing(*, room_id: int, username: str, typing: bool) -> PresenceMark:
    return await _announce(await get_presence_store().typing_mark(room_id, username, typing))


def presence_state_sync(*, room_id: int) -> PresenceState:
    return async_to_sync(presence_check)(room_id=room_id)


def presence_counts_sync(*, room_ids: list[int]) -> dict[int, int]:
    if not room_ids:
        return {}
    return async_to_sync(get_presence_store().counts)(room_ids)
