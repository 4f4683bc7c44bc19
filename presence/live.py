"""What one live connection does about presence: its frames, coalesced, and its typing.

Both are plain objects a transport holds, so a second transport gets the same behaviour by holding
them too. Neither starts a task of its own: timers go through the `spawn` the connection gives,
so they end when the connection ends.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from presence import services
from presence.store import PresenceState

logger = logging.getLogger(__name__)

Spawn = Callable[..., "asyncio.Task[Any] | None"]
Online = list[dict[str, Any]]


class PresenceFeed:
    """The presence frames one connection sends: always the newest state, at most one an interval.

    `offer` takes every `presence.changed` event; older versions than the one shown are dropped,
    and a burst of changes within the interval becomes one frame carrying the latest state.
    """

    def __init__(
        self,
        *,
        send: Callable[[int, Online], Awaitable[None]],
        spawn: Spawn,
        interval: Callable[[], float],
    ) -> None:
        self._send = send
        self._spawn = spawn
        self._interval = interval
        self.version = -1
        self._pending: tuple[int, Online] | None = None
        self._sent_at = 0.0
        self._flush: asyncio.Task[Any] | None = None

    async def show(self, state: PresenceState) -> None:
        """Send `state` now (the state on connect)."""
        await self._emit(state.version, services.state_payload(state))

    async def offer(self, version: int, online: Online) -> None:
        if version <= self.version:
            return
        self._pending = (version, online)
        if self._flush is not None:
            return  # a send is already scheduled; it will carry this newest state
        wait = self._sent_at + self._interval() - time.monotonic()
        if wait <= 0:
            await self._flush_pending()
        else:
            self._flush = self._spawn(self._flush_later(wait), name="presence-flush")

    async def _flush_later(self, wait: float) -> None:
        await asyncio.sleep(wait)
        self._flush = None
        await self._flush_pending()

    async def _flush_pending(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None and pending[0] > self.version:
            await self._emit(*pending)

    async def _emit(self, version: int, online: Online) -> None:
        self.version = max(self.version, version)
        self._sent_at = time.monotonic()
        await self._send(version, online)


def presence_key(online: Online) -> tuple[tuple[str, bool], ...]:
    """What a presence frame shows, comparable cheaply (two frames with one key look the same)."""
    return tuple((o["username"], bool(o["typing"])) for o in online)


class RoomPresenceFeed:
    """The presence frames of one room's sockets in this process, coalesced once for all of them.

    Every socket of the room hears each `presence.changed` (a version, not the whole list: in a
    room of a thousand people each join would otherwise carry a thousand names to every process);
    each hands it to this one feed, which at most once an `interval` reads the room's state once
    (`fetch()`) and gives it to every socket still behind it (`send(member, version, online,
    key)`: it only queues a prebuilt frame, unless the socket shows that `key` already, and says
    whether it did; `flushed(n)` hears how many did). A thousand sockets joining within a second
    cost one read and one flush, not a thousand timers and a million per-socket offers.
    """

    def __init__(
        self,
        *,
        members: Callable[[], Any],
        send: Callable[[Any, int, Online, tuple[tuple[str, bool], ...]], bool],
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
            version, online = await self._fetch()
        except Exception as exc:  # Redis blinked: the next change (or tick) tries again
            logger.warning("could not read a room's presence: %s: %s", type(exc).__name__, exc)
            return
        self._shown = max(self._shown, version)
        self.version = max(self.version, version)
        key = presence_key(online)
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


class Typing:
    """One connection's typing in a room: on (until the expiry), off, and cleared when it ends.

    The store forgets typing after the expiry on its own; the expiry timer makes the room hear it.
    """

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
