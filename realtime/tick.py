"""One periodic task per room per process, over the room's connections open in this process.

Work that concerns a whole room (sweeping its presence for a dead process's ghosts, telling every
socket the room's last seq, re-checking that every socket may still be there) runs here once per
room per process, not once per socket: a room with a thousand sockets here costs one call a tick.
The task starts with the room's first local connection and ends with its last.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from realtime import outage

logger = logging.getLogger(__name__)


Member = TypeVar("Member")
TickWork = Callable[[int, set[Member], int], Awaitable[None]]


class _LocalRoom(Generic[Member]):
    def __init__(
        self, room_id: int, task_factory: Callable[[_LocalRoom[Member]], asyncio.Task[None]]
    ):
        self.room_id = room_id
        self.members: set[Member] = set()
        self.task = task_factory(self)


class RoomTicker(Generic[Member]):
    """Runs ``work(room_id, members, tick)`` every ``interval()`` seconds while a room has members
    here; ``tick`` counts from 1, so work that is due every n ticks can tell.

    ``interval`` is read before every wait, so settings changed by tests take effect. A tick that
    raises is logged and the next one runs as usual.
    """

    def __init__(self, name: str, work: TickWork[Member], interval: Callable[[], float]) -> None:
        self.name = name
        self.work = work
        self.interval = interval
        self._rooms: dict[tuple[int, int], _LocalRoom[Member]] = {}
        self._resync: set[tuple[int, int]] = set()

    def enter(self, room_id: int, member: Member) -> None:
        loop = asyncio.get_running_loop()
        key = (id(loop), room_id)
        room = self._rooms.get(key)
        if room is None or room.task.done() or room.task.get_loop() is not loop:
            room = self._rooms[key] = _LocalRoom(room_id, self._start)
        room.members.add(member)

    def exit(self, room_id: int, member: Member) -> None:
        key = (id(asyncio.get_running_loop()), room_id)
        room = self._rooms.get(key)
        if room is None:
            return
        room.members.discard(member)
        if not room.members:
            room.task.cancel()
            del self._rooms[key]

    def resync(self, room_id: int) -> None:
        """Ask the room's next tick to do its catching-up work now (`take_resync` says so)."""
        self._resync.add((id(asyncio.get_running_loop()), room_id))

    def take_resync(self, room_id: int) -> bool:
        """Whether a resync of the room was asked for since the last tick (and forget it)."""
        key = (id(asyncio.get_running_loop()), room_id)
        if key in self._resync:
            self._resync.discard(key)
            return True
        return False

    def members(self, room_id: int) -> set[Member]:
        """This loop's members of a room (a copy)."""
        room = self._rooms.get((id(asyncio.get_running_loop()), room_id))
        return set(room.members) if room is not None else set()

    def rooms(self) -> list[int]:
        """Rooms with a running tick on this loop."""
        loop_id = id(asyncio.get_running_loop())
        return [room_id for (loop, room_id) in self._rooms if loop == loop_id]

    def _start(self, room: _LocalRoom[Member]) -> asyncio.Task[None]:
        return asyncio.get_running_loop().create_task(
            self._run(room), name=f"{self.name}-room-{room.room_id}"
        )

    async def _run(self, room: _LocalRoom[Member]) -> None:
        tick = 0
        while True:
            await asyncio.sleep(self.interval())
            tick += 1
            if not room.members:
                continue
            try:
                await self.work(room.room_id, set(room.members), tick)
            except Exception as exc:
                # Redis or the database blinked (one line per outage): try again next tick.
                if not outage.failed(exc):
                    logger.exception("%s: tick of room %s failed", self.name, room.room_id)
            else:
                outage.REDIS.recovered()
                outage.DATABASE.recovered()
