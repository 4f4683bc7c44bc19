"""Live delivery: one subscription per topic per process, and a local fan-out to its sockets.

A topic is what a group was: a room (`room.<id>`), a person's sockets (`user.<id>`), a person's
room lists (`me.<id>`). A process subscribes to a topic once, while at least one of its sockets
listens to it, and hands each event it hears to those sockets itself. An entry in a room of a
thousand sockets here is one Redis message, one `json.loads` and a thousand appends to the
sockets' outboxes (`Sink.deliver`), not a thousand channel-layer messages, dispatches and frames.

Delivery is at most once, as the channel layer's was: a message published while this process is
not subscribed (Redis restarting, a socket that subscribed a moment later) is not replayed. The
room's `sync` and the catch-up over HTTP make delivery whole (DESIGN.md). Subscriptions live on
the connection that holds them: a process that dies leaves nothing behind in Redis, and a process
that loses Redis subscribes again to every topic its sockets listen to as soon as Redis answers,
then tells each socket (`Sink.resumed`) so it can catch up on what it missed meanwhile.

Two hubs with one contract: `RedisHub` (several processes) and `LocalHub` (the embedded default,
one process). Both are per event loop: sockets live on the server's loop, and a publish from
another thread (a commit hook on the database thread) is handed to that loop without waiting.

This module does not import Django; `get_hub` reads settings lazily.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from typing import Any, Protocol

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from realtime import metrics, outage
from realtime.backends import ProcessWide
from realtime.redis import LoopLocalRedis, bounded_pool

logger = logging.getLogger(__name__)

RETRY_MIN_SECONDS = 0.1
RETRY_MAX_SECONDS = 1.0
READ_TIMEOUT_SECONDS = 5.0  # the reader's longest wait for a message (then it checks health)
RECONCILE_SECONDS = 5.0  # how often the reader checks Redis has exactly the topics wanted
SUBSCRIBE_TIMEOUT_SECONDS = 5.0  # a socket that cannot subscribe in this long is refused (1012)
PUBLISH_BATCH = 256  # events sent to Redis in one pipeline at most


class RedisUnavailable(RedisError):
    """Redis did not answer in time."""


class Sink(Protocol):
    """A local listener (a socket). `deliver` must not block: it queues and returns."""

    def deliver(self, event: dict[str, Any]) -> None: ...

    def resumed(self) -> None:
        """The hub was cut off from the other processes for a while; events may be missing."""


class Hub:
    """Subscriptions of this process's sockets, and publishing to every process."""

    def __init__(self) -> None:
        self._sinks: dict[str, set[Sink]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queued: deque[tuple[str, dict[str, Any]]] = deque()
        self._sender: asyncio.Task[None] | None = None

    # --- The contract ----------------------------------------------------------------------------

    async def subscribe(self, topic: str, sink: Sink) -> None:
        """`sink` hears every event published to `topic` from the moment this returns."""
        self._bind()
        sinks = self._sinks.setdefault(topic, set())
        sinks.add(sink)
        try:
            if len(sinks) == 1:
                await self._subscribed(topic)
            else:  # another socket subscribed it a moment ago: wait for the same confirmation
                await self._confirmed(topic)
        except BaseException:
            self._discard(topic, sink)
            raise

    async def unsubscribe(self, topic: str, sink: Sink) -> None:
        if self._discard(topic, sink):
            await self._unsubscribed(topic)

    async def publish(self, topic: str, event: dict[str, Any]) -> None:
        """Send `event` to every sink of `topic` in every process (raises when Redis does)."""
        await self.publish_many([(topic, event)])

    async def publish_many(self, events: list[tuple[str, dict[str, Any]]]) -> None:
        raise NotImplementedError

    def publish_soon(self, events: list[tuple[str, dict[str, Any]]]) -> bool:
        """From another thread: hand `events` to the hub's loop and return at once.

        They are sent in the order they were handed over (one queue, one sender, a pipeline per
        batch): a room's entries, stored in seq order, are published in seq order. False when
        the hub has no running loop to hand them to (the caller publishes itself).
        """
        loop = self._loop
        if loop is None or loop.is_closed() or not loop.is_running():
            return False
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._enqueue(events)
        else:
            loop.call_soon_threadsafe(self._enqueue, events)
        return True

    def _enqueue(self, events: list[tuple[str, dict[str, Any]]]) -> None:
        self._queued.extend(events)
        if self._sender is None or self._sender.done():
            self._sender = asyncio.get_running_loop().create_task(self._send_queued())

    async def _send_queued(self) -> None:
        queued = self._queued
        while queued:
            batch = [queued.popleft() for _ in range(min(len(queued), PUBLISH_BATCH))]
            await self._publish_logged(batch)

    def local_sinks(self, topic: str) -> int:
        return len(self._sinks.get(topic, ()))

    def topics(self) -> list[str]:
        return [topic for topic, sinks in self._sinks.items() if sinks]

    # --- Shared parts ----------------------------------------------------------------------------

    def _bind(self) -> None:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            if self._loop is not None and not self._loop.is_closed():
                # A new loop while the old one lives (tests run one loop per test): start over.
                self._reset()
            self._sinks = {topic: sinks for topic, sinks in self._sinks.items() if sinks}
            self._loop = loop

    def _reset(self) -> None:
        self._sinks = {}
        self._queued = deque()
        self._sender = None

    def _discard(self, topic: str, sink: Sink) -> bool:
        """Forget `sink` on `topic`; True when it was the topic's last local sink."""
        sinks = self._sinks.get(topic)
        if not sinks or sink not in sinks:
            return False
        sinks.discard(sink)
        if sinks:
            return False
        del self._sinks[topic]
        return True

    def fan_out(self, topic: str, event: dict[str, Any]) -> int:
        """Hand `event` to every local sink of `topic`; returns how many."""
        sinks = self._sinks.get(topic)
        if not sinks:
            return 0
        for sink in tuple(sinks):
            try:
                sink.deliver(event)
            except Exception:
                logger.exception("a socket failed to take a %s event", event.get("type"))
        committed = event.get("committed_at")
        if event.get("type") == "entry.created":
            metrics.frame_out("entry", len(sinks))
        if committed is not None and self._loop is not None:
            # Runs once the writers this woke have taken their turn (they were scheduled first):
            # the time from commit to the last local socket's send.
            self._loop.call_soon(_observe_fanout, committed)
        return len(sinks)

    def _resume_all(self) -> None:
        for sinks in list(self._sinks.values()):
            for sink in tuple(sinks):
                try:
                    sink.resumed()
                except Exception:
                    logger.exception("a socket failed to resume")

    async def _publish_logged(self, events: list[tuple[str, dict[str, Any]]]) -> None:
        try:
            await self.publish_many(events)
        except Exception as exc:
            publish_failed(events, exc)

    async def _subscribed(self, topic: str) -> None:
        raise NotImplementedError

    async def _confirmed(self, topic: str) -> None:
        """Wait until a subscription already asked for is live."""

    async def _unsubscribed(self, topic: str) -> None:
        raise NotImplementedError

    async def aclose(self) -> None:
        """Drop every subscription of this loop (tests, shutdown)."""
        self._sinks = {}


def publish_failed(events: list[tuple[str, dict[str, Any]]], exc: BaseException) -> None:
    """One line per outage: committed work stays done; `sync` and catch-up heal the rooms."""
    kinds = sorted({event.get("type", "?") for _, event in events})
    outage.REDIS.failed(exc, detail=f"publishing {len(events)} event(s): {', '.join(kinds)}")


class LocalHub(Hub):
    """One process, no Redis: a publish is the fan-out (on the loop the sockets live on)."""

    async def publish_many(self, events: list[tuple[str, dict[str, Any]]]) -> None:
        loop = self._loop
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if loop is None or loop.is_closed():
            return
        # Through JSON, as over Redis: a sink never shares an object with the publisher.
        copies = [(topic, json.loads(json.dumps(event))) for topic, event in events]
        if running is loop:
            for topic, event in copies:
                self.fan_out(topic, event)
        elif loop.is_running():
            loop.call_soon_threadsafe(self._fan_out_all, copies)

    def _fan_out_all(self, events: list[tuple[str, dict[str, Any]]]) -> None:
        for topic, event in events:
            self.fan_out(topic, event)

    async def _subscribed(self, topic: str) -> None:
        return None

    async def _unsubscribed(self, topic: str) -> None:
        return None


class RedisHub(Hub):
    """Every process through Redis pub/sub: one subscriber connection per process.

    `subscribe` sends SUBSCRIBE on that connection and returns once Redis confirmed it, so an
    event published after it returns is heard. The reader task reads and fans out. When Redis goes
    away it logs one line, retries with a growing pause, subscribes again to every topic its
    sockets listen to, logs one line, and tells every sink that events may be missing.
    """

    def __init__(self, url: str, *, prefix: str, **options: Any) -> None:
        super().__init__()
        self.url = url
        self.prefix = f"{prefix}:live:"
        self.options = options
        self._publisher = LoopLocalRedis(url, **{"socket_timeout": 5, **options})
        self._reader: asyncio.Task[None] | None = None
        self._pubsub: Any = None  # the reader's, while it is connected
        self._confirms: dict[str, asyncio.Future[None]] = {}
        self._active: set[str] = set()  # topics Redis confirmed on the reader's connection

    def channel(self, topic: str) -> str:
        return self.prefix + topic

    def _reset(self) -> None:
        super()._reset()
        if self._reader is not None:
            self._reader.cancel()
        self._reader = None
        self._pubsub = None
        self._confirms = {}
        self._active = set()

    def _bind(self) -> None:
        super()._bind()
        if self._reader is None or self._reader.done():
            self._reader = asyncio.get_running_loop().create_task(
                self._read(), name="live-subscription"
            )

    async def publish_many(self, events: list[tuple[str, dict[str, Any]]]) -> None:
        client = self._publisher.client()
        for start in range(0, len(events), PUBLISH_BATCH):
            batch = events[start : start + PUBLISH_BATCH]
            if len(batch) == 1:
                topic, event = batch[0]
                await client.publish(self.channel(topic), json.dumps(event))
                continue
            async with client.pipeline(transaction=False) as pipe:
                for topic, event in batch:
                    pipe.publish(self.channel(topic), json.dumps(event))
                await pipe.execute()
        outage.REDIS.recovered()

    def _confirm(self, topic: str) -> asyncio.Future[None]:
        future = self._confirms.get(topic)
        if future is None or future.done():
            future = self._confirms[topic] = asyncio.get_running_loop().create_future()
        return future

    async def _subscribed(self, topic: str) -> None:
        self._confirm(topic)
        pubsub = self._pubsub
        if pubsub is not None:
            try:
                await pubsub.subscribe(self.channel(topic))
            except (RedisError, OSError) as exc:
                outage.REDIS.failed(exc)  # the reader reconnects and subscribes it then
        await self._confirmed(topic)

    async def _confirmed(self, topic: str) -> None:
        future = self._confirms.get(topic)
        if future is None or future.done():
            return
        try:
            await asyncio.wait_for(asyncio.shield(future), SUBSCRIBE_TIMEOUT_SECONDS)
        except TimeoutError:
            raise RedisUnavailable(f"Redis did not confirm the subscription to {topic}") from None

    async def _unsubscribed(self, topic: str) -> None:
        self._confirms.pop(topic, None)
        pubsub = self._pubsub
        if pubsub is not None:
            # A failing connection: the reader's next one will not have the topic anyway.
            with contextlib.suppress(RedisError, OSError):
                await pubsub.unsubscribe(self.channel(topic))

    async def _read(self) -> None:
        pause = RETRY_MIN_SECONDS
        cut_off = False  # this subscription was lost: its sockets may have missed events
        while True:
            client: Any = None
            try:
                pool = bounded_pool(
                    self.url,
                    **{**self.options, "max_connections": 2, "max_idle": 1, "socket_timeout": None},
                )
                client = aioredis.Redis.from_pool(pool)
                pubsub = client.pubsub()
                await pubsub.ping()  # connects, or fails here
                self._pubsub = pubsub
                topics = self.topics()
                if topics:
                    await pubsub.subscribe(*(self.channel(t) for t in topics))
                pause = RETRY_MIN_SECONDS
                outage.REDIS.recovered()
                first = True
                checked = time.monotonic()
                while True:
                    message = await pubsub.get_message(timeout=READ_TIMEOUT_SECONDS)
                    while message is not None:
                        self._handle(message)
                        message = await pubsub.get_message(timeout=0)
                    if time.monotonic() - checked >= RECONCILE_SECONDS:
                        checked = time.monotonic()
                        await self._reconcile(pubsub)
                    if first:
                        first = False
                        if cut_off:  # subscribed again (the confirmations were just read)
                            cut_off = False
                            self._resume_all()
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError, TimeoutError) as exc:
                outage.REDIS.failed(exc)
                cut_off = True
                self._active = set()
            except Exception:
                logger.exception("the live subscription failed")
                cut_off = True
            finally:
                self._pubsub = None
                if client is not None:
                    await _quietly(client.aclose())
            await asyncio.sleep(pause)
            pause = min(RETRY_MAX_SECONDS, pause * 2)

    async def _reconcile(self, pubsub: Any) -> None:
        """Make what Redis has match what the sockets want (a SUBSCRIBE and an UNSUBSCRIBE of one
        topic racing each other, when its last socket left as a new one came, end right)."""
        wanted = set(self.topics())
        missing = wanted - self._active
        extra = self._active - wanted
        if missing:
            await pubsub.subscribe(*(self.channel(t) for t in missing))
        if extra:
            await pubsub.unsubscribe(*(self.channel(t) for t in extra))

    def _handle(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        channel = message.get("channel")
        if isinstance(channel, bytes):
            channel = channel.decode()
        if not isinstance(channel, str) or not channel.startswith(self.prefix):
            return
        topic = channel[len(self.prefix) :]
        if kind == "subscribe":
            self._active.add(topic)
            future = self._confirms.get(topic)
            if future is not None and not future.done():
                future.set_result(None)
            return
        if kind == "unsubscribe":
            self._active.discard(topic)
            return
        if kind != "message":
            return
        try:
            event = json.loads(message.get("data"))
        except (TypeError, ValueError):
            logger.warning("ignoring a live event on %s that is not JSON", topic)
            return
        if isinstance(event, dict):
            self.fan_out(topic, event)

    async def aclose(self) -> None:
        await super().aclose()
        if self._reader is not None:
            self._reader.cancel()
            await _quietly(self._reader)
            self._reader = None
        await self._publisher.aclose()


def _observe_fanout(committed: float) -> None:
    metrics.fanout_observed(max(0.0, time.time() - committed))


async def _quietly(awaitable: Any) -> None:
    with contextlib.suppress(Exception, asyncio.CancelledError):
        await awaitable


# --- The process's hub ----------------------------------------------------------------------------

_hub: ProcessWide[Hub] = ProcessWide(
    "live", on_redis=lambda url, **options: RedisHub(url, **options), in_memory=lambda: LocalHub()
)


def get_hub() -> Hub:
    """The process-wide hub: Redis when settings name one, else this process alone."""
    return _hub.get()


def reset_hub() -> None:
    """Forget the process-wide hub (tests; after changing settings)."""
    _hub.reset()
