"""Writes. Each commits first, then tells the room (from `transaction.on_commit`, never before)."""

from __future__ import annotations

import asyncio
import collections
import functools
import logging
import re
import secrets
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from django.conf import settings
from django.db import IntegrityError, connection, transaction
from django.db.models import Case, F, Value, When
from django.db.models.functions import Greatest
from django.utils import timezone
from django.utils.text import slugify

from accounts.models import User
from realtime import metrics
from realtime.events import (
    AccessRevoked,
    EntryCreated,
    Event,
    RoomActivity,
    UnreadChanged,
    activity_group,
    me_group,
    room_group,
    send_event_on_commit,
    send_events_on_commit,
    user_group,
)
from realtime.reads import closing_connections
from rooms import calculator, selectors
from rooms.models import Entry, Membership, Room, RoomBar, RoomInvite
from rooms.payloads import entry_as_dict, entry_frames
from rooms.selectors import Access
from rooms.throttle import take_expression_token

logger = logging.getLogger(__name__)
T = TypeVar("T")

INVITE_TOKEN_BYTES = 32  # 43 URL-safe characters
INVITE_TOKEN_MAX_LENGTH = RoomInvite._meta.get_field("token").max_length
ROOM_NAME_MAX_LENGTH = Room._meta.get_field("name").max_length


