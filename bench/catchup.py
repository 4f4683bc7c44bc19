"""Benchmark: from socket open to a caught-up client, against a real uvicorn process.

A client that knows `last_seq = 0` opens `/ws/rooms/<slug>/` (JSON subprotocol, session cookie,
Origin header), then runs the contract's catch-up: GET `entries/?after=<last>&limit=500&format=json`
pages over HTTP until `has_more` is false, holding live entries that arrive meanwhile and applying
everything in seq order, dropping any seq it already has. The time measured runs from the start of
the connect to the moment every one of the K missed entries has been applied, in order (checked on
every run). K = 10, 100 and 1,000; the baseline is K = 0 (connect plus one empty fetch), measured in
the same run. Reported: median and p95, and the ratios to the baseline.

Two servers run side by side and every measurement takes turns between them (in a shuffled order):
the baseline with `DATABASE_POOL=0` (CONN_MAX_AGE=0: a new database connection for every request
and every `database_sync_to_async` call) and the app as shipped, with Django's psycopg pool
(--no-pool-variant skips the pooled run).

Also:
- a live-merge check: while a client catches up on 1,000 entries, another member submits 5
  expressions over their own socket; the client must end with every seq exactly once, in order;
- fan-out: N sockets in one room (1, 50, 200), one member submits an expression, and the time from
  the send until each socket has the entry is recorded (median over the sockets and the slowest);
  the receiving sockets live in this process, so their own reading is part of the time.

    .venv/bin/python bench/catchup.py [--repeats 10] [--fanout 1,50,200] [--quick]

The server gets the bench's own database (`calcrooms_bench`, recreated) and Redis key prefix
(removed at the end), and a larger expression bucket (EXPRESSION_BUCKET_CAPACITY) so the rate
limit does not throttle the bench's submissions. Results: var/bench/catchup.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import json
import os
import random
import statistics
import sys
import time
import uuid
from collections.abc import Sequence
from typing import Any

from after_query import (
    DB_NAME,
    HTTP_VARIANTS,
    ROOT,
    BenchServer,
    bench_database,
    http_get,
    machine,
    report_server_problems,
    session_cookie,
    stage,
    summary_ms,
    write_results,
)

SUBPROTOCOL = "calcrooms.v1.json"
PAGE_LIMIT = 500


class CatchUpError(Exception):
    """The client saw a gap, a duplicate applied twice, or entries out of order."""


async def open_socket(server: BenchServer, slug: str, cookie: str) -> Any:
    from websockets.asyncio.client import connect

    return await connect(
        f"ws://{server.host}:{server.port}/ws/rooms/{slug}/",
        subprotocols=[SUBPROTOCOL],  # type: ignore[list-item]
        additional_headers={"Origin": server.origin, "Cookie": cookie},
        compression=None,
        proxy=None,
        ping_interval=None,
        open_timeout=20,
        max_size=2**20,
    )


class CatchUpClient:
    """The contract's catch-up, as room.js does it: live first, then fetch, merge by seq."""

    def __init__(self, server: BenchServer, slug: str, cookie: str, last_seq: int) -> None:
        self.server = server
        self.slug = slug
        self.cookie = cookie
        self.last = last_seq
        self.applied: list[int] = []
        self.held: dict[int, dict[str, Any]] = {}
        self.fetching = False
        self.fetch_task: asyncio.Task[None] | None = None
        self.wanted = last_seq  # the newest seq a `sync` frame announced
        self.dropped = 0  # live or fetched entries the client already had (dropped, as it should)
        self.fetches = 0
        self.pages = 0
        self.ws: Any = None
        self.reader: asyncio.Task[None] | None = None
        self.http: http.client.HTTPConnection | None = None
        self.changed = asyncio.Event()
        self.error: Exception | None = None

    async def open(self) -> None:
        self.ws = await open_socket(self.server, self.slug, self.cookie)
        self.reader = asyncio.create_task(self._read())

    async def close(self) -> None:
        if self.reader is not None:
            self.reader.cancel()
        if self.ws is not None:
            await self.ws.close()
        if self.http is not None:
            self.http.close()

    async def _read(self) -> None:
        try:
            async for message in self.ws:
                frame = json.loads(message)
                if frame.get("type") == "entry":
                    self._on_live(frame["entry"])
                elif frame.get("type") == "sync" and frame["last_seq"] > self.last:
                    self.wanted = max(self.wanted, frame["last_seq"])
                    self._need_fetch()
        except CatchUpError as exc:
            self.error = exc
            self.changed.set()

    def check(self, first: int, last: int) -> None:
        """Every seq from `first` to `last` applied exactly once, in order, and nothing else."""
        if self.error is not None:
            raise self.error
        if self.applied != list(range(first, last + 1)):
            raise CatchUpError(f"applied {len(self.applied)} entries, expected {first}..{last}")

    def _on_live(self, entry: dict[str, Any]) -> None:
        if entry["seq"] <= self.last:
            self.dropped += 1
            return
        self.held[entry["seq"]] = entry
        if not self.fetching:
            self._drain()

    def _apply(self, entry: dict[str, Any]) -> None:
        if entry["seq"] != self.last + 1:
            raise CatchUpError(f"applying seq {entry['seq']} after {self.last}")
        self.applied.append(entry["seq"])
        self.last = entry["seq"]
        self.changed.set()

    def _drain(self) -> None:
        """Apply held live entries that follow on; a gap left over means fetching again."""
        for seq in [s for s in self.held if s <= self.last]:
            del self.held[seq]
            self.dropped += 1
        while self.last + 1 in self.held:
            self._apply(self.held.pop(self.last + 1))
        if self.held:
            self._need_fetch()

    def _need_fetch(self) -> None:
        """Start a fetch unless one is running (a running one reads on to `wanted`)."""
        if not self.fetching:
            self.fetching = True
            self.fetch_task = asyncio.create_task(self._fetch())

    async def catch_up(self) -> None:
        """Fetch what was missed, and wait until no fetch is running any more."""
        self._need_fetch()
        while self.fetch_task is not None and not self.fetch_task.done():
            await self.fetch_task  # a gap found at its end may start the next one
        if self.fetch_task is not None:
            self.fetch_task.result()

    async def _fetch(self) -> None:
        """GET pages after the last applied seq until has_more is false (and a `sync` seen
        meanwhile is covered), then apply the held live entries."""
        self.fetching = True
        self.fetches += 1
        try:
            if self.http is None:
                self.http = http.client.HTTPConnection(
                    self.server.host, self.server.port, timeout=30
                )
            while True:
                query = f"after={self.last}&limit={PAGE_LIMIT}&format=json"
                path = f"/rooms/{self.slug}/entries/?{query}"
                status, body = await asyncio.to_thread(
                    http_get, self.server.host, self.server.port, path, self.cookie, self.http
                )
                if status != 200:
                    raise CatchUpError(f"GET {path}: {status} {body[:200]!r}")
                page = json.loads(body)
                self.pages += 1
                for entry in page["entries"]:
                    if entry["seq"] <= self.last:
                        self.dropped += 1
                    else:
                        self._apply(entry)
                if not page["has_more"] and self.last >= min(self.wanted, page["last_seq"]):
                    break
        finally:
            self.fetching = False
        self._drain()

    async def wait_for(self, last_seq: int, timeout: float) -> None:
        deadline = time.perf_counter() + timeout
        while self.last < last_seq and self.error is None:
            self.changed.clear()
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                raise CatchUpError(f"stuck at seq {self.last}, waiting for {last_seq}")
            try:
                await asyncio.wait_for(self.changed.wait(), remaining)
            except TimeoutError:
                continue


