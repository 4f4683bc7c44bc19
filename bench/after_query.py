"""Benchmark: the catch-up query (`selectors.entries_after`) on a room with 1,000,000 entries.

Bulk-loads one big room (INSERT ... SELECT generate_series), a medium room (1/20 of it) and a
baseline room of 1,000 entries into a throwaway PostgreSQL database, runs VACUUM ANALYZE, then
times the selectors the product serves history with, each repeated (median and p95), the rooms
taking turns call by call:

- `entries_after(after=N, limit=100|500)` with N at the start, the middle and the end of the room,
  plus a short tail (10 missed entries) and an empty page (caught up);
- `entries_before` (the room page's newest 50, a scroll-back page);
- the author-filtered history page (`entries_before(author=...)`) for a frequent and a rare author,
  the export's author-filtered `entries_after`, and `room_authors` (the history page's author list);
- a reference that is not product code: the same 500-entry page fetched as `.values()`;
- the HTTP route `GET /rooms/<slug>/entries/?after=N&format=json` on real uvicorn processes: one
  with DATABASE_POOL=0 (a new database connection per request, the baseline) and one as shipped
  (Django's psycopg pool), taking turns.

The ratio room/baseline is what to look at (~1 when the query is an index range scan).
EXPLAIN (ANALYZE, BUFFERS) of each query's actual SQL is printed and checked: on the big room the
catch-up and scroll-back queries must read a range of `entry_room_seq_unique`, with no sequential
scan and no sort of the room (exit status 1 otherwise); other rooms' plans only warn.

    .venv/bin/python bench/after_query.py [--entries 1000000] [--repeats 200] [--no-http]

Uses its own database (`calcrooms_bench`, dropped and recreated at the start, dropped at the end
unless --keep-db) and its own Redis key prefix (`calcrooms-bench-<random>`, removed at the end).
Results: var/bench/after_query.json.

This module also holds the helpers the other benches share (environment, throwaway database,
server process, statistics).
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import os
import platform
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
OUT_DIR = ROOT / "var" / "bench"
VENV_PYTHON = ROOT / ".venv" / "bin" / "python"
PYTHON = str(VENV_PYTHON) if VENV_PYTHON.exists() else sys.executable

PG_SERVER = os.environ.get("BENCH_PG_SERVER", "postgres://postgres@127.0.0.1:5432")
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
DB_NAME = os.environ.get("BENCH_DB_NAME", "calcrooms_bench")

AUTHORS = ["bench-ann", "bench-bob", "bench-cat", "bench-dan"]
RARE_AUTHOR = "bench-rare"  # wrote every 1000th entry
RARE_EVERY = 1000


# --- Shared helpers --------------------------------------------------------------------------


def bench_environment(db_name: str = DB_NAME) -> dict[str, str]:
    """Put the bench's own database, Redis prefix and settings in os.environ; return the env.

    Called before Django is set up, so this process and every server it starts share them.
    """
    prefix = f"calcrooms-bench-{secrets.token_hex(4)}"
    values = {
        "DJANGO_SETTINGS_MODULE": "project.settings",
        "DJANGO_DEBUG": "0",  # DEBUG would record every query in memory and slow them all
        "DJANGO_SECRET_KEY": f"calcrooms-bench-{secrets.token_hex(16)}",
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1,localhost,testserver",
        "DJANGO_SECURE_COOKIES": "0",
        "DATABASE_URL": f"{PG_SERVER}/{db_name}",
        "REDIS_URL": REDIS_URL,
        "REDIS_KEY_PREFIX": prefix,
        "LOG_LEVEL": "WARNING",
        # The benches open hundreds of sockets as one user (tabs); the product caps a person's
        # open sockets (20 by default), which would refuse the handshakes with 403.
        "WS_MAX_SOCKETS_PER_USER": "100000",
    }
    os.environ.update(values)
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    return dict(os.environ)


def recreate_database(db_name: str = DB_NAME) -> None:
    """Drop and create the throwaway database, then migrate it with `manage.py migrate`."""
    _admin_sql(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')
    _admin_sql(f'CREATE DATABASE "{db_name}"')
    subprocess.run(
        [PYTHON, "manage.py", "migrate", "--noinput", "-v", "0"],
        cwd=ROOT,
        env={**os.environ, "DATABASE_URL": f"{PG_SERVER}/{db_name}"},
        check=True,
    )


@contextmanager
def bench_database(db_name: str = DB_NAME, *, keep: bool = False) -> Iterator[str]:
    """The bench's own database (migrated, Django set up) and Redis prefix while the block runs;
    both removed afterwards (the database kept with `keep`). Yields the Redis prefix."""
    prefix = bench_environment(db_name)["REDIS_KEY_PREFIX"]
    with stage(f"database {db_name}: drop, create, migrate"):
        recreate_database(db_name)
    django_setup()
    try:
        yield prefix
    finally:
        removed = clean_redis(prefix)
        if not keep:
            drop_database(db_name)
        dropped = "kept" if keep else "dropped"
        print(f"cleaned up: {removed} Redis keys under {prefix}*; database {db_name} {dropped}")


def drop_database(db_name: str = DB_NAME) -> None:
    from django.db import connections

    connections.close_all()
    _admin_sql(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')


def _admin_sql(statement: str) -> None:
    import psycopg

    with psycopg.connect(f"{PG_SERVER}/postgres", autocommit=True) as conn:
        conn.execute(statement)  # type: ignore[arg-type]  # a fixed statement, not user input


def clean_redis(prefix: str) -> int:
    """Delete every key under the bench's own prefix; return how many."""
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000))
        for start in range(0, len(keys), 500):
            client.delete(*keys[start : start + 500])
        return len(keys)
    finally:
        client.close()


