"""The room's WebSocket: `/ws/rooms/<slug>/`.

Thin: check access, join the room's and the user's groups, join presence, accept last; parse each
frame and hand it to one service. The parts have homes of their own: the connection's lifecycle
(`realtime.connection`), presence frames and typing (`presence.live`), the frames of each wire mode
(`rooms.renderers`), and the room's once-per-process work (`room_ticker` below, on
`realtime.tick`). Nothing a client sends can take the connection down: bad frames get an `error`
frame (to the sender only), and a socket that keeps sending them is closed with 1008.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
from collections.abc import Awaitable, Iterable
from typing import Any, NamedTuple

from channels.db import database_sync_to_async
from django.conf import settings

from accounts.tokens import TokenGrant
from presence import services as presence
from presence.live import Key, RoomPresenceFeed, Typing
from presence.store import PresenceState
from realtime import metrics, outage
from realtime.connection import Connection
from realtime.events import (
    AccessRevoked,
    EntryCreated,
    PresenceChanged,
    RoomActivity,
    SessionEnded,
    TokenRevoked,
    UnreadChanged,
    activity_group,
    me_group,
    room_group,
    user_group,
)
from realtime.reads import read_call
from realtime.tick import RoomTick, RoomTicker
from rooms import selectors, services
from rooms.payloads import JSON_SUBPROTOCOL, entry_as_dict, json_frame
from rooms.renderers import Renderer, renderer_for
from rooms.selectors import Access, Lost, Seat
from rooms.throttle import get_socket_quota, take_abuse_token, take_typing_token

logger = logging.getLogger(__name__)

CLOSE_SESSION_ENDED = 4401
CLOSE_ACCESS_REVOKED = 4403
CLOSE_POLICY_VIOLATION = 1008
CLOSE_TOO_LARGE = 1009
CLOSE_TOO_FAR_BEHIND = 1013  # a reader that does not drain its socket: it reconnects, catches up
CLOSE_CODES = {Lost.SESSION: CLOSE_SESSION_ENDED, Lost.ACCESS: CLOSE_ACCESS_REVOKED}
# One socket's expressions being stored at once. Its next frame is read while they are (so what a
# client sends quickly is stored together), but past this many it waits for the oldest answer:
# one socket cannot fill its room's store queue (ENTRY_STORE_QUEUE_LIMIT) alone.
STORING_MAX = 4


class _SeatedConnection(Connection):
    """A socket held by a person through a session or a token: its seat, and the two endings
    that concern every such socket (the session ended, the token was revoked: 4401)."""

    __slots__ = ("seat",)
    seat: Seat

    def _seat_for(self, user: Any, token: TokenGrant | None) -> Seat:
        return Seat(
            user.id,
            getattr(self.scope.get("session"), "session_key", None),
            token.id if token is not None else None,
        )

    async def session_ended(self, event: SessionEnded) -> None:
        if self.seat.session_key and event["session_key"] == self.seat.session_key:
            await self.close(code=CLOSE_SESSION_ENDED)

    async def token_revoked(self, event: TokenRevoked) -> None:
        if self.seat.token_id is not None and event["token_id"] == self.seat.token_id:
            await self.close(code=CLOSE_SESSION_ENDED)


class RoomConsumer(_SeatedConnection):
    __slots__ = (
        "claimed",
        "in_presence",
        "missed_seq",
        "opened",
        "presence_shown",
        "presence_version",
        "read_pending",
        "renderer",
        "room_id",
        "room_slug",
        "storing",
        "token",
        "typing",
        "user",
        "username",
    )
    room_id: int
    room_slug: str
    username: str
    seat: Seat
    renderer: Renderer
    typing: Typing

    async def connect(self) -> None:
        user = self.scope.get("user")
        slug = self.scope["url_route"]["kwargs"]["slug"]
        if user is None or not user.is_authenticated:
            return await self._refuse_handshake("not signed in", slug)
        token: TokenGrant | None = self.scope.get("access_token")
        if token is not None and JSON_SUBPROTOCOL not in self.scope.get("subprotocols", []):
            # Scripts speak JSON: the page's HTML fragments are for the page's cookie socket.
            return await self._refuse_handshake(f"token socket without {JSON_SUBPROTOCOL}", slug)
        grant = await read_call(selectors.room_access, slug=slug, user=user)
        if grant.room is None or not grant.allows(Access.MEMBER):
            return await self._refuse_handshake(f"{user.username} is not a member", slug)
        room = grant.room
        if not await get_socket_quota().claim(
            user.id,
            self.channel_name,
            cap=settings.WS_MAX_SOCKETS_PER_USER,
            ttl=settings.PRESENCE_TTL_SECONDS,
        ):
            return await self._refuse_handshake(
                f"{user.username} already has {settings.WS_MAX_SOCKETS_PER_USER} sockets open",
                slug,
            )
        self.claimed = True
        self.user = user
        self.username = user.username
        self.room_id = room.id
        self.room_slug = room.slug
        self.token = token
        self.seat = self._seat_for(user, token)
        self.renderer = renderer_for(
            self.scope.get("subprotocols", []),
            room_id=room.id,
            room_slug=room.slug,
            viewer=user.username,
        )
        self.typing = Typing(
            room_id=room.id,
            username=user.username,
            spawn=self.tasks.spawn,
            expiry=_typing_expiry,
        )
        self.in_presence = False

        self.presence_version = -1  # the newest presence version this socket was given
        self.presence_shown: Key | None = None  # what its frame showed (the room's shared key)
        self.missed_seq = 0  # the newest entry dropped for this socket while it read too slowly
        self.read_pending = 0  # the newest seq the page said it showed, not yet stored
        self.storing: list[asyncio.Future[services.Submission]] = []  # its expressions in store

        await self.listen(room_group(room.id))
        await self.listen(user_group(user.id))
        room_ticker.enter(room.id, self)
        _room_here(room.id).add(self)
        self.in_presence = True  # from here on, the end leaves presence (even half-joined)
        joined = await presence.presence_join(
            room_id=room.id, conn_id=self.channel_name, username=self.username
        )
        # Read after listening: an entry stored before this is in `sync`, one after it is heard.
        last_seq = await read_call(selectors.room_last_seq, room_id=room.id)
        _seen_seq(room.id, last_seq)
        # The room's state with this join in it, read once for every socket joining meanwhile.
        shown = await _room_presence(room.id).state_since(joined.version)
        await self.accept(subprotocol=self.renderer.subprotocol)
        self.presence_version, self.presence_shown = shown.version, shown.key
        await self.send_frame(self.renderer.presence(shown.version, shown.online))
        await self.send_frame(self.renderer.sync(last_seq))
        self.opened = True
        metrics.socket_opened(room_ticker.count(room.id))
        metrics.frame_out("presence")
        metrics.frame_out("sync")
        logger.info(
            "socket connected to room %s by %s",
            room.slug,
            self.username,
            extra=self._log_fields("socket.connected"),
        )

    def _log_fields(self, event: str, **more: Any) -> dict[str, Any]:
        return {
            "event": event,
            "room": self.room_slug,
            "user": self.username,
            "conn": self.channel_name,
            **more,
        }

    async def _refuse_handshake(self, reason: str, slug: str) -> None:
        user = self.scope.get("user")
        logger.info(
            "refused a socket on room %r: %s",
            slug,
            reason,
            extra={
                "event": "socket.refused",
                "room": slug,
                "user": getattr(user, "username", None) or None,
                "conn": self.channel_name,
            },
        )
        metrics.refusal(403)
        await self.close()  # before accept: the handshake is refused with HTTP 403

    async def on_end(self) -> None:
        try:
            await self._leave()
        finally:
            await self._stores_settled()

    async def _stores_settled(self) -> None:
        """Until the expressions this socket queued are stored (or failed), within a bound.

        Nobody hears their answers any more, but the connection's handler stays until they
        are: uvicorn's graceful shutdown waits for the handlers, not for the store threads, and
        a process that exited with one in store would lose it (its thread ends with the
        process). The client's resend after reconnecting is answered with the stored entry."""
        storing = getattr(self, "storing", None)  # None: refused before it could submit
        if storing:
            await self.end_step(asyncio.wait(list(storing)), "expressions in store")

    async def _leave(self) -> None:
        if getattr(self, "claimed", False):
            await self.end_step(
                get_socket_quota().release(self.user.id, self.channel_name), "socket claim"
            )
        if not getattr(self, "in_presence", False):
            return
        room_ticker.exit(self.room_id, self)
        _room_here(self.room_id).discard(self)
        if not room_ticker.count(self.room_id):
            _room_presence_done(self.room_id)
            _room_seq.pop(self.room_id, None)
            _online.pop(self.room_id, None)
        if self.read_pending:
            await self.end_step(
                database_sync_to_async(services.read_positions_advance)(
                    room_id=self.room_id, positions={self.user.id: self.read_pending}
                ),
                "read position",
            )
        if getattr(self, "opened", False):
            metrics.socket_closed(room_ticker.count(self.room_id))
            logger.info(
                "socket closed on room %s by %s (%s)",
                self.room_slug,
                self.username,
                self.close_code,
                extra=self._log_fields("socket.closed", code=self.close_code),
            )
        if self.typing.active:
            # The tab that was typing is gone: stop showing it now, even if the person stays
            # online in another tab (which re-announces typing if it is typing).
            await self.end_step(self.typing.stop(), "typing stop")
        await self.end_step(
            presence.presence_leave(room_id=self.room_id, conn_id=self.channel_name),
            "presence leave",
        )

    # --- Client frames ----------------------------------------------------------------------------

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
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
        metrics.frame_in(kind if isinstance(kind, str) else "other")
        started = time.monotonic()
        try:
            if kind == "expression":
                await self._on_expression(frame, client_id)
            elif kind == "typing":
                await self._on_typing(True)
            elif kind == "typing.stop":
                await self._on_typing(False)
            elif kind == "read":
                await self._on_read(frame.get("seq"))
            else:
                await self._refuse("invalid_frame", "Unknown frame type.", client_id)
        except Exception as exc:
            await self._frame_failed(exc, kind, client_id)
        took = time.monotonic() - started
        if took > settings.SLOW_HANDLER_SECONDS:
            metrics.slow_handler(f"frame.{kind}" if kind in _FRAME_KINDS else "frame.other")
            logger.info(
                "a %s frame took %.0f ms in room %s",
                kind,
                took * 1000,
                self.room_slug,
                extra=self._log_fields("socket.slow_frame", ms=round(took * 1000)),
            )

    async def _on_expression(self, frame: dict[str, Any], client_id: str | None) -> None:
        if self.token is not None and not self.token.writes:
            # The token narrows what room_access allows: it reads, it does not submit.
            message = "This token is read-only: make a read-and-write token to submit."
            await self._refuse("forbidden", message, client_id)
            return
        while len(self.storing) >= STORING_MAX:  # the next frame waits for the oldest answer
            await asyncio.wait(self.storing[:1])
        try:
            answer = await services.entry_queue(
                room_id=self.room_id,
                author=self.user,
                expression=frame.get("expression"),
                client_id=frame.get("client_id"),
            )
        except services.Refused as refused:
            await self._expression_refused(refused, client_id)
            return
        # Queued in the order the client sent it: its next frame is read while it is stored (a
        # client that sends many at once has them stored together, not one round trip each).
        self.storing.append(answer)
        answer.add_done_callback(self.storing.remove)
        answer.add_done_callback(functools.partial(self._stored_in, time.monotonic()))
        self.tasks.spawn(self._expression_answered(answer, client_id), name="expression")

    def _stored_in(self, queued: float, answer: asyncio.Future[services.Submission]) -> None:
        """An expression's store answered: slower than SLOW_HANDLER_SECONDS since its frame was
        queued, it is counted (`expression.store`) and logged, as a slow frame is (its frame's
        handler returned when it was queued, so that count misses the store's wait)."""
        took = time.monotonic() - queued
        if took <= settings.SLOW_HANDLER_SECONDS:
            return
        metrics.slow_handler("expression.store")
        logger.info(
            "an expression took %.0f ms to store in room %s",
            took * 1000,
            self.room_slug,
            extra=self._log_fields("socket.slow_store", ms=round(took * 1000)),
        )

    async def _expression_answered(
        self, answer: asyncio.Future[services.Submission], client_id: str | None
    ) -> None:
        try:
            submission = await asyncio.shield(answer)
        except services.Refused as refused:
            await self._expression_refused(refused, client_id)
            return
        except Exception as exc:
            await self._frame_failed(exc, "expression", client_id)
            return
        if not submission.created:
            # A resend: only the sender hears about it again.
            await self.send_frame(self.renderer.entry(entry_as_dict(submission.entry)))

    async def _frame_failed(self, exc: Exception, kind: object, client_id: str | None) -> None:
        """A frame's handling (or its expression's store) failed: logged, answered `unavailable`."""
        if not outage.failed(exc):  # a backend's: one line per outage, not one per frame
            logger.exception("a %s frame failed in room %s", kind, self.room_id)
        await self._send_error(
            "unavailable", "The server could not handle that just now; try again.", client_id
        )

    async def _expression_refused(self, refused: services.Refused, client_id: str | None) -> None:
        if refused.code == "unavailable":  # the server's state, not the client's fault
            await self._send_error(refused.code, refused.message, client_id)
            return
        await self._refuse(refused.code, refused.message, client_id)
        if refused.code == "forbidden":
            await self.close(code=CLOSE_ACCESS_REVOKED)

    async def _on_typing(self, typing: bool) -> None:
        # Typing frames are processed at most once an interval per person per room; the excess is
        # dropped silently. A stop counts only while this connection's typing is on, so stops are
        # as rare as starts and a meaningful one is never dropped.
        if typing:
            if not await take_typing_token(user_id=self.user.id, room_id=self.room_id):
                return
        elif not self.typing.active:
            return
        grant = await read_call(selectors.room_access, room_id=self.room_id, user=self.user)
        if not grant.allows(Access.MEMBER):
            await self._send_error("forbidden", "You are no longer a member of this room.", None)
            await self.close(code=CLOSE_ACCESS_REVOKED)
            return
        await (self.typing.start() if typing else self.typing.stop())

    async def _on_read(self, seq: object) -> None:
        """The page showed every entry up to `seq` while visible: the read position advances.

        A page sends one a second while visible, so a room of a thousand open pages would be a
        thousand updates a second: a seq this process knows the room has is kept, and the room's
        next tick stores every socket's newest at once (`services.read_positions_advance`); the
        socket's end stores its own. Only a seq past what this process has seen of the room is
        checked at once (it may be wrong, or just ahead of a broadcast still on its way).
        """
        if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
            await self._refuse("invalid_frame", "seq must be a whole number.", None)
            return
        if seq <= _room_seq.get(self.room_id, 0):
            self.read_pending = max(self.read_pending, seq)
            _room_here(self.room_id).reading.add(self)
            return
        try:
            await database_sync_to_async(services.read_position_advance)(
                room_id=self.room_id, user=self.user, seq=seq
            )
        except services.Refused as refused:
            await self._refuse(refused.code, refused.message, None)
            if refused.code == "forbidden":
                await self.close(code=CLOSE_ACCESS_REVOKED)

    async def _refuse(self, code: str, message: str, client_id: str | None) -> None:
        """Refuse a frame; too many refusals from one person (across every socket and process,
        so reconnecting does not reset it) close the socket with 1008."""
        await self._send_error(code, message, client_id)
        if not await take_abuse_token(user_id=self.user.id):
            logger.info(
                "closing %s's socket in room %s: repeated abuse",
                self.username,
                self.room_id,
                extra=self._log_fields("socket.closing", code=CLOSE_POLICY_VIOLATION),
            )
            metrics.refusal(CLOSE_POLICY_VIOLATION)
            await self.close(code=CLOSE_POLICY_VIOLATION)

    # --- Live events (from the hub, in order, through the outbox) ---------------------------------

    def outgoing(self, event: dict[str, Any]) -> dict[str, Any] | str | None:
        """An entry is its prebuilt frame for this socket's mode, unless this socket is typing
        and the entry is its person's (then the handler also ends the typing). Presence goes to
        the room's one feed in this process, which queues the coalesced frame for every socket."""
        kind = event.get("type")
        if kind == "entry.created":
            _seen_seq(self.room_id, event["entry"]["seq"])
        if kind == "entry.created" and not (
            self.typing.active and event["entry"]["author"] == self.username
        ):
            return event["frames"][self.renderer.mode]
        if kind == "presence.changed":
            _room_presence(self.room_id).offer(event["version"])
            return None
        return event

    def on_overflow(self, event: dict[str, Any]) -> bool:
        """This client reads too slowly: drop entries (it fetches them once told), keep the rest."""
        if event.get("type") != "entry.created":
            return False
        if not self.missed_seq:  # the first drop since it last caught up: the tick watches it
            _room_here(self.room_id).behind.add(self)
        self.missed_seq = max(self.missed_seq, int(event["entry"]["seq"]))
        return True

    async def on_caught_up(self) -> None:
        _room_here(self.room_id).behind.discard(self)
        seq, self.missed_seq = self.missed_seq, 0
        if seq:
            await self.send_frame(self.renderer.sync(seq))

    async def live_resumed(self, event: dict[str, Any]) -> None:
        """The process was cut off from Redis: the room's tick re-joins presence and says `sync`."""
        room_ticker.resync(self.room_id)

    async def entry_created(self, event: EntryCreated) -> None:
        await self.send_frame(self.renderer.entry_event(event))
        if self.typing.active and event["entry"]["author"] == self.username:
            # The socket that was typing ends its person's typing once their expression is
            # stored (whichever tab or transport sent it): no store call for anyone else.
            try:
                await self.typing.stop()
            except Exception as exc:  # the store forgets typing after its expiry anyway
                logger.warning("could not clear typing in room %s: %s", self.room_id, exc)

    async def presence_changed(self, event: PresenceChanged) -> None:
        _room_presence(self.room_id).offer(event["version"])

    def queue_presence(self, version: int, online: list[dict[str, Any]], key: Key) -> bool:
        """The room's feed has a newer state than this socket showed: queue its frame (unless
        only the version moved, a second tab closing: then the room shows what it showed)."""
        if version <= self.presence_version or self.closing:
            return False
        self.presence_version = version
        if key == self.presence_shown:
            self.presence_shown = key  # the room's newest copy: older ones can go
            return False
        self.presence_shown = key
        self.deliver_frame(self.renderer.presence(version, online))
        return True

    async def access_revoked(self, event: AccessRevoked) -> None:
        if event["room_id"] == self.room_id:
            await self.close(code=CLOSE_ACCESS_REVOKED)

    # --- Sending ----------------------------------------------------------------------------------

    async def _send_error(self, code: str, message: str, client_id: str | None) -> None:
        metrics.refusal(code)
        metrics.frame_out("error")
        await self.send_frame(self.renderer.error(code, message, client_id))


