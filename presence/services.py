"""Presence changes that the room must see: store them, then broadcast the room's full state.

Every change reads back the whole state (with its version) in the same atomic store call, so the
broadcast always carries the full picture; consumers drop any state older than one they have.
"""

from __future__ import annotations

from asgiref.sync import async_to_sync

from presence.store import PresenceState, get_presence_store
from realtime.events import PresenceChanged, asend_event, room_group


def state_payload(state: PresenceState) -> list[dict[str, object]]:
    return [{"username": o.username, "typing": o.typing} for o in state.online]


async def _announce(state: PresenceState) -> PresenceState:
    if state.changed:
        # The version only: each process reads the state once when it next shows it.
        event: PresenceChanged = {
            "type": "presence.changed",
            "room_id": state.room_id,
            "version": state.version,
        }
        await asend_event(room_group(state.room_id), event)
    return state


async def presence_join(*, room_id: int, conn_id: str, username: str) -> PresenceState:
    return await _announce(await get_presence_store().join(room_id, conn_id, username))


async def presence_leave(*, room_id: int, conn_id: str) -> PresenceState:
    return await _announce(await get_presence_store().leave(room_id, conn_id))


async def presence_heartbeat(*, room_id: int, conn_id: str, username: str) -> PresenceState:
    """Refresh this connection's record; announces leaves of records that expired meanwhile."""
    return await _announce(await get_presence_store().refresh(room_id, conn_id, username))


async def presence_refresh_many(*, room_id: int, conns: list[tuple[str, str]]) -> PresenceState:
    """The heartbeat of every connection of a room in this process, in one store call."""
    return await _announce(await get_presence_store().refresh_many(room_id, conns))


async def presence_check(*, room_id: int) -> PresenceState:
    """Read the room's state, announcing it if expired records or typing were purged."""
    return await _announce(await get_presence_store().state(room_id))


async def presence_typing(*, room_id: int, username: str, typing: bool) -> PresenceState:
    return await _announce(await get_presence_store().set_typing(room_id, username, typing))


def presence_state_sync(*, room_id: int) -> PresenceState:
    return async_to_sync(presence_check)(room_id=room_id)


def presence_counts_sync(*, room_ids: list[int]) -> dict[int, int]:
    if not room_ids:
        return {}
    return async_to_sync(get_presence_store().counts)(room_ids)
