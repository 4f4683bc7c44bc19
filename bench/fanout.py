"""Fan-out latency: N sockets in one room, one submission; how long until every socket has it.

Runs the product's consumer and, as the baseline in the same run, the same app with Channels'
stock dispatch (bench/stock_dispatch_asgi.py), each in a real uvicorn process on PostgreSQL and
Redis. Prints median and p95 of "all N received" per submission and the baseline/product ratio.

    .venv/bin/python bench/fanout.py [--sockets 200] [--rounds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
DB_NAME = "calcrooms_bench_fanout"
ADMIN_URL = os.environ.get("BENCH_POSTGRES", "postgres://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
PREFIX = f"calcrooms-bench-{uuid.uuid4().hex[:6]}"


def setup_database() -> str:
    import psycopg

    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {DB_NAME} WITH (FORCE)")
        conn.execute(f"CREATE DATABASE {DB_NAME}")
    url = ADMIN_URL.rsplit("/", 1)[0] + f"/{DB_NAME}"
    os.environ.update(
        DATABASE_URL=url,
        REDIS_URL=REDIS_URL,
        REDIS_KEY_PREFIX=PREFIX,
        DJANGO_SECRET_KEY="bench",
        DJANGO_ALLOWED_HOSTS="127.0.0.1",
        DJANGO_SECURE_COOKIES="0",
    )
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    return url


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cleanup() -> None:
    """Drop the bench database and every Redis key under the bench's prefix."""
    import psycopg
    import redis
    from django.db import connections

    connections.close_all()
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {DB_NAME} WITH (FORCE)")
    client = redis.Redis.from_url(REDIS_URL)
    for key in client.scan_iter(match=f"{PREFIX}*", count=1000):
        client.delete(key)
    client.close()


def make_people() -> tuple[str, str]:
    from django.test import Client

    from accounts.models import User
    from rooms.models import Membership, Room

    sender = User.objects.create_user("sender", "sender@example.com", "x")
    watcher = User.objects.create_user("watcher", "watcher@example.com", "x")
    room = Room.objects.create(slug="fan", name="Fan", owner=sender)
    Membership.objects.create(room=room, user=sender, role="owner")
    Membership.objects.create(room=room, user=watcher)
    cookies = []
    for user in (sender, watcher):
        client = Client()
        client.force_login(user)
        cookies.append(client.cookies["sessionid"].value)
    return cookies[0], cookies[1]


def start_server(app: str, port: int) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", app, "--port", str(port), "--lifespan", "off",
         "--ws-per-message-deflate", "false", "--log-level", "warning"],
        cwd=ROOT, env=os.environ.copy(),
    )  # fmt: skip
    for _ in range(100):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1)
            return process
        except OSError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"{app} did not start")


async def measure(port: int, sender_cookie: str, watcher_cookie: str, sockets: int, rounds: int):
    import websockets

    url = f"ws://127.0.0.1:{port}/ws/rooms/fan/"
    origin = f"http://127.0.0.1:{port}"

    async def open_socket(cookie: str):
        return await websockets.connect(
            url,
            subprotocols=["calcrooms.v1.json"],
            additional_headers={"Origin": origin, "Cookie": f"sessionid={cookie}"},
            max_queue=None,
        )

    watchers = []
    for _ in range(sockets):
        watchers.append(await open_socket(watcher_cookie))
    sender = await open_socket(sender_cookie)
    await asyncio.sleep(2)  # let connect-time presence frames settle

    async def wait_for_entry(ws, client_id: str) -> float:
        while True:
            frame = json.loads(await ws.recv())
            if frame["type"] == "entry" and frame["entry"]["client_id"] == client_id:
                return time.perf_counter()

    latencies = []
    for n in range(rounds):
        client_id = str(uuid.uuid4())
        waits = [asyncio.ensure_future(wait_for_entry(ws, client_id)) for ws in watchers]
        start = time.perf_counter()
        frame = {"type": "expression", "expression": f"{n}*2", "client_id": client_id}
        await sender.send(json.dumps(frame))
        finished, pending = await asyncio.wait(waits, timeout=60)
        if pending:
            raise RuntimeError(f"{len(pending)} of {len(waits)} sockets never got entry {n}")
        latencies.append(max(task.result() for task in finished) - start)
        await asyncio.sleep(1.1)  # stay inside the rate limit (one a second)
    for ws in [*watchers, sender]:
        await ws.close()
    return latencies


def summary(values: list[float]) -> tuple[float, float]:
    ordered = sorted(values)
    return statistics.median(ordered), ordered[
        min(len(ordered) - 1, math.ceil(len(ordered) * 0.95) - 1)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sockets", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    setup_database()
    sender_cookie, watcher_cookie = make_people()
    results = {}
    try:
        for label, app in (
            ("stock dispatch (baseline)", "bench.stock_dispatch_asgi:application"),
            ("product dispatch", "project.asgi:application"),
        ):
            port = free_port()
            server = start_server(app, port)
            try:
                latencies = asyncio.run(
                    measure(port, sender_cookie, watcher_cookie, args.sockets, args.rounds)
                )
            finally:
                server.terminate()
                server.wait(10)
            results[label] = summary(latencies)
    finally:
        cleanup()
    print(f"fan-out to {args.sockets} sockets, {args.rounds} submissions each")
    print(f"{'variant':30} {'median ms':>10} {'p95 ms':>10}")
    for label, (median, p95) in results.items():
        print(f"{label:30} {median * 1000:10.1f} {p95 * 1000:10.1f}")
    base = results["stock dispatch (baseline)"][0]
    product = results["product dispatch"][0]
    print(f"baseline / product (median): {base / product:.2f}x")
    out = ROOT / "var" / "bench"
    out.mkdir(parents=True, exist_ok=True)
    (out / "fanout.json").write_text(
        json.dumps({"sockets": args.sockets, "rounds": args.rounds, "results": results}, indent=2)
    )


if __name__ == "__main__":
    main()
