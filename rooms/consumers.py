"""The room's WebSocket: `/ws/rooms/<slug>/`.

Lifecycle: check access, join the room's and the user's groups, join presence, accept last; undo in
`disconnect`. Every frame is parsed, authorized again and handed to one service. Nothing a client
sends can take the connection down: bad frames get an `error` frame (to the sender only), and a
socket that keeps sending them is closed with 1008.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from typing import Any, ClassVar

from channels.consumer import get_handler_name
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from presence import services as presence
from presence.store import PresenceState
from rooms import selectors, services
from rooms.events import (
    AccessRevoked,
    EntryCreated,
    PresenceChanged,
    SessionEnded,
    room_group,
    user_group,
)
from rooms.payloads import (
    JSON_SUBPROTOCOL,
    entry_as_dict,
    entry_html,
    html_entry_frame,
    html_error_frame,
    html_sync_frame,
    json_frame,
    presence_html,
)
from rooms.throttle import take_expression_token, take_typing_token

logger = logging.getLogger(__name__)

CLOSE_SESSION_ENDED = 4401
CLOSE_ACCESS_REVOKED = 4403
CLOSE_POLICY_VIOLATION = 1008
CLOSE_TOO_LARGE = 1009


def _submit(room_id: int, user: Any, expression: object, client_id: object) -> services.Submission:
    return services.entry_submit(
        room_id=room_id,
        author=user,
        expression=expression,  # type: ignore[arg-type]  # validated inside
        client_id=services.client_id_parse(client_id),
    )


class RoomConsumer(AsyncWebsocketConsumer):
    room_id: int
    room_slug: str
    username: str
    json_mode: bool

    async def connect(self) -> None:
        self.joined = False
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close()  # before accept: the handshake is refused with HTTP 403
            return
        try:
            await self._join(user)
        except Exception:
            # The database or Redis is down: refuse now; the client retries with backoff.
            logger.exception("could not open a socket on room %s", self.scope["url_route"])
            await self._leave()
            await self.close()

    async def _join(self, user: Any) -> None:
        slug = self.scope["url_route"]["kwargs"]["slug"]
        room = await database_sync_to_async(selectors.room_for_member)(slug=slug, user_id=user.id)
        if room is None:
            await self.close()
            return
        self.user = user
        self.username = user.username
        self.room_id = room.id
        self.room_slug = room.slug
        self.session_key = getattr(self.scope.get("session"), "session_key", None)
        self.json_mode = JSON_SUBPROTOCOL in self.scope.get("subprotocols", [])
        self.refusals: deque[float] = deque()
        self.presence_version = -1
        self.presence_pending: PresenceChanged | None = None
        self.presence_sent_at = 0.0
        self.presence_flush: asyncio.TimerHandle | None = None
        self.typing_expiry: asyncio.Task[None] | None = None
        self.heartbeat: asyncio.Task[None] | None = None

        await self.channel_layer.group_add(room_group(self.room_id), self.channel_name)
        await self.channel_layer.group_add(user_group(user.id), self.channel_name)
        self.joined = True
        _LocalRoom.enter(self)
        state = await presence.presence_join(
            room_id=self.room_id, conn_id=self.channel_name, username=self.username
        )
        await self.accept(subprotocol=JSON_SUBPROTOCOL if self.json_mode else None)
        await self._send_presence_state(state)
        await self._send_sync(room.last_seq)
        self.heartbeat = asyncio.create_task(self._heartbeat())

    async def dispatch(self, message: dict[str, Any]) -> None:
        """Route a message to its handler, without Channels' per-message connection cleanup.

        Channels runs `aclose_old_connections()` through the single DB thread before every
        handler; at fan-out (every socket of a room gets every entry) that hop dominates. Every
        database call here goes through `database_sync_to_async`, which already closes stale
        connections before and after its work, so the hop buys nothing.
        """
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            logger.warning("ignoring a message of unknown type %r", message.get("type"))
            return
        await handler(message)

    async def disconnect(self, code: int) -> None:
        await self._leave()

    async def _leave(self) -> None:
        if not getattr(self, "joined", False):
            return
        self.joined = False
        _LocalRoom.exit(self)
        for task in (self.heartbeat, self.typing_expiry):
            if task is not None:
                task.cancel()
        if self.presence_flush is not None:
            self.presence_flush.cancel()
        # Each step on its own: the room must hear the leave even if Redis refused a discard.
        # (What fails here expires on its own: presence after its TTL, groups after a day.)
        steps = [
            self.channel_layer.group_discard(room_group(self.room_id), self.channel_name),
            self.channel_layer.group_discard(user_group(self.user.id), self.channel_name),
        ]
        if self.typing_expiry is not None:
            # The tab that was typing is gone: stop showing it now, even if the person stays
            # online in another tab (which re-announces typing if it is typing).
            steps.append(
                presence.presence_typing(room_id=self.room_id, username=self.username, typing=False)
            )
        steps.append(presence.presence_leave(room_id=self.room_id, conn_id=self.channel_name))
        for step in steps:
            try:
                await step
            except Exception:
                logger.exception("leaving room %s: a step failed", self.room_id)

    # --- Client frames ----------------------------------------------------------------------------

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        if not self.joined:
            return
        if text_data is None:
            await self._refuse("invalid_frame", "Frames are JSON text.", None)
            return
        if len(text_data.encode("utf-8", "surrogatepass")) > settings.WS_MAX_FRAME_BYTES:
            await self.close(code=CLOSE_TOO_LARGE)
            return
        try:
            frame = json.loads(text_data)
        except (ValueError, RecursionError):
            await self._refuse("invalid_frame", "That frame is not JSON.", None)
            return
        if not isinstance(frame, dict):
            await self._refuse("invalid_frame", "A frame is a JSON object with a type.", None)
            return
        kind = frame.get("type", "expression" if "expression" in frame else None)
        client_id = frame.get("client_id")
        client_id = client_id if isinstance(client_id, str) and len(client_id) <= 64 else None
        try:
            if kind == "expression":
                await self._on_expression(frame, client_id)
            elif kind == "typing":
                await self._on_typing(True)
            elif kind == "typing.stop":
                await self._on_typing(False)
            else:
                await self._refuse("invalid_frame", "Unknown frame type.", client_id)
        except Exception:
            logger.exception("frame failed in room %s", self.room_id)
            await self._send_error(
                "unavailable", "The server could not handle that just now; try again.", client_id
            )

    async def _on_expression(self, frame: dict[str, Any], client_id: str | None) -> None:
        if not await take_expression_token(user_id=self.user.id, room_id=self.room_id):
            await self._refuse("rate_limited", "Slow down: too many expressions.", client_id)
            return
        try:
            submission = await database_sync_to_async(_submit)(
                self.room_id, self.user, frame.get("expression"), frame.get("client_id")
            )
        except services.Refused as refused:
            await self._refuse(refused.code, refused.message, client_id)
            if refused.code == "forbidden":
                await self.close(code=CLOSE_ACCESS_REVOKED)
            return
        if not submission.created:
            # A resend: only the sender hears about it again.
            payload = entry_as_dict(submission.entry)
            await self._send_entry(payload, entry_html(payload))

    async def _on_typing(self, typing: bool) -> None:
        # Typing frames are processed at most once an interval per person per room; the excess is
        # dropped silently. A stop counts only while this connection's typing is on, so stops are
        # as rare as starts and a meaningful one is never dropped.
        if typing:
            if not await take_typing_token(user_id=self.user.id, room_id=self.room_id):
                return
        elif self.typing_expiry is None:
            return
        if not await database_sync_to_async(selectors.is_member)(
            room_id=self.room_id, user_id=self.user.id
        ):
            await self._send_error("forbidden", "You are no longer a member of this room.", None)
            await self.close(code=CLOSE_ACCESS_REVOKED)
            return
        await presence.presence_typing(room_id=self.room_id, username=self.username, typing=typing)
        if self.typing_expiry is not None:
            self.typing_expiry.cancel()
            self.typing_expiry = None
        if typing:
            self.typing_expiry = asyncio.create_task(self._expire_typing())

    async def _expire_typing(self) -> None:
        # The store forgets typing after the expiry on its own; this makes the room hear it.
        await asyncio.sleep(settings.TYPING_EXPIRY_SECONDS + 0.05)
        self.typing_expiry = None
        await presence.presence_check(room_id=self.room_id)

    async def _refuse(self, code: str, message: str, client_id: str | None) -> None:
        await self._send_error(code, message, client_id)
        now = time.monotonic()
        self.refusals.append(now)
        while self.refusals and self.refusals[0] < now - settings.WS_ABUSE_WINDOW_SECONDS:
            self.refusals.popleft()
        if len(self.refusals) >= settings.WS_ABUSE_LIMIT:
            await self.close(code=CLOSE_POLICY_VIOLATION)

    # --- Periodic work ----------------------------------------------------------------------------

    async def _heartbeat(self) -> None:
        """Keep this connection's presence record and channel-layer groups fresh."""
        while True:
            await asyncio.sleep(settings.PRESENCE_HEARTBEAT_SECONDS)
            try:
                await presence.presence_heartbeat(
                    room_id=self.room_id, conn_id=self.channel_name, username=self.username
                )
                await self.channel_layer.group_add(room_group(self.room_id), self.channel_name)
                await self.channel_layer.group_add(user_group(self.user.id), self.channel_name)
            except Exception:  # Redis blinked: try again next beat
                logger.exception("heartbeat failed in room %s", self.room_id)

    # --- Channel-layer events ---------------------------------------------------------------------

    async def entry_created(self, event: EntryCreated) -> None:
        await self._send_entry(event["entry"], event["html"])
        if self.typing_expiry is not None and event["entry"]["author"] == self.username:
            # The socket that was typing ends its person's typing once their expression is
            # stored (whichever tab or transport sent it): no store call for anyone else.
            self.typing_expiry.cancel()
            self.typing_expiry = None
            await presence.presence_typing(
                room_id=self.room_id, username=self.username, typing=False
            )

    async def presence_changed(self, event: PresenceChanged) -> None:
        if event["version"] <= self.presence_version:
            return
        self.presence_pending = event
        if self.presence_flush is not None:
            return  # a send is already scheduled; it will carry this newest state
        wait = self.presence_sent_at + settings.PRESENCE_BROADCAST_INTERVAL_SECONDS
        wait -= time.monotonic()
        if wait <= 0:
            await self._flush_presence()
        else:
            loop = asyncio.get_running_loop()
            self.presence_flush = loop.call_later(
                wait, lambda: asyncio.ensure_future(self._flush_presence())
            )

    async def access_revoked(self, event: AccessRevoked) -> None:
        if event["room_id"] == self.room_id:
            await self.close(code=CLOSE_ACCESS_REVOKED)

    async def session_ended(self, event: SessionEnded) -> None:
        if self.session_key and event["session_key"] == self.session_key:
            await self.close(code=CLOSE_SESSION_ENDED)

    # --- Sending ----------------------------------------------------------------------------------

    async def _flush_presence(self) -> None:
        self.presence_flush = None
        event, self.presence_pending = self.presence_pending, None
        if event is None or not self.joined or event["version"] <= self.presence_version:
            return
        self.presence_version = event["version"]
        self.presence_sent_at = time.monotonic()
        await self._send_presence(event["online"])

    async def _send_presence_state(self, state: PresenceState) -> None:
        self.presence_version = max(self.presence_version, state.version)
        self.presence_sent_at = time.monotonic()
        await self._send_presence(presence.state_payload(state))

    async def _send_presence(self, online: list[dict[str, Any]]) -> None:
        if self.json_mode:
            frame = json_frame("presence", room=self.room_slug, online=online, count=len(online))
        else:
            frame = presence_html(online, viewer=self.username)
        await self._send(frame)

    async def _send_entry(self, entry: dict[str, Any], html: str) -> None:
        await self._send(
            json_frame("entry", entry=entry) if self.json_mode else html_entry_frame(html)
        )

    async def _send_sync(self, last_seq: int) -> None:
        frame = (
            json_frame("sync", last_seq=last_seq) if self.json_mode else html_sync_frame(last_seq)
        )
        await self._send(frame)

    async def _send_error(self, code: str, message: str, client_id: str | None) -> None:
        if self.json_mode:
            frame = json_frame("error", code=code, message=message, client_id=client_id)
        else:
            frame = html_error_frame(code, message, client_id)
        await self._send(frame)

    async def _send(self, text: str) -> None:
        with contextlib.suppress(Exception):  # the socket may be closing under us
            await self.send(text_data=text)


