"""Reads, and the one access check (`room_access`) that every view, socket and service asks."""

from __future__ import annotations

import enum
import functools
import json
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime
from importlib import import_module
from typing import Any, NamedTuple

from django.conf import settings
from django.contrib.auth import SESSION_KEY
from django.contrib.auth.models import AnonymousUser
from django.contrib.sessions.models import Session
from django.db import connection
from django.db.models import Exists, F, OuterRef, QuerySet, Subquery
from django.db.models.functions import Coalesce
from django.utils import timezone

from accounts.models import AccessToken, User
from accounts.sockets import holds_auth_hash
from realtime.events import EntryDict
from rooms.calculator import Resolved, Stored, Wanted
from rooms.models import Entry, Membership, Room, RoomBar, RoomInvite
from rooms.payloads import entry_row_as_dict


class Access(enum.IntEnum):
    """What a user may do in a room, weakest first."""

    NONE = 0  # the room does not exist for them (private, not a member): 404
    VISITOR = 1  # a public room they have not joined: its page with a join button, no data
    MEMBER = 2  # reads and writes
    OWNER = 3  # also manages members and the room


@dataclass(frozen=True)
class Grant:
    """The answer of `room_access`: the room (None when it does not exist) and the access."""

    room: Room | None
    access: Access
    barred: bool = False  # removed by the owner: no link and no Join button lets them back

    def allows(self, need: Access) -> bool:
        return self.room is not None and self.access >= need


def _level(role: str | None, *, is_public: bool, barred: bool = False) -> Access:
    """The rule, written once: members read and write, owners manage, strangers see public rooms.

    A barred person is a stranger whatever membership row exists (one written past the services,
    in the admin or a shell, does not lift a bar: only the owner's unbar does).
    """
    if barred:
        return Access.VISITOR if is_public else Access.NONE
    if role == Membership.Role.OWNER:
        return Access.OWNER
    if role == Membership.Role.MEMBER:
        return Access.MEMBER
    return Access.VISITOR if is_public else Access.NONE


def room_access(
    *,
    user: User | AnonymousUser,
    slug: str | None = None,
    room_id: int | None = None,
    lock: bool = False,
) -> Grant:
    """May `user` see, read and write, or manage the room at `slug` (or `room_id`)?

    The one access check: views, the socket handshake, every frame and the services ask it (the
    room tick asks `rooms_seats_recheck`, which applies the same rule to many sockets at once). One
    query. With `lock`, the room's row is locked for the caller's transaction, so the answer holds
    until it commits. It raises nothing: views map NONE to 404, too little to 403, signed out to
    401.
    """
    if not user.is_authenticated:
        return Grant(room=None, access=Access.NONE)
    if connection.vendor == "postgresql":
        return _room_access_sql(user.pk, slug, room_id, lock)
    return _room_access_orm(user.pk, slug, room_id, lock)


def _room_access_orm(user_id: int, slug: str | None, room_id: int | None, lock: bool) -> Grant:
    """`room_access` through the ORM (every database but PostgreSQL)."""
    rooms = Room.objects.filter(slug=slug) if slug is not None else Room.objects.filter(pk=room_id)
    rooms = rooms.annotate(
        role=Subquery(
            Membership.objects.filter(room=OuterRef("pk"), user_id=user_id).values("role")[:1]
        ),
        barred=Exists(RoomBar.objects.filter(room=OuterRef("pk"), user_id=user_id)),
    )
    room = (
        rooms.select_for_update(of=("self",)) if lock else rooms.select_related("owner")
    ).first()
    if room is None:
        return Grant(room=None, access=Access.NONE)
    return Grant(
        room=room,
        access=_level(room.role, is_public=room.is_public, barred=room.barred),
        barred=room.barred,
    )


def _room_access_sql(user_id: int, slug: str | None, room_id: int | None, lock: bool) -> Grant:
    """`room_access` on PostgreSQL: the same query in plain SQL, written once (`_access_sql`).
    The ORM took about 2.3 ms of CPU to compile it, more than the rest of a socket's handshake
    or a typing frame's check asked of the database (docs/performance.md)."""
    room_fields, owner_fields, sql = _access_sql("slug" if slug is not None else "id", lock)
    with connection.cursor() as cursor:
        cursor.execute(sql, [user_id, user_id, slug if slug is not None else room_id])
        row = cursor.fetchone()
    if row is None:
        return Grant(room=None, access=Access.NONE)
    width = len(room_fields)
    room = Room.from_db(connection.alias, [field.attname for field in room_fields], row[:width])
    if owner_fields:  # as `select_related("owner")`
        owner = User.from_db(
            connection.alias,
            [field.attname for field in owner_fields],
            row[width : width + len(owner_fields)],
        )
        Room._meta.get_field("owner").set_cached_value(room, owner)
        width += len(owner_fields)
    role, barred = row[width], row[width + 1]
    return Grant(
        room=room, access=_level(role, is_public=room.is_public, barred=barred), barred=barred
    )


