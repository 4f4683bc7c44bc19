"""Server memory per open WebSocket, with and without permessage-deflate.

uvicorn negotiates permessage-deflate by default; Calcrooms serves with
`--ws-per-message-deflate false`. This bench measures what that decision saves: two real uvicorn
processes (deflate on, the baseline; deflate off, as shipped), N sockets opened to each by clients
that offer compression (as browsers do), every socket receiving a few entries; the growth of the
server's resident memory divided by N.

    .venv/bin/python bench/memory.py [--sockets 400] [--entries 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
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
    session_cookie,
    stage,
    write_results,
)

DB_NAME = "calcrooms_bench_memory"


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def make_room() -> tuple[str, str]:
    from accounts.models import User
    from rooms.models import Membership, Room

    writer = User.objects.create_user("mem-writer", "w@example.com", "x")
    reader = User.objects.create_user("mem-reader", "r@example.com", "x")
    room = Room.objects.create(slug="mem", name="mem", owner=writer)
    Membership.objects.create(room=room, user=writer, role=Membership.Role.OWNER)
    Membership.objects.create(room=room, user=reader)
    return session_cookie(writer), session_cookie(reader)


async def measure(server: BenchServer, cookies: tuple[str, str], sockets: int, entries: int):
    from websockets.asyncio.client import connect

    writer_cookie, reader_cookie = cookies
    url = f"ws://127.0.0.1:{server.port}/ws/rooms/mem/"

    async def open_socket(cookie: str) -> Any:
        return await connect(
            url,
            origin=server.origin,
            additional_headers={"Cookie": cookie},
            subprotocols=["calcrooms.v1.json"],
            compression="deflate",  # offered, as a browser does
            open_timeout=30,
        )

    # Warm up: imports, first connections, the DB pool, a full round trip.
    warm = await open_socket(reader_cookie)
    await warm.close()
    await asyncio.sleep(1)
    pid = server.process.pid
    before = rss_kib(pid)

    readers = []
    for _ in range(sockets):
        readers.append(await open_socket(reader_cookie))
    negotiated = readers[0].response.headers.get("Sec-WebSocket-Extensions") or "none"
    writer = await open_socket(writer_cookie)

    async def until_entries(ws: Any, wanted: set[str]) -> None:
        while wanted:
            frame = json.loads(await ws.recv())
            if frame["type"] == "entry":
                wanted.discard(frame["entry"]["client_id"])

    ids = [str(uuid.uuid4()) for _ in range(entries)]
    waits = [asyncio.ensure_future(until_entries(ws, set(ids))) for ws in readers]
    for n, client_id in enumerate(ids):
        frame = {"type": "expression", "expression": f"{n}**2+sqrt(2)", "client_id": client_id}
        await writer.send(json.dumps(frame))
    await asyncio.wait_for(asyncio.gather(*waits), 120)
    await asyncio.sleep(1)
    after = rss_kib(pid)
    for ws in [*readers, writer]:
        await ws.close()
    return {
        "rss_before_kib": before,
        "rss_after_kib": after,
        "kib_per_socket": (after - before) / sockets,
        "negotiated": negotiated,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sockets", type=int, default=400)
    parser.add_argument("--entries", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2, help="alternating runs per variant")
    args = parser.parse_args()
    variants = {"deflate on (uvicorn default, baseline)": True, "deflate off (shipped)": False}
    results: dict[str, list[dict[str, Any]]] = {label: [] for label in variants}
    with bench_database(DB_NAME):
        cookies = make_room()
        for _round in range(args.rounds):
            for label, deflate in variants.items():
                with stage(f"{label}: {args.sockets} sockets"), BenchServer(deflate=deflate) as srv:
                    results[label].append(
                        asyncio.run(measure(srv, cookies, args.sockets, args.entries))
                    )
                time.sleep(1)
    print(f"server memory per open socket ({args.sockets} sockets, {args.entries} entries each)")
    print(f"{'variant':40} {'KiB/socket':>11}  negotiated")
    per = {}
    for label, runs in results.items():
        per[label] = statistics.median(run["kib_per_socket"] for run in runs)
        print(f"{label:40} {per[label]:11.1f}  {runs[0]['negotiated']}")
    base, shipped = per[next(iter(variants))], per["deflate off (shipped)"]
    print(f"deflate on / deflate off: {base / shipped:.2f}x")
    write_results(
        "memory",
        {"machine": machine(), "sockets": args.sockets, "entries": args.entries, "runs": results},
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
