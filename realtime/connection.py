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
import os
import time
import uuid
from collections import deque
from collections.abc import Coroutine
from typing import Any

from channels.consumer import get_handler_name
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer
from django.db import Error as DatabaseError
from redis.exceptions import RedisError

from realtime import outage
from realtime.hub import get_hub
from realtime.wire import Wire, framed

logger = logging.getLogger(__name__)

CLOSE_INTERNAL_ERROR = 1011
CLOSE_SERVICE_RESTART = 1012  # the server restarts or a backend is down: clients reconnect
END_STEP_TIMEOUT_SECONDS = 30.0  # one cleanup step (a group discard, a presence leave)
RECANCEL_AFTER_SECONDS = 0.5  # a task still running this long after its cancel gets another
OUTBOX_LIMIT = 256  # live events waiting for a socket's client to read; past it, entries drop
_NO_OUTBOX: tuple[()] = ()  # the outbox of a socket with nothing queued (a deque when needed)
_ENDING: set[asyncio.Future[None]] = set()  # cleanups under way (asyncio keeps weak references)
_PROCESS = f"{os.getpid()}.{uuid.uuid4().hex[:8]}"


class OwnedTasks:
    """The tasks of one connection. `aclose` cancels them and waits until they are gone."""

    __slots__ = ("_closed", "_tasks", "owner")

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


DIRECT_SEND = "calcrooms.send"  # the scope key holding the server's own send


def scope_header(scope: dict[str, Any], name: bytes, *, first: bool = False) -> str | None:
    """A request header of an ASGI scope, decoded as latin-1 (the last one of that name, as a
    dict of the headers would have it, or with `first` the first), None when absent. Without
    building a dict of every header: a middleware's locals live as long as the socket."""
    found = None
    for key, value in scope.get("headers") or ():
        if key == name:
            found = value.decode("latin-1")
            if first:
                break
    return found