class RoomListConsumer(_SeatedConnection):
    """The room list's socket: `/ws/me/`. It only listens: a new entry in one of its person's rooms
    (`room.activity`, one event per entry on the room's activity topic, whatever the room's size)
    and its person's read position moving (`unread.changed` on `me.<id>`) each become a JSON frame
    `{"v": 1, "type": "unread", "room": <slug>, "unread": N, "activity": <ISO time> | null}`; the
    socket holds its person's read positions to work out the count. It closes with 4401 when its
    session ends or its token is revoked, like the room sockets. Rooms joined after it opened show
    on the list's next load."""

    __slots__ = ("positions",)
    positions: dict[int, list[Any]]  # room_id -> [slug, read position]

    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            logger.info("refused a room-list socket: not signed in")
            await self.close()
            return
        self.seat = self._seat_for(user, self.scope.get("access_token"))
        await self.listen(user_group(user.id))
        await self.listen(me_group(user.id))
        for room_id in await database_sync_to_async(self._rooms)(user.id):
            await self.listen(activity_group(room_id))
        # Read after listening: a position that moves after this is heard.
        self.positions = {
            room_id: [slug, read]
            for room_id, (slug, read) in (
                await database_sync_to_async(selectors.read_positions_of)(user_id=user.id)
            ).items()
        }
        await self.accept()

    @staticmethod
    def _rooms(user_id: int) -> list[int]:
        return list(selectors.read_positions_of(user_id=user_id))

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        """Nothing to say to this socket: frames from the client are ignored."""

    async def unread_changed(self, event: UnreadChanged) -> None:
        known = self.positions.get(event["room_id"])
        if known is not None:
            known[1] = max(known[1], event["read_seq"])
        await self._send_unread(event["room"], event["unread"], event["activity"])

    async def room_activity(self, event: RoomActivity) -> None:
        known = self.positions.get(event["room_id"])
        if known is None:
            return
        await self._send_unread(known[0], max(0, event["last_seq"] - known[1]), event["activity"])

    async def _send_unread(self, room: str, unread: int, activity: str | None) -> None:
        metrics.frame_out("unread")
        await self.send_frame(json_frame("unread", room=room, unread=unread, activity=activity))

    async def access_revoked(self, event: AccessRevoked) -> None:
        """A room's sockets close; the room list shows the change on its next load."""

    async def live_resumed(self, event: dict[str, Any]) -> None:
        """Counts missed meanwhile show on the next change or load."""