def _standing_sql(room: str, user: str) -> tuple[str, str]:
    """A person's standing in a room, in SQL, for the room and person given as SQL expressions:
    the two columns (their membership role, whether they are barred) and the join the first
    needs. The one text of that rule's data for `room_access`, `rooms_grants_locked` and
    `rooms_seats_recheck`."""
    columns = f"""membership.role,
        EXISTS (
            SELECT 1 FROM "{RoomBar._meta.db_table}" bar
            WHERE bar.room_id = {room} AND bar.user_id = {user}
        )"""
    join = f"""LEFT JOIN "{Membership._meta.db_table}" membership
        ON membership.room_id = {room} AND membership.user_id = {user}"""
    return columns, join


@functools.cache
def _access_sql(by: str, lock: bool) -> tuple[list[Any], list[Any], str]:
    """The query of `_room_access_sql` for a room by `by` (slug or id): the room's columns,
    then (unless locking) its owner's, then the person's membership role and whether they are
    barred. Parameters: the person's id twice, then the slug or id."""
    room_fields = list(Room._meta.concrete_fields)
    owner_fields = [] if lock else list(User._meta.concrete_fields)
    columns = [f'r."{field.column}"' for field in room_fields]
    columns += [f'o."{field.column}"' for field in owner_fields]
    owner_join = "" if lock else f'JOIN "{User._meta.db_table}" o ON o.id = r.owner_id'
    standing, standing_join = _standing_sql("r.id", "%s")
    sql = f"""
        SELECT {", ".join(columns)}, {standing}
        FROM "{Room._meta.db_table}" r
        {owner_join}
        {standing_join}
        WHERE r."{"slug" if by == "slug" else "id"}" = %s
        {"FOR UPDATE OF r" if lock else ""}
    """
    return room_fields, owner_fields, sql


def rooms_grants_locked(
    wanted: Mapping[int, Collection[int]],
) -> dict[int, tuple[Room, dict[int, Access]]]:
    """`room_access(lock=True)` for several rooms and people at once (`{room_id: user_ids}`):
    each room that exists, its row locked for the caller's transaction (in id order, as every
    caller locks them, so no two wait for each other), with each person's `Access` by the same
    rule (`_level`). PostgreSQL: one query of plain SQL, because compiling `room_access`'s query
    took the ORM more time than all the rest of storing an entry (about 2.3 ms of CPU a call on
    this machine, against 0.04 for the query itself: docs/performance.md). Elsewhere it asks
    `room_access` room by room and person by person.
    """
    pairs = sorted({(room_id, user_id) for room_id, ids in wanted.items() for user_id in ids})
    found: dict[int, tuple[Room, dict[int, Access]]] = {}
    if connection.vendor != "postgresql":
        for room_id, user_id in pairs:
            grant = room_access(room_id=room_id, user=User(pk=user_id), lock=True)
            if grant.room is not None:
                found.setdefault(room_id, (grant.room, {}))[1][user_id] = grant.access
        return found
    fields, sql = _grants_sql()
    width = len(fields)
    with connection.cursor() as cursor:
        cursor.execute(sql, [[p[0] for p in pairs], [p[1] for p in pairs]])
        rows = cursor.fetchall()
    for row in rows:
        room_id = row[0]
        if room_id not in found:
            room = Room.from_db(connection.alias, [field.attname for field in fields], row[:width])
            found[room_id] = (room, {})
        room, grants = found[room_id]
        grants[row[width]] = _level(row[width + 1], is_public=room.is_public, barred=row[width + 2])
    return found