class Refused(Exception):
    """A request the product refuses, with the protocol's error code and a message for people."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Submission:
    entry: Entry
    created: bool  # False: a resend of an entry stored earlier (same author and client_id)


UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
# The answer to a submission turned away before its store (the lane is full or late): sent at
# once, and the page sends it again with backoff.
SERVER_BUSY = "The server is busy; your expression will be sent again."


def unstorable(text: str) -> bool:
    """True if `text` holds a NUL or a lone surrogate: PostgreSQL cannot store it, UTF-8 cannot
    encode it, so it is refused as bad input (never answered `unavailable`, never a 500)."""
    return UNSTORABLE.search(text) is not None


def expression_validate(expression: object) -> str:
    """The expression as stored, or Refused(`empty` / `too_long` / `invalid_frame`)."""
    if not isinstance(expression, str):
        raise Refused("invalid_frame", "expression must be a string")
    if unstorable(expression):
        raise Refused("invalid_frame", "The expression holds a NUL or an invalid character.")
    if not expression.strip():
        raise Refused("empty", "Type an expression first.")
    if len(expression) > settings.EXPRESSION_MAX_LENGTH:
        raise Refused(
            "too_long",
            f"An expression is at most {settings.EXPRESSION_MAX_LENGTH} characters "
            f"(this one has {len(expression)}).",
        )
    return expression.strip()


def client_id_parse(raw: object) -> uuid.UUID | None:
    if raw in (None, ""):
        return None
    try:
        return uuid.UUID(str(raw))
    except (ValueError, TypeError, AttributeError):
        raise Refused("invalid_frame", "client_id must be a UUID") from None


async def entry_submit(
    *, room_id: int, author: User, expression: object, client_id: object, transport: str = "ws"
) -> Submission:
    """Take one expression from an async transport and wait for its answer (`entry_queue`).
    Raises `Refused` with the protocol's code. Cancelled, it stops waiting; the expression is
    stored all the same."""
    answer = await entry_queue(
        room_id=room_id,
        author=author,
        expression=expression,
        client_id=client_id,
        transport=transport,
    )
    return await asyncio.shield(answer)


async def entry_queue(
    *, room_id: int, author: User, expression: object, client_id: object, transport: str = "ws"
) -> asyncio.Future[Submission]:
    """Take one expression from an async transport (the socket): the one way in, as far as its
    place in its room's store queue; returns its answer to come.

    A submission the server is too busy for is answered `unavailable` first, at once. Every
    other one takes a token from its author's bucket for the room (resends too), so the rate
    limit is the same whichever way it came; then it is validated and queued, to be evaluated
    and stored (`_LaneStore`, or `_entry_store` on the shared database thread) and broadcast
    once committed. Raises `Refused` with the protocol's code; the answer holds a `Refused` too
    (not a member), or the store's error. A caller that queues its expressions one after another
    has them stored in that order (each room's queue is first in, first out) without waiting for
    one's answer before queueing the next: a socket reads its client's next frame meanwhile.
    Cancelling the caller of the answer does not unqueue it (the store is not undone).
    """
    arrived = time.monotonic()
    executor = _store_thread(room_id)
    lane = room_id % settings.ENTRY_STORE_THREADS if executor is not None else -1
    admission = _admissions[lane]
    if admission.busy():
        # Overloaded: answer now (the page sends it again with backoff) instead of queueing it
        # behind seconds of others, which is how a server collapses: busy with work nobody
        # is still waiting for. Before the bucket, so the server's state costs nobody a token,
        # and a refusal costs no round trip to Redis.
        raise Refused("unavailable", SERVER_BUSY)
    admission.waiting += 1
    try:
        if not await take_expression_token(user_id=author.pk, room_id=room_id):
            raise _rate_limited()
        text, parsed_client_id = _submission_validate(expression, client_id)
        answer: asyncio.Future[Submission]
        if executor is None:
            answer = asyncio.ensure_future(
                database_sync_to_async(_entry_store)(
                    room_id=room_id,
                    author=author,
                    expression=text,
                    client_id=parsed_client_id,
                    transport=transport,
                )
            )
        else:
            waiting = _Waiting(
                author=author,
                expression=text,
                client_id=parsed_client_id,
                transport=transport,
                since=arrived,  # its wait for the bucket (Redis) counts too
            )
            answer = _LaneStore.of(lane, executor).queue(room_id, waiting)
    except BaseException:
        admission.waiting -= 1
        raise
    answer.add_done_callback(admission.answered)
    return answer


@dataclass(frozen=True)
class _Waiting:
    """One socket submission, validated, waiting for its room's store thread."""

    author: User
    expression: str
    client_id: uuid.UUID | None
    transport: str
    since: float  # time.monotonic() when it arrived


class _LaneStore:
    """The submissions of one store thread's rooms in this process, stored in turns.

    While the thread stores one turn, new submissions for any of its rooms wait here; the next
    turn stores all of them (at most ENTRY_STORE_BATCH_MAX) in one transaction (`_lane_store`)
    of a few statements, however many rooms and entries. Idle, a submission is a turn of one at
    once; busy, the turns grow with the load instead of the queue (group commit). A room is
    always on the same thread, and the queue is first in, first out, so a room's entries commit,
    and are published, in seq order, and one socket's in the order it sent them. An answer
    nobody waits for any more (its socket closed) is stored all the same: the store is not
    undone.
    """

    _lanes: dict[tuple[int, int], _LaneStore] = {}

    def __init__(
        self, key: tuple[int, int], executor: ThreadPoolExecutor, loop: asyncio.AbstractEventLoop
    ) -> None:
        self._key = key
        self._executor = executor
        self._loop = loop
        self._queue: list[tuple[int, _Waiting, asyncio.Future[Submission]]] = []
        self._turns: asyncio.Task[None] | None = None

    @classmethod
    def of(cls, lane: int, executor: ThreadPoolExecutor) -> _LaneStore:
        loop = asyncio.get_running_loop()
        key = (id(loop), lane)
        store = cls._lanes.get(key)
        if store is None or store._loop is not loop:  # none yet, or an ended loop's
            store = cls._lanes[key] = cls(key, executor, loop)
        return store

    def waiting_for(self, room_id: int) -> int:
        return sum(1 for room, _, _ in self._queue if room == room_id)

    def queue(self, room_id: int, waiting: _Waiting) -> asyncio.Future[Submission]:
        """Queue `waiting` behind what waits already; returns its answer to come."""
        future: asyncio.Future[Submission] = self._loop.create_future()
        self._queue.append((room_id, waiting, future))
        if self._turns is None or self._turns.done():
            self._turns = self._loop.create_task(
                self._take_turns(), name=f"entry-store-lane-{self._key[1]}"
            )
        return future

    async def _take_turns(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._queue:
                limit = max(1, settings.ENTRY_STORE_BATCH_MAX)
                batch, self._queue = self._queue[:limit], self._queue[limit:]
                rooms: dict[int, list[_Waiting]] = {}
                for room_id, waiting, _ in batch:
                    rooms.setdefault(room_id, []).append(waiting)
                try:
                    stored = await loop.run_in_executor(self._executor, _lane_turn, rooms)
                    outcomes = [stored[room_id].pop(0) for room_id, _, _ in batch]
                except asyncio.CancelledError:  # the event loop is ending
                    self._queue = batch + self._queue
                    raise
                except Exception as exc:  # the same answer for each (the database went away)
                    outcomes = [exc] * len(batch)
                for (_, _, future), outcome in zip(batch, outcomes, strict=True):
                    if future.done():
                        continue
                    if isinstance(outcome, BaseException):
                        future.set_exception(outcome)
                    else:
                        future.set_result(outcome)
        finally:
            for _, _, future in self._queue:
                future.cancel()
            self._queue = []
            self._turns = None
            if self._lanes.get(self._key) is self:
                del self._lanes[self._key]


def _lane_store(
    rooms: dict[int, list[_Waiting]],
) -> dict[int, list[Submission | BaseException]]:
    """Store the waiting submissions of several rooms: each room's as `_entries_store` would,
    all in one transaction (`_rooms_entries_insert`). Should it fail as a whole (a resend
    another process stored a moment ago trips the unique constraint), each room is stored on its
    own instead, so one room cannot fail the others."""
    if len(rooms) == 1:
        [(room_id, items)] = rooms.items()
        return {room_id: _entries_store(room_id, items)}
    try:
        with transaction.atomic():
            stored = _rooms_entries_insert(rooms)
    except IntegrityError:
        return {room_id: _entries_store(room_id, items) for room_id, items in rooms.items()}
    for room_id, answers in stored.items():
        _entries_stored(rooms[room_id], answers)
    return stored


def _entries_store(room_id: int, items: list[_Waiting]) -> list[Submission | BaseException]:
    """Store a room's waiting submissions in order, in one transaction.

    Each gets what `_entry_store` would have given it alone: its entry (a resend: the one stored
    before, also within this batch), or its `Refused`. Should the batch fail as a whole (a
    resend stored by another process a moment ago trips the unique constraint), each is stored
    on its own instead, so one cannot fail the others.
    """
    try:
        return _entries_store_together(room_id, items)
    except IntegrityError:
        pass
    outcomes: list[Submission | BaseException] = []
    for item in items:
        try:
            outcomes.append(
                _entry_store(
                    room_id=room_id,
                    author=item.author,
                    expression=item.expression,
                    client_id=item.client_id,
                    transport=item.transport,
                )
            )
        except Exception as exc:  # this submitter's answer
            outcomes.append(exc)
    return outcomes


def _entries_store_together(
    room_id: int, items: list[_Waiting]
) -> list[Submission | BaseException]:
    """`_entry_store` for many, under one lock: the same checks, each entry made in turn (so one
    that reads the room sees those before it), then one insert, one seq update and one commit."""
    with transaction.atomic():
        answers = _rooms_entries_insert({room_id: items})[room_id]
    _entries_stored(items, answers)
    return answers


def _entries_stored(items: list[_Waiting], answers: list[Submission | BaseException]) -> None:
    for item, answer in zip(items, answers, strict=True):
        if isinstance(answer, Submission) and answer.created:
            metrics.entry_stored(item.transport)


def _rooms_entries_insert(
    rooms: dict[int, list[_Waiting]],
) -> dict[int, list[Submission | BaseException]]:
    """The body of a turn, inside the caller's transaction, in a few statements however many
    rooms and entries: every room's row locked and each author's access read (one query,
    `selectors.rooms_grants_locked`), the resends among them found (one), each submission checked
    and its entry made in turn, the entries inserted together (one; an expression that reads its
    room first has those before it inserted, then resolves against exactly them), the rooms'
    seqs moved on together (one), each room's events sent on commit in seq order."""
    # Evaluated before the locks, all but what reads its room (pure and bounded).
    prepared = {
        room_id: [calculator.prepare(i.expression) for i in items]
        for room_id, items in rooms.items()
    }
    ready = {
        room_id: [p.finish() if p.wanted is None else p for p in room_prepared]
        for room_id, room_prepared in prepared.items()
    }
    granted = selectors.rooms_grants_locked(
        {room_id: [item.author.pk for item in items] for room_id, items in rooms.items()}
    )
    stored = _resent(
        [
            (room_id, item.author.pk, item.client_id)
            for room_id, items in rooms.items()
            if room_id in granted
            for item in items
            if item.client_id is not None
        ]
    )
    pending: list[Entry] = []
    advanced: list[tuple[Room, list[Entry]]] = []
    answers: dict[int, list[Submission | BaseException]] = {}
    for room_id in sorted(rooms):
        items, made = rooms[room_id], answers.setdefault(room_id, [])
        if room_id not in granted:
            made.extend(Refused("forbidden", "You are not a member of this room.") for _ in items)
            continue
        room, grants = granted[room_id]
        created: list[Entry] = []
        seq = room.last_seq
        for item, evaluated in zip(items, ready[room_id], strict=True):
            if grants.get(item.author.pk, Access.NONE) < Access.MEMBER:
                made.append(Refused("forbidden", "You are not a member of this room."))
                continue
            key = (room_id, item.author.pk, item.client_id)
            if item.client_id is not None and key in stored:
                made.append(Submission(entry=stored[key], created=False))
                continue
            seq += 1
            if isinstance(evaluated, calculator.Outcome):
                outcome = evaluated
            else:  # it reads the room: what came before it must be there to be read
                assert evaluated.wanted is not None
                if pending:
                    Entry.objects.bulk_create(pending)
                    pending = []
                found = selectors.entry_resolve(
                    room_id=room_id, before_seq=seq, wanted=evaluated.wanted
                )
                outcome = evaluated.finish(found)
            entry = _entry_new(room, seq, item.author, item.client_id, item.expression, outcome)
            pending.append(entry)
            if item.client_id is not None:
                stored[key] = entry
            created.append(entry)
            made.append(Submission(entry=entry, created=True))
        if created:
            room.last_seq = seq
            advanced.append((room, created))
    if pending:
        Entry.objects.bulk_create(pending)
    _rooms_advance([(room, created[-1]) for room, created in advanced])
    for room, created in advanced:
        send_events_on_commit(functools.partial(_entries_events, room, created))
    return answers


def _rooms_advance(lasts: list[tuple[Room, Entry]]) -> None:
    """Each room's seq and last activity moved on to its newest entry: PostgreSQL, one statement
    for them all."""
    if not lasts:
        return
    if connection.vendor != "postgresql":
        for room, entry in lasts:
            Room.objects.filter(pk=room.pk).update(last_seq=entry.seq, last_activity=entry.created)
        return
    with connection.cursor() as cursor:
        cursor.execute(
            f'UPDATE "{Room._meta.db_table}" AS r'
            " SET last_seq = v.last_seq, last_activity = v.last_activity"
            " FROM unnest(%s::bigint[], %s::bigint[], %s::timestamptz[])"
            " AS v(id, last_seq, last_activity) WHERE r.id = v.id",
            [
                [room.pk for room, _ in lasts],
                [entry.seq for _, entry in lasts],
                [entry.created for _, entry in lasts],
            ],
        )


ResendKey = tuple[int, int, uuid.UUID | None]  # (room id, author id, client_id)


def _resent(keys: list[ResendKey]) -> dict[ResendKey, Entry]:
    """The entries already stored under one of `keys` (room, author, client_id): the resends
    among a turn's submissions. Asked by id first (plain SQL, one probe of the unique index
    each: almost always none)."""
    if not keys:
        return {}
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(
                f'SELECT e.id FROM "{Entry._meta.db_table}" e'
                " JOIN unnest(%s::bigint[], %s::bigint[], %s::uuid[]) AS k(room_id, author_id,"
                " client_id) ON e.room_id = k.room_id AND e.author_id = k.author_id"
                " AND e.client_id = k.client_id",
                [[k[0] for k in keys], [k[1] for k in keys], [k[2] for k in keys]],
            )
            found = [row[0] for row in cursor.fetchall()]
        if not found:
            return {}
        entries = Entry.objects.select_related("author").filter(pk__in=found)
    else:
        wanted = set(keys)
        entries = [
            entry
            for entry in Entry.objects.select_related("author").filter(
                room_id__in={k[0] for k in keys}, client_id__in={k[2] for k in keys}
            )
            if (entry.room_id, entry.author_id, entry.client_id) in wanted
        ]
    return {(entry.room_id, entry.author_id, entry.client_id): entry for entry in entries}


LATE_WINDOW_SECONDS = 0.5


class _Admission:
    """Whether one store lane of this process takes a new submission: how many are in or
    waiting for it, and whether it is late.

    Late: over a whole window (LATE_WINDOW_SECONDS), even the turn that waited least began past
    ENTRY_STORE_WAIT_TARGET_SECONDS. That is a standing queue, not a burst (the rule of CoDel):
    while a lane is late and something waits for it, new submissions for it are answered
    `unavailable`, as they are past ENTRY_STORE_QUEUE_LIMIT. A turn that begins on time ends it
    at once. `waiting` moves on the event loop; the rest in the lane's one store thread.
    """

    __slots__ = ("late", "least", "waiting", "window_started")

    def __init__(self) -> None:
        self.waiting = 0
        self.late = False
        self.window_started: float | None = None
        self.least = float("inf")  # the shortest wait of a turn begun in this window

    def busy(self) -> bool:
        return self.waiting >= settings.ENTRY_STORE_QUEUE_LIMIT or (self.late and self.waiting > 0)

    def answered(self, answer: asyncio.Future[Any]) -> None:
        self.waiting -= 1
        if not answer.cancelled():
            answer.exception()  # seen: an answer nobody waits for any more logs no warning

    def turn_began(self, waited: float, now: float) -> None:
        if self.window_started is None:
            self.window_started = now
        self.least = min(self.least, waited)
        target = settings.ENTRY_STORE_WAIT_TARGET_SECONDS
        if waited <= target:
            self.late = False
        if now - self.window_started >= LATE_WINDOW_SECONDS:
            self.late = self.least > target
            self.window_started, self.least = now, float("inf")


# By lane (-1: the shared database thread, when there are no store threads).
_admissions: collections.defaultdict[int, _Admission] = collections.defaultdict(_Admission)


def _lane_turn(rooms: dict[int, list[_Waiting]]) -> dict[int, list[Submission | BaseException]]:
    """A store thread's turn: note how long its oldest submission waited (for the queue it
    stands in: the lane's and the thread's), and so whether the lane is late; then store."""
    now = time.monotonic()
    waited = now - min(item.since for items in rooms.values() for item in items)
    _admissions[next(iter(rooms)) % settings.ENTRY_STORE_THREADS].turn_began(waited, now)
    return closing_connections(_lane_store)(rooms)


_store_executors: list[ThreadPoolExecutor] = []
_store_executor_lock = threading.Lock()


def _store_thread(room_id: int) -> ThreadPoolExecutor | None:
    """The thread that stores the room's entries (ENTRY_STORE_THREADS of them, each room always
    on the same one; none: the one database thread every other call of the process shares).

    A submission holds its room's row lock for a few queries; on the shared thread, submissions to
    fifty rooms wait for each other and for everything else the process asks the database, so a
    process stores a few hundred a second at most, and past that queues them for seconds. On
    threads of their own, rooms are stored side by side. One room stays on one thread so that its
    entries commit, and are published, in seq order: live order is seq order within a process.
    """
    threads = settings.ENTRY_STORE_THREADS
    if threads <= 0:
        return None
    with _store_executor_lock:
        while len(_store_executors) < threads:
            _store_executors.append(
                ThreadPoolExecutor(1, thread_name_prefix=f"entry-store-{len(_store_executors)}")
            )
    return _store_executors[room_id % threads]


def entry_submit_sync(
    *, room_id: int, author: User, expression: object, client_id: object, transport: str = "http"
) -> Submission:
    """`entry_submit` for sync callers (HTTP views, management commands): the same steps.

    `transport` (`http`, `command`) only labels the stored-entries metric."""
    if not async_to_sync(take_expression_token)(user_id=author.pk, room_id=room_id):
        raise _rate_limited()
    text, parsed_client_id = _submission_validate(expression, client_id)
    return _entry_store(
        room_id=room_id,
        author=author,
        expression=text,
        client_id=parsed_client_id,
        transport=transport,
    )


def _rate_limited() -> Refused:
    return Refused("rate_limited", "Slow down: too many expressions.")


def _submission_validate(expression: object, client_id: object) -> tuple[str, uuid.UUID | None]:
    return expression_validate(expression), client_id_parse(client_id)


def _entry_store(
    *,
    room_id: int,
    author: User,
    expression: str,
    client_id: uuid.UUID | None,
    transport: str = "http",
) -> Submission:
    """Evaluate and store one validated expression, then broadcast it to the room: a store turn
    of one (`_rooms_entries_insert`), on the caller's thread, in its own transaction.

    The seq comes from `Room.last_seq`, incremented under the room's row lock in that same
    transaction: commit order is seq order, seqs have no gaps, and a reader of "after N" can never
    miss a row that commits later. An expression that reads the room (`ans`, `#N`, a variable) is
    resolved under that lock against exactly the entries with a smaller seq, so its meaning is
    fixed when it is stored and a replay from seq 1 finds it again; one that reads nothing is
    evaluated before the lock (pure and bounded). A resend (same author and client_id) returns
    the stored entry and broadcasts nothing. Access is checked under the lock, so a member removed
    a moment ago cannot slip one more entry in.
    """
    item = _Waiting(
        author=author,
        expression=expression,
        client_id=client_id,
        transport=transport,
        since=time.monotonic(),
    )
    [answer] = _entries_store_together(room_id, [item])
    if isinstance(answer, BaseException):
        raise answer
    return answer


def _entry_new(
    room: Room,
    seq: int,
    author: User,
    client_id: uuid.UUID | None,
    expression: str,
    outcome: calculator.Outcome,
) -> Entry:
    """Entry `seq` as evaluated, not yet saved."""
    return Entry(
        room=room,
        seq=seq,
        author=author,
        client_id=client_id,
        expression=expression,
        result=outcome.result,
        error=outcome.error,
        refs=list(outcome.refs),
        defines=outcome.defines,
        rounded=outcome.rounded,
        rules=calculator.RULES,
    )


def _entries_events(room: Room, entries: list[Entry]) -> list[tuple[str, Event]]:
    """Each entry's broadcast in seq order, then one `room.activity` for the last (the room
    lists need only the newest seq)."""
    events = [(room_group(room.pk), _entry_created(room.pk, entry)) for entry in entries[:-1]]
    return events + _entry_events(room, entries[-1])


def _entry_events(room: Room, entry: Entry) -> list[tuple[str, Event]]:
    """The room's broadcast, then one event for its members' room lists (each works out its
    person's unread count): two messages per entry, whatever the room's size."""
    created = _entry_created(room.pk, entry)
    activity: RoomActivity = {
        "type": "room.activity",
        "room": room.slug,
        "room_id": room.pk,
        "last_seq": entry.seq,
        "activity": created["entry"]["created"],
    }
    return [(room_group(room.pk), created), (activity_group(room.pk), activity)]


def read_position_advance(*, room_id: int, user: User, seq: object) -> int:
    """Move `user`'s read position in the room forward to `seq` (never back); returns it.

    `seq` must be a whole number from 0 to the room's last seq, and the person a member
    (`room_access`): else Refused (`invalid_frame` / `forbidden`). When it moved, the person's
    room lists hear the room's new unread count.
    """
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
        raise Refused("invalid_frame", "seq must be a whole number.")
    grant = selectors.room_access(room_id=room_id, user=user)
    room = grant.room
    if room is None or not grant.allows(Access.MEMBER):
        raise Refused("forbidden", "You are not a member of this room.")
    if seq > room.last_seq:
        raise Refused("invalid_frame", f"seq {seq} is past the room's last entry.")
    with transaction.atomic():
        moved = Membership.objects.filter(
            room_id=room.pk, user_id=user.pk, last_read_seq__lt=seq
        ).update(last_read_seq=seq)
        if moved:
            event: UnreadChanged = {
                "type": "unread.changed",
                "room": room.slug,
                "room_id": room.pk,
                "read_seq": seq,
                "unread": max(0, room.last_seq - seq),
                "activity": None,
            }
            send_event_on_commit(me_group(user.pk), event)
            return seq
    return selectors.read_position(room_id=room.pk, user_id=user.pk)  # it was further already


def read_positions_advance(*, room_id: int, positions: dict[int, int]) -> int:
    """Many people's read positions in one room at once (`{user_id: seq}`, each clamped to the
    room's last seq, never moving back): what a room's sockets in one process said they showed
    since the room's last tick. Three queries whatever their number; each person whose position
    moved hears their new unread count. Returns how many moved. Non-members move nothing.
    """
    if not positions:
        return 0
    room = Room.objects.filter(pk=room_id).values("slug", "last_seq").first()
    if room is None:
        return 0
    wanted = {user_id: min(int(seq), room["last_seq"]) for user_id, seq in positions.items()}
    with transaction.atomic():
        current = dict(
            Membership.objects.filter(room_id=room_id, user_id__in=wanted).values_list(
                "user_id", "last_read_seq"
            )
        )
        moved = {uid: seq for uid, seq in wanted.items() if uid in current and current[uid] < seq}
        if not moved:
            return 0
        Membership.objects.filter(room_id=room_id, user_id__in=moved).update(
            last_read_seq=Greatest(
                F("last_read_seq"),
                Case(*(When(user_id=uid, then=Value(seq)) for uid, seq in moved.items())),
            )
        )
        slug, last_seq = room["slug"], room["last_seq"]
        send_events_on_commit(
            lambda: [
                (
                    me_group(uid),
                    UnreadChanged(
                        type="unread.changed",
                        room=slug,
                        room_id=room_id,
                        read_seq=seq,
                        unread=max(0, last_seq - seq),
                        activity=None,
                    ),
                )
                for uid, seq in moved.items()
            ]
        )
    return len(moved)


def _entry_created(room_id: int, entry: Entry) -> EntryCreated:
    payload = entry_as_dict(entry)
    return {
        "type": "entry.created",
        "room_id": room_id,
        "entry": payload,
        "frames": entry_frames(payload),
    }


# --- Replay ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Mismatch:
    """An entry whose stored outcome differs from the one its history gives now."""

    seq: int
    stored: calculator.Outcome
    replayed: calculator.Outcome


@dataclass(frozen=True)
class Replay:
    entries: int  # read, from seq 1
    recomputed: int  # evaluated again (the current rules)
    kept: int  # stored under earlier rules: taken as stored
    mismatches: list[Mismatch]


class _History:
    """A room's entries so far, in memory, answering what the next one reads (as the room
    service's `selectors.entry_resolve` does under the lock)."""

    def __init__(self) -> None:
        self.answer: calculator.Stored | None = None
        self.by_seq: dict[int, calculator.Stored] = {}
        self.variables: dict[str, calculator.Stored] = {}

    def resolve(self, wanted: calculator.Wanted) -> calculator.Resolved:
        return calculator.Resolved(
            answer=self.answer if wanted.answer else None,
            seqs={seq: self.by_seq[seq] for seq in wanted.seqs if seq in self.by_seq},
            names={name: self.variables[name] for name in wanted.names if name in self.variables},
        )

    def add(self, seq: int, outcome: calculator.Outcome) -> None:
        stored = calculator.Stored(seq, outcome.result, outcome.rounded)
        self.by_seq[seq] = stored
        if outcome.result is not None:
            self.answer = stored
        if outcome.defines is not None:
            self.variables[outcome.defines] = stored


def room_replay(*, room_id: int, batch: int = 2000) -> Replay:
    """Recompute a room's history from seq 1 and compare it with what is stored.

    Each entry is evaluated against the entries before it as the replay recomputed them (not as
    stored), so an empty list of mismatches means the stored history is exactly the one the
    calculator writes again, references and variables included. Entries stored under earlier
    rules (`Entry.rules`, before shared results) are taken as stored. Reads the room in seq order,
    `batch` entries a query; holds every result in memory.
    """
    history = _History()
    mismatches: list[Mismatch] = []
    entries = recomputed = 0
    after = 0
    fields = ("seq", "expression", "result", "error", "refs", "defines", "rounded", "rules")
    while True:
        rows = list(
            Entry.objects.filter(room_id=room_id, seq__gt=after)
            .order_by("seq")
            .values_list(*fields)[:batch]
        )
        if not rows:
            break
        for seq, expression, result, error, refs, defines, rounded, rules in rows:
            entries += 1
            stored = calculator.Outcome(
                result=result,
                error=error,
                rounded=bool(rounded) and result is not None,
                refs=tuple(refs or ()),
                defines=defines if result is not None else None,
            )
            if rules == calculator.RULES:
                recomputed += 1
                replayed = calculator.evaluate(expression, history.resolve)
                if replayed != stored:
                    mismatches.append(Mismatch(seq=seq, stored=stored, replayed=replayed))
            else:
                replayed = stored
            history.add(seq, replayed)
        after = rows[-1][0]
    return Replay(
        entries=entries, recomputed=recomputed, kept=entries - recomputed, mismatches=mismatches
    )


# --- Rooms and membership ----------------------------------------------------------------------


def _unique_slug(name: str) -> str:
    base = slugify(name)[:50] or "room"
    slug = base
    while Room.objects.filter(slug=slug).exists():
        slug = f"{base}-{uuid.uuid4().hex[:6]}"
    return slug


def room_create(*, owner: User, name: str, visibility: str) -> Room:
    """A new room with `owner` as its owner; at most ROOMS_PER_HOUR a person in any hour.

    The count is read under the owner's row lock, so simultaneous requests (from any number of
    processes) cannot slip past the cap together.
    """
    name = name.strip()
    if not name:
        raise Refused("invalid", "A room needs a name.")
    if len(name) > ROOM_NAME_MAX_LENGTH:
        raise Refused("invalid", f"A room name is at most {ROOM_NAME_MAX_LENGTH} characters.")
    if visibility not in Room.Visibility.values:
        raise Refused("invalid", "Choose public or private.")
    for _attempt in range(3):
        try:
            with transaction.atomic():
                _rooms_per_hour_check(owner)
                room = Room.objects.create(
                    slug=_unique_slug(name), name=name, owner=owner, visibility=visibility
                )
                Membership.objects.create(room=room, user=owner, role=Membership.Role.OWNER)
                return room
        except IntegrityError:  # two rooms with one name created at the same moment
            continue
    raise Refused("invalid", "Could not pick an address for this room; try another name.")


def _rooms_per_hour_check(owner: User) -> None:
    User.objects.select_for_update().filter(pk=owner.pk).values_list("pk", flat=True).first()
    since = timezone.now() - timedelta(hours=1)
    limit = settings.ROOMS_PER_HOUR
    if Room.objects.filter(owner=owner, created__gte=since).count() >= limit:
        raise Refused(
            "rate_limited",
            f"You can create at most {limit} rooms an hour. Try again later.",
        )


def barred_message(room: Room) -> str:
    return (
        f"You were removed from {room.name} by its owner, so you cannot join it again "
        "unless they lift the bar."
    )


def room_join(*, room: Room, user: User) -> Membership:
    """Join a public room (the Join button). A barred person is refused (`barred`)."""
    with transaction.atomic():
        grant = selectors.room_access(room_id=room.pk, user=user, lock=True)
        if grant.room is None:
            raise Refused("invalid", "This room no longer exists.")
        if grant.barred:
            raise Refused("barred", barred_message(grant.room))
        if not grant.room.is_public:
            raise Refused("forbidden", "This room is private: ask its owner for an invite link.")
        # A new member starts having read what was there before (no wall of unread entries).
        membership, _ = Membership.objects.get_or_create(
            room=grant.room, user=user, defaults={"last_read_seq": grant.room.last_seq}
        )
    return membership


def _revoke(room_id: int, user_id: int | None) -> None:
    """Close the sockets of a user (or everyone) who just lost access to the room.

    The room tick re-checks every socket too, so a revocation the layer drops still closes them.
    """
    event: AccessRevoked = {"type": "access.revoked", "room_id": room_id, "user_id": user_id}
    group = room_group(room_id) if user_id is None else user_group(user_id)
    send_event_on_commit(group, event)


def room_leave(*, room: Room, user: User) -> None:
    if room.owner_id == user.id:
        raise Refused("invalid", "The owner cannot leave their own room.")
    with transaction.atomic():
        Membership.objects.filter(room=room, user=user).delete()
        _revoke(room.pk, user.pk)


def _require_owner(room: Room, actor: User, message: str) -> None:
    if not selectors.room_access(room_id=room.pk, user=actor).allows(Access.OWNER):
        raise Refused("forbidden", message)


def member_remove(*, room: Room, actor: User, user_id: int) -> None:
    """Remove a member and bar them: no invite link and no Join button lets them back until the
    owner lifts the bar (`member_unbar`). Their open sockets close with 4403."""
    _require_owner(room, actor, "Only the owner can remove members.")
    if user_id == room.owner_id:
        raise Refused("invalid", "The owner cannot be removed.")
    if not User.objects.filter(pk=user_id).exists():
        raise Refused("invalid", "No such person.")
    with transaction.atomic():
        Membership.objects.filter(room=room, user_id=user_id).delete()
        RoomBar.objects.get_or_create(room=room, user_id=user_id, defaults={"barred_by": actor})
        _revoke(room.pk, user_id)


def member_unbar(*, room: Room, actor: User, user_id: int) -> None:
    """Lift a bar: the person may come back through an invite link or the Join button (they
    are not made a member by this)."""
    _require_owner(room, actor, "Only the owner can lift a bar.")
    RoomBar.objects.filter(room=room, user_id=user_id).delete()


def room_delete(*, room: Room, actor: User) -> None:
    """Delete a room and its whole history; everyone in it is disconnected with 4403."""
    _require_owner(room, actor, "Only the owner can delete a room.")
    with transaction.atomic():
        room_id = room.pk
        room.delete()
        _revoke(room_id, None)


# --- Invites -------------------------------------------------------------------------------------


def _invite_new(room: Room, actor: User) -> RoomInvite:
    return RoomInvite.objects.create(
        room=room, created_by=actor, token=secrets.token_urlsafe(INVITE_TOKEN_BYTES)
    )


def _invite_expired(invite: RoomInvite) -> bool:
    return invite.created <= timezone.now() - timedelta(seconds=settings.INVITE_MAX_AGE_SECONDS)


def invite_expires(invite: RoomInvite) -> datetime:
    return invite.created + timedelta(seconds=settings.INVITE_MAX_AGE_SECONDS)


def invite_for_owner(*, room: Room, actor: User) -> RoomInvite:
    """The room's current invite link, made only when there is none that works (never reset,
    not expired): visiting the members page again shows the same link."""
    _require_owner(room, actor, "Only the owner can invite people.")
    invite = selectors.invite_current(room=room)
    if invite is not None and not _invite_expired(invite):
        return invite
    with transaction.atomic():
        # Two visits at once make one link: the second waits here, then finds the first's.
        Room.objects.select_for_update().filter(pk=room.pk).values_list("pk", flat=True).first()
        invite = selectors.invite_current(room=room)
        if invite is None or _invite_expired(invite):
            invite = _invite_new(room, actor)
    return invite


def invite_reset(*, room: Room, actor: User) -> RoomInvite:
    """End every earlier link of the room (their pages say they were reset) and make a new one."""
    _require_owner(room, actor, "Only the owner can reset the invite link.")
    with transaction.atomic():
        Room.objects.select_for_update().filter(pk=room.pk).values_list("pk", flat=True).first()
        RoomInvite.objects.filter(room=room, revoked_at__isnull=True).update(
            revoked_at=timezone.now()
        )
        return _invite_new(room, actor)


def invite_check(*, token: str) -> RoomInvite:
    """The invite `token` names, if it still works; else Refused saying which: `invalid` (no
    such link), `reset` (the owner reset it), `expired` (older than INVITE_MAX_AGE_SECONDS)."""
    invite = None
    if 0 < len(token) <= INVITE_TOKEN_MAX_LENGTH:
        invite = RoomInvite.objects.select_related("room", "created_by").filter(token=token).first()
    if invite is None:
        raise Refused(
            "invalid", "This invite link is not valid. Ask the room's owner for a new one."
        )
    if invite.revoked_at is not None:
        raise Refused(
            "reset", "This invite link was reset by the owner. Ask them for the new link."
        )
    if _invite_expired(invite):
        raise Refused(
            "expired", "This invite link has expired. Ask the room's owner for a new one."
        )
    return invite


def invite_accept(*, token: str, user: User) -> Room:
    """Join the room of a working invite link. A barred person is refused (`barred`), whatever
    link they hold; a member already in is left as they are."""
    invite = invite_check(token=token)
    with transaction.atomic():
        # Under the room's lock, so a removal at the same moment cannot be undone by this.
        grant = selectors.room_access(room_id=invite.room_id, user=user, lock=True)
        if grant.room is None:
            raise Refused("invalid", "This room no longer exists.")
        if grant.barred:
            raise Refused("barred", barred_message(grant.room))
        Membership.objects.get_or_create(
            room=grant.room, user=user, defaults={"last_read_seq": grant.room.last_seq}
        )
    return grant.room