def django_setup() -> None:
    import django

    django.setup()


def pg_version() -> str:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        return str(cursor.fetchone()[0])


def machine() -> dict[str, Any]:
    """Where and on what code the numbers were measured (other processes share the CPUs: the
    load average says how busy the machine was)."""

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False)
        return done.stdout.strip()

    return {
        "cpus": os.cpu_count(),
        "load_average_1_5_15": [round(value, 2) for value in os.getloadavg()],
        "python": platform.python_version(),
        "platform": platform.platform(),
        "git_commit": git("rev-parse", "--short", "HEAD"),
        "git_uncommitted": git("status", "--porcelain").splitlines()[:50],
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def session_cookie(user: Any) -> str:
    """A `sessionid=...` cookie for `user`: a real session row in the bench database."""
    from django.conf import settings
    from django.test import Client

    client = Client()
    client.force_login(user)
    return f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}"


class BenchServer:
    """One uvicorn process serving the app from the bench database (the command `make run` uses)."""

    def __init__(
        self,
        env: dict[str, str] | None = None,
        *,
        deflate: bool = False,
        app: str = "project.asgi:application",
    ) -> None:
        self.deflate = deflate  # permessage-deflate: off as shipped (see bench/memory.py)
        self.app = app
        self.port = free_port()
        self.host = "127.0.0.1"
        self.origin = f"http://{self.host}:{self.port}"
        self.env = {**os.environ, "DJANGO_ALLOWED_ORIGINS": self.origin, **(env or {})}
        self.log_path = OUT_DIR / f"server-{self.port}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.log_problems: dict[str, Any] | None = None

    def start(self, timeout: float = 30) -> BenchServer:
        OUT_DIR.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [
                    PYTHON, "-m", "uvicorn", self.app,
                    "--host", self.host, "--port", str(self.port),
                    "--ws-max-size", "65536",
                    "--ws-per-message-deflate", "true" if self.deflate else "false",
                    "--lifespan", "off", "--log-level", "warning", "--no-access-log",
                ],
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited: {self.log_path.read_text()[-2000:]}")
            try:
                status, _body = http_get(self.host, self.port, "/healthz")
                if status == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"server did not answer in {timeout}s: {self.log_path.read_text()}")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self.log_problems = log_problems(self.log_path)
        if self.log_path.exists() and not self.log_path.stat().st_size:
            self.log_path.unlink()

    def __enter__(self) -> BenchServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def log_problems(path: Path) -> dict[str, Any]:
    """What a server logged: tracebacks by exception, and the other lines, counted."""
    text = path.read_text(errors="replace") if path.exists() else ""
    exceptions: dict[str, int] = {}
    messages: dict[str, int] = {}
    in_traceback = False
    for line in text.splitlines():
        if line.startswith("Traceback"):
            in_traceback = True
        elif in_traceback and line and not line.startswith(" "):
            name = line.split(":", 1)[0]
            exceptions[name] = exceptions.get(name, 0) + 1
            in_traceback = False
        elif not in_traceback and line.strip():
            messages[line[:120]] = messages.get(line[:120], 0) + 1
    return {
        "log": str(path.relative_to(ROOT)),
        "tracebacks": sum(exceptions.values()),
        "exceptions": exceptions,
        "messages": dict(sorted(messages.items(), key=lambda item: -item[1])[:10]),
    }