@functools.cache
def _grants_sql() -> tuple[list[Any], str]:
    """The query of `rooms_grants_locked`, written once: the room's columns (its id first), then
    per person their id, membership role and whether they are barred."""
    fields = sorted(Room._meta.concrete_fields, key=lambda field: not field.primary_key)
    columns = ", ".join(f'r."{field.column}"' for field in fields)
    standing, standing_join = _standing_sql("r.id", "pair.user_id")
    sql = f"""
        SELECT {columns}, pair.user_id, {standing}
        FROM unnest(%s::bigint[], %s::bigint[]) AS pair(room_id, user_id)
        JOIN "{Room._meta.db_table}" r ON r.id = pair.room_id
        {standing_join}
        ORDER BY r.id
        FOR UPDATE OF r
    """
    return fields, sql


class Lost(enum.Enum):
    """Why a socket may no longer be in its room."""

    SESSION = "session"  # logged out, expired, password changed, deactivated, deleted: 4401
    ACCESS = "access"  # removed, left, or the room is gone: 4403


@dataclass(frozen=True)
class Seat:
    """Who holds a socket: the user, and the session or the access token it was opened with."""

    user_id: int
    session_key: str | None
    token_id: int | None = None


def seats_recheck(*, room_id: int, seats: Collection[Seat]) -> dict[Seat, Lost]:
    """The seats of `room_id` that lost their place, and why (the others are absent): one room's
    `rooms_seats_recheck`."""
    return rooms_seats_recheck({room_id: seats}).get(room_id, {})


def rooms_seats_recheck(seats: Mapping[int, Collection[Seat]]) -> dict[int, dict[Seat, Lost]]:
    """The seats that lost their place in each room of `{room_id: seats}`, and why (rooms and
    seats that keep theirs are absent): what every room's tick in a process asks at once.

    However many rooms and sockets: one query for the users and their standing in each room, one
    for the sessions (with the database session engine; others are asked key by key), and one
    for the access tokens when a socket holds one (a revoked token loses its seat like an ended
    session).
    """
    seats = {room_id: held for room_id, held in seats.items() if held}
    if not seats:
        return {}
    everyone = [seat for held in seats.values() for seat in held]
    holders = _holders(
        {room_id: {seat.user_id for seat in held} for room_id, held in seats.items()}
    )
    sessions = _sessions({seat.session_key for seat in everyone if seat.session_key})
    tokens = _live_tokens({seat.token_id for seat in everyone if seat.token_id is not None})
    lost: dict[int, dict[Seat, Lost]] = {}
    for room_id, held in seats.items():
        for seat in held:
            holder = holders.get((room_id, seat.user_id))
            if holder is None or not _signed_in(seat, holder, sessions, tokens):
                lost.setdefault(room_id, {})[seat] = Lost.SESSION
            elif _level(holder.role, is_public=False, barred=holder.barred) < Access.MEMBER:
                lost.setdefault(room_id, {})[seat] = Lost.ACCESS
    return lost


def _holders(wanted: Mapping[int, Collection[int]]) -> dict[tuple[int, int], _Holder]:
    """What the re-check reads of each person in `{room_id: user_ids}`, by (room, user), as
    plain rows (not User instances: building and signalling a thousand model instances was most
    of an idle room's tick). A user who is gone is absent. PostgreSQL: one query of plain SQL
    for every room (the ORM's compiling of the per-room query was most of a busy process's room
    ticks: docs/performance.md); elsewhere one ORM query a room."""
    if connection.vendor == "postgresql":
        return _holders_plain(wanted)
    return _holders_orm(wanted)


def _holders_plain(wanted: Mapping[int, Collection[int]]) -> dict[tuple[int, int], _Holder]:
    pairs = [(room_id, user_id) for room_id, ids in wanted.items() for user_id in ids]
    with connection.cursor() as cursor:
        cursor.execute(_holders_sql(), [[p[0] for p in pairs], [p[1] for p in pairs]])
        return {(row[0], row[1]): _Holder(*row[2:]) for row in cursor.fetchall()}


def _holders_orm(wanted: Mapping[int, Collection[int]]) -> dict[tuple[int, int], _Holder]:
    holders: dict[tuple[int, int], _Holder] = {}
    for room_id, ids in wanted.items():
        rows = (
            User.objects.filter(pk__in=ids)
            .annotate(
                role=Subquery(
                    Membership.objects.filter(room_id=room_id, user=OuterRef("pk")).values("role")[
                        :1
                    ]
                ),
                barred=Exists(RoomBar.objects.filter(room_id=room_id, user=OuterRef("pk"))),
            )
            .values_list("pk", "is_active", "password", "role", "barred")
        )
        holders.update({(room_id, row[0]): _Holder(*row[1:]) for row in rows})
    return holders