# --- The room's work, once per room per process ---------------------------------------------------


async def _rooms_tick(rooms: dict[int, RoomTick[RoomConsumer]]) -> None:
    """The upkeep of this process's rooms, each for all its sockets here at once, and what it
    asks of the database for all the rooms at once (one call a tick, however many rooms).

    Every PRESENCE_HEARTBEAT_SECONDS: one presence refresh and one socket-claim renewal for every
    local socket of the room (not one of each per socket). Every tick: the presence sweep, which
    announces the leaves of a dead process's expired records within the TTL plus one tick, and the
    re-check, which closes within one tick a socket whose session or membership is gone by any
    path (the admin, a shell, a password change, a revocation event that was lost). Every
    SYNC_INTERVAL_SECONDS, and at once after the process was cut off from Redis, each socket hears
    the room's last seq, so it notices a missed entry. A room whose presence step fails (Redis is
    away) still has its sockets re-checked; the tick then reports the failure.
    """
    plans = [_TickPlan.of(room_id, part) for room_id, part in rooms.items()]
    failed = [
        result
        for result in await _bounded(
            [_room_presence_step(plan) for plan in plans], limit=_TICK_REDIS_CALLS
        )
        if isinstance(result, Exception)
    ]
    for plan in plans:
        await _close_too_far_behind(plan.room_id, plan.here)
    positions = {plan.room_id: _read_positions(plan.here) for plan in plans}
    lost, last_seqs = await database_sync_to_async(_tick_database)(
        seats={plan.room_id: list(plan.here.by_seat) for plan in plans},
        positions={room_id: read for room_id, read in positions.items() if read},
        synced=[plan.room_id for plan in plans if plan.sync],
    )
    for plan in plans:
        await _close_lost(plan.room_id, plan.here, lost.get(plan.room_id, {}))
        if plan.sync:
            _send_sync(plan.room_id, plan.sockets, last_seqs.get(plan.room_id, 0))
    if failed:
        raise failed[0]