async def catch_up_once(server: BenchServer, slug: str, cookie: str, missed: int) -> dict[str, Any]:
    """Connect and catch up on `missed` entries from last_seq 0; check the result; time it."""
    client = CatchUpClient(server, slug, cookie, last_seq=0)
    started = time.perf_counter()
    try:
        await client.open()
        opened = time.perf_counter()
        await client.catch_up()
        done = time.perf_counter()
        client.check(1, missed)
    finally:
        await client.close()
    return {
        "total": done - started,
        "connect": opened - started,
        "fetch": done - opened,
        "pages": client.pages,
    }


async def live_merge_once(
    server: BenchServer, slug: str, reader_cookie: str, writer_cookie: str, live: int
) -> dict[str, Any]:
    """A client catches up from 0 while another member submits `live` expressions."""
    writer = await open_socket(server, slug, writer_cookie)
    mine = {str(uuid.uuid4()) for _ in range(live)}
    acked: dict[str, int] = {}

    async def writer_reads() -> None:
        async for message in writer:
            frame = json.loads(message)
            if frame.get("type") == "entry" and frame["entry"]["client_id"] in mine:
                acked[frame["entry"]["client_id"]] = frame["entry"]["seq"]
                if len(acked) == live:
                    return
            elif frame.get("type") == "error":
                raise CatchUpError(f"submission refused: {frame}")

    reading = asyncio.create_task(writer_reads())
    client = CatchUpClient(server, slug, reader_cookie, last_seq=0)
    try:
        started = time.perf_counter()
        await client.open()

        async def submit() -> None:
            for index, client_id in enumerate(sorted(mine)):
                frame = {"type": "expression", "expression": f"{index}*7", "client_id": client_id}
                await writer.send(json.dumps(frame))
                await asyncio.sleep(0.002)

        await asyncio.gather(client.catch_up(), submit())
        await asyncio.wait_for(reading, 10)
        final = max(acked.values())
        await client.wait_for(final, 10)
        caught_up = time.perf_counter()
        client.check(1, final)
    finally:
        reading.cancel()
        await client.close()
        await writer.close()
    return {
        "total": caught_up - started,
        "entries": final,
        "live_entries_dropped_as_duplicates": client.dropped,
        "fetches": client.fetches,
    }