@functools.cache
def _holders_sql() -> str:
    """The query of `_holders`, written once. Parameters: the room ids and user ids, pairwise."""
    standing, standing_join = _standing_sql("pair.room_id", "pair.user_id")
    return f"""
        SELECT pair.room_id, pair.user_id, u.is_active, u.password, {standing}
        FROM unnest(%s::bigint[], %s::bigint[]) AS pair(room_id, user_id)
        JOIN "{User._meta.db_table}" u ON u.id = pair.user_id
        {standing_join}
    """


class _Holder(NamedTuple):
    """What the re-check reads of a seat's user, as a plain row."""

    is_active: bool
    password: str
    role: str | None
    barred: bool


def _signed_in(
    seat: Seat, holder: _Holder, sessions: dict[str, dict[str, Any]], tokens: dict[int, int]
) -> bool:
    """Whether the seat's person is still signed in: active, its session (if any) still theirs
    with their current password, its token (if any) not revoked."""
    if not holder.is_active:
        return False
    if seat.session_key is not None and not _session_holds(
        sessions.get(seat.session_key), seat.user_id, _auth_hashes(seat.user_id, holder.password)
    ):
        return False
    return seat.token_id is None or tokens.get(seat.token_id) == seat.user_id


def _live_tokens(ids: set[int]) -> dict[int, int]:
    """The tokens among `ids` that are not revoked, and their owners."""
    if not ids:
        return {}
    rows = AccessToken.objects.filter(pk__in=ids, revoked__isnull=True)
    return dict(rows.values_list("pk", "owner_id"))


def _sessions(keys: set[str]) -> dict[str, dict[str, Any]]:
    """The live sessions among `keys`, decoded."""
    if not keys:
        return {}
    engine = import_module(settings.SESSION_ENGINE)
    if settings.SESSION_ENGINE == "django.contrib.sessions.backends.db":
        store = engine.SessionStore()
        rows = Session.objects.filter(session_key__in=keys, expire_date__gt=timezone.now())
        return {
            key: _decoded(store, key, data)
            for key, data in rows.values_list("session_key", "session_data")
        }
    found = {key: engine.SessionStore(session_key=key).load() for key in keys}
    return {key: data for key, data in found.items() if data}


_DECODED: dict[str, tuple[str, dict[str, Any]]] = {}  # session key -> (its data, decoded)
_DECODED_MAX = 20_000


def _decoded(store: Any, key: str, data: str) -> dict[str, Any]:
    """`store.decode(data)`, remembered while the session's stored data stays the same: a room's
    tick re-checks every socket's session every two seconds, and decoding (a signature check
    each) was most of that work. Any change to the session (a logout, a new login) changes its
    data, so it is decoded again."""
    known = _DECODED.get(key)
    if known is not None and known[0] == data:
        return known[1]
    if len(_DECODED) >= _DECODED_MAX:
        _DECODED.clear()
    decoded = store.decode(data)
    _DECODED[key] = (data, decoded)
    return decoded


_AUTH_HASHES: dict[tuple[Any, ...], tuple[str, ...]] = {}  # (user, password, keys) -> auth hashes
_AUTH_HASHES_MAX = 20_000


def _auth_hashes(user_id: int, password: str) -> tuple[str, ...]:
    """The session auth hashes a session of this user must carry (Django's own, from the user
    model, with the fallback keys'), remembered while the user's password and the secret keys
    stay the same: a new password is a new entry, so a session signed with the old one no
    longer holds."""
    key = (user_id, password, settings.SECRET_KEY, *settings.SECRET_KEY_FALLBACKS)
    hashes = _AUTH_HASHES.get(key)
    if hashes is None:
        if len(_AUTH_HASHES) >= _AUTH_HASHES_MAX:
            _AUTH_HASHES.clear()
        user = User(pk=user_id, password=password)
        hashes = _AUTH_HASHES[key] = (
            user.get_session_auth_hash(),
            *user.get_session_auth_fallback_hash(),
        )
    return hashes


def _session_holds(
    session: dict[str, Any] | None, user_id: int, candidates: Collection[str]
) -> bool:
    """Whether `session` still signs in user `user_id` (the check Django's `get_user` makes,
    against the user's current auth hashes `candidates`)."""
    if not session or str(session.get(SESSION_KEY)) != str(user_id):
        return False
    return holds_auth_hash(session, candidates)