_TICK_REDIS_CALLS = 8  # rooms whose presence a tick asks Redis about at the same time


class _TickPlan(NamedTuple):
    """What one room's part of a tick is to do."""

    room_id: int
    here: _RoomHere
    sockets: set[RoomConsumer]
    heartbeat: bool
    sync: bool

    @classmethod
    def of(cls, room_id: int, part: RoomTick[RoomConsumer]) -> _TickPlan:
        resync = room_ticker.take_resync(room_id)
        heartbeat = resync or part.tick % _every(settings.PRESENCE_HEARTBEAT_SECONDS) == 0
        sync = resync or part.tick % _every(settings.SYNC_INTERVAL_SECONDS) == 0
        sockets = part.members
        if heartbeat or sync:  # the only steps that concern every socket
            sockets = {socket for socket in sockets if not socket.closing}
        return cls(room_id, _room_here(room_id), sockets, heartbeat, sync)


async def _bounded(calls: list[Awaitable[Any]], *, limit: int) -> list[Any]:
    """Await `calls`, at most `limit` at a time (the Redis pool is shared with the live path);
    each one's result or exception, in order."""
    gate = asyncio.Semaphore(limit)

    async def one(call: Awaitable[Any]) -> Any:
        async with gate:
            return await call

    return await asyncio.gather(*(one(call) for call in calls), return_exceptions=True)


