"""Benchmark: the live path from outside, Calcrooms (A) beside two baselines (B0, B1), one run.

- A: Calcrooms, a real uvicorn process with the Makefile's UVICORN_FLAGS, on PostgreSQL (the
  bench's own database) and Redis (its own key prefix); the JSON subprotocol, session cookies.
- B0: `bench/b0_server.py`, bare `websockets` + uvloop broadcast: the floor for Python here.
- B1: `bench/b1_asgi.py`, the Channels tutorial chat consumer on channels-redis's core layer,
  served by the same uvicorn with the same flags: what Channels itself costs.

The load is open loop, from separate processes (`bench/loadgen.py`, several receivers' processes
and one sender's) over loopback: each message is stamped with its *scheduled* send time, so a
sender or server that falls behind shows as latency (coordinated omission counted); receivers
record latency per delivery and count loss, duplicates and reordering per receiver. With
`taskset` and 2+ CPUs the servers run on CPU 0 and everything of the load on CPU 1 (PostgreSQL
and Redis float); the load generator's own CPU is recorded beside every phase.

Scenarios (servers take turns within each run; medians over the runs):

- fanout: one room, N receivers (10, 100, 1,000), one sender at 20 messages/s for 15 s;
  latency p50/p99, loss, server CPU per delivery;
- saturation: at 100 and 1,000 receivers, the highest rate with p99 < 250 ms and zero loss
  (doubling from 10/s, then bisecting; bounded in steps);
- throughput: 50 rooms x 10 members, every member submitting, offered 100 ... 2,000/s in total;
  accepted/s and p99 to the room; for A afterwards every acknowledged expression must be in
  PostgreSQL exactly once (by client_id); A on one process and on two (members split between
  them, both on the server CPU);
- idle: 1,000 / 5,000 / 10,000 sockets held in one room by clients offering permessage-deflate:
  server RSS per socket, idle CPU % over 10 s, Redis commands/s (INFO stats, less the rate of
  the same Redis just before: the machine's Redis is shared), one broadcast's p99 to all;
- catchup (A only: the baselines keep no history): 1,000 missed entries applied after the
  socket opened; 200 clients reconnecting at once with 100 missed each.

    .venv/bin/python bench/live.py [--quick] [--runs 3] [--only fanout --only idle ...]

Results: var/bench/live.json and var/bench/live.md (versions, settings, commit, CPU pinning,
load average). Exit status 1 when an exactly-once or ordering check of A fails (an acknowledged
expression missing from PostgreSQL or stored twice, an entry delivered twice on a connection or
out of seq order on a connection to a single process) or an A server logged a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import importlib.metadata
import json
import math
import os
import re
import resource
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from after_query import (
    OUT_DIR,
    PG_SERVER,
    PYTHON,
    REDIS_URL,
    ROOT,
    bench_environment,
    clean_redis,
    django_setup,
    drop_database,
    free_port,
    log_problems,
    machine,
    pg_version,
    recreate_database,
)

DB_NAME = os.environ.get("BENCH_DB_NAME", "calcrooms_bench")
IDLE_WINDOW_SECONDS = 20.0  # the product's SYNC_INTERVAL_SECONDS
SERVERS = ("A", "B0", "B1")
SCENARIOS = ("fanout", "saturation", "throughput", "idle", "catchup")
LOG_STEP = math.log(1.01)  # loadgen.py's histogram buckets
P99_LIMIT_MS = 250.0


def uvicorn_flags() -> list[str]:
    """The product's uvicorn flags, read from the Makefile (the one place they are written)."""
    text = (ROOT / "Makefile").read_text()
    match = re.search(r"^UVICORN_FLAGS\s*:?=\s*(.*)$", text, re.MULTILINE)
    if not match:
        raise RuntimeError("UVICORN_FLAGS not found in the Makefile")
    return match.group(1).split()


PIN = True  # --no-pin: let the scheduler place everything (a machine others are loading)


def pinning() -> dict[str, Any]:
    """Servers on CPU 0, the load (workers and this process) on CPU 1, when possible."""
    cpus = sorted(os.sched_getaffinity(0))
    if PIN and shutil.which("taskset") and len(cpus) >= 2:
        return {"pinned": True, "server_cpus": str(cpus[0]), "load_cpus": str(cpus[1])}
    return {"pinned": False, "server_cpus": None, "load_cpus": None}


def cpu_busy_ticks() -> dict[int, tuple[int, int]]:
    """Per CPU (busy, total) clock ticks from /proc/stat: how busy each core was, whoever kept
    it busy (the machine is shared; a load core busy near 100 % means the load generator may
    have been short of CPU)."""
    out = {}
    for line in Path("/proc/stat").read_text().splitlines():
        name, *fields = line.split()
        if name.startswith("cpu") and name != "cpu":
            ticks = [int(value) for value in fields]
            idle = ticks[3] + ticks[4]  # idle + iowait
            out[int(name[3:])] = (sum(ticks[:8]) - idle, sum(ticks[:8]))
    return out


def busy_pct(before: dict[int, tuple[int, int]], after: dict[int, tuple[int, int]]) -> dict:
    return {
        str(cpu): round(
            100 * (after[cpu][0] - before[cpu][0]) / max(1, after[cpu][1] - before[cpu][1]), 1
        )
        for cpu in after
        if cpu in before
    }


def _raise_open_files() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _server_child() -> None:
    """In the server's child before exec: as many file descriptors as allowed, and SIGTERM
    when this bench process dies, however it dies (Linux PR_SET_PDEATHSIG; kept across exec)."""
    _raise_open_files()
    try:
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def _cpu_prefix(cpus: str | None) -> list[str]:
    return ["taskset", "-c", cpus] if cpus else []


# --- Servers -------------------------------------------------------------------------------