def room_last_seq(*, room_id: int) -> int:
    return Room.objects.filter(pk=room_id).values_list("last_seq", flat=True).first() or 0


def rooms_last_seq(room_ids: Collection[int]) -> dict[int, int]:
    """Each room's last seq (a room that is gone is absent): one query for them all."""
    if not room_ids:
        return {}
    return dict(Room.objects.filter(pk__in=room_ids).values_list("pk", "last_seq"))


ENTRY_FIELDS = (
    "seq",
    "client_id",
    "expression",
    "result",
    "error",
    "created",
    "refs",
    "defines",
    "rounded",
    "author__username",
)


def _entries(room: Room, author: str | None = None, q: str | None = None) -> QuerySet[Entry]:
    """A room's entries (read with `_page`: just what the wire shows, as rows).

    An author filter goes by id, so the (room, author, seq) index serves it. `q` keeps the
    entries whose expression holds it, ignoring case (`UPPER(expression) LIKE UPPER('%q%')`):
    on PostgreSQL the trigram index `entry_expression_upper_trgm` serves it (migration 0005).
    """
    queryset = Entry.objects.filter(room=room)
    if author:
        author_id = User.objects.filter(username=author).values_list("id", flat=True).first()
        queryset = queryset.filter(author_id=author_id if author_id is not None else -1)
    if q:
        queryset = queryset.filter(expression__icontains=q)
    return queryset


def entry_resolve(*, room_id: int, before_seq: int, wanted: Wanted) -> Resolved:
    """What an expression reads, as the room stood just before entry `before_seq`.

    Each reference is one index probe, however long the room's history: `ans` the newest entry
    with a result (`entry_room_result_seq`, which holds only those), `#N` a seq
    (`entry_room_seq_unique`), a variable its newest definition (`entry_room_defines_seq`). At most
    three queries, whatever the expression. The room service calls it under the room's row lock
    with the seq the new entry is about to take, so the entry sees exactly the ones before it.
    """
    entries = Entry.objects.filter(room_id=room_id).order_by()  # not Meta's (room, seq): a join
    answer = None
    if wanted.answer:
        row = (
            entries.filter(seq__lt=before_seq, error__isnull=True)
            .order_by("-seq")
            .values_list("seq", "result", "rounded")
            .first()
        )
        answer = Stored(*row) if row is not None else None
    seqs: dict[int, Stored] = {}
    earlier = [seq for seq in wanted.seqs if seq < before_seq]
    if earlier:
        for seq, result, rounded in entries.filter(seq__in=earlier).values_list(
            "seq", "result", "rounded"
        ):
            seqs[seq] = Stored(seq, result, rounded)
    names = _definitions(room_id, before_seq, wanted.names) if wanted.names else {}
    return Resolved(answer=answer, seqs=seqs, names=names)


# One probe of (room, defines, seq) per name, in one statement: the newest definition of each.
_DEFINITIONS_SQL = """
SELECT wanted.name, found.seq, found.result, found.rounded
FROM unnest(%(names)s::text[]) AS wanted(name)
CROSS JOIN LATERAL (
    SELECT e.seq, e.result, e.rounded FROM rooms_entry e
    WHERE e.room_id = %(room)s AND e.defines = wanted.name AND e.seq < %(before)s
    ORDER BY e.seq DESC LIMIT 1
) AS found
"""


def _definitions(room_id: int, before_seq: int, names: Collection[str]) -> dict[str, Stored]:
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(
                _DEFINITIONS_SQL, {"names": list(names), "room": room_id, "before": before_seq}
            )
            rows = cursor.fetchall()
    else:  # the embedded SQLite default: the same probe, name by name
        rows = []
        for name in names:
            row = (
                Entry.objects.filter(room_id=room_id, defines=name, seq__lt=before_seq)
                .order_by("-seq")
                .values_list("defines", "seq", "result", "rounded")
                .first()
            )
            if row is not None:
                rows.append(row)
    return {name: Stored(seq, result, rounded) for name, seq, result, rounded in rows}


@dataclass(frozen=True)
class EntryPage:
    entries: list[EntryDict]  # ascending seq, in their wire shape
    has_more: bool


