"""A WebSocket connection that owns everything it starts, and ends it however it ends.

Channels leaves a consumer's ``__call__`` without calling ``disconnect`` when a handler raises or
the channel layer's receive fails; background work the connection started (a heartbeat, a timer)
would then go on refreshing the record of a connection that is gone. Here the connection's tasks,
its groups and its own cleanup (`on_end`) end in a ``finally`` around the whole connection: a clean
close, a handler that raises, a layer that fails, the task being cancelled at shutdown.

A connection that closes stops at once: nothing it is sent afterwards is handled, nothing more is
sent to its client.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from typing import Any

from channels.consumer import get_handler_name
from channels.generic.websocket import AsyncWebsocketConsumer
from django.db import Error as DatabaseError
from redis.exceptions import RedisError

logger = logging.getLogger(__name__)

CLOSE_INTERNAL_ERROR = 1011
CLOSE_SERVICE_RESTART = 1012  # the server restarts or a backend is down: clients reconnect
END_STEP_TIMEOUT_SECONDS = 30.0  # one cleanup step (a group discard, a presence leave)
RECANCEL_AFTER_SECONDS = 0.5  # a task still running this long after its cancel gets another
_ENDING: set[asyncio.Future[None]] = set()  # cleanups under way (asyncio keeps weak references)


class OwnedTasks:
    """The tasks of one connection. `aclose` cancels them and waits until they are gone."""

    def __init__(self, owner: str) -> None:
        self.owner = owner
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = False

    def spawn(self, coro: Coroutine[Any, Any, Any], *, name: str) -> asyncio.Task[Any] | None:
        """Start `coro` as a task of this connection (None once the connection has ended)."""
        if self._closed:
            coro.close()
            return None
        task = asyncio.get_running_loop().create_task(coro, name=f"{self.owner}:{name}")
        self._tasks.add(task)
        task.add_done_callback(self._finished)
        return task

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("%s failed", task.get_name(), exc_info=task.exception())

    def __len__(self) -> int:
        return len(self._tasks)

    @property
    def closed(self) -> bool:
        return self._closed

    async def aclose(self) -> None:
        """Cancel every task and wait until each has ended.

        A cancel can be swallowed: on Python 3.11, `asyncio.wait_for` (which redis-py uses around
        every command) drops a cancel that lands as its inner call finishes, and the task goes on.
        So a task still running after a moment is cancelled again, until none is left.
        """
        self._closed = True
        rounds = 0
        while self._tasks:
            pending = list(self._tasks)
            for task in pending:
                task.cancel()
            await asyncio.wait(pending, timeout=RECANCEL_AFTER_SECONDS)
            self._tasks = {task for task in self._tasks if not task.done()}
            rounds += 1
            if rounds == 10:
                logger.warning("%s: %d tasks ignore being cancelled", self.owner, len(self._tasks))


class Connection(AsyncWebsocketConsumer):
    """Base of the product's sockets: owned tasks, remembered groups, one ending.

    Subclasses join groups with `join_group`, start work with `self.tasks.spawn`, send with
    `send_frame`, and undo their own state in `on_end`, which runs exactly once.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.tasks = OwnedTasks(type(self).__name__)
        self.joined_groups: list[str] = []
        self.accepted = False
        self.closing = False
        self._ended = False

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        except Exception as exc:
            await self._fail(exc)
        finally:
            # Shielded: a connection cancelled (the server shutting down, a client that gave up
            # waiting) still completes its cleanup, each step bounded in time.
            ending = asyncio.ensure_future(self._end())
            _ENDING.add(ending)
            ending.add_done_callback(_ENDING.discard)
            await asyncio.shield(ending)

    async def _fail(self, exc: Exception) -> None:
        """The connection cannot go on: say so in one line and close so the client comes back."""
        if isinstance(exc, RedisError | DatabaseError | OSError | TimeoutError):
            logger.warning("closing a socket: a backend failed (%s: %s)", type(exc).__name__, exc)
            code = CLOSE_SERVICE_RESTART
        else:
            logger.exception("closing a socket: a handler failed")
            code = CLOSE_INTERNAL_ERROR
        if not self.closing and hasattr(self, "base_send"):
            self.closing = True  # before `accept` this refuses the handshake (HTTP 403)
            with contextlib.suppress(Exception):  # the client is gone already
                await self.base_send({"type": "websocket.close", "code": code})

    async def _end(self) -> None:
        if self._ended:
            return
        self._ended = True
        self.closing = True
        await self.tasks.aclose()
        for group in self.joined_groups:
            await self.end_step(self.channel_layer.group_discard(group, self.channel_name), group)
        self.joined_groups.clear()
        await self.end_step(self.on_end(), "on_end")

    async def end_step(self, coro: Coroutine[Any, Any, Any], what: str) -> None:
        """Run one cleanup step, bounded in time; a failure is logged and the next step runs."""
        # Each step on its own: what fails here expires on its own (presence after its TTL,
        # groups after the layer's group expiry); the other steps must still run.
        try:
            await asyncio.wait_for(coro, END_STEP_TIMEOUT_SECONDS)
        except Exception as exc:
            logger.warning("ending a socket: %s failed (%s: %s)", what, type(exc).__name__, exc)

    async def on_end(self) -> None:
        """Undo what the subclass set up (runs once, after its tasks ended and groups were left)."""

    # --- Groups -----------------------------------------------------------------------------------

    async def join_group(self, group: str) -> None:
        self.joined_groups.append(group)
        await self.channel_layer.group_add(group, self.channel_name)

    async def refresh_groups(self) -> None:
        """Re-add this channel to its groups (the layer forgets members after its group expiry)."""
        for group in self.joined_groups:
            await self.channel_layer.group_add(group, self.channel_name)

    # --- Lifecycle --------------------------------------------------------------------------------

    async def accept(self, subprotocol: str | None = None, headers: Any = None) -> None:
        await super().accept(subprotocol=subprotocol, headers=headers)
        self.accepted = True

    async def close(self, code: int | bool | None = None, reason: str | None = None) -> None:
        """Close (before `accept`: refuse the handshake). Nothing more is handled or sent."""
        if self.closing and self.accepted:
            return
        self.closing = True
        await super().close(code=code, reason=reason)

    async def disconnect(self, code: int) -> None:
        await self._end()

    async def dispatch(self, message: dict[str, Any]) -> None:
        """Route a message to its handler, without Channels' per-message connection cleanup.

        Channels runs `aclose_old_connections()` through the single DB thread before every
        handler; at fan-out (every socket of a room gets every entry) that hop dominates. Every
        database call here goes through `database_sync_to_async`, which already closes stale
        connections before and after its work, so the hop buys nothing. Once the connection is
        closing only the disconnect is handled.
        """
        if self.closing and message.get("type") != "websocket.disconnect":
            return
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            logger.warning("ignoring a message of unknown type %r", message.get("type"))
            return
        await handler(message)

    async def send_frame(self, text: str) -> None:
        """Send a text frame unless the connection is closing (then it is dropped)."""
        if self.closing:
            return
        with contextlib.suppress(Exception):  # the socket is closing under us; its end cleans up
            await self.send(text_data=text)
