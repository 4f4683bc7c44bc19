"""The product's Prometheus metrics, and one small recording helper for each.

Neutral plumbing: imports prometheus_client (and the standard library) only, never Django or an
app, so any module may record. Every helper is cheap enough for the hot path: the label children
of known values are built once, here, and a call is a dict lookup and an add.

Single process (no `PROMETHEUS_MULTIPROC_DIR`): the metrics live in prometheus_client's default
registry, next to its process and platform collectors. Multiprocess (`PROMETHEUS_MULTIPROC_DIR` set
before the process starts): each process writes its values to files in that directory and a scrape
of any of them sums the processes that share it (gauges: `livesum`, only processes still alive).
The directory must exist and be emptied before the processes that share it start, never while one
of them runs (docs/operations.md, "Metrics").
"""

from __future__ import annotations

import os
import re

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

MULTIPROC_DIR = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None
if MULTIPROC_DIR:
    os.makedirs(MULTIPROC_DIR, exist_ok=True)  # created if missing, never emptied here

# --- The metrics -------------------------------------------------------------------------------

SOCKETS_OPEN = Gauge(
    "calcrooms_sockets_open",
    "Open room sockets of this process, by how many sockets their room has in this process.",
    ["room_size"],
    multiprocess_mode="livesum",
)
FRAMES_IN = Counter("calcrooms_frames_in", "Frames received from clients, by frame type.", ["type"])
FRAMES_OUT = Counter("calcrooms_frames_out", "Frames sent to clients, by frame type.", ["type"])
ENTRIES_STORED = Counter(
    "calcrooms_entries_stored",
    "Entries stored (committed), by the transport they came in on.",
    ["transport"],
)
FANOUT_SECONDS = Histogram(
    "calcrooms_fanout_seconds",
    "Time from an entry's commit to its send on the last local socket of its room.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
CATCHUP_FETCHES = Counter(
    "calcrooms_catchup_fetches", "Catch-up fetches (`entries?after=N`) answered."
)
CATCHUP_ENTRIES = Histogram(
    "calcrooms_catchup_entries",
    "Entries returned by one catch-up fetch.",
    buckets=(0, 1, 5, 10, 25, 50, 100, 250, 500),
)
PRESENCE_EXPIRIES = Counter(
    "calcrooms_presence_expiries",
    "People announced gone because their presence expired (no heartbeat), not a clean leave.",
)
REFUSALS = Counter(
    "calcrooms_refusals",
    "Requests and frames refused, by the protocol's error or close code and the transport.",
    ["code", "transport"],
)
REDIS_ERRORS = Counter("calcrooms_redis_errors", "Channel-layer and Redis operations that failed.")
DATABASE_ERRORS = Counter("calcrooms_database_errors", "Database operations that failed.")
SLOW_HANDLERS = Counter(
    "calcrooms_slow_handlers",
    "Handlers that took longer than their budget, by handler name.",
    ["handler"],
)

# --- Label values known in advance (children built once) ----------------------------------------

ROOM_SIZES = ("1", "2-10", "11-100", "101-1000", ">1000")
FRAME_TYPES_IN = ("expression", "typing", "typing.stop", "read", "other")
FRAME_TYPES_OUT = ("entry", "presence", "sync", "error", "unread", "other")
TRANSPORTS = ("ws", "http", "command")
REFUSAL_CODES = (
    "empty",
    "too_long",
    "invalid_frame",
    "rate_limited",
    "forbidden",
    "unavailable",
    "not_found",
)

_LABEL_SAFE = re.compile(r"^[A-Za-z0-9_.:\-]{1,64}$")


_SOCKETS = {size: SOCKETS_OPEN.labels(size) for size in ROOM_SIZES}
_FRAMES_IN = {kind: FRAMES_IN.labels(kind) for kind in FRAME_TYPES_IN}
_FRAMES_OUT = {kind: FRAMES_OUT.labels(kind) for kind in FRAME_TYPES_OUT}
_ENTRIES = {transport: ENTRIES_STORED.labels(transport) for transport in TRANSPORTS}
_REFUSALS = {
    (code, transport): REFUSALS.labels(code, transport)
    for code in REFUSAL_CODES
    for transport in TRANSPORTS
}
_SLOW: dict[str, Counter] = {}


def room_size_bucket(sockets: int) -> str:
    """The `room_size` label for a room with `sockets` open sockets in this process."""
    if sockets <= 1:
        return "1"
    if sockets <= 10:
        return "2-10"
    if sockets <= 100:
        return "11-100"
    if sockets <= 1000:
        return "101-1000"
    return ">1000"


# --- Recording helpers -------------------------------------------------------------------------


def room_sockets_changed(before: int, after: int) -> None:
    """A room's open sockets in this process went from `before` to `after`.

    The gauge counts sockets by their room's size, so when a room crosses a bucket boundary all
    its sockets move: `before` leave the old bucket and `after` join the new one.
    """
    old, new = room_size_bucket(before), room_size_bucket(after)
    if old == new:
        _SOCKETS[new].inc(after - before)
    else:
        _SOCKETS[old].dec(before)
        _SOCKETS[new].inc(after)


def socket_opened(room_sockets: int) -> None:
    """One socket opened on a room that now has `room_sockets` open sockets in this process."""
    room_sockets_changed(room_sockets - 1, room_sockets)


def socket_closed(room_sockets: int) -> None:
    """One socket closed on a room that now has `room_sockets` open sockets in this process."""
    room_sockets_changed(room_sockets + 1, room_sockets)


def frame_in(kind: str, n: int = 1) -> None:
    """`n` frames of type `kind` received (`expression`, `typing`, ...; any other is `other`,
    so a client cannot invent label values)."""
    (_FRAMES_IN.get(kind) or _FRAMES_IN["other"]).inc(n)


def frame_out(kind: str, n: int = 1) -> None:
    """`n` frames of type `kind` sent (`entry`, `presence`, `sync`, `error`, `unread`), e.g. one
    broadcast to n local sockets is `frame_out("entry", n=n)`."""
    (_FRAMES_OUT.get(kind) or _FRAMES_OUT["other"]).inc(n)


def entry_stored(transport: str) -> None:
    """One entry committed, that came in over `transport`: `ws`, `http` or `command`."""
    child = _ENTRIES.get(transport)
    if child is None:
        child = _ENTRIES[transport] = ENTRIES_STORED.labels(_safe_labels((transport,))[0])
    child.inc()


def fanout_observed(seconds: float) -> None:
    """An entry reached the last local socket of its room `seconds` after its commit."""
    FANOUT_SECONDS.observe(seconds)


def catchup_fetched(entries: int) -> None:
    """One catch-up fetch answered with `entries` entries."""
    CATCHUP_FETCHES.inc()
    CATCHUP_ENTRIES.observe(entries)


def presence_expired(n: int = 1) -> None:
    """`n` people announced gone because their presence expired."""
    PRESENCE_EXPIRIES.inc(n)


def refusal(code: str | int, transport: str = "ws") -> None:
    """One request or frame refused with `code` (an error code such as `rate_limited`, or a close
    code such as 4403 or 1008) on `transport` (`ws`, `http`, `command`)."""
    key = (str(code), transport)
    child = _REFUSALS.get(key)
    if child is None:
        child = _REFUSALS[key] = REFUSALS.labels(*_safe_labels(key))
    child.inc()


def redis_error() -> None:
    """One channel-layer or Redis operation failed."""
    REDIS_ERRORS.inc()


def database_error() -> None:
    """One database operation failed."""
    DATABASE_ERRORS.inc()


def slow_handler(name: str) -> None:
    """Handler `name` (a name from the code, never from a client) took longer than its budget."""
    child = _SLOW.get(name)
    if child is None:
        child = _SLOW[name] = SLOW_HANDLERS.labels(_safe_labels((name,))[0])
    child.inc()


def _safe_labels(values: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(value if _LABEL_SAFE.match(value) else "other" for value in values)


# --- Exposition ----------------------------------------------------------------------------------


def exposition() -> tuple[bytes, str]:
    """The metrics page (Prometheus text format) and its content type.

    Multiprocess: the sum over every process writing to the directory; first, the live gauges of
    processes that are gone (a crash, a restarted worker) are dropped, so they count no more.
    """
    if not MULTIPROC_DIR:
        return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
    _forget_dead_processes(MULTIPROC_DIR)
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=MULTIPROC_DIR)
    return generate_latest(registry), CONTENT_TYPE_LATEST


_LIVE_GAUGE_FILE = re.compile(r"^gauge_live[a-z]+_(\d+)\.db$")


def _forget_dead_processes(path: str) -> None:
    pids = {int(m.group(1)) for name in os.listdir(path) if (m := _LIVE_GAUGE_FILE.match(name))}
    for pid in pids:
        if not _alive(pid):
            multiprocess.mark_process_dead(pid, path)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, another user's
    return True