def _page(queryset: QuerySet[Entry]) -> list[EntryDict]:
    """The entries as the wire shows them, read as rows (the author's name joined in): a model
    instance each, with its init signals, was most of a catch-up page's cost."""
    return [entry_row_as_dict(row) for row in queryset.values_list(*ENTRY_FIELDS)]


def clamp_limit(raw: str | None) -> int:
    """A page size from a query parameter: default, at least 1, at most the maximum."""
    try:
        limit = int(raw) if raw not in (None, "") else settings.ENTRIES_DEFAULT_LIMIT
    except ValueError:
        raise ValueError("limit must be a whole number") from None
    return max(1, min(limit, settings.ENTRIES_MAX_LIMIT))


# An entry's `created` as the wire writes it (`entry_row_as_dict`: Python's isoformat in UTC, the
# fraction left out when it is zero), made by PostgreSQL: reading it as a datetime (Django's loader
# runs in Python for each value) only to write it out again was a tenth of a catch-up's CPU.
_CREATED_TEXT = """
    to_char(e.created AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS')
    || CASE WHEN date_part('microseconds', e.created)::bigint %% 1000000 = 0 THEN ''
            ELSE to_char(e.created AT TIME ZONE 'UTC', '.US') END
    || 'Z'
"""


_NO_REFS = ("[]", None)


@functools.cache
def _page_sql(*, newest_first: bool, bounded: bool, by_author: bool) -> str:
    """The query of `_page_plain`: the columns of ENTRY_FIELDS, the author's name joined in.
    Parameters: the room's id, the bound seq (when `bounded`), the author's username (when
    `by_author`; a name nobody has matches no entry), the limit."""
    fields = [Entry._meta.get_field(name) for name in ENTRY_FIELDS[:-1]]
    columns = ", ".join(
        _CREATED_TEXT if field.name == "created" else f'e."{field.column}"' for field in fields
    )
    bound = f"AND e.seq {'<' if newest_first else '>'} %s" if bounded else ""
    author = (
        f'AND e.author_id = (SELECT id FROM "{User._meta.db_table}" WHERE username = %s)'
        if by_author
        else ""
    )
    return f"""
        SELECT {columns}, a.username
        FROM "{Entry._meta.db_table}" e JOIN "{User._meta.db_table}" a ON a.id = e.author_id
        WHERE e.room_id = %s {bound} {author}
        ORDER BY e.seq {"DESC" if newest_first else "ASC"}
        LIMIT %s
    """


def _page_plain(
    room_id: int, *, seq: int | None, newest_first: bool, author: str | None, limit: int
) -> list[EntryDict]:
    """A page of a room's entries in plain SQL (PostgreSQL, no text search): what `_page` reads,
    without the ORM compiling the query each time (about half of a catch-up page's CPU on this
    machine: docs/performance.md)."""
    sql = _page_sql(newest_first=newest_first, bounded=seq is not None, by_author=bool(author))
    params: list[Any] = [room_id]
    if seq is not None:
        params.append(seq)
    if author:
        params.append(author)
    params.append(limit)
    refs = ENTRY_FIELDS.index("refs")
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    # jsonb comes back as its text (Django reads JSONField values itself); most entries have none.
    return [
        entry_row_as_dict(
            (
                *row[:refs],
                json.loads(row[refs]) if row[refs] not in _NO_REFS else [],
                *row[refs + 1 :],
            )
        )
        for row in rows
    ]


def _page_rows(
    room: Room,
    author: str | None,
    q: str | None,
    *,
    seq: int | None,
    newest_first: bool,
    limit: int,
) -> list[EntryDict]:
    """Up to `limit` of the room's entries past `seq` (after it, or before it when
    `newest_first`), in that order: in plain SQL on PostgreSQL unless searching, else the ORM."""
    if not q and connection.vendor == "postgresql":
        return _page_plain(room.id, seq=seq, newest_first=newest_first, author=author, limit=limit)
    queryset = _entries(room, author, q)
    if seq is not None:
        queryset = queryset.filter(seq__lt=seq) if newest_first else queryset.filter(seq__gt=seq)
    return _page(queryset.order_by("-seq" if newest_first else "seq")[:limit])


def entries_after(
    *, room: Room, after: int, limit: int, author: str | None = None, q: str | None = None
) -> EntryPage:
    """Entries with seq > after, oldest first (catch-up; an index range scan on (room, seq))."""
    rows = _page_rows(room, author, q, seq=after, newest_first=False, limit=limit + 1)
    return EntryPage(entries=rows[:limit], has_more=len(rows) > limit)