async def _room_presence_step(plan: _TickPlan) -> None:
    """The room's presence: refreshed (a heartbeat) or swept, and a dead process's ghosts
    counted."""
    room_id = plan.room_id
    before = _online.get(room_id)
    if plan.heartbeat:
        state = await _heartbeat(room_id, plan.sockets)
    else:
        state = await presence.presence_check(room_id=room_id)
    after = {o.username for o in state.online}
    _online[room_id] = after
    if before is not None and state.changed and before - after:
        # Gone without a leave from any socket here: their records expired (a dead process).
        metrics.presence_expired(len(before - after))


def _tick_database(
    *, seats: dict[int, list[Seat]], positions: dict[int, dict[int, int]], synced: list[int]
) -> tuple[dict[int, dict[Seat, Lost]], dict[int, int]]:
    """A tick's database work for all the rooms, in one call on the database thread: the
    re-check of every seat, the last seq of the rooms due a sync, and the read positions to
    store."""
    lost = selectors.rooms_seats_recheck(seats)
    last_seqs = selectors.rooms_last_seq(synced)
    for room_id, read in positions.items():
        services.read_positions_advance(room_id=room_id, positions=read)
    return lost, last_seqs


async def _close_too_far_behind(room_id: int, here: _RoomHere) -> None:
    for socket in _too_far_behind(here.behind):
        logger.info(
            "closing %s's socket on room %s: it has not read for %.0f s",
            socket.username,
            room_id,
            settings.WS_BEHIND_CLOSE_SECONDS,
            extra=socket._log_fields("socket.closing", code=CLOSE_TOO_FAR_BEHIND),
        )
        metrics.refusal(CLOSE_TOO_FAR_BEHIND)
        await socket.close(code=CLOSE_TOO_FAR_BEHIND)


