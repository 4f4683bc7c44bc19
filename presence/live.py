"""What one live connection does about presence: its frames, coalesced, and its typing.

Both are plain objects a transport holds, so a second transport gets the same behaviour by holding
them too. Neither starts a task of its own: timers go through the `spawn` the connection gives,
so they end when the connection ends.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from presence import services
from presence.store import PresenceState

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


class RoomPresenceFeed:
    """The presence frames of one room's sockets in this process, coalesced once for all of them.

    Every socket of the room hears each `presence.changed`; each hands it to this one feed, which
    keeps only the newest version and at most once an `interval` gives it to every socket still
    behind it (`send(member, version, online)`: it only queues a prebuilt frame, and says whether
    it did; `flushed(n)` hears how many did). A thousand
    sockets joining a room within a second cost one flush, not a thousand timers and a million
    per-socket offers. The timer is the event loop's (`call_later`), not a task of any socket.
    """

    def __init__(
        self,
        *,
        members: Callable[[], Any],
        send: Callable[[Any, int, Online], bool],
        interval: Callable[[], float],
        flushed: Callable[[int], None] = lambda sent: None,
    ) -> None:
        self._members = members
        self._send = send
        self._interval = interval
        self._flushed = flushed
        self.version = -1
        self._online: Online = []
        self._sent_at = -float("inf")
        self._timer: asyncio.TimerHandle | None = None

    def offer(self, version: int, online: Online) -> None:
        if version <= self.version:
            return  # the other sockets' copies of one event, or an older state
        self.version, self._online = version, online
        if self._timer is not None:
            return  # a flush is scheduled; it carries this newest state
        wait = self._sent_at + self._interval() - time.monotonic()
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(max(0.0, wait), self._flush)

    def _flush(self) -> None:
        self._timer = None
        self._sent_at = time.monotonic()
        sent = 0
        for member in list(self._members()):
            sent += bool(self._send(member, self.version, self._online))
        self._flushed(sent)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


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