class DirectSend:
    """Outermost on the WebSocket route: keeps the server's own `send` in the scope.

    Every middleware on the way (sessions, the outage guard) wraps `send`, and the session's
    wrapper reads the lazy session on every message. None of them acts on `websocket.send`, so
    a socket's queued frames (a broadcast's, a thousand per entry in a big room) go straight to
    the server; everything else (accept, close, the socket's own replies) goes the usual way.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope.get("type") == "websocket":
            # The server's own scope, made for this connection alone and seen by nothing above
            # this: marked in place instead of copied (a copy would live as long as the socket).
            scope[DIRECT_SEND] = send
        await self.app(scope, receive, send)


class Connection(AsyncWebsocketConsumer):
    """Base of the product's sockets: owned tasks, live topics, one ending.

    Subclasses listen to topics with `listen` (the hub hands their events to `deliver`, which
    queues them in the socket's outbox; a writer task, there only while the outbox holds
    something, takes them out in order and calls the handler named after the event's type), start
    work with `self.tasks.spawn`, send with `send_frame`, and undo their own state in `on_end`,
    which runs exactly once.

    The outbox is what keeps one slow reader from holding up a room: the hub never waits for a
    socket. When a client reads so slowly that `OUTBOX_LIMIT` events wait for it, further entries
    are dropped for it (`on_overflow`) and it is told the room's last seq once it has caught up,
    so it fetches what it missed: a gap that heals, never a stall for everyone else.

    No channel layer: everything a socket hears comes through the hub, so a socket does not
    depend on a per-socket Redis receive. `channel_name` is still the connection's id.
    """

    channel_layer_alias = "__no_channel_layer__"
    # Slots, not an instance dict: a socket's state is a few dozen small attributes, and a dict
    # of that many keys costs about 1.7 KiB a socket, the slots about 0.3 (Channels' own
    # attributes but `groups`, which its class defaults, live here too).
    __slots__ = (
        "_behind",
        "_ended",
        "_idle",
        "_outbox",
        "_wire",
        "_writer",
        "accepted",
        "base_send",
        "behind_since",
        "channel_layer",
        "channel_name",
        "close_code",
        "closing",
        "frame_send",
        "scope",
        "tasks",
        "topics",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.tasks = OwnedTasks(type(self).__name__)
        self.topics: list[str] = []
        self.accepted = False
        self.closing = False
        self._ended = False
        # What waits for the client, in order (a deque while anything does: an idle socket keeps
        # none, and an empty deque is 760 bytes).
        self._outbox: deque[dict[str, Any] | str] | tuple[()] = _NO_OUTBOX
        # The writer: a task that exists only while the outbox holds something (an idle socket
        # has none, so holding thousands of idle sockets costs no task, no event per socket).
        self._writer: asyncio.Task[None] | None = None
        self._wire: Wire | None = None  # the socket's transport, when frames can be written to it
        # No frame is on its way (neither sent here and now nor by the writer): the next frame
        # may be sent at once.
        self._idle = False  # until `accept`
        self.close_code: int | None = None  # as the client's disconnect reported it
        self._behind = False  # events were dropped for this socket: tell it once it has caught up
        self.behind_since: float | None = None  # since when (monotonic), while it is behind
        self.channel_name = f"live.{_PROCESS}!{uuid.uuid4().hex}"

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.scope = scope
        self.channel_layer = None
        self.base_send = send
        try:
            await self._serve(receive)
        except Exception as exc:
            await self._fail(exc)
        finally:
            # Shielded: a connection cancelled (the server shutting down, a client that gave up
            # waiting) still completes its cleanup, each step bounded in time.
            await asyncio.shield(self._end_soon())

    async def _serve(self, receive: Any) -> None:
        """Handle the client's messages in turn until the connection stops: what Channels'
        consumer does with its sources, without a task around each `receive` (with the client as
        the only source, that task only waited on it)."""
        try:
            while True:
                await self.dispatch(await receive())
        except StopConsumer:
            pass

    def _end_soon(self) -> asyncio.Future[None]:
        """Start the ending as a task of its own (kept until done: asyncio holds weak refs)."""
        ending = asyncio.ensure_future(self._end())
        _ENDING.add(ending)
        ending.add_done_callback(_ENDING.discard)
        return ending

    async def _fail(self, exc: Exception) -> None:
        """The connection cannot go on: say so in one line and close so the client comes back."""
        if isinstance(exc, RedisError | DatabaseError | OSError | TimeoutError):
            outage.failed(exc)  # one line per outage, not one per socket
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
        hub = get_hub()
        for topic in self.topics:
            await self.end_step(hub.unsubscribe(topic, self), topic)
        self.topics.clear()
        self._outbox = _NO_OUTBOX
        await self.tasks.aclose()
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

    # --- Live topics --------------------------------------------------------------------------

    async def listen(self, topic: str) -> None:
        """Hear every event published to `topic` from the moment this returns (events heard
        before `accept` wait in the outbox)."""
        self.topics.append(topic)
        await get_hub().subscribe(topic, self)

    def deliver(self, event: dict[str, Any]) -> None:
        """The hub hands an event over: queue it for this socket's writer (never waits)."""
        if self.closing:
            return
        if len(self._outbox) >= OUTBOX_LIMIT and self.on_overflow(event):
            if not self._behind:
                self._behind = True
                self.behind_since = time.monotonic()
            return
        item = self.outgoing(event)
        if item is None:
            return
        if item.__class__ is str and self._idle and not self._outbox:
            self._send_now(item)
            return
        self._queue(item)

    def _send_now(self, frame: str) -> None:
        """Send `frame` here and now, without waking the writer: the hot path of a broadcast.

        Under uvicorn's websockets-sansio protocol, the broadcast's frame, made once, is written
        straight to the socket's transport when it takes data now (`realtime.wire`). Otherwise
        it goes through the server's send, which completes without waiting while its transport
        takes data, so the coroutine runs to its end right here (no task, no wake-up per socket,
        as `websockets.broadcast` does it). When the transport is paused (the client reads slowly)
        the coroutine waits on a future: it is resumed when that future is done, and until then
        the socket is not idle, so what comes next waits in the outbox, in order.
        """
        wire = self._wire
        if wire is not None and wire.write(framed(frame)):
            return  # written as every socket of the broadcast gets it (realtime/wire.py)
        self._idle = False
        self._drive(self.frame_send({"type": "websocket.send", "text": frame}))

    def _drive(self, coro: Any) -> None:
        try:
            waiting = coro.send(None)
        except StopIteration:
            self._idle = True
            self._start_writer()  # what was queued meanwhile: the writer takes it from here
            return
        except Exception:  # the client is gone: its disconnect ends the connection
            self._idle = True
            self._start_writer()
            return
        if isinstance(waiting, asyncio.Future):
            # What a Task does with a future its coroutine waits on: take it, resume when done.
            waiting._asyncio_future_blocking = False
            waiting.add_done_callback(lambda _: self._drive(coro))
        else:  # a bare yield (sleep(0)): go on at the next turn of the loop
            asyncio.get_running_loop().call_soon(self._drive, coro)

    def deliver_frame(self, frame: str) -> None:
        """Queue a frame built for this socket (it goes out after what is already queued)."""
        if self.closing:
            return
        if self._idle and not self._outbox:
            self._send_now(frame)
            return
        self._queue(frame)

    def _queue(self, item: dict[str, Any] | str) -> None:
        outbox = self._outbox
        if not isinstance(outbox, deque):
            outbox = self._outbox = deque()
        outbox.append(item)
        self._start_writer()

    def outgoing(self, event: dict[str, Any]) -> dict[str, Any] | str | None:
        """What the writer gets for `event`: the event (its handler runs then), or, when the
        event is nothing but a frame for this socket, that frame's text (sent as it is: no
        dispatch, no framing per socket: the hot path of a broadcast), or None (handled here
        and now, nothing to queue)."""
        return event

    def on_overflow(self, event: dict[str, Any]) -> bool:
        """The outbox is full: True drops `event` (the subclass remembers what it lost)."""
        return False

    async def on_caught_up(self) -> None:
        """The outbox is empty again after events were dropped (`on_overflow`)."""

    def resumed(self) -> None:
        """The hub was cut off from Redis and is back: events may have been missed."""
        self.deliver({"type": "live.resumed"})

    def _start_writer(self) -> None:
        """Start the writer if something waits in the outbox and nothing is on its way (while a
        frame sent here and now waits on its transport, its completion starts the writer)."""
        if self._writer is None and self._idle and self._outbox and not self.closing:
            self._writer = self.tasks.spawn(self._write(), name="outbox")

    async def _write(self) -> None:
        """Take the outbox out in order, then tell a client that fell behind that it caught up;
        end when nothing is left (the next queued item starts a writer again)."""
        outbox = self._outbox
        if not isinstance(outbox, deque):
            self._writer = None
            return
        try:
            while not self.closing:
                if outbox:
                    self._idle = False
                    try:
                        await self._write_one(outbox.popleft())
                    finally:
                        self._idle = True
                elif self._behind:
                    self._behind = False
                    self.behind_since = None
                    self._idle = False
                    try:
                        await self.on_caught_up()
                    finally:
                        self._idle = True
                else:
                    if self._outbox is outbox:
                        self._outbox = _NO_OUTBOX  # nothing waits: the deque can go
                    return
        finally:
            self._writer = None

    async def _write_one(self, event: dict[str, Any] | str) -> None:
        if isinstance(event, str):
            with contextlib.suppress(Exception):  # the client is gone: its disconnect ends it
                await self.frame_send({"type": "websocket.send", "text": event})
            return
        try:
            await self.dispatch(event)
        except (RedisError, DatabaseError, OSError, TimeoutError) as exc:
            logger.warning(
                "a live %s event failed on a socket: %s: %s",
                event.get("type"),
                type(exc).__name__,
                exc,
            )
        except Exception as exc:  # a handler bug: the socket cannot go on as it is
            await self._fail(exc)
            self._end_soon()  # not from this task: the ending cancels it
            self.closing = True

    # --- Lifecycle --------------------------------------------------------------------------------

    async def accept(self, subprotocol: str | None = None, headers: Any = None) -> None:
        await super().accept(subprotocol=subprotocol, headers=headers)
        self.accepted = True
        # Queued frames go straight to the server (`DirectSend`), when it is in front.
        self.frame_send = self.scope.get(DIRECT_SEND) or self.base_send
        self._wire = Wire.of(self.frame_send)
        self._idle = True
        self._start_writer()  # what waited for the accept goes first (the writer), then at once
        outage.REDIS.recovered()  # a socket opened: presence and the hub answered
        outage.DATABASE.recovered()

    async def close(self, code: int | bool | None = None, reason: str | None = None) -> None:
        """Close (before `accept`: refuse the handshake). Nothing more is handled or sent."""
        if self.closing and self.accepted:
            return
        self.closing = True
        await super().close(code=code, reason=reason)

    async def disconnect(self, code: int) -> None:
        self.close_code = code
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