async def _close_lost(room_id: int, here: _RoomHere, lost: dict[Seat, Lost]) -> None:
    """Close the sockets of the seats the re-check found lost (4401 / 4403)."""
    for seat, why in lost.items():
        for socket in list(here.by_seat.get(seat, ())):
            if socket.closing:
                continue
            code = CLOSE_CODES[why]
            logger.info(
                "closing %s's socket on room %s: %s",
                socket.username,
                room_id,
                why.value,
                extra=socket._log_fields("socket.closing", code=code, reason=why.value),
            )
            metrics.refusal(code)
            await socket.close(code=code)


def _send_sync(room_id: int, sockets: set[RoomConsumer], last_seq: int) -> None:
    """Tell each socket the room's last seq (a frame built once per wire mode, queued like a
    broadcast), so one that missed an entry catches up."""
    _seen_seq(room_id, last_seq)
    frames: dict[str, str] = {}
    for socket in sockets:
        mode = socket.renderer.mode
        frame = frames.get(mode)
        if frame is None:
            frame = frames[mode] = socket.renderer.sync(last_seq)
        socket.deliver_frame(frame)
    metrics.frame_out("sync", len(sockets))


def _too_far_behind(sockets: Iterable[RoomConsumer]) -> list[RoomConsumer]:
    """Sockets whose outbox has stayed full for WS_BEHIND_CLOSE_SECONDS: their client does not
    read. Entries were dropped for them meanwhile; closing (1013) makes the client come back and
    catch up instead of holding a socket open that nobody reads."""
    now = time.monotonic()
    limit = settings.WS_BEHIND_CLOSE_SECONDS
    return [
        socket
        for socket in sockets
        if not socket.closing
        and socket.behind_since is not None
        and now - socket.behind_since >= limit
    ]