async def fanout_run(
    servers: dict[str, BenchServer],
    reader_cookie: str,
    writer_cookie: str,
    sockets: int,
    submissions: int,
) -> dict[str, dict[str, Any]]:
    """`sockets` readers in a room on each server; submissions take turns between the servers;
    the time from the send until each reader has the entry."""
    pending: dict[str, tuple[float, list[float], asyncio.Event]] = {}

    async def reader_loop(ws: Any) -> None:
        async for message in ws:
            now = time.perf_counter()
            frame = json.loads(message)
            if frame.get("type") == "entry":
                slot = pending.get(frame["entry"]["client_id"])
                if slot is not None:
                    slot[1].append(now)
                    if len(slot[1]) == sockets:
                        slot[2].set()

    readers: dict[str, list[Any]] = {}
    writers: dict[str, Any] = {}
    connect_seconds: dict[str, float] = {}
    tasks = []
    for index, (variant, server) in enumerate(servers.items()):
        slug = f"fanout-{index}"  # a room per server: the servers share the channel layer
        started = time.perf_counter()
        readers[variant] = []
        for start in range(0, sockets, 25):
            batch = min(25, sockets - start)
            readers[variant] += await asyncio.gather(
                *(open_socket(server, slug, reader_cookie) for _ in range(batch))
            )
        connect_seconds[variant] = time.perf_counter() - started
        tasks += [asyncio.create_task(reader_loop(ws)) for ws in readers[variant]]
        writers[variant] = await open_socket(server, slug, writer_cookie)
    await asyncio.sleep(1.5)  # let the joins' presence broadcasts (one a second) settle
    medians: dict[str, list[float]] = {variant: [] for variant in servers}
    slowest: dict[str, list[float]] = {variant: [] for variant in servers}
    try:
        for index in range(submissions):
            for variant in servers:
                client_id = str(uuid.uuid4())
                slot: tuple[float, list[float], asyncio.Event] = (
                    time.perf_counter(),
                    [],
                    asyncio.Event(),
                )
                pending[client_id] = slot
                frame = {"type": "expression", "expression": f"{index}+1", "client_id": client_id}
                await writers[variant].send(json.dumps(frame))
                try:
                    await asyncio.wait_for(slot[2].wait(), 15)
                except TimeoutError:
                    raise CatchUpError(
                        f"{variant}: only {len(slot[1])} of {sockets} sockets got the entry in 15 s"
                    ) from None
                latencies = [arrived - slot[0] for arrived in slot[1]]
                medians[variant].append(statistics.median(latencies))
                slowest[variant].append(max(latencies))
                del pending[client_id]
                await asyncio.sleep(0.2)
    finally:
        for task in tasks:
            task.cancel()
        everything = [ws for group in readers.values() for ws in group] + list(writers.values())
        await asyncio.gather(*(ws.close() for ws in everything))
    # Everyone closed cleanly at the same moment: the room should show nobody within a second.
    await asyncio.sleep(1.5)
    online_after = {}
    for index, (variant, server) in enumerate(servers.items()):
        path = f"/rooms/fanout-{index}/presence/"
        status, body = await asyncio.to_thread(
            http_get, server.host, server.port, path, writer_cookie
        )
        online = json.loads(body)["online"] if status == 200 else [f"HTTP {status}"]
        online_after[variant] = [person["username"] for person in online]
    return {
        variant: {
            "sockets": sockets,
            "submissions": submissions,
            "connect_all_seconds": round(connect_seconds[variant], 3),
            "median_over_sockets": summary_ms(medians[variant]),
            "slowest_socket": summary_ms(slowest[variant]),
            "online_1_5_s_after_all_closed": online_after[variant],
        }
        for variant in servers
    }


