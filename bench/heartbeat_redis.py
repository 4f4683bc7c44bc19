"""Bench: what idle sockets cost Redis, on a Redis of the bench's own (nothing else counted).

One uvicorn process with the Makefile's flags holds N idle sockets in one room (one person's
tabs); after they settled, Redis's `total_commands_processed` (which counts every command a
script runs, not only the round trips) is read over a window, with the server's CPU % and RSS.
The baseline, in the same run, is the smallest N: a room's upkeep should cost Redis the same
whatever its socket count (a few scripts per room per tick), so the ratio should stay near 1.

    .venv/bin/python bench/heartbeat_redis.py [--sockets 100,1000] [--window 20]

Needs redis-server on PATH and PostgreSQL (BENCH_PG_SERVER); writes var/bench/heartbeat_redis.json.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import after_query  # noqa: E402  (the benches' shared helpers)

DB_NAME = os.environ.get("BENCH_DB_NAME", "calcrooms_bench") + "_heartbeat"


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def hold(
    n: int, url: str, origin: str, cookie: str, redis_port: int, pid: int, window: float
):
    import redis
    from websockets.asyncio.client import connect

    sockets = []
    for _ in range(n):
        sockets.append(
            await connect(
                url,
                origin=origin,
                additional_headers={"Cookie": cookie},
                subprotocols=["calcrooms.v1.json"],
                open_timeout=30,
            )
        )
    await asyncio.sleep(12)  # presence settles, the first heartbeats pass
    client = redis.Redis(port=redis_port)
    rss = rss_kib(pid)
    c0, t0, cpu0 = client.info("stats")["total_commands_processed"], time.time(), cpu_seconds(pid)
    await asyncio.sleep(window)
    c1, t1, cpu1 = client.info("stats")["total_commands_processed"], time.time(), cpu_seconds(pid)
    for ws in sockets:
        await ws.close()
    await asyncio.sleep(2)
    return {
        "sockets": n,
        "redis_commands_per_s": round((c1 - c0) / (t1 - t0), 1),
        "server_cpu_pct": round(100 * (cpu1 - cpu0) / (t1 - t0), 1),
        "server_rss_mib": round(rss / 1024, 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sockets", default="100,1000")
    parser.add_argument("--window", type=float, default=20.0)
    args = parser.parse_args()
    counts = [int(n) for n in args.sockets.split(",")]
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(counts) * 2 + 1000,) * 2)
    redis_server = shutil.which("redis-server")
    if not redis_server:
        print("redis-server is not on PATH", file=sys.stderr)
        return 1
    redis_port, port = after_query.free_port(), after_query.free_port()
    scratch = tempfile.mkdtemp()
    redis_proc = subprocess.Popen(
        [redis_server, "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", scratch],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    os.environ["BENCH_REDIS_URL"] = f"redis://127.0.0.1:{redis_port}/0"
    after_query.REDIS_URL = os.environ["BENCH_REDIS_URL"]
    results = []
    try:
        time.sleep(0.5)
        with after_query.bench_database(DB_NAME):
            from accounts.models import User
            from rooms.models import Membership, Room

            user = User.objects.create_user("idler", password="x")
            room = Room.objects.create(slug="idle", name="Idle", owner=user)
            Membership.objects.create(room=room, user=user, role=Membership.Role.OWNER)
            cookie = after_query.session_cookie(user)
            env = {
                **os.environ,
                "DJANGO_ALLOWED_ORIGINS": f"http://127.0.0.1:{port}",
            }
            server = subprocess.Popen(
                [str(ROOT / ".venv/bin/python"), "-m", "uvicorn", "project.asgi:application",
                 "--host", "127.0.0.1", "--port", str(port), "--ws-max-size", "65536",
                 "--ws-per-message-deflate", "false", "--lifespan", "off",
                 "--log-level", "warning", "--no-access-log"],
                cwd=ROOT,
                env=env,
            )  # fmt: skip
            try:
                time.sleep(4)
                for n in counts:
                    result = asyncio.run(
                        hold(
                            n,
                            f"ws://127.0.0.1:{port}/ws/rooms/idle/",
                            f"http://127.0.0.1:{port}",
                            cookie,
                            redis_port,
                            server.pid,
                            args.window,
                        )
                    )
                    results.append(result)
                    print(
                        f"{n:>6} idle sockets: Redis {result['redis_commands_per_s']} commands/s,"
                        f" server CPU {result['server_cpu_pct']} %, RSS"
                        f" {result['server_rss_mib']} MiB",
                        flush=True,
                    )
            finally:
                server.terminate()
                server.wait(10)
    finally:
        redis_proc.terminate()
        redis_proc.wait(10)
        shutil.rmtree(scratch, ignore_errors=True)
    base = results[0]["redis_commands_per_s"] or 1
    for result in results:
        result["ratio_to_smallest"] = round(result["redis_commands_per_s"] / base, 2)
    path = after_query.write_results(
        "heartbeat_redis",
        {"command": sys.argv, "machine": after_query.machine(), "results": results},
    )
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