def _read_positions(here: _RoomHere) -> dict[int, int]:
    """The newest read position each person's sockets here reported since the last tick (taken:
    the tick stores them)."""
    positions: dict[int, int] = {}
    for socket in here.reading:
        if socket.read_pending:
            uid = socket.user.id
            positions[uid] = max(positions.get(uid, 0), socket.read_pending)
            socket.read_pending = 0
    here.reading.clear()
    return positions


_room_seq: dict[int, int] = {}  # the newest seq this process has seen of each room with sockets


def _seen_seq(room_id: int, seq: int) -> None:
    if seq > _room_seq.get(room_id, 0):
        _room_seq[room_id] = seq


_online: dict[int, set[str]] = {}  # who each ticking room showed online at its last tick


class _RoomHere:
    """A room's sockets on this event loop, kept the way its tick reads them: by seat (the
    re-check asks once per person's session or token, then looks only at the sockets of a seat
    it lost), the ones that fell behind, the ones with a read position to store. A tick then
    costs a step per seat and per socket with something to do, not a pass over every socket
    (at 10,000 sockets, hashing each one's seat twice was most of an idle tick)."""

    def __init__(self) -> None:
        self.by_seat: dict[Seat, set[RoomConsumer]] = {}
        self.behind: set[RoomConsumer] = set()
        self.reading: set[RoomConsumer] = set()

    def add(self, socket: RoomConsumer) -> None:
        self.by_seat.setdefault(socket.seat, set()).add(socket)

    def discard(self, socket: RoomConsumer) -> None:
        held = self.by_seat.get(socket.seat)
        if held is not None:
            held.discard(socket)
            if not held:
                del self.by_seat[socket.seat]
        self.behind.discard(socket)
        self.reading.discard(socket)


