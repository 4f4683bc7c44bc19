"""Presence changes that the room must see: store them, then broadcast the room's full state.

Every change reads back the whole state (with its version) in the same atomic store call, so the
broadcast always carries the full picture; consumers drop any state older than one they have.
"""

from __future__ import annotations

import asyncio
import logging

from asgiref.sync import async_to_sync
from django.conf import settings

from presence.store import PresenceState, get_presence_store
from rooms.events import asend_event, room_group

logger = logging.getLogger(__name__)


def state_payload(state: PresenceState) -> list[dict[str, object]]:
    return [{"username": o.username, "typing": o.typing} for o in state.online]


async def _announce(state: PresenceState) -> PresenceState:
    if state.changed:
        await asend_event(
            room_group(state.room_id),
            {
                "type": "presence.changed",
                "room_id": state.room_id,
                "version": state.version,
                "online": state_payload(state),
            },
        )
    return state


async def presence_join(*, room_id: int, conn_id: str, username: str) -> PresenceState:
    return await _announce(await get_presence_store().join(room_id, conn_id, username))


async def presence_leave(*, room_id: int, conn_id: str) -> PresenceState:
    return await _announce(await get_presence_store().leave(room_id, conn_id))


async def presence_heartbeat(*, room_id: int, conn_id: str, username: str) -> PresenceState:
    """Refresh this connection's record; announces leaves of records that expired meanwhile."""
    return await _announce(await get_presence_store().refresh(room_id, conn_id, username))


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


# --- The room sweep -------------------------------------------------------------------------
# Records of a process that died (SIGKILL) expire in the store on their own; somebody still in the
# room must notice and announce the leave. One sweep per room per process, not per socket: a
# room with a thousand sockets costs one store call per interval, and ghosts are gone within the
# TTL plus one sweep interval.

_sweeps: dict[tuple[int, int], tuple[asyncio.Task[None], int]] = {}


def presence_watch(*, room_id: int) -> None:
    """A socket on this room opened in this process: make sure the room is swept."""
    loop = asyncio.get_running_loop()
    key = (id(loop), room_id)
    task, count = _sweeps.get(key, (None, 0))
    if task is None or task.done() or task.get_loop() is not loop:
        task, count = loop.create_task(_sweep(room_id), name=f"presence-sweep-{room_id}"), 0
    _sweeps[key] = (task, count + 1)


def presence_unwatch(*, room_id: int) -> None:
    """A socket on this room closed; the last one stops the sweep."""
    key = (id(asyncio.get_running_loop()), room_id)
    task, count = _sweeps.get(key, (None, 0))
    if task is None:
        return
    if count <= 1:
        task.cancel()
        del _sweeps[key]
    else:
        _sweeps[key] = (task, count - 1)


async def _sweep(room_id: int) -> None:
    while True:
        await asyncio.sleep(settings.PRESENCE_SWEEP_SECONDS)
        try:
            await presence_check(room_id=room_id)
        except Exception:  # Redis blinked: the next sweep tries again
            logger.exception("presence sweep of room %s failed", room_id)