def report_server_problems(servers: dict[str, BenchServer]) -> dict[str, Any]:
    """Print and return what the (stopped) servers logged."""
    out = {}
    for name, server in servers.items():
        problems = server.log_problems or log_problems(server.log_path)
        out[name] = problems
        if problems["tracebacks"] or problems["messages"]:
            print(
                f"WARNING: server ({name}) logged {problems['tracebacks']} tracebacks"
                f" {problems['exceptions']} and {sum(problems['messages'].values())} other lines"
            )
            for message, count in problems["messages"].items():
                print(f"    {count:>5} x {message}")
            print(f"    see {problems['log']}")
    return out


def http_get(
    host: str,
    port: int,
    path: str,
    cookie: str | None = None,
    conn: http.client.HTTPConnection | None = None,
) -> tuple[int, bytes]:
    """One GET; reuses `conn` (keep-alive) when given."""
    own = conn is None
    conn = conn or http.client.HTTPConnection(host, port, timeout=30)
    headers = {"Accept": "application/json"}
    if cookie:
        headers["Cookie"] = cookie
    try:
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        if own:
            conn.close()


def percentile(samples: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def summary_ms(samples: Sequence[float]) -> dict[str, float]:
    """Median, p95, min and max of samples in seconds, as milliseconds."""
    return {
        "n": len(samples),
        "median_ms": round(statistics.median(samples) * 1000, 3),
        "p95_ms": round(percentile(samples, 0.95) * 1000, 3),
        "min_ms": round(min(samples) * 1000, 3),
        "max_ms": round(max(samples) * 1000, 3),
    }


def write_results(name: str, data: dict[str, Any]) -> Path:
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    path = OUT_DIR / f"{name}.json"
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path


@contextmanager
def stage(label: str) -> Iterator[None]:
    print(f"{label} …", flush=True)
    started = time.perf_counter()
    yield
    print(f"{label}: {time.perf_counter() - started:.1f} s", flush=True)


# --- Loading ---------------------------------------------------------------------------------

LOAD_SQL = """
INSERT INTO {table} (room_id, seq, author_id, client_id, expression, result, error, created,
                     refs, rounded, rules)
SELECT %(room)s, g,
       CASE WHEN g %% {rare_every} = 0 THEN %(rare)s
            ELSE (%(authors)s::bigint[])[1 + g %% {n_authors}] END,
       CASE WHEN g %% 10 = 0 THEN md5(%(room)s || ':' || g)::uuid END,
       CASE WHEN g %% 50 = 0 THEN g || ' / 0'
            ELSE (g %% 9973) || ' * ' || (g %% 97) END,
       CASE WHEN g %% 50 = 0 THEN NULL ELSE ((g %% 9973) * (g %% 97))::text END,
       CASE WHEN g %% 50 = 0 THEN 'division by zero' END,
       now() - make_interval(secs => %(count)s - g),
       '[]'::jsonb, false, 2
FROM generate_series(1, %(count)s) AS g
"""


def load_room(*, slug: str, count: int, owner: Any, authors: list[Any], rare: Any) -> Any:
    """A room with `count` entries (seq 1..count, no gaps) whose last_seq says so."""
    from django.db import connection, transaction

    from rooms.models import Entry, Membership, Room

    with transaction.atomic():
        room = Room.objects.create(slug=slug, name=slug, owner=owner, last_seq=count)
        Membership.objects.bulk_create(
            [Membership(room=room, user=owner, role=Membership.Role.OWNER)]
            + [Membership(room=room, user=user) for user in [*authors, rare] if user != owner]
        )
        sql = LOAD_SQL.format(
            table=Entry._meta.db_table, rare_every=RARE_EVERY, n_authors=len(authors)
        )
        with connection.cursor() as cursor:
            cursor.execute(
                sql,
                {
                    "room": room.pk,
                    "rare": rare.pk,
                    "authors": [user.pk for user in authors],
                    "count": count,
                },
            )
    return room


def create_users() -> tuple[list[Any], Any]:
    from accounts.models import User

    users = User.objects.bulk_create(
        [User(username=name, email=f"{name}@example.com", password="!") for name in AUTHORS]
    )
    rare = User.objects.create(username=RARE_AUTHOR, email="rare@example.com", password="!")
    return users, rare


# --- Timing and plans ------------------------------------------------------------------------


def time_interleaved(
    calls: dict[str, Callable[[], Any]], repeats: int, budget_seconds: float
) -> dict[str, list[float]]:
    """Up to `repeats` timed calls of each (at least 10), round-robin, until the budget is spent.

    Taking turns spreads any load from other processes over every room alike, so the ratios
    between rooms hold even when the absolute times wobble.
    """
    for call in calls.values():
        call()  # warm: the first call pays for compiling the query and filling caches
    samples: dict[str, list[float]] = {label: [] for label in calls}
    deadline = time.perf_counter() + budget_seconds
    done = 0
    while done < repeats and (done < 10 or time.perf_counter() < deadline):
        for label, call in calls.items():
            started = time.perf_counter()
            call()
            samples[label].append(time.perf_counter() - started)
        done += 1
    return samples


def captured_sql(fn: Callable[[], Any]) -> list[str]:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as ctx:
        fn()
    return [query["sql"] for query in ctx.captured_queries]


def explain(sql: str) -> tuple[str, dict[str, Any]]:
    """EXPLAIN (ANALYZE, BUFFERS) as text, and the same plan as JSON (from a second run)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql)
        text = "\n".join(row[0] for row in cursor.fetchall())
        cursor.execute("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + sql)
        raw = cursor.fetchone()[0]
    plan = raw if isinstance(raw, list) else json.loads(raw)
    return text, plan[0]


def plan_nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for child in node.get("Plans", []):
        yield from plan_nodes(child)


def check_plan(plan: dict[str, Any], table: str, index: str, max_rows: int) -> dict[str, Any]:
    """Whether the plan reads `table` only as a range of `index`: no seq scan, no sort of the room.

    `max_rows`: at most this many index rows may be read, and sorted (the page plus one), which
    shows the scan stops at the LIMIT instead of walking the room.
    """
    nodes = list(plan_nodes(plan["Plan"]))
    on_table = [n for n in nodes if n.get("Relation Name") == table]
    problems = []
    if any(n["Node Type"] == "Seq Scan" for n in on_table):
        problems.append(f"sequential scan of {table}")
    for node in nodes:
        if node["Node Type"] in ("Sort", "Incremental Sort"):
            sorted_rows = sum(child.get("Actual Rows", 0) for child in node.get("Plans", []))
            if sorted_rows > max_rows:
                problems.append(f"sort of {sorted_rows} rows")
    index_scans = [n for n in on_table if n.get("Index Name") == index]
    if not index_scans:
        problems.append(f"{index} not used")
    rows_read = sum(
        n.get("Actual Rows", 0) * n.get("Actual Loops", 1) + n.get("Rows Removed by Filter", 0)
        for n in index_scans
    )
    if index_scans and rows_read > max_rows:
        problems.append(f"{rows_read} index rows read for a page of {max_rows - 1}")
    return {
        "ok": not problems,
        "problems": problems,
        "scans": sorted(
            {
                f"{n['Node Type']} using {n['Index Name']}"
                if n.get("Index Name")
                else f"{n['Node Type']} on {n['Relation Name']}"
                for n in nodes
                if n.get("Index Name") or n.get("Relation Name") == table
            }
        ),
        "index_rows_read": rows_read,
        "execution_ms": plan.get("Execution Time"),
    }


def cases_for(room: Any, size: int) -> list[tuple[str, Callable[[], Any], str | None, int]]:
    """(name, call, index that must be range-scanned or None, page size) for one room.

    Every `after` case returns a full page in either room, so both rooms do the same work.
    """
    from rooms import selectors

    mid = size // 2
    out: list[tuple[str, Callable[[], Any], str | None, int]] = []
    for limit in (100, 500):
        for label, after in (("start", 0), ("middle", mid), ("end", size - limit)):
            out.append(
                (
                    f"after {label} limit={limit}",
                    lambda a=after, lim=limit: selectors.entries_after(
                        room=room, after=a, limit=lim
                    ),
                    "entry_room_seq_unique",
                    limit,
                )
            )
    out += [
        (
            "after tail (10 missed) limit=500",
            lambda: selectors.entries_after(room=room, after=size - 10, limit=500),
            "entry_room_seq_unique",
            500,
        ),
        (
            "after last_seq (caught up) limit=100",
            lambda: selectors.entries_after(room=room, after=size, limit=100),
            "entry_room_seq_unique",
            100,
        ),
        (
            "before newest limit=50 (room page)",
            lambda: selectors.entries_before(room=room, before=None, limit=50),
            "entry_room_seq_unique",
            50,
        ),
        (
            "before middle limit=100 (scroll back)",
            lambda: selectors.entries_before(room=room, before=mid, limit=100),
            "entry_room_seq_unique",
            100,
        ),
        (
            "history author=frequent newest limit=100",
            lambda: selectors.entries_before(room=room, before=None, limit=100, author=AUTHORS[1]),
            None,
            100,
        ),
        (
            "history author=frequent before middle limit=100",
            lambda: selectors.entries_before(room=room, before=mid, limit=100, author=AUTHORS[1]),
            None,
            100,
        ),
        (
            "history author=rare newest limit=100",
            lambda: selectors.entries_before(room=room, before=None, limit=100, author=RARE_AUTHOR),
            None,
            100,
        ),
        (
            "export author=rare after 0 limit=1000",
            lambda: selectors.entries_after(room=room, after=0, limit=1000, author=RARE_AUTHOR),
            None,
            1000,
        ),
        ("room_authors (history page)", lambda: selectors.room_authors(room=room), None, 0),
        (
            "reference: after middle limit=500 as .values()",
            lambda: _values_page(room, mid, 500),
            None,
            500,
        ),
    ]
    return out


def _values_page(room: Any, after: int, limit: int) -> list[dict[str, Any]]:
    """Not product code: the same page as plain dicts (no model instances, only the columns the
    entry shape needs), to show how much of a selector's time is building Entry and User objects.
    """
    from rooms.models import Entry

    fields = ("seq", "author__username", "expression", "result", "error", "client_id", "created")
    queryset = Entry.objects.filter(room=room, seq__gt=after).order_by("seq").values(*fields)
    return list(queryset[: limit + 1])[:limit]


HTTP_VARIANTS: dict[str, dict[str, str]] = {
    # The baseline: DATABASE_POOL=0 and CONN_MAX_AGE=0, every request opens its own connection.
    "connect per request": {"DATABASE_POOL": "0"},
    # As shipped: Django's psycopg pool (settings.py turns it on for PostgreSQL).
    "psycopg pool (default)": {},
}


def run_http(
    rooms: dict[str, tuple[Any, int]], cookie: str, repeats: int
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """GET /rooms/<slug>/entries/?after=N&format=json on real servers, one per database
    connection variant, each over one keep-alive connection; servers and rooms take turns."""
    results = []
    cases = [
        ("GET after middle limit=100", lambda size: (size // 2, 100)),
        ("GET after tail (10 missed) limit=500", lambda size: (size - 10, 500)),
        ("GET after last_seq (caught up)", lambda size: (size, 100)),
    ]
    servers = {
        variant: BenchServer({"DATABASE_URL": os.environ["DATABASE_URL"], **extra_env})
        for variant, extra_env in HTTP_VARIANTS.items()
    }
    with ExitStack() as stack:
        conns = {}
        for variant, server in servers.items():
            stack.enter_context(server)
            conns[variant] = http.client.HTTPConnection(server.host, server.port, timeout=30)
            stack.callback(conns[variant].close)

        def getter(variant: str, path: str) -> Callable[[], None]:
            server = servers[variant]

            def get() -> None:
                status, body = http_get(server.host, server.port, path, cookie, conns[variant])
                if status != 200:
                    raise RuntimeError(f"GET {path}: {status} {body[:200]!r}")

            return get

        for name, params in cases:
            calls = {}
            for variant in servers:
                for label, (room, size) in rooms.items():
                    after, limit = params(size)
                    query = urllib.parse.urlencode(
                        {"after": after, "limit": limit, "format": "json"}
                    )
                    path = f"/rooms/{room.slug}/entries/?{query}"
                    calls[f"{variant}|{label}"] = getter(variant, path)
            samples = time_interleaved(calls, repeats, budget_seconds=10)
            for key, values in samples.items():
                variant, label = key.split("|")
                results.append(
                    {"variant": variant, "room": label, "case": name, **summary_ms(values)}
                )
    return results, report_server_problems(servers)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=1_000_000, help="entries in the big room")
    parser.add_argument("--baseline", type=int, default=1_000, help="entries in the baseline room")
    parser.add_argument(
        "--medium",
        type=int,
        default=None,
        help="entries in a third, medium room (default: entries / 20; 0: none)",
    )
    parser.add_argument("--repeats", type=int, default=200, help="timed calls per case and room")
    parser.add_argument(
        "--budget", type=float, default=6.0, help="seconds per case before stopping early"
    )
    parser.add_argument("--no-http", action="store_true", help="skip the HTTP route timing")
    parser.add_argument("--keep-db", action="store_true", help=f"keep the {DB_NAME} database")
    args = parser.parse_args(argv)
    if args.medium is None:
        args.medium = args.entries // 20
    if args.baseline < 1000 or args.entries < args.baseline:
        parser.error("need --entries >= --baseline >= 1000")
    if args.medium and not args.baseline <= args.medium <= args.entries:
        parser.error("need --baseline <= --medium <= --entries")

    with bench_database(keep=args.keep_db):
        return _run(args)


def _load(args: argparse.Namespace) -> tuple[dict[str, tuple[Any, int]], dict[str, Any]]:
    from django.db import connection

    from rooms.models import Entry

    table = Entry._meta.db_table
    authors, rare = create_users()
    sizes = {"big": args.entries, "medium": args.medium, "baseline": args.baseline}
    rooms: dict[str, tuple[Any, int]] = {}
    load: dict[str, Any] = {}
    for label, size in sizes.items():
        if not size:
            continue
        with stage(f"load room {label}: {size:,} entries"):
            started = time.perf_counter()
            room = load_room(slug=label, count=size, owner=authors[0], authors=authors, rare=rare)
            load[f"{label}_seconds"] = round(time.perf_counter() - started, 2)
        rooms[label] = (room, size)
    with stage("VACUUM ANALYZE"):
        started = time.perf_counter()
        with connection.cursor() as cursor:
            cursor.execute(f"VACUUM ANALYZE {table}")
        load["vacuum_analyze_seconds"] = round(time.perf_counter() - started, 2)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_size_pretty(pg_total_relation_size(%s))", [table])
        load["table_size"] = cursor.fetchone()[0]
        cursor.execute(
            "SELECT indexrelname, pg_size_pretty(pg_relation_size(indexrelid))"
            " FROM pg_stat_user_indexes WHERE relname = %s ORDER BY indexrelname",
            [table],
        )
        load["indexes"] = dict(cursor.fetchall())
    return rooms, load


def _run(args: argparse.Namespace) -> int:
    from rooms.models import Entry

    table = Entry._meta.db_table
    rooms, load = _load(args)
    print(f"table {table}: {load['table_size']}; indexes: {load['indexes']}")

    per_room = {label: cases_for(room, size) for label, (room, size) in rooms.items()}
    results: list[dict[str, Any]] = []
    plans: dict[str, str] = {}
    warnings: list[str] = []
    failed = False
    header = f"{'case':<48} {'room':>8} {'rows':>5} {'median ms':>10} {'p95 ms':>8}  plan"
    print(f"\nselector timings (median and p95 of up to {args.repeats} calls)\n{header}")
    for position, (name, _call, index, page) in enumerate(per_room["big"]):
        cases = {label: cases[position] for label, cases in per_room.items()}
        samples = time_interleaved(
            {label: case[1] for label, case in cases.items()}, args.repeats, args.budget
        )
        for label, (_name, call, _index, _page) in cases.items():
            outcome = call()
            rows = len(outcome) if isinstance(outcome, list) else len(outcome.entries)
            queries = captured_sql(call)
            text, plan = explain(queries[-1])
            check = check_plan(plan, table, index or "entry_room_seq_unique", page + 1)
            check["required"] = index is not None and label == "big"
            if check["required"] and not check["ok"]:
                failed = True
            if index is not None and label != "big" and not check["ok"]:
                warnings.append(f"{label}: {name}: {'; '.join(check['problems'])}")
            plans[f"{label}: {name}"] = text
            result = {
                "room": label,
                "room_entries": rooms[label][1],
                "case": name,
                "rows": rows,
                "queries": len(queries),
                **summary_ms(samples[label]),
                "plan": check,
            }
            results.append(result)
            verdict = "ok" if check["ok"] else "; ".join(check["problems"])
            if index is None:
                verdict = f"(info) {verdict}"
            print(
                f"{name:<48} {label:>8} {rows:>5} {result['median_ms']:>10.3f}"
                f" {result['p95_ms']:>8.3f}  {verdict}",
                flush=True,
            )

    ratios = _ratios(results, rooms)
    print("\nratio = median on the room / median on the baseline room, same run, calls interleaved")
    print(f"{'case':<48} {'room':>8} {'ms':>9} {'base ms':>9} {'ratio':>7}")
    for r in ratios:
        print(
            f"{r['case']:<48} {r['room']:>8} {r['median_ms']:>9.3f}"
            f" {r['baseline_median_ms']:>9.3f} {r['ratio']:>7.2f}"
        )

    print("\nEXPLAIN (ANALYZE, BUFFERS) of the selectors' own SQL:")
    for key in (
        "big: after middle limit=100",
        "big: after tail (10 missed) limit=500",
        "big: before middle limit=100 (scroll back)",
        "baseline: after middle limit=100",
        "medium: after tail (10 missed) limit=500",
        "big: history author=frequent newest limit=100",
        "big: history author=rare newest limit=100",
        "big: room_authors (history page)",
    ):
        if key in plans:
            print(f"\n-- {key}\n{plans[key]}")

    http_results: list[dict[str, Any]] = []
    server_problems: dict[str, Any] = {}
    if not args.no_http:
        with stage("\nHTTP route on a real server (one keep-alive connection)"):
            from accounts.models import User

            cookie = session_cookie(User.objects.get(username=AUTHORS[0]))
            http_rooms = {label: rooms[label] for label in ("big", "baseline")}
            http_results, server_problems = run_http(http_rooms, cookie, min(args.repeats, 100))
        columns = ("case", "database connections", "room", "median ms", "p95 ms")
        print("{:<38} {:<26} {:>8} {:>10} {:>8}".format(*columns))
        for r in http_results:
            print(
                f"{r['case']:<38} {r['variant']:<26} {r['room']:>8}"
                f" {r['median_ms']:>10.3f} {r['p95_ms']:>8.3f}"
            )

    path = write_results(
        "after_query",
        {
            "bench": "after_query",
            "command": " ".join([".venv/bin/python", "bench/after_query.py", *sys.argv[1:]]),
            "machine": machine(),
            "postgres": pg_version(),
            "rooms": {label: size for label, (_room, size) in rooms.items()},
            "repeats": args.repeats,
            "load": load,
            "results": results,
            "ratios": ratios,
            "http": http_results,
            "server_logs": server_problems,
            "plans": plans,
            "plans_ok": not failed,
            "plan_warnings": warnings,
        },
    )
    print(f"\nresults: {path.relative_to(ROOT)}")
    for warning in warnings:
        print(f"WARNING (not the big room): {warning}")
    if failed:
        print("FAIL: on the big room, a catch-up or scroll-back query is not an index range scan")
        return 1
    print("OK: on the big room, catch-up and scroll-back read a range of entry_room_seq_unique")
    return 0


def _ratios(results: list[dict[str, Any]], rooms: dict[str, Any]) -> list[dict[str, Any]]:
    baseline = {r["case"]: r for r in results if r["room"] == "baseline"}
    out = []
    for label in rooms:
        if label == "baseline":
            continue
        for r in results:
            if r["room"] != label:
                continue
            base = baseline[r["case"]]
            out.append(
                {
                    "case": r["case"],
                    "room": label,
                    "median_ms": r["median_ms"],
                    "baseline_median_ms": base["median_ms"],
                    "ratio": round(r["median_ms"] / base["median_ms"], 2),
                    "p95_ms": r["p95_ms"],
                    "baseline_p95_ms": base["p95_ms"],
                }
            )
    return out


if __name__ == "__main__":
    sys.exit(main())