_rooms_here: dict[tuple[int, int], _RoomHere] = {}


def _room_here(room_id: int) -> _RoomHere:
    """The room's sockets on this event loop (made with the first, gone with the last)."""
    key = (id(asyncio.get_running_loop()), room_id)
    here = _rooms_here.get(key)
    if here is None:
        here = _rooms_here[key] = _RoomHere()
    return here


_room_feeds: dict[tuple[int, int], RoomPresenceFeed] = {}


def _room_presence(room_id: int) -> RoomPresenceFeed:
    """The room's presence feed on this event loop (made with the room's first socket)."""
    key = (id(asyncio.get_running_loop()), room_id)
    feed = _room_feeds.get(key)
    if feed is None:
        feed = _room_feeds[key] = RoomPresenceFeed(
            members=lambda: room_ticker.members(room_id),
            send=lambda socket, version, online, key: socket.queue_presence(version, online, key),
            fetch=lambda: _presence_now(room_id),
            interval=lambda: settings.PRESENCE_BROADCAST_INTERVAL_SECONDS,
            flushed=lambda sent: metrics.frame_out("presence", sent),
        )
    return feed


async def _presence_now(room_id: int) -> tuple[int, list[dict[str, Any]]]:
    state = await presence.presence_check(room_id=room_id)
    return state.version, presence.state_payload(state)


def _room_presence_done(room_id: int) -> None:
    """The room's last socket here left: its feed goes (and its timer with it)."""
    _rooms_here.pop((id(asyncio.get_running_loop()), room_id), None)
    feed = _room_feeds.pop((id(asyncio.get_running_loop()), room_id), None)
    if feed is not None:
        feed.close()


async def _heartbeat(room_id: int, sockets: set[RoomConsumer]) -> PresenceState:
    """Refresh the presence records and socket claims of the room's local sockets (after Redis
    came back empty, this is what puts them back)."""
    state = await presence.presence_refresh_many(
        room_id=room_id, conns=[(socket.channel_name, socket.username) for socket in sockets]
    )
    claims: dict[int, list[str]] = {}
    for socket in sockets:
        if getattr(socket, "claimed", False):
            claims.setdefault(socket.user.id, []).append(socket.channel_name)
    await get_socket_quota().renew_many(claims, ttl=settings.PRESENCE_TTL_SECONDS)
    return state


def _typing_expiry() -> float:
    return settings.TYPING_EXPIRY_SECONDS


_FRAME_KINDS = ("expression", "typing", "typing.stop", "read")


def _every(seconds: float) -> int:
    """How many ticks make `seconds` (at least one)."""
    return max(1, round(seconds / _tick_seconds()))


def _tick_seconds() -> float:
    return min(
        settings.ROOM_TICK_SECONDS,
        settings.SYNC_INTERVAL_SECONDS,
        settings.PRESENCE_HEARTBEAT_SECONDS,
    )


room_ticker: RoomTicker[RoomConsumer] = RoomTicker("rooms", _rooms_tick, interval=_tick_seconds)
