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
import sys
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from after_query import (
    BenchServer,
    bench_database,
    machine,
    percentile,
    session_cookie,
    stage,
    write_results,
)

DB_NAME = "calcrooms_bench_fanout"
VARIANTS = {
    "stock dispatch (baseline)": "bench.stock_dispatch_asgi:application",
    "product dispatch": "project.asgi:application",
}


def make_people() -> tuple[str, str]:
    from accounts.models import User
    from rooms.models import Membership, Room

    sender = User.objects.create_user("sender", "sender@example.com", "x")
    watcher = User.objects.create_user("watcher", "watcher@example.com", "x")
    room = Room.objects.create(slug="fan", name="Fan", owner=sender)
    Membership.objects.create(room=room, user=sender, role=Membership.Role.OWNER)
    Membership.objects.create(room=room, user=watcher)
    return session_cookie(sender), session_cookie(watcher)


async def measure(server: BenchServer, cookies: tuple[str, str], sockets: int, rounds: int):
    from websockets.asyncio.client import connect

    sender_cookie, watcher_cookie = cookies

    async def open_socket(cookie: str) -> Any:
        return await connect(
            f"ws://127.0.0.1:{server.port}/ws/rooms/fan/",
            origin=server.origin,
            additional_headers={"Cookie": cookie},
            subprotocols=["calcrooms.v1.json"],
            max_queue=None,
            open_timeout=30,
        )

    watchers = [await open_socket(watcher_cookie) for _ in range(sockets)]
    sender = await open_socket(sender_cookie)
    await asyncio.sleep(2)  # let connect-time presence frames settle

    async def wait_for_entry(ws: Any, client_id: str) -> float:
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sockets", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    results: dict[str, tuple[float, float]] = {}
    with bench_database(DB_NAME):
        cookies = make_people()
        for label, app in VARIANTS.items():
            with stage(f"{label}: {args.sockets} sockets"), BenchServer(app=app) as server:
                latencies = asyncio.run(measure(server, cookies, args.sockets, args.rounds))
            ms = [value * 1000 for value in latencies]
            results[label] = (percentile(ms, 0.5), percentile(ms, 0.95))
    print(f"fan-out to {args.sockets} sockets, {args.rounds} submissions each")
    print(f"{'variant':30} {'median ms':>10} {'p95 ms':>10}")
    for label, (median, p95) in results.items():
        print(f"{label:30} {median:10.1f} {p95:10.1f}")
    base, product = (results[label][0] for label in VARIANTS)
    print(f"baseline / product (median): {base / product:.2f}x")
    write_results(
        "fanout",
        {"machine": machine(), "sockets": args.sockets, "rounds": args.rounds, "ms": results},
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