def setup_rooms(sizes: Sequence[int]) -> dict[str, Any]:
    """Users with sessions, one room per catch-up size (K entries), a live-merge and a fan-out
    room; both users are members of every room."""
    from accounts.models import User
    from rooms.models import Entry, Membership, Room

    reader = User.objects.create(username="bench-reader", email="reader@example.com", password="!")
    writer = User.objects.create(username="bench-writer", email="writer@example.com", password="!")
    slugs: dict[str, Any] = {"catchup": {}}
    rooms = [(f"catchup-{k}", k) for k in sizes] + [("live-merge", 1000)]
    rooms += [(f"fanout-{index}", 0) for index in range(len(HTTP_VARIANTS))]
    for slug, count in rooms:
        room = Room.objects.create(slug=slug, name=slug, owner=writer, last_seq=count)
        Membership.objects.create(room=room, user=writer, role=Membership.Role.OWNER)
        Membership.objects.create(room=room, user=reader)
        Entry.objects.bulk_create(
            [
                Entry(
                    room=room,
                    seq=seq,
                    author=writer,
                    expression=f"{seq}+1",
                    result=str(seq + 1),
                )
                for seq in range(1, count + 1)
            ],
            batch_size=1000,
        )
    for k in sizes:
        slugs["catchup"][k] = f"catchup-{k}"
    slugs["reader_cookie"] = session_cookie(reader)
    slugs["writer_cookie"] = session_cookie(writer)
    return slugs


def _merge_summary(merges: list[dict[str, Any]]) -> dict[str, Any]:
    merge = {
        "runs": len(merges),
        "ok": True,  # a run that went wrong raised CatchUpError
        "total": summary_ms([m["total"] for m in merges]),
        "dropped_as_duplicates": [m["live_entries_dropped_as_duplicates"] for m in merges],
        "fetches": [m["fetches"] for m in merges],
    }
    print(
        f"\nlive merge: {merge['runs']} runs of catching up on 1,000+ entries while 5 expressions"
        " are submitted: every seq exactly once, in order;"
        f" median {merge['total']['median_ms']:.1f} ms;"
        f" duplicates dropped per run {merge['dropped_as_duplicates']}"
    )
    return merge