class Server:
    """One server process (A, B0 or B1), pinned to the server CPU, with RLIMIT_NOFILE raised."""

    def __init__(self, kind: str, env: dict[str, str], cpus: str | None, label: str = "") -> None:
        self.kind = kind
        self.label = label or kind
        self.host = "127.0.0.1"
        self.port = free_port()
        self.origin = f"http://{self.host}:{self.port}"
        self.env = env
        self.cpus = cpus
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = OUT_DIR / f"live-{self.label}-{self.port}.log"

    def command(self) -> list[str]:
        if self.kind == "B0":
            return [PYTHON, "bench/b0_server.py", "--host", self.host, "--port", str(self.port)]
        app = "project.asgi:application" if self.kind == "A" else "b1_asgi:application"
        extra = [] if self.kind == "A" else ["--app-dir", "bench"]
        return [
            PYTHON, "-m", "uvicorn", app, *extra, "--host", self.host, "--port", str(self.port),
            *uvicorn_flags(), "--log-level", "warning", "--no-access-log",
        ]  # fmt: skip

    def ws_url(self, room: str) -> str:
        if self.kind == "A":
            return f"ws://{self.host}:{self.port}/ws/rooms/{room}/"
        if self.kind == "B1":
            return f"ws://{self.host}:{self.port}/ws/chat/{room}/"
        return f"ws://{self.host}:{self.port}/{room}"

    def start(self) -> Server:
        OUT_DIR.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [*_cpu_prefix(self.cpus), *self.command()],
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=_server_child,
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.label} exited: {self.log_path.read_text()[-2000:]}")
            if self._answers():
                return self
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"{self.label} did not start: {self.log_path.read_text()[-2000:]}")

    def _answers(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=2) as sock:
                if self.kind != "A":
                    return True
                sock.sendall(f"GET /healthz HTTP/1.1\r\nHost: {self.host}\r\n\r\n".encode())
                return sock.recv(64).startswith(b"HTTP/1.1 200")
        except OSError:
            return False

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def cpu_seconds(self) -> float:
        """utime + stime of the server process (all its threads) from /proc/<pid>/stat."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    def stop(self) -> dict[str, Any]:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        problems = log_problems(self.log_path)
        if self.log_path.exists() and not self.log_path.stat().st_size:
            self.log_path.unlink()
        return problems


# --- Load generator processes ----------------------------------------------------------------


class Worker:
    def __init__(self, name: str, cpus: str | None) -> None:
        self.name = name
        self.cpus = cpus
        self.proc: asyncio.subprocess.Process | None = None
        self.lock = asyncio.Lock()

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            *_cpu_prefix(self.cpus), PYTHON, "bench/loadgen.py",
            cwd=ROOT, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            limit=2**28,
        )  # fmt: skip

    async def call(self, cmd: dict[str, Any]) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdin and self.proc.stdout
        async with self.lock:
            self.proc.stdin.write((json.dumps(cmd) + "\n").encode())
            await self.proc.stdin.drain()
            line = await self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"load worker {self.name} died")
        answer = json.loads(line)
        if "error" in answer:
            raise RuntimeError(f"load worker {self.name}: {answer['error']}")
        return answer

    async def stop(self) -> None:
        if self.proc is None:
            return
        with _suppress():
            assert self.proc.stdin
            self.proc.stdin.write(b'{"cmd": "exit"}\n')
            await self.proc.stdin.drain()
        try:
            await asyncio.wait_for(self.proc.wait(), 20)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()


class _suppress:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> bool:
        return True


class Load:
    """The receivers' workers and the sender's worker."""

    def __init__(self, receivers: int, cpus: str | None) -> None:
        self.receivers = [Worker(f"r{index}", cpus) for index in range(receivers)]
        self.sender = Worker("s", cpus)
        self.all = [*self.receivers, self.sender]

    async def start(self) -> None:
        await asyncio.gather(*(worker.start() for worker in self.all))

    async def stop(self) -> None:
        await asyncio.gather(*(worker.stop() for worker in self.all))

    async def each(self, cmd: dict[str, Any], workers: list[Worker] | None = None) -> list[Any]:
        return await asyncio.gather(*(worker.call(cmd) for worker in (workers or self.all)))

    async def connect(
        self,
        server_kind: str,
        specs: list[dict[str, Any]],
        *,
        origin: str | None,
        compression: str | None = None,
        sender_specs: list[dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        """Spread `specs` over the receivers' workers (and `sender_specs` on the sender's)."""
        kind = {"A": "a", "B0": "b0", "B1": "b1"}[server_kind]
        shares: list[list[dict[str, Any]]] = [[] for _ in self.receivers]
        for index, spec in enumerate(specs):
            shares[index % len(shares)].append(spec)
        calls = [
            worker.call(
                {
                    "cmd": "connect",
                    "kind": kind,
                    "origin": origin,
                    "compression": compression,
                    "sockets": share,
                    "concurrency": 25,
                }
            )
            for worker, share in zip(self.receivers, shares, strict=True)
            if share
        ]
        if sender_specs:
            calls.append(
                self.sender.call(
                    {
                        "cmd": "connect",
                        "kind": kind,
                        "origin": origin,
                        "compression": compression,
                        "sockets": sender_specs,
                    }
                )
            )
        started = time.monotonic()
        answers = await asyncio.gather(*calls)
        return {
            "connected": sum(a["connected"] for a in answers),
            "failed": sum(a["failed"] for a in answers),
            "failures": [f for a in answers for f in a["failures"]][:5],
            "seconds": round(time.monotonic() - started, 2),
            "negotiated": next((a["negotiated"] for a in answers if a["negotiated"]), None),
        }

    async def close(self) -> None:
        await self.each({"cmd": "close"})


def hist_percentiles(hist: dict[int, int]) -> dict[str, float | None]:
    total = sum(hist.values())
    if not total:
        return {"p50_ms": None, "p90_ms": None, "p99_ms": None}
    out: dict[str, float | None] = {}
    ordered = sorted(hist.items())
    for label, fraction in (("p50_ms", 0.5), ("p90_ms", 0.9), ("p99_ms", 0.99)):
        rank = max(1, math.ceil(fraction * total))
        seen = 0
        for index, count in ordered:
            seen += count
            if seen >= rank:
                out[label] = round(math.exp((index + 0.5) * LOG_STEP) / 1000, 3)
                break
    return out


async def phase(
    load: Load,
    servers: list[Server],
    *,
    rates: dict[int, float],
    duration: float,
    drain_max: float,
    counter: list[int],
) -> dict[str, Any]:
    """One measured phase: senders at `rates` (sender id -> messages/s) for `duration` s, then
    wait until every worker has been quiet for 0.5 s (at most `drain_max` s); then acks, the
    expected deliveries, and what each receiver saw."""
    counter[0] += 1
    number = counter[0]
    start_at = time.monotonic() + 0.5
    started = await load.each(
        {
            "cmd": "phase",
            "phase": number,
            "start_at": start_at,
            "duration": duration,
            "rates": {str(k): v for k, v in rates.items()},
        }
    )
    await asyncio.sleep(max(0.0, start_at - time.monotonic()))
    cpu0 = [server.cpu_seconds() for server in servers]
    cores0 = cpu_busy_ticks()
    wall0 = time.monotonic()
    end = start_at + duration
    await asyncio.sleep(max(0.0, end - time.monotonic()))
    # Drained: every message answered (acknowledged or refused) and nothing arriving for
    # 0.5 s; or nothing at all arriving for 3 s (a baseline that lost a sender's own echo);
    # at most `drain_max` s after the last send.
    drained = False
    while time.monotonic() < end + drain_max:
        await asyncio.sleep(0.25)
        quiet = await load.each({"cmd": "quiet"})
        silent = min(q["quiet_seconds"] for q in quiet)
        pending = sum(q["pending"] for q in quiet)
        if (silent >= 0.5 and not pending) or silent >= 3.0:
            drained = True
            break
    wall = time.monotonic() - wall0
    cpu = sum(server.cpu_seconds() for server in servers) - sum(cpu0)
    cores = busy_pct(cores0, cpu_busy_ticks())
    acks = await load.each({"cmd": "acks"})
    senders: dict[str, Any] = {}
    errors: dict[str, int] = {}
    for answer in acks:
        senders.update(answer["senders"])
        for code, count in answer["errors"].items():
            errors[code] = errors.get(code, 0) + count
    # What every receiver should get: for Calcrooms each stored (acknowledged) entry; a
    # baseline stores nothing and refuses nothing, so everything that was sent.
    key = "acked" if servers[0].kind == "A" else "sent_seqs"
    expected = {s: {"room": info["room"], "seqs": info[key]} for s, info in senders.items()}
    reports = await load.each({"cmd": "report", "expected": expected})
    hist: dict[int, int] = {}
    for report in reports:
        for index, count in report["hist"].items():
            hist[int(index)] = hist.get(int(index), 0) + count
    total = {
        key: sum(report[key] for report in reports)
        for key in (
            "receivers",
            "deliveries",
            "expected_deliveries",
            "lost",
            "receivers_with_loss",
            "duplicates",
            "reordered",
            "receivers_reordered",
            "room_order_violations",
            "extra",
            "stale",
            "reconnects",
        )
    }
    offered = sum(answer["planned"] for answer in started)
    sent = sum(info["sent"] for info in senders.values())
    acked = sum(len(info["acked"]) for info in senders.values())
    load_cpu = sum(report["cpu_seconds"] for report in reports)
    load_wall = max(report["wall_seconds"] for report in reports)
    close_codes: dict[str, int] = {}
    for report in reports:
        for code, count in report["close_codes"].items():
            close_codes[code] = close_codes.get(code, 0) + count
    result = {
        "phase": number,
        "offered_rate": round(sum(rates.values()), 3),
        "duration_s": duration,
        "offered": offered,
        "sent": sent,
        "acked": acked,
        "refused": errors,
        "sender_max_lag_ms": max((info["max_lag_ms"] for info in senders.values()), default=0),
        **total,
        **hist_percentiles(hist),
        "max_ms": max(report["max_ms"] for report in reports),
        "drained": drained,
        "wall_s": round(wall, 3),
        "server_cpu_s": round(cpu, 3),
        "server_cpu_pct": round(100 * cpu / wall, 1) if wall else None,
        "server_cpu_us_per_delivery": (
            round(cpu / total["deliveries"] * 1e6, 2) if total["deliveries"] else None
        ),
        "deliveries_per_s": round(total["deliveries"] / duration, 1),
        "load_cpu_pct_of_one_core": round(100 * load_cpu / load_wall, 1) if load_wall else None,
        "cpu_busy_pct_by_core": cores,
        "open_sockets": sum(report["open"] for report in reports),
        "close_codes": close_codes,
    }
    result["_senders"] = senders  # for the exactly-once check; dropped from the JSON
    return result


def passes(result: dict[str, Any]) -> bool:
    return (
        result["p99_ms"] is not None
        and result["p99_ms"] < P99_LIMIT_MS
        and result["lost"] == 0
        and result["acked"] == result["offered"]
        and not result["refused"]
    )


# --- Data ----------------------------------------------------------------------------------


def setup_data(users: int, fan_sizes: set[int]) -> dict[str, Any]:
    """Users with sessions; the rooms every scenario uses, each user a member where needed."""
    from importlib import import_module

    from django.conf import settings
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY

    from accounts.models import User
    from rooms.models import Entry, Membership, Room

    people = User.objects.bulk_create(
        [
            User(username=f"bench-{index:04d}", email=f"b{index}@example.com", password="!")
            for index in range(users)
        ]
    )
    sender = User.objects.create(username="bench-sender", email="s@example.com", password="!")
    store = import_module(settings.SESSION_ENGINE).SessionStore
    backend = settings.AUTHENTICATION_BACKENDS[0]

    def cookie(user: Any) -> str:
        session = store()
        session[SESSION_KEY] = str(user.pk)
        session[BACKEND_SESSION_KEY] = backend
        session[HASH_SESSION_KEY] = user.get_session_auth_hash()
        session.create()
        return f"{settings.SESSION_COOKIE_NAME}={session.session_key}"

    cookies = [cookie(user) for user in people]
    # A room per fan-out size with exactly that many members: the product does per-member work
    # for each entry (every member's unread count), so members who are not there would cost too.
    rooms = {f"fan{size}": people[:size] for size in fan_sizes}
    rooms.update(idle=people, cu1000=people[:1], storm=people[:200])
    for index in range(50):
        rooms[f"t{index:02d}"] = people[index * 10 : index * 10 + 10]
    entries = {"cu1000": 1000, "storm": 1100}
    for slug, members in rooms.items():
        room = Room.objects.create(
            slug=slug, name=slug, owner=sender, last_seq=entries.get(slug, 0)
        )
        Membership.objects.bulk_create(
            [Membership(room=room, user=sender, role=Membership.Role.OWNER)]
            + [Membership(room=room, user=user) for user in members]
        )
        Entry.objects.bulk_create(
            [
                Entry(room=room, seq=seq, author=sender, expression=f"{seq}+1", result=str(seq + 1))
                for seq in range(1, entries.get(slug, 0) + 1)
            ],
            batch_size=2000,
        )
    return {"cookies": cookies, "sender_cookie": cookie(sender)}


def exactly_once(senders: dict[str, Any]) -> dict[str, Any]:
    """Every acknowledged expression in PostgreSQL exactly once, by client_id; and how many that
    were sent but never acknowledged were stored all the same."""
    from django.db import connections
    from django.db.models import Count

    from rooms.models import Entry

    acked = [cid for info in senders.values() for cid in info["acked_client_ids"]]
    sent = [cid for info in senders.values() for cid in info["client_ids"]]
    counts: dict[str, int] = {}
    for start in range(0, len(sent), 5000):
        rows = (
            Entry.objects.filter(client_id__in=sent[start : start + 5000])
            .values("client_id")
            .annotate(n=Count("id"))
        )
        counts.update({str(row["client_id"]): row["n"] for row in rows})
    connections.close_all()
    missing = [cid for cid in acked if cid not in counts]
    twice = [cid for cid, n in counts.items() if n > 1]
    acked_set = set(acked)
    return {
        "acknowledged": len(acked),
        "found_once": sum(1 for cid in acked if counts.get(cid) == 1),
        "missing": len(missing),
        "stored_more_than_once": len(twice),
        "sent": len(sent),
        "stored_without_ack": sum(1 for cid in counts if cid not in acked_set),
        "ok": not missing and not twice,
    }


# --- Scenarios -----------------------------------------------------------------------------


class Bench:
    def __init__(
        self,
        args: argparse.Namespace,
        data: dict[str, Any],
        env: dict[str, str],
        pin: dict[str, Any],
    ):
        self.args = args
        self.data = data
        self.env = env
        # Read before this process moved itself to the load CPU: asked again here, it would see
        # one CPU, and every server would start on the load's CPU beside the load generator.
        self.pin = pin
        self.load = Load(args.workers, self.pin["load_cpus"])
        self.counter = [0]
        self.server_logs: dict[str, Any] = {}
        self.checks: list[str] = []
        self.notes: list[str] = []
        self.b1_prefix = f"calcrooms-bench-b1-{secrets.token_hex(4)}"

    # servers

    def server(self, kind: str, label: str = "", origins: list[str] | None = None) -> Server:
        env = dict(self.env)
        if kind == "B1":
            env.update(
                DJANGO_SETTINGS_MODULE="b1_settings",
                B1_REDIS_URL=REDIS_URL,
                B1_REDIS_PREFIX=self.b1_prefix,
            )
        server = Server(kind, env, self.pin["server_cpus"], label)
        if kind == "A":
            server.env["DJANGO_ALLOWED_ORIGINS"] = ",".join(origins or [server.origin])
        return server

    def stopped(self, server: Server) -> None:
        problems = server.stop()
        key = server.label
        seen = self.server_logs.setdefault(key, {"tracebacks": 0, "exceptions": {}, "lines": {}})
        seen["tracebacks"] += problems["tracebacks"]
        for name, count in problems["exceptions"].items():
            seen["exceptions"][name] = seen["exceptions"].get(name, 0) + count
        for line, count in problems["messages"].items():
            seen["lines"][line] = seen["lines"].get(line, 0) + count

    def receivers(self, server: Server, room: str, count: int) -> list[dict[str, Any]]:
        cookies = self.data["cookies"]
        return [
            {"url": server.ws_url(room), "room": room, "cookie": cookies[index % len(cookies)]}
            for index in range(count)
        ]

    def sender(self, server: Server, room: str) -> list[dict[str, Any]]:
        return [
            {
                "url": server.ws_url(room),
                "room": room,
                "cookie": self.data["sender_cookie"],
                "sender": 0,
            }
        ]

    def order(self, run: int) -> list[str]:
        servers = [s for s in SERVERS if s in self.args.servers]
        shift = run % len(servers)
        return servers[shift:] + servers[:shift]

    async def _connected(self, server: Server, room: str, count: int, **kw: Any) -> dict[str, Any]:
        done = await self.load.connect(
            server.kind,
            self.receivers(server, room, count),
            origin=server.origin,
            sender_specs=self.sender(server, room),
            **kw,
        )
        if done["failed"]:
            print(f"    {done['failed']} sockets failed to open: {done['failures'][:2]}")
        await asyncio.sleep(0.5)
        await self._quiet(10.0)  # the joins' presence frames (A) have all arrived
        return done

    def _check_a(self, kind: str, result: dict[str, Any], where: str, processes: int = 1) -> None:
        """A duplicate is always a failure; an entry out of seq order is one on a single
        process (commit order is seq order, and one process delivers in it). Across two
        processes the contract only promises at-most-once live delivery healed by the client's
        merge (DESIGN.md, catch-up), so there it is reported as a note."""
        if kind != "A":
            return
        if result["duplicates"] or (processes == 1 and result["room_order_violations"]):
            self.checks.append(
                f"{where}: {result['duplicates']} duplicate deliveries,"
                f" {result['room_order_violations']} entries out of seq order"
            )
        elif result["room_order_violations"]:
            self.notes.append(
                f"{where}: {result['room_order_violations']} live entries arrived out of seq"
                " order across the two processes (a client's merge puts them back in order)"
            )

    async def fanout(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        duration = 10.0 if self.args.quick else 15.0
        for receivers in self.args.fanout:
            rows: dict[str, list[dict[str, Any]]] = {}
            for run in range(self.args.runs):
                for kind in self.order(run):
                    server = self.server(kind).start()
                    try:
                        conn = await self._connected(server, f"fan{receivers}", receivers)
                        result = await phase(
                            self.load,
                            [server],
                            rates={0: self.args.rate},
                            duration=duration,
                            drain_max=5.0 if self.args.quick else 10.0,
                            counter=self.counter,
                        )
                        result.pop("_senders")
                        result["connect"] = conn
                        self._check_a(kind, result, f"fanout {receivers} run {run}")
                        rows.setdefault(kind, []).append(result)
                        _print_phase(f"fanout {receivers:>5} {kind:<3} run {run}", result)
                        await self.load.close()
                    finally:
                        self.stopped(server)
            out[str(receivers)] = {kind: _median_runs(runs) for kind, runs in rows.items()}
        return out

    async def saturation(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        step = 2.0 if self.args.quick else 5.0
        max_steps = 4 if self.args.quick else 10
        for receivers in self.args.saturation:
            found: dict[str, list[dict[str, Any]]] = {}
            for run in range(self.args.runs):
                for kind in self.order(run):
                    server = self.server(kind).start()
                    try:
                        await self._connected(server, f"fan{receivers}", receivers)
                        search = await self._search(server, receivers, step, max_steps)
                        found.setdefault(kind, []).append(search)
                        await self.load.close()
                    finally:
                        self.stopped(server)
            out[str(receivers)] = {}
            for kind, searches in found.items():
                rates = [s["rate"] for s in searches]
                median_rate = statistics.median(rates)
                best = min(searches, key=lambda s: abs(s["rate"] - median_rate))
                out[str(receivers)][kind] = {
                    "rate": median_rate,
                    "rates_per_run": rates,
                    "at_rate": best["at_rate"],
                    "steps": [s["steps"] for s in searches],
                }
        return out

    async def _search(
        self, server: Server, receivers: int, step: float, max_steps: int
    ) -> dict[str, Any]:
        """Double from the start rate while a step passes, then bisect between the best pass and
        the first failure; `max_steps` steps at most."""
        steps: list[dict[str, Any]] = []
        results: dict[float, dict[str, Any]] = {}

        async def trial(rate: float) -> bool:
            result = await phase(
                self.load,
                [server],
                rates={0: rate},
                duration=step,
                drain_max=5.0,
                counter=self.counter,
            )
            result.pop("_senders")
            ok = passes(result)
            self._check_a(server.kind, result, f"saturation {receivers} at {rate}/s")
            results[rate] = result
            steps.append({"rate": rate, "ok": ok, **_brief(result)})
            _print_phase(f"saturation {receivers:>5} {server.kind:<3} {rate:>7.1f}/s", result, ok)
            await self._quiet(10.0)
            return ok

        low, high = 0.0, None
        rate = self.args.start_rate
        while len(steps) < max_steps and rate <= self.args.max_rate:
            if await trial(rate):
                low = rate
                rate *= 2
            else:
                high = rate
                break
        if low == 0.0 and high is not None:  # failed at the start rate: halve down to 1/s
            rate = high / 2
            while len(steps) < max_steps and rate >= 1:
                if await trial(rate):
                    low = rate
                    break
                high = rate
                rate /= 2
        while high is not None and len(steps) < max_steps and high / max(low, 1e-9) > 1.2:
            middle = round((low + high) / 2, 1) if low else high / 2
            if await trial(middle):
                low = middle
            else:
                high = middle
        return {
            "rate": low,
            "bounded_by_max_rate": high is None,
            "at_rate": _brief(results[low]) if low in results else None,
            "steps": steps,
        }

    async def _quiet(self, limit: float) -> None:
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            quiet = await self.load.each({"cmd": "quiet"})
            if min(q["quiet_seconds"] for q in quiet) >= 1.0:
                return
            await asyncio.sleep(0.25)

    async def throughput(self) -> dict[str, Any]:
        configs = [("A", 1), ("A", 2), ("B0", 1), ("B1", 1)]
        configs = [c for c in configs if c[0] in self.args.servers]
        duration = self.args.throughput_seconds or (3.0 if self.args.quick else 10.0)
        rows: dict[str, dict[int, list[dict[str, Any]]]] = {}
        for run in range(self.args.runs):
            shift = run % len(configs)
            for kind, processes in configs[shift:] + configs[:shift]:
                label = f"{kind}x{processes}" if kind == "A" else kind
                servers = self._throughput_servers(kind, processes)
                try:
                    specs = []
                    cookies = self.data["cookies"]
                    for room_index in range(50):
                        room = f"t{room_index:02d}"
                        for member in range(10):
                            person = room_index * 10 + member
                            server = servers[member % len(servers)]
                            specs.append(
                                {
                                    "url": server.ws_url(room),
                                    "room": room,
                                    "cookie": cookies[person],
                                    "sender": person + 1,
                                }
                            )
                    conn = await self.load.connect(kind, specs, origin=servers[0].origin)
                    if conn["failed"]:
                        print(f"    {conn['failed']} sockets failed: {conn['failures'][:2]}")
                    await asyncio.sleep(0.5)
                    await self._quiet(10.0)
                    for offered in self.args.offered:
                        per_sender = offered / len(specs)
                        result = await phase(
                            self.load,
                            servers,
                            rates={spec["sender"]: per_sender for spec in specs},
                            duration=duration,
                            drain_max=15.0,
                            counter=self.counter,
                        )
                        senders = result.pop("_senders")
                        result["accepted_per_s"] = round(result["acked"] / duration, 1)
                        if kind == "A":
                            check = await asyncio.to_thread(exactly_once, senders)
                            result["exactly_once"] = check
                            if not check["ok"]:
                                self.checks.append(
                                    f"throughput {label} {offered}/s: {check['missing']}"
                                    " acknowledged expressions missing,"
                                    f" {check['stored_more_than_once']} stored more than once"
                                )
                        self._check_a(kind, result, f"throughput {label} {offered}/s", len(servers))
                        rows.setdefault(label, {}).setdefault(offered, []).append(result)
                        _print_phase(
                            f"throughput {label:<4} offered {offered:>5}/s", result, extra=result
                        )
                        await self._quiet(15.0)
                    await self.load.close()
                finally:
                    for server in servers:
                        self.stopped(server)
        return {
            label: {str(offered): _median_runs(runs) for offered, runs in by_rate.items()}
            for label, by_rate in rows.items()
        }

    def _throughput_servers(self, kind: str, processes: int) -> list[Server]:
        if processes == 1:
            return [self.server(kind, f"{kind}x1" if kind == "A" else kind).start()]
        servers = [self.server(kind, f"{kind}x{processes}-{i}") for i in range(processes)]
        origins = [server.origin for server in servers]
        for server in servers:
            server.env["DJANGO_ALLOWED_ORIGINS"] = ",".join(origins)
        started: list[Server] = []
        try:
            for server in servers:
                started.append(server.start())
        except BaseException:
            for server in started:
                server.stop()
            raise
        return started

    async def idle(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for count in self.args.idle:
            rows: dict[str, list[dict[str, Any]]] = {}
            for run in range(self.args.runs):
                for kind in self.order(run):
                    server = self.server(kind).start()
                    try:
                        result = await self._idle_once(server, count)
                        rows.setdefault(kind, []).append(result)
                        self._check_a(kind, result["broadcast"], f"idle {count}")
                        print(
                            f"idle {count:>6} {kind:<3} run {run}: {result['kib_per_socket']:.1f}"
                            f" KiB/socket, idle CPU {result['idle_cpu_pct']:.1f} %, Redis"
                            f" {result['redis_commands_per_s']:.0f}/s (background"
                            f" {result['redis_background_per_s']:.0f}/s), broadcast p50/p99"
                            f" {result['broadcast']['p50_ms']}/{result['broadcast']['p99_ms']} ms,"
                            f" lost {result['broadcast']['lost']}, open {result['open_after']},"
                            f" connect {result['connect']['seconds']} s"
                        )
                        await self.load.close()
                    finally:
                        self.stopped(server)
            out[str(count)] = {kind: _median_runs(runs) for kind, runs in rows.items()}
        return out

    async def _idle_once(self, server: Server, count: int) -> dict[str, Any]:
        import redis

        client = redis.Redis.from_url(REDIS_URL)

        def commands() -> int:
            return int(client.info("stats")["total_commands_processed"])

        # Warm the server with one socket, then its resident memory with nothing open.
        await self._connected(server, "idle", 1)
        await self.load.close()
        await asyncio.sleep(1.5)
        rss_before = server.rss_kib()
        background_start = (commands(), time.monotonic())
        await asyncio.sleep(5)
        background = (commands() - background_start[0]) / (time.monotonic() - background_start[1])
        conn = await self._connected(server, "idle", count, compression="deflate")
        await asyncio.sleep(3)
        rss_after = server.rss_kib()
        cpu0, redis0, wall0 = server.cpu_seconds(), commands(), time.monotonic()
        # One whole sync interval (20 s: two heartbeats, ten room ticks and one `sync` to every
        # socket), so a run neither always includes nor always misses the periodic work.
        await asyncio.sleep(IDLE_WINDOW_SECONDS)
        wall = time.monotonic() - wall0
        idle_cpu = 100 * (server.cpu_seconds() - cpu0) / wall
        redis_rate = (commands() - redis0) / wall
        client.close()
        broadcast = await phase(
            self.load, [server], rates={0: 1.0}, duration=1.0, drain_max=20.0, counter=self.counter
        )
        broadcast.pop("_senders")
        return {
            "sockets": count,
            "connect": conn,
            "negotiated": conn["negotiated"],
            "rss_before_kib": rss_before,
            "rss_after_kib": rss_after,
            "kib_per_socket": round((rss_after - rss_before) / count, 2),
            "idle_cpu_pct": round(idle_cpu, 2),
            "redis_commands_per_s": round(redis_rate, 1),
            "redis_background_per_s": round(background, 1),
            "redis_net_commands_per_s": round(redis_rate - background, 1),
            "broadcast": _brief(broadcast),
            "open_after": broadcast["open_sockets"],
        }

    async def catchup(self) -> dict[str, Any]:
        server = self.server("A").start()
        cookies = self.data["cookies"]
        singles: list[dict[str, Any]] = []
        storms: list[dict[str, Any]] = []
        try:
            spec = {"slug": "cu1000", "cookie": cookies[0], "last_seq": 0, "until": 1000}
            cmd = {"cmd": "catchup", "host": server.host, "port": server.port}
            cmd["origin"] = server.origin
            await self.load.receivers[0].call({**cmd, "clients": [spec]})  # warm
            for _ in range(max(3, self.args.runs * 3)):
                answer = await self.load.receivers[0].call({**cmd, "clients": [spec]})
                singles.append(answer["clients"][0])
                await asyncio.sleep(0.3)
            for _ in range(self.args.runs):
                clients = [
                    {"slug": "storm", "cookie": cookies[i], "last_seq": 1000, "until": 1100}
                    for i in range(200)
                ]
                shares = [
                    clients[i :: len(self.load.receivers)] for i in range(len(self.load.receivers))
                ]
                cpu0 = server.cpu_seconds()
                answers = await asyncio.gather(
                    *(
                        worker.call({**cmd, "clients": share})
                        for worker, share in zip(self.load.receivers, shares, strict=True)
                    )
                )
                server_cpu = server.cpu_seconds() - cpu0
                results = [c for a in answers for c in a["clients"]]
                ok = [c for c in results if c["ok"]]
                storm = {
                    "clients": len(results),
                    "ok": len(ok),
                    "errors": [c["error"] for c in results if not c["ok"]][:5],
                    "all_caught_up_s": (
                        round(max(c["done"] for c in ok) - min(c["started"] for c in ok), 3)
                        if ok
                        else None
                    ),
                    "per_client_total_ms": _quantiles([c["total_ms"] for c in ok]),
                    "per_client_connect_ms": _quantiles([c["connect_ms"] for c in ok]),
                    "per_client_after_open_ms": _quantiles([c["after_open_ms"] for c in ok]),
                    # The server's CPU time for the whole storm, per client: steadier from
                    # one run to the next than the storm's wall time on a shared machine.
                    "server_cpu_ms_per_client": round(1000 * server_cpu / len(results), 2),
                    "load_cpu_pct_of_one_core": round(
                        100
                        * sum(a["cpu_seconds"] for a in answers)
                        / max(a["wall_seconds"] for a in answers),
                        1,
                    ),
                }
                storms.append(storm)
                print(
                    f"catchup storm: {storm['ok']}/{storm['clients']} caught up in"
                    f" {storm['all_caught_up_s']} s; per client {storm['per_client_total_ms']};"
                    f" server CPU {storm['server_cpu_ms_per_client']} ms a client"
                )
                if storm["ok"] != storm["clients"]:
                    self.checks.append(f"catch-up storm: {storm['errors']}")
                await asyncio.sleep(1)
        finally:
            self.stopped(server)
        failed = [c["error"] for c in singles if not c["ok"]]
        if failed:
            self.checks.append(f"catch-up of 1,000: {failed[:3]}")
        good = [c for c in singles if c["ok"]]
        single = {
            "runs": len(singles),
            "ok": len(good),
            "after_open_ms": _quantiles([c["after_open_ms"] for c in good]),
            "total_ms": _quantiles([c["total_ms"] for c in good]),
            "pages": good[0]["pages"] if good else None,
        }
        print(f"catchup 1,000 missed: after socket open {single['after_open_ms']}")
        storm_summary = {
            "runs": storms,
            "all_caught_up_s_median": (
                statistics.median(s["all_caught_up_s"] for s in storms if s["all_caught_up_s"])
                if any(s["all_caught_up_s"] for s in storms)
                else None
            ),
        }
        return {"missed_1000": single, "storm_200x100": storm_summary}


def _quantiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50_ms": None, "p99_ms": None, "max_ms": None}
    ordered = sorted(values)
    return {
        "p50_ms": round(statistics.median(ordered), 2),
        "p99_ms": round(ordered[max(0, math.ceil(0.99 * len(ordered)) - 1)], 2),
        "max_ms": round(ordered[-1], 2),
    }


BRIEF_KEYS = (
    "offered_rate", "offered", "sent", "acked", "refused", "receivers", "deliveries",
    "expected_deliveries", "lost", "receivers_with_loss", "duplicates", "reordered",
    "room_order_violations", "p50_ms", "p90_ms", "p99_ms", "max_ms", "drained",
    "server_cpu_pct", "server_cpu_us_per_delivery", "deliveries_per_s",
    "load_cpu_pct_of_one_core", "sender_max_lag_ms", "open_sockets", "close_codes",
    "cpu_busy_pct_by_core",
)  # fmt: skip


def _brief(result: dict[str, Any]) -> dict[str, Any]:
    return {key: result.get(key) for key in BRIEF_KEYS}


NUMERIC_MEDIAN = (
    "p50_ms", "p90_ms", "p99_ms", "max_ms", "server_cpu_pct", "server_cpu_us_per_delivery",
    "deliveries_per_s", "load_cpu_pct_of_one_core", "accepted_per_s", "kib_per_socket",
    "idle_cpu_pct", "redis_commands_per_s", "redis_background_per_s", "redis_net_commands_per_s",
    "sender_max_lag_ms",
)  # fmt: skip
SUMMED = (
    "lost", "duplicates", "reordered", "room_order_violations", "expected_deliveries",
    "offered", "acked",
)  # fmt: skip


def _median_runs(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians of the numeric figures over the runs; loss and order counts summed; all runs."""
    out: dict[str, Any] = {"n_runs": len(runs)}
    for key in NUMERIC_MEDIAN:
        values = [run[key] for run in runs if run.get(key) is not None]
        if values:
            out[key] = round(statistics.median(values), 3)
    for key in SUMMED:
        if key in runs[0]:
            out[key] = sum(run.get(key) or 0 for run in runs)
    if "broadcast" in runs[0]:
        for key in ("p50_ms", "p99_ms"):
            values = [run["broadcast"][key] for run in runs if run["broadcast"][key] is not None]
            out[f"broadcast_{key}"] = round(statistics.median(values), 3) if values else None
        out["broadcast_lost"] = sum(run["broadcast"]["lost"] for run in runs)
    if "exactly_once" in runs[0]:
        out["exactly_once_ok"] = all(run["exactly_once"]["ok"] for run in runs)
        out["stored_without_ack"] = sum(run["exactly_once"]["stored_without_ack"] for run in runs)
    refused: dict[str, int] = {}
    for run in runs:
        for code, count in (run.get("refused") or {}).items():
            refused[code] = refused.get(code, 0) + count
    out["refused"] = refused
    out["runs"] = [{k: v for k, v in run.items() if k not in ("hist",)} for run in runs]
    return out


