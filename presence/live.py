"""Presence on the live path: a room's frames, coalesced once per process, and a socket's typing.

`RoomPresenceFeed` belongs to a room's sockets in one process: it reads the room's state at most
once at a time and hands what it read to every socket behind it (joining ones included).
`Typing` is a plain object a transport holds; its timer goes through the `spawn` the connection
gives, so it ends when the connection ends.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, NamedTuple

from presence import services

logger = logging.getLogger(__name__)

Spawn = Callable[..., "asyncio.Task[Any] | None"]
Online = list[dict[str, Any]]
Key = tuple[tuple[str, bool], ...]


def presence_key(online: Online) -> Key:
    """What a presence frame shows, comparable cheaply (two frames with one key look the same)."""
    return tuple((o["username"], bool(o["typing"])) for o in online)


class Shown(NamedTuple):
    """A state of the room as read once and shared by every socket that shows it."""

    version: int
    online: Online
    key: Key


class RoomPresenceFeed:
    """The presence frames of one room's sockets in this process, coalesced once for all of them.

    Every socket of the room hears each `presence.changed` (a version, not the whole list: in a
    room of a thousand people each join would otherwise carry a thousand names to every process);
    each hands it to this one feed, which at most once an `interval` reads the room's state once
    (`fetch()`) and gives it to every socket still behind it (`send(member, version, online,
    key)`: it only queues a prebuilt frame, unless the socket shows that `key` already, and says
    whether it did; `flushed(n)` hears how many did). A thousand sockets joining within a second
    cost one read and one flush, not a thousand timers and a million per-socket offers.

    A joining socket's first frame comes from here too (`state_since(version)`, the version its
    join answered): the sockets that join while a read is under way share the next one, so a
    thousand joins cost a few reads of the room instead of a thousand, and their sockets share
    one state instead of holding a thousand copies of the room's names.
    """

    def __init__(
        self,
        *,
        members: Callable[[], Any],
        send: Callable[[Any, int, Online, Key], bool],
        fetch: Callable[[], Awaitable[tuple[int, Online]]],
        interval: Callable[[], float],
        flushed: Callable[[int], None] = lambda sent: None,
    ) -> None:
        self._members = members
        self._send = send
        self._fetch = fetch
        self._interval = interval
        self._flushed = flushed
        self.version = -1  # the newest version heard
        self._shown = -1  # the newest version read and handed out
        self._sent_at = -float("inf")
        self._timer: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[None] | None = None
        self._last: Shown | None = None  # the newest state read
        self._reading: asyncio.Task[Shown] | None = None

    async def state_since(self, version: int) -> Shown:
        """A state at least as new as `version` (a change this process just made): the newest
        one read if it is, else the next read, which every caller meanwhile shares."""
        last = self._last
        for _ in range(3):
            if last is not None and last.version >= version:
                break
            last = await self._read()
        assert last is not None
        return last

    async def _read(self) -> Shown:
        """The room's state, read now; callers that come while a read is under way share it
        if it began after their change, else the one after it."""
        task = self._reading
        if task is None or task.done():
            task = self._reading = asyncio.get_running_loop().create_task(
                self._read_now(), name="presence-read"
            )
            task.add_done_callback(_retrieved)
        return await asyncio.shield(task)

    async def _read_now(self) -> Shown:
        version, online = await self._fetch()
        shown = Shown(version, online, presence_key(online))
        if self._last is None or shown.version >= self._last.version:
            self._last = shown
        return shown

    def offer(self, version: int) -> None:
        if version <= self.version:
            return  # the other sockets' copies of one event, or an older state
        self.version = version
        self._schedule()

    def _schedule(self) -> None:
        if self._timer is not None or (self._task is not None and not self._task.done()):
            return  # a flush is scheduled or reading; it (or the one after it) carries this
        wait = self._sent_at + self._interval() - time.monotonic()
        self._timer = asyncio.get_running_loop().call_later(max(0.0, wait), self._start)

    def _start(self) -> None:
        self._timer = None
        self._task = asyncio.get_running_loop().create_task(self._flush(), name="presence-flush")

    async def _flush(self) -> None:
        self._sent_at = time.monotonic()
        try:
            version, online, key = await self._read()
        except Exception as exc:  # Redis blinked: the next change (or tick) tries again
            logger.warning("could not read a room's presence: %s: %s", type(exc).__name__, exc)
            return
        self._shown = max(self._shown, version)
        self.version = max(self.version, version)
        sent = 0
        for member in list(self._members()):
            try:
                sent += bool(self._send(member, version, online, key))
            except Exception:
                logger.exception("a socket failed to take a presence frame")
        self._flushed(sent)
        if self.version > self._shown:  # heard something newer while reading
            self._task = None
            self._schedule()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._task is not None:
            self._task.cancel()
            self._task = None
        if self._reading is not None:
            self._reading.cancel()
            self._reading = None


def _retrieved(task: asyncio.Task[Any]) -> None:
    """A shared read that failed with nobody left waiting for it is not an unretrieved error."""
    if not task.cancelled():
        task.exception()


class Typing:
    """One connection's typing in a room: on (until the expiry), off, and cleared when it ends.

    The store forgets typing after the expiry on its own; the expiry timer makes the room hear it.
    """

    __slots__ = ("_expiry", "_spawn", "_timer", "room_id", "username")  # one per socket

    def __init__(
        self, *, room_id: int, username: str, spawn: Spawn, expiry: Callable[[], float]
    ) -> None:
        self.room_id = room_id
        self.username = username
        self._spawn = spawn
        self._expiry = expiry
        self._timer: asyncio.Task[Any] | None = None

    @property
    def active(self) -> bool:
        """Whether this connection's typing is on (stops only count then)."""
        return self._timer is not None

    async def start(self) -> None:
        await services.presence_typing(room_id=self.room_id, username=self.username, typing=True)
        self._cancel_timer()
        self._timer = self._spawn(self._expire(), name="typing-expiry")

    async def stop(self) -> None:
        """Typing ends now (a `typing.stop`, the person's expression stored, the tab closing)."""
        self._cancel_timer()
        await services.presence_typing(room_id=self.room_id, username=self.username, typing=False)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    async def _expire(self) -> None:
        await asyncio.sleep(self._expiry() + 0.05)
        self._timer = None
        await services.presence_check(room_id=self.room_id)
