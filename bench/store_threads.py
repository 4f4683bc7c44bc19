"""Bench: how many entries one process stores a second, on the shared database thread against
its own store threads (`ENTRY_STORE_THREADS`), one entry a transaction or what waited together
(`ENTRY_STORE_BATCH_MAX`), in-process (no sockets): open-loop submissions
through `services.entry_submit` across 50 rooms at an offered rate; accepted/s and latency from
each submission's scheduled time. The variants take turns at each rate in one run.

    .venv/bin/python bench/store_threads.py [--rates 200,500] [--seconds 4] [--variants 4:32,4:1]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import after_query  # noqa: E402  (the benches' shared helpers)

DB_NAME = os.environ.get("BENCH_DB_NAME", "calcrooms_bench") + "_store"
# (ENTRY_STORE_THREADS, ENTRY_STORE_BATCH_MAX): the shared database thread; store threads, one
# entry a transaction; store threads, what waited stored together (the default).
VARIANTS = ((0, 1), (4, 1), (1, 32), (2, 32), (4, 32))


async def run(
    threads: int, batch: int, rate: float, seconds: float, author, rooms: list[int]
) -> dict:
    from django.conf import settings

    from rooms import services

    settings.ENTRY_STORE_THREADS = threads
    settings.ENTRY_STORE_BATCH_MAX = batch
    settings.ENTRY_STORE_QUEUE_LIMIT = 10**9  # measure the queue, do not refuse
    settings.ENTRY_STORE_WAIT_TARGET_SECONDS = 10**9  # nor turn anything away as late
    services._store_executors.clear()
    latencies: list[float] = []

    async def one(room_id: int, scheduled: float) -> None:
        await services.entry_submit(
            room_id=room_id, author=author, expression="6*7", client_id=str(uuid.uuid4())
        )
        latencies.append(time.monotonic() - scheduled)

    tasks = []
    start = time.monotonic()
    total = int(rate * seconds)
    for k in range(total):
        at = start + k / rate
        await asyncio.sleep(max(0.0, at - time.monotonic()))
        tasks.append(asyncio.ensure_future(one(rooms[k % len(rooms)], at)))
    await asyncio.gather(*tasks)
    took = time.monotonic() - start
    latencies.sort()
    return {
        "threads": threads,
        "batch_max": batch,
        "offered_per_s": rate,
        "stored_per_s": round(total / took, 1),
        "p50_ms": round(1000 * latencies[len(latencies) // 2], 1),
        "p99_ms": round(1000 * latencies[int(len(latencies) * 0.99)], 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rates", default="200,500")
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument(
        "--variants", help="THREADS:BATCH_MAX,... (default: all of VARIANTS)", default=None
    )
    args = parser.parse_args()
    os.environ["EXPRESSION_BUCKET_CAPACITY"] = "1000000000"
    os.environ["EXPRESSION_BUCKET_REFILL_PER_SECOND"] = "1000000000"
    variants = VARIANTS
    if args.variants:
        variants = tuple(
            (int(t), int(b)) for t, b in (pair.split(":") for pair in args.variants.split(","))
        )
    results = []
    with after_query.bench_database(DB_NAME):
        from asgiref.sync import sync_to_async

        from accounts.models import User
        from rooms.models import Membership, Room

        def setup() -> tuple[User, list[int]]:
            author = User.objects.create_user("storer", password="x")
            ids = []
            for n in range(50):
                room = Room.objects.create(slug=f"store-{n}", name=f"Store {n}", owner=author)
                Membership.objects.create(room=room, user=author, role=Membership.Role.OWNER)
                ids.append(room.id)
            return author, ids

        async def all_runs() -> None:
            author, rooms = await sync_to_async(setup)()
            for rate in (float(r) for r in args.rates.split(",")):
                for threads, batch in variants:
                    result = await run(threads, batch, rate, args.seconds, author, rooms)
                    results.append(result)
                    print(
                        f"threads={threads} batch_max={batch} offered {rate:.0f}/s: stored"
                        f" {result['stored_per_s']}/s, p50 {result['p50_ms']} ms,"
                        f" p99 {result['p99_ms']} ms",
                        flush=True,
                    )

        asyncio.run(all_runs())
    data = {"command": sys.argv, "machine": after_query.machine(), "results": results}
    print(f"results: {after_query.write_results('store_threads', data)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