def _print_phase(label: str, r: dict[str, Any], ok: bool | None = None, extra: Any = None) -> None:
    verdict = "" if ok is None else (" PASS" if ok else " fail")
    accepted = f" accepted {extra['accepted_per_s']}/s" if extra else ""
    print(
        f"{label}:{verdict}{accepted} p50 {r['p50_ms']} p99 {r['p99_ms']} max {r['max_ms']} ms;"
        f" {r['deliveries']}/{r['expected_deliveries']} delivered, lost {r['lost']},"
        f" dup {r['duplicates']}, reord {r['reordered']}, refused {r['refused'] or 0};"
        f" server {r['server_cpu_pct']} % ({r['server_cpu_us_per_delivery']} us/delivery);"
        f" load {r['load_cpu_pct_of_one_core']} %; cores busy {r['cpu_busy_pct_by_core']}",
        flush=True,
    )


# --- Report --------------------------------------------------------------------------------


def versions() -> dict[str, str]:
    out = {}
    for name in (
        "django", "channels", "channels-redis", "redis", "websockets", "uvicorn", "uvloop",
        "httptools", "psycopg",
    ):  # fmt: skip
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "-"
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    out["redis-server"] = str(client.info("server")["redis_version"])
    client.close()
    out["postgresql"] = pg_version()
    return out