async def run_all(
    args: argparse.Namespace, servers: dict[str, BenchServer], setup: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    reader_cookie = setup["reader_cookie"]
    writer_cookie = setup["writer_cookie"]
    sizes = [0, *args.sizes]
    rng = random.Random(args.seed)

    # Warm each server: templates, URL resolver, first database connections.
    for server in servers.values():
        for k in sizes:
            await catch_up_once(server, setup["catchup"][k], reader_cookie, k)

    # Every (server, size) pair takes turns in a shuffled order each round, so load from other
    # processes and any after-effect of the previous run spread over all of them alike.
    samples: dict[tuple[str, int], list[dict[str, Any]]] = {
        (variant, k): [] for variant in servers for k in sizes
    }
    for _repeat in range(args.repeats):
        order = list(samples)
        rng.shuffle(order)
        for variant, k in order:
            run = await catch_up_once(servers[variant], setup["catchup"][k], reader_cookie, k)
            samples[(variant, k)].append(run)
            await asyncio.sleep(0.2)  # let the server finish the close (presence leave)

    results: dict[str, Any] = {variant: {"catchup": [], "fanout": []} for variant in servers}
    print(f"\ncatch-up from last_seq 0 ({args.repeats} runs each, taking turns in shuffled order)")
    print(
        f"{'server database connections':<28} {'missed':>7} {'pages':>5} {'median ms':>10}"
        f" {'p95 ms':>8} {'connect ms':>11} {'fetch ms':>9} {'ratio':>6}"
    )
    for variant in servers:
        base = statistics.median(run["total"] for run in samples[(variant, 0)])
        for k in sizes:
            runs = samples[(variant, k)]
            total = summary_ms([run["total"] for run in runs])
            connect = summary_ms([run["connect"] for run in runs])
            fetch = summary_ms([run["fetch"] for run in runs])
            ratio = round(statistics.median(run["total"] for run in runs) / base, 2)
            results[variant]["catchup"].append(
                {
                    "missed": k,
                    "pages": runs[0]["pages"],
                    "total": total,
                    "connect": connect,
                    "fetch": fetch,
                    "ratio_to_k0": ratio,
                }
            )
            print(
                f"{variant:<28} {k:>7} {runs[0]['pages']:>5} {total['median_ms']:>10.2f}"
                f" {total['p95_ms']:>8.2f} {connect['median_ms']:>11.2f}"
                f" {fetch['median_ms']:>9.2f} {ratio:>6.2f}"
            )

    merge = None
    if args.merge_repeats:
        default = next(iter(servers.values()))
        merges = []
        for _repeat in range(args.merge_repeats):
            merges.append(
                await live_merge_once(default, "live-merge", reader_cookie, writer_cookie, live=5)
            )
            await asyncio.sleep(0.2)
        merge = _merge_summary(merges)

    print("\nfan-out: one submission, N sockets in the room (ms from send to receipt)")
    columns = ("server database connections", "sockets", "connect s", "median", "slowest", "max")
    print("{:<28} {:>7} {:>9} {:>8} {:>8} {:>8}  online 1.5 s after all closed".format(*columns))
    for sockets in args.fanout:
        outcome = await fanout_run(servers, reader_cookie, writer_cookie, sockets, args.submissions)
        for variant, result in outcome.items():
            results[variant]["fanout"].append(result)
            print(
                f"{variant:<28} {sockets:>7} {result['connect_all_seconds']:>9.2f}"
                f" {result['median_over_sockets']['median_ms']:>8.2f}"
                f" {result['slowest_socket']['median_ms']:>8.2f}"
                f" {result['slowest_socket']['max_ms']:>8.2f}"
                f"  {result['online_1_5_s_after_all_closed'] or 'nobody'}"
            )
        await asyncio.sleep(1)
    return results, merge


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10, help="runs per catch-up size")
    parser.add_argument(
        "--sizes", default="10,100,1000", help="missed entries per catch-up size (K=0 is added)"
    )
    parser.add_argument("--merge-repeats", type=int, default=5, help="live-merge runs")
    parser.add_argument("--fanout", default="1,50,200", help="socket counts for the fan-out")
    parser.add_argument("--submissions", type=int, default=20, help="submissions per fan-out size")
    parser.add_argument("--seed", type=int, default=1, help="seed of the turn order")
    parser.add_argument("--quick", action="store_true", help="fewer runs, fan-out up to 50")
    parser.add_argument(
        "--no-pool-variant",
        action="store_true",
        help="only the connect-per-request baseline (skip the pooled server, the default config)",
    )
    parser.add_argument("--keep-db", action="store_true", help=f"keep the {DB_NAME} database")
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats = min(args.repeats, 5)
        args.merge_repeats = min(args.merge_repeats, 3)
        args.fanout = "1,50"
        args.submissions = min(args.submissions, 10)
    args.sizes = [int(k) for k in args.sizes.split(",") if k.strip() and int(k) > 0]
    args.fanout = [int(n) for n in str(args.fanout).split(",") if n.strip()]

    with bench_database(keep=args.keep_db):
        variants = dict(list(HTTP_VARIANTS.items())[: 1 if args.no_pool_variant else None])
        servers = {
            variant: BenchServer(
                {
                    "DATABASE_URL": os.environ["DATABASE_URL"],
                    "EXPRESSION_BUCKET_CAPACITY": "100000",
                    **extra_env,
                }
            )
            for variant, extra_env in variants.items()
        }
        setup = setup_rooms([0, *args.sizes])
        with contextlib.ExitStack() as stack:
            for server in servers.values():
                stack.enter_context(server)
            with stage(f"servers ({', '.join(servers)})"):
                results, merge = asyncio.run(run_all(args, servers, setup))
        server_problems = report_server_problems(servers)

    path = write_results(
        "catchup",
        {
            "bench": "catchup",
            "command": " ".join([".venv/bin/python", "bench/catchup.py", *sys.argv[1:]]),
            "machine": machine(),
            "repeats": args.repeats,
            "page_limit": PAGE_LIMIT,
            "variants": results,
            "live_merge": merge,
            "server_logs": server_problems,
        },
    )
    print(f"results: {path.relative_to(ROOT)}")
    failures = [
        f"{variant}: {fan['sockets']} sockets closed, still online after 1.5 s:"
        f" {fan['online_1_5_s_after_all_closed']}"
        for variant, result in results.items()
        for fan in result["fanout"]
        if fan["online_1_5_s_after_all_closed"]
    ]
    failures += [
        f"{variant}: the server logged {problems['tracebacks']} tracebacks {problems['exceptions']}"
        for variant, problems in server_problems.items()
        if problems["tracebacks"]
    ]
    for failure in failures:
        print(f"FAIL: {failure}")
    if failures:
        return 1
    print("OK: every catch-up applied each seq once, in order; the servers logged no errors")
    return 0


if __name__ == "__main__":
    sys.exit(main())