def entries_before(
    *,
    room: Room,
    before: int | None,
    limit: int,
    author: str | None = None,
    q: str | None = None,
) -> EntryPage:
    """The `limit` entries just before seq `before` (all of the newest when None), oldest first."""
    rows = _page_rows(room, author, q, seq=before, newest_first=True, limit=limit + 1)
    has_more = len(rows) > limit
    rows = rows[:limit]
    rows.reverse()
    return EntryPage(entries=rows, has_more=has_more)


def read_positions_of(*, user_id: int) -> dict[int, tuple[str, int]]:
    """Every room the person is a member of: `{room_id: (slug, read position)}` (one query)."""
    rows = Membership.objects.filter(user_id=user_id).values_list(
        "room_id", "room__slug", "last_read_seq"
    )
    return {room_id: (slug, last_read) for room_id, slug, last_read in rows}


def read_position(*, room_id: int, user_id: int) -> int:
    """The person's read position in the room (0 when they are not a member)."""
    rows = Membership.objects.filter(room_id=room_id, user_id=user_id)
    return rows.values_list("last_read_seq", flat=True).first() or 0


def first_seq_since(*, room: Room, when: datetime) -> int | None:
    """The seq of the room's first entry stored at or after `when` (None: none since).

    Entries are stored in seq order, so `created` grows with seq: a binary search over seqs,
    each step one probe of (room, seq), instead of a scan of the room's entries by time.
    """
    low, high = 1, room.last_seq
    found = None
    entries = Entry.objects.filter(room=room).order_by()
    while low <= high:
        middle = (low + high) // 2
        created = entries.filter(seq=middle).values_list("created", flat=True).first()
        if created is not None and created >= when:
            found, high = middle, middle - 1
        else:
            low = middle + 1
    return found


def rooms_for_list(*, user: User) -> tuple[QuerySet[Room], QuerySet[Room]]:
    """(rooms the user belongs to, public rooms they have not joined), each in a stable order
    for paging: theirs by latest activity (newest entry, else creation; then id), each with its
    `unread` count; the public ones by name, then id. The room list shows a page of each."""
    mine = (
        Room.objects.filter(memberships__user=user)
        .annotate(
            unread=F("last_seq") - F("memberships__last_read_seq"),
            activity=Coalesce("last_activity", "created"),
        )
        .select_related("owner")
        .order_by("-activity", "-pk")
    )
    public = (
        Room.objects.filter(visibility=Room.Visibility.PUBLIC)
        .exclude(Exists(Membership.objects.filter(room=OuterRef("pk"), user_id=user.pk)))
        .select_related("owner")
        .order_by("name", "pk")
    )
    return mine, public


def room_bars(*, room: Room) -> QuerySet[RoomBar]:
    """The people barred from the room, for its members page."""
    return room.bars.select_related("user", "barred_by").order_by("user__username")


def invite_current(*, room: Room) -> RoomInvite | None:
    """The room's current invite: its newest link that is not reset (it may have expired)."""
    return room.invites.filter(revoked_at__isnull=True).select_related("created_by").first()


def room_members(*, room: Room) -> QuerySet[Membership]:
    return room.memberships.select_related("user").order_by("-role", "user__username")


# A loose index scan over (room, author, seq): one index probe per distinct author, instead of
# reading every entry of the room (171 ms -> under 1 ms at a million entries, bench/after_query).
_AUTHOR_IDS_SQL = """
WITH RECURSIVE authors(author_id) AS (
    SELECT (SELECT author_id FROM rooms_entry WHERE room_id = %(room)s
            ORDER BY author_id LIMIT 1)
    UNION ALL
    SELECT (SELECT e.author_id FROM rooms_entry e
            WHERE e.room_id = %(room)s AND e.author_id > authors.author_id
            ORDER BY e.author_id LIMIT 1)
    FROM authors WHERE authors.author_id IS NOT NULL
)
SELECT author_id FROM authors WHERE author_id IS NOT NULL
"""


def room_authors(*, room: Room) -> list[str]:
    """Everyone who ever wrote in the room (members or not any more), by name."""
    with connection.cursor() as cursor:
        cursor.execute(_AUTHOR_IDS_SQL, {"room": room.pk})
        ids = [row[0] for row in cursor.fetchall()]
    return list(
        User.objects.filter(id__in=ids).order_by("username").values_list("username", flat=True)
    )