def _ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or not b:
        return "-"
    return f"{a / b:.2f}"


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _load_core_busy(row: dict[str, Any], meta: dict[str, Any]) -> str:
    """How busy the load core was (by anyone) in the busiest run of a figure: near 100 % means
    the load generator may have been short of CPU, whatever its own share."""
    core = meta["pinning"].get("load_cpus")
    values = [
        run["cpu_busy_pct_by_core"].get(str(core))
        for run in row.get("runs", [])
        if core is not None and run.get("cpu_busy_pct_by_core")
    ]
    values = [value for value in values if value is not None]
    return f"{max(values):.0f}" if values else "-"


def markdown(results: dict[str, Any]) -> str:
    meta = results["meta"]
    start, end = meta["git_commit_at_start"], meta["machine"]["git_commit"]
    commit = f"`{start}`" if start == end else f"`{start}` at the start, `{end}` at the end"
    dirty = meta["git_uncommitted_at_start"] or meta["machine"]["git_uncommitted"]
    lines = [
        f"# Live path: Calcrooms (A) beside B0 and B1{' (--quick)' if meta['quick'] else ''}",
        "",
        *(
            []
            if meta.get("finished", True)
            else [f"**Part way**: finished so far: {', '.join(meta['scenarios_done'])}.", ""]
        ),
        f"Commit {commit}{' (with uncommitted changes in the checkout)' if dirty else ''},"
        f" {meta['started']} UTC, {meta['seconds']:.0f} s; {meta['runs']} run(s) per figure"
        " (medians), servers taking turns within each run.",
        f"Load average before {meta['load_before']},"
        f" after {meta['machine']['load_average_1_5_15']};"
        f" {meta['machine']['cpus']} CPUs; pinning: {meta['pinning']}.",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()) + ".",
        f"uvicorn flags (Makefile): `{' '.join(meta['uvicorn_flags'])}`; A's settings:"
        f" {', '.join(f'{k}={v}' for k, v in meta['a_settings'].items())}.",
        "Latency: from the message's *scheduled* send time to its receipt, ms (p50 / p99)."
        " Ratios A/B0 and A/B1 of the p99 (and of CPU per delivery).",
        "",
    ]
    fan = results.get("fanout")
    if fan:
        rate = meta["rate"]
        lines += [
            f"## Fan-out in one room ({rate:g} messages/s, {meta['fanout_seconds']:g} s)",
            "",
            "| receivers | A p50 / p99 | B0 p50 / p99 | B1 p50 / p99 | A/B0 p99 | A/B1 p99"
            " | A accepted / offered | lost A / B0 / B1 | server CPU µs per delivery A / B0 / B1"
            " | A/B0 CPU | A/B1 CPU | load processes' CPU % of a core, max"
            " | load core busy % A / B0 / B1 |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for receivers, by in fan.items():
            a, b0, b1 = by.get("A", {}), by.get("B0", {}), by.get("B1", {})

            def pp(r: dict[str, Any]) -> str:
                return f"{_fmt(r.get('p50_ms'), 2)} / {_fmt(r.get('p99_ms'), 2)}"

            cpu = [r.get("server_cpu_us_per_delivery") for r in (a, b0, b1)]
            load = max((r.get("load_cpu_pct_of_one_core") or 0) for r in (a, b0, b1))
            lines.append(
                f"| {int(receivers):,} | {pp(a)} | {pp(b0)} | {pp(b1)}"
                f" | {_ratio(a.get('p99_ms'), b0.get('p99_ms'))}"
                f" | {_ratio(a.get('p99_ms'), b1.get('p99_ms'))}"
                f" | {_fmt(a.get('acked'))} / {_fmt(a.get('offered'))}"
                f" | {_fmt(a.get('lost'))} / {_fmt(b0.get('lost'))} / {_fmt(b1.get('lost'))}"
                f" | {' / '.join(_fmt(c) for c in cpu)}"
                f" | {_ratio(cpu[0], cpu[1])} | {_ratio(cpu[0], cpu[2])} | {load:.0f}"
                f" | {' / '.join(_load_core_busy(r, meta) for r in (a, b0, b1))} |"
            )
        lines.append("")
    sat = results.get("saturation")
    if sat:
        lines += [
            f"## Saturation (highest rate with p99 < {P99_LIMIT_MS:g} ms and zero loss)",
            "",
            "| receivers | A msg/s (deliveries/s, server CPU %) | B0 | B1 | A/B0 | A/B1 |",
            "|---|---|---|---|---|---|",
        ]
        for receivers, by in sat.items():

            def cell(kind: str, by: dict[str, Any] = by) -> str:
                r = by.get(kind)
                if not r:
                    return "-"
                at = r["at_rate"] or {}
                return (
                    f"{r['rate']:g} ({_fmt(at.get('deliveries_per_s'), 0)}/s,"
                    f" {_fmt(at.get('server_cpu_pct'), 0)} %; runs {r['rates_per_run']})"
                )

            rates = {k: (by.get(k) or {}).get("rate") for k in SERVERS}
            lines.append(
                f"| {int(receivers):,} | {cell('A')} | {cell('B0')} | {cell('B1')}"
                f" | {_ratio(rates['A'], rates['B0'])} | {_ratio(rates['A'], rates['B1'])} |"
            )
        lines += [
            "",
            "A rate at the search's upper bound means the bound, not the server, stopped it.",
            "",
        ]
    thr = results.get("throughput")
    if thr:
        lines += [
            "## Persisted and broadcast (50 rooms x 10 members, every member submitting)",
            "",
            "| offered/s | A, 1 process: accepted/s, p99 | A, 2 processes | B0 | B1"
            " | A/B0 p99 | A/B1 p99 | A exactly once in PostgreSQL | A lost deliveries (1 / 2) |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        offered_all = sorted({int(o) for by in thr.values() for o in by})
        for offered in offered_all:
            cells = {
                label: thr.get(label, {}).get(str(offered), {})
                for label in ("Ax1", "Ax2", "B0", "B1")
            }

            def cell2(r: dict[str, Any]) -> str:
                if not r:
                    return "-"
                refused = sum((r.get("refused") or {}).values())
                more = f", {refused:,} refused" if refused else ""
                return f"{_fmt(r.get('accepted_per_s'), 0)}, {_fmt(r.get('p99_ms'), 1)} ms{more}"

            once = [cells[k].get("exactly_once_ok") for k in ("Ax1", "Ax2") if cells[k]]
            lines.append(
                f"| {offered:,} | {cell2(cells['Ax1'])} | {cell2(cells['Ax2'])}"
                f" | {cell2(cells['B0'])} | {cell2(cells['B1'])}"
                f" | {_ratio(cells['Ax1'].get('p99_ms'), cells['B0'].get('p99_ms'))}"
                f" | {_ratio(cells['Ax1'].get('p99_ms'), cells['B1'].get('p99_ms'))}"
                f" | {'yes' if once and all(once) else ('NO' if once else '-')}"
                f" | {_fmt(cells['Ax1'].get('lost'))} / {_fmt(cells['Ax2'].get('lost'))} |"
            )
        lines += [
            "",
            f"Two processes: both pinned to the server CPU ({meta['pinning']['server_cpus']}),"
            " each room's members alternating between them.",
            "",
        ]
    idle = results.get("idle")
    if idle:
        lines += [
            "## Idle sockets held in one room (clients offer permessage-deflate)",
            "",
            "| sockets | A KiB/socket, idle CPU %, Redis cmd/s, broadcast p50 / p99 ms | B0 | B1"
            " | A/B0 KiB | A/B1 KiB | A/B0 p99 | A/B1 p99 |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for count, by in idle.items():

            def cell3(r: dict[str, Any]) -> str:
                if not r:
                    return "-"
                lost = f", {r['broadcast_lost']:,} lost" if r.get("broadcast_lost") else ""
                return (
                    f"{_fmt(r.get('kib_per_socket'))}, {_fmt(r.get('idle_cpu_pct'))} %,"
                    f" {_fmt(r.get('redis_net_commands_per_s'), 0)},"
                    f" {_fmt(r.get('broadcast_p50_ms'))} / {_fmt(r.get('broadcast_p99_ms'))}{lost}"
                )

            a, b0, b1 = by.get("A", {}), by.get("B0", {}), by.get("B1", {})
            lines.append(
                f"| {int(count):,} | {cell3(a)} | {cell3(b0)} | {cell3(b1)}"
                f" | {_ratio(a.get('kib_per_socket'), b0.get('kib_per_socket'))}"
                f" | {_ratio(a.get('kib_per_socket'), b1.get('kib_per_socket'))}"
                f" | {_ratio(a.get('broadcast_p99_ms'), b0.get('broadcast_p99_ms'))}"
                f" | {_ratio(a.get('broadcast_p99_ms'), b1.get('broadcast_p99_ms'))} |"
            )
        lines += [
            "",
            "Redis cmd/s: the shared Redis's rate while the sockets were idle, less its rate"
            " over 5 s just before they opened (other users of the machine's Redis included"
            " in both).",
            "",
        ]
    cu = results.get("catchup")
    if cu:
        single, storm = cu["missed_1000"], cu["storm_200x100"]
        lines += [
            "## Catch-up (A only: B0 and B1 keep no history)",
            "",
            "| case | figure |",
            "|---|---|",
            f"| 1,000 missed, socket open → all applied ({single['runs']} runs,"
            f" {single['pages']} pages) | p50 {_fmt(single['after_open_ms']['p50_ms'])} ms,"
            f" max {_fmt(single['after_open_ms']['max_ms'])} ms |",
            f"| 200 clients reconnecting at once, 100 missed each: all caught up"
            f" | {_fmt(storm['all_caught_up_s_median'], 3)} s (median of runs); per client p50"
            f" {_fmt(storm['runs'][0]['per_client_total_ms']['p50_ms'])} /"
            f" p99 {_fmt(storm['runs'][0]['per_client_total_ms']['p99_ms'])} ms (run 1)"
            + (
                f"; of which the handshake p50"
                f" {_fmt(storm['runs'][0]['per_client_connect_ms']['p50_ms'])} ms, after open p50"
                f" {_fmt(storm['runs'][0]['per_client_after_open_ms']['p50_ms'])} ms"
                if "per_client_connect_ms" in storm["runs"][0]
                else ""
            )
            + (
                f"; the server's CPU {_fmt(storm['runs'][0]['server_cpu_ms_per_client'])} ms a"
                " client"
                if "server_cpu_ms_per_client" in storm["runs"][0]
                else ""
            )
            + " |",
            "",
        ]
    lines += ["## Checks", ""]
    if results["checks"]:
        lines += [f"- FAIL: {check}" for check in results["checks"]]
    else:
        lines.append(
            "- A: every acknowledged expression in PostgreSQL exactly once; no entry delivered"
            " twice or out of seq order on any connection."
        )
    lines += [f"- note: {note}" for note in results.get("notes", [])]
    for label, logs in results["server_logs"].items():
        if logs["tracebacks"] or logs["lines"]:
            lines.append(
                f"- server {label} logged {logs['tracebacks']} tracebacks {logs['exceptions']}"
                f" and {sum(logs['lines'].values())} other lines"
            )
    return "\n".join(lines) + "\n"


# --- Main ----------------------------------------------------------------------------------


async def run(
    args: argparse.Namespace,
    data: dict[str, Any],
    env: dict[str, str],
    pin: dict[str, Any],
    done: Callable[[dict[str, Any], Bench], None],
) -> Any:
    """Each scenario in turn; `done` is told after each one (a long run that is stopped keeps
    the scenarios it finished)."""
    bench = Bench(args, data, env, pin)
    await bench.load.start()
    results: dict[str, Any] = {}
    try:
        for scenario in args.only or SCENARIOS:
            started = time.monotonic()
            print(f"\n== {scenario}", flush=True)
            results[scenario] = await getattr(bench, scenario)()
            print(f"== {scenario}: {time.monotonic() - started:.0f} s", flush=True)
            done(results, bench)
    finally:
        await bench.load.stop()
        removed = clean_redis(bench.b1_prefix)
        print(f"cleaned up: {removed} Redis keys under {bench.b1_prefix}*")
    return results, bench


LOCK_KEY = 0x6C697665  # one bench/live.py at a time on this PostgreSQL server ("live")


def _one_run_at_a_time() -> Any:
    """Two live benches at once load the same two cores and measure each other: wait for the
    other run (a session-level advisory lock on the PostgreSQL server, held until this process
    ends, whatever database each run uses)."""
    import psycopg

    conn = psycopg.connect(f"{PG_SERVER}/postgres", autocommit=True)
    row = conn.execute("SELECT pg_try_advisory_lock(%s)", [LOCK_KEY]).fetchone()
    if not (row and row[0]):
        print("another bench/live.py run is going on: waiting for it to end", flush=True)
        started = time.monotonic()
        conn.execute("SELECT pg_advisory_lock(%s)", [LOCK_KEY])
        print(f"waited {time.monotonic() - started:.0f} s", flush=True)
    return conn


def _database_in_use(name: str) -> int:
    import psycopg

    with psycopg.connect(f"{PG_SERVER}/postgres", autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s", [name]
        ).fetchone()
    return int(row[0]) if row else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 run, shorter phases (~4 min)")
    parser.add_argument("--runs", type=int, default=None, help="runs per figure (3; --quick 1)")
    parser.add_argument("--only", action="append", choices=SCENARIOS)
    parser.add_argument("--servers", default="A,B0,B1", help="which of A,B0,B1 to measure")
    parser.add_argument("--workers", type=int, default=4, help="receivers' load processes")
    parser.add_argument("--rate", type=float, default=20.0, help="fan-out messages/s")
    parser.add_argument("--fanout", default="10,100,1000", help="receivers per fan-out case")
    parser.add_argument("--saturation", default="100,1000", help="receivers per saturation case")
    parser.add_argument("--start-rate", type=float, default=10.0)
    parser.add_argument("--max-rate", type=float, default=1280.0)
    parser.add_argument(
        "--offered", help="throughput, total/s (100,250,500,1000,2000; --quick 100,1000)"
    )
    parser.add_argument(
        "--throughput-seconds", type=float, help="seconds at each offered rate (10; --quick 3)"
    )
    parser.add_argument("--idle", help="idle socket counts (1000,5000,10000; --quick 1000)")
    parser.add_argument("--keep-db", action="store_true", help=f"keep the {DB_NAME} database")
    parser.add_argument("--no-pin", action="store_true", help="do not pin servers and load to CPUs")
    parser.add_argument(
        "--name", default="live", help="results as var/bench/<name>.json and <name>.md"
    )
    parser.add_argument(
        "--render", metavar="JSON", help="only write the markdown tables of an earlier run's JSON"
    )
    args = parser.parse_args(argv)
    if args.render:
        table = markdown(json.loads(Path(args.render).read_text()))
        (OUT_DIR / f"{args.name}.md").write_text(table)
        print(table)
        return 0
    global PIN  # one switch, read by pinning()
    PIN = not args.no_pin
    args.runs = args.runs or (1 if args.quick else 3)
    if args.quick:
        args.max_rate = min(args.max_rate, 640.0)
    args.servers = [s.strip() for s in args.servers.split(",") if s.strip()]
    args.fanout = [int(n) for n in args.fanout.split(",")]
    args.saturation = [int(n) for n in args.saturation.split(",")]
    args.offered = args.offered or ("100,1000" if args.quick else "100,250,500,1000,2000")
    args.idle = args.idle or ("1000" if args.quick else "1000,5000,10000")
    args.offered = [int(n) for n in args.offered.split(",")]
    args.idle = [int(n) for n in args.idle.split(",")]

    def _interrupted(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt  # run the clean-ups: servers, load processes, database, keys

    signal.signal(signal.SIGTERM, _interrupted)
    lock = _one_run_at_a_time()  # noqa: F841 - held open until this process ends
    load_before = [round(value, 2) for value in os.getloadavg()]
    machine_before = machine()  # others commit while a long run goes on: both ends recorded
    started_wall = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M")
    started = time.monotonic()
    _raise_open_files()
    pin = pinning()
    if pin["pinned"]:
        os.sched_setaffinity(0, {int(pin["load_cpus"])})
    env = bench_environment(DB_NAME)
    prefix = f"calcrooms-bench-live-{secrets.token_hex(4)}"
    a_settings = {
        "EXPRESSION_BUCKET_CAPACITY": "1000000000",
        "EXPRESSION_BUCKET_REFILL_PER_SECOND": "1000000000",
        "WS_MAX_SOCKETS_PER_USER": "1000000",
        "WS_ABUSE_LIMIT": "1000000",
    }
    env.update(REDIS_KEY_PREFIX=prefix, **a_settings)
    os.environ.update(env)
    busy = _database_in_use(DB_NAME)
    if busy:
        print(
            f"database {DB_NAME} has {busy} open connections (another bench run?): not dropping"
            " it under them; set BENCH_DB_NAME to run beside it"
        )
        return 2
    print(f"database {DB_NAME}: drop, create, migrate; Redis prefix {prefix}", flush=True)
    recreate_database(DB_NAME)
    django_setup()
    fan_sizes = {*args.fanout, *args.saturation}
    data = setup_data(max(1000, *fan_sizes), fan_sizes)
    versions_seen = versions()
    from django.db import connections

    connections.close_all()

    def report(scenarios: dict[str, Any], bench: Bench, final: bool) -> dict[str, Any]:
        meta = {
            "bench": "live",
            "command": " ".join([".venv/bin/python", "bench/live.py", *(argv or sys.argv[1:])]),
            "quick": args.quick,
            "runs": args.runs,
            "started": started_wall,
            "seconds": round(time.monotonic() - started, 1),
            "machine": machine(),
            "git_commit_at_start": machine_before["git_commit"],
            "git_uncommitted_at_start": machine_before["git_uncommitted"],
            "load_before": load_before,
            "pinning": pin,
            "versions": versions_seen,
            "uvicorn_flags": uvicorn_flags(),
            "a_settings": a_settings,
            "database": f"{PG_SERVER}/{DB_NAME}",
            "rate": args.rate,
            "fanout_seconds": 10.0 if args.quick else 15.0,
            "throughput_seconds": args.throughput_seconds or (3.0 if args.quick else 10.0),
            "workers": args.workers,
            "scenarios_done": list(scenarios),
            "finished": final,
        }
        checks = list(bench.checks)
        for label, logs in bench.server_logs.items():
            if logs["tracebacks"] and label.startswith("A"):
                checks.append(f"server {label} logged {logs['tracebacks']} tracebacks")
        out = {
            "meta": meta,
            **scenarios,
            "checks": checks,
            "notes": bench.notes,
            "server_logs": bench.server_logs,
        }
        # Written after every scenario (`finished` false until the last): a run stopped part
        # way keeps the tables of what it measured.
        OUT_DIR.mkdir(parents=True, exist_ok=True)
        (OUT_DIR / f"{args.name}.json").write_text(json.dumps(out, indent=1) + "\n")
        (OUT_DIR / f"{args.name}.md").write_text(markdown(out))
        return out

    try:
        scenarios, bench = asyncio.run(
            run(args, data, env, pin, lambda done, bench: report(done, bench, final=False))
        )
    finally:
        removed = clean_redis(prefix)
        if not args.keep_db:
            drop_database(DB_NAME)
        print(f"cleaned up: {removed} Redis keys under {prefix}*; database {DB_NAME}"
              f" {'kept' if args.keep_db else 'dropped'}")  # fmt: skip
    results = report(scenarios, bench, final=True)
    bench.checks = results["checks"]
    table = markdown(results)
    print("\n" + table)
    print(f"results: var/bench/{args.name}.json, var/bench/{args.name}.md")
    for check in bench.checks:
        print(f"FAIL: {check}")
    return 1 if bench.checks else 0


if __name__ == "__main__":
    sys.exit(main())
