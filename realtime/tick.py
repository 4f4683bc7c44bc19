"""One periodic task per event loop, over the connections of every room open in it.

Work that concerns a whole room (sweeping its presence for a dead process's ghosts, telling every
socket the room's last seq, re-checking that every socket may still be there) runs here once per
room per process, not once per socket: a room with a thousand sockets here costs one call a tick.
And one task ticks all the loop's rooms, so what they ask of the database is asked in one call a
tick, not one a room (fifty rooms cost one re-check query every two seconds, not twenty-five a
second). The task starts with the loop's first connection and ends with its last.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Generic, NamedTuple, TypeVar

from realtime import outage

logger = logging.getLogger(__name__)


Member = TypeVar("Member")


class RoomTick(NamedTuple, Generic[Member]):
    """One room's part of a process tick: its members here (a copy) and its tick number, which
    counts from 1 since the room's first member came, so work due every n ticks can tell."""

    members: set[Member]
    tick: int


TickWork = Callable[[dict[int, "RoomTick[Member]"]], Awaitable[None]]


class _LocalRoom(Generic[Member]):
    def __init__(self) -> None:
        self.members: set[Member] = set()
        self.ticks = 0


class _LoopTicker(Generic[Member]):
    """The rooms of one event loop and the one task that ticks them all."""

    def __init__(self) -> None:
        self.rooms: dict[int, _LocalRoom[Member]] = {}
        self.resync: set[int] = set()
        self.task: asyncio.Task[None] | None = None


class RoomTicker(Generic[Member]):
    """Runs ``work(rooms)`` every ``interval()`` seconds on each event loop that has rooms with
    members: one task per loop for all its rooms, so what the rooms' upkeep asks of the database
    and Redis can be asked for all of them at once (one database call a tick, not one a room).
    ``rooms`` maps each room id to its `RoomTick`.

    ``interval`` is read before every wait, so settings changed by tests take effect. A tick that
    raises is logged (an outage once) and the next one runs as usual. The task starts with the
    loop's first member and ends with its last.
    """

    def __init__(self, name: str, work: TickWork[Member], interval: Callable[[], float]) -> None:
        self.name = name
        self.work = work
        self.interval = interval
        self._loops: dict[int, _LoopTicker[Member]] = {}

    def _here(self) -> _LoopTicker[Member]:
        loop = asyncio.get_running_loop()
        here = self._loops.get(id(loop))
        if here is None or (here.task is not None and here.task.get_loop() is not loop):
            here = self._loops[id(loop)] = _LoopTicker()  # a new loop where a closed one was
        return here

    def enter(self, room_id: int, member: Member) -> None:
        here = self._here()
        here.rooms.setdefault(room_id, _LocalRoom()).members.add(member)
        if here.task is None or here.task.done():
            here.task = asyncio.get_running_loop().create_task(
                self._run(here), name=f"{self.name}-tick"
            )

    def exit(self, room_id: int, member: Member) -> None:
        here = self._loops.get(id(asyncio.get_running_loop()))
        room = here.rooms.get(room_id) if here is not None else None
        if here is None or room is None:
            return
        room.members.discard(member)
        if not room.members:
            del here.rooms[room_id]
            here.resync.discard(room_id)
            if not here.rooms and here.task is not None:
                here.task.cancel()
                here.task = None

    def resync(self, room_id: int) -> None:
        """Ask the room's next tick to do its catching-up work now (`take_resync` says so)."""
        self._here().resync.add(room_id)

    def take_resync(self, room_id: int) -> bool:
        """Whether a resync of the room was asked for since the last tick (and forget it)."""
        here = self._here()
        if room_id in here.resync:
            here.resync.discard(room_id)
            return True
        return False

    def members(self, room_id: int) -> set[Member]:
        """This loop's members of a room (a copy)."""
        here = self._loops.get(id(asyncio.get_running_loop()))
        room = here.rooms.get(room_id) if here is not None else None
        return set(room.members) if room is not None else set()

    def count(self, room_id: int) -> int:
        """How many members the room has on this loop (no copy: joins and leaves of a room of
        thousands each ask)."""
        here = self._loops.get(id(asyncio.get_running_loop()))
        room = here.rooms.get(room_id) if here is not None else None
        return len(room.members) if room is not None else 0

    def rooms(self) -> list[int]:
        """Rooms with members on this loop (the ones its tick covers)."""
        here = self._loops.get(id(asyncio.get_running_loop()))
        return list(here.rooms) if here is not None else []

    async def _run(self, here: _LoopTicker[Member]) -> None:
        while True:
            await asyncio.sleep(self.interval())
            rooms: dict[int, RoomTick[Member]] = {}
            for room_id, room in list(here.rooms.items()):
                if room.members:
                    room.ticks += 1
                    rooms[room_id] = RoomTick(set(room.members), room.ticks)
            if not rooms:
                continue
            try:
                await self.work(rooms)
            except Exception as exc:
                # Redis or the database blinked (one line per outage): try again next tick.
                if not outage.failed(exc):
                    logger.exception("%s: tick of rooms %s failed", self.name, sorted(rooms))
            else:
                outage.REDIS.recovered()
                outage.DATABASE.recovered()