class _LocalRoom:
    """The sockets of one room open in this process, and the one task that serves them all.

    Every few seconds it sweeps the room's presence, so the leaves of a dead process's expired
    records are announced within the TTL plus one sweep; every SYNC_INTERVAL_SECONDS it reads the
    room's last seq once and sends `sync` to each local socket. Once per room per process, not
    once per socket: a room with a thousand sockets here costs one store call and one query.
    """

    _rooms: ClassVar[dict[tuple[int, int], _LocalRoom]] = {}

    def __init__(self, room_id: int) -> None:
        self.room_id = room_id
        self.sockets: set[RoomConsumer] = set()
        self.task = asyncio.get_running_loop().create_task(
            self._run(), name=f"room-{room_id}-local"
        )

    @classmethod
    def enter(cls, socket: RoomConsumer) -> None:
        loop = asyncio.get_running_loop()
        key = (id(loop), socket.room_id)
        room = cls._rooms.get(key)
        if room is None or room.task.done() or room.task.get_loop() is not loop:
            room = cls._rooms[key] = cls(socket.room_id)
        room.sockets.add(socket)

    @classmethod
    def exit(cls, socket: RoomConsumer) -> None:
        key = (id(asyncio.get_running_loop()), socket.room_id)
        room = cls._rooms.get(key)
        if room is None:
            return
        room.sockets.discard(socket)
        if not room.sockets:
            room.task.cancel()
            del cls._rooms[key]

    async def _run(self) -> None:
        last_sync = time.monotonic()
        while True:
            await asyncio.sleep(
                min(settings.PRESENCE_SWEEP_SECONDS, settings.SYNC_INTERVAL_SECONDS)
            )
            try:
                await presence.presence_check(room_id=self.room_id)
                if time.monotonic() - last_sync >= settings.SYNC_INTERVAL_SECONDS - 0.01:
                    last_sync = time.monotonic()
                    last_seq = await database_sync_to_async(selectors.room_last_seq)(
                        room_id=self.room_id
                    )
                    for socket in list(self.sockets):
                        await socket._send_sync(last_seq)
            except Exception:  # Redis or the database blinked: try again next round
                logger.exception("room %s: sweep or sync failed", self.room_id)
