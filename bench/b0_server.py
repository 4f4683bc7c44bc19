"""B0, the floor: a bare `websockets` + uvloop broadcast server, no Django, no Redis.

A client connects to ws://host:port/<room>; every text message it sends is broadcast, as it is,
to every socket of that room (the sender's included) with `websockets.broadcast`, which writes
the frame once per socket without waiting for slow readers. Nothing is stored, authorised or
parsed: this is what Python and one event loop can do here, the bound the product is read
against (`bench/live.py`).

    .venv/bin/python bench/b0_server.py --port 8765 [--host 127.0.0.1] [--deflate]

Like the product (`UVICORN_FLAGS` in the Makefile) it refuses frames over 64 KiB and does not
negotiate permessage-deflate unless `--deflate` is given, so a client offering it (as browsers
do) gets the same answer as from the product.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import signal

import uvloop
from websockets.asyncio.server import ServerConnection, broadcast, serve
from websockets.exceptions import ConnectionClosed

MAX_FRAME_BYTES = 65536  # uvicorn's --ws-max-size in the Makefile


def raise_open_files() -> int:
    """As many file descriptors as the hard limit allows: one per socket."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


async def serve_rooms(host: str, port: int, deflate: bool) -> None:
    rooms: dict[str, set[ServerConnection]] = {}

    async def handler(ws: ServerConnection) -> None:
        room = ws.request.path if ws.request is not None else "/"
        members = rooms.setdefault(room, set())
        members.add(ws)
        try:
            async for message in ws:
                if isinstance(message, str):
                    broadcast(members, message)
        except ConnectionClosed:
            pass  # a client that went away without a close frame: nothing to report
        finally:
            members.discard(ws)
            if not members:
                rooms.pop(room, None)

    stop = asyncio.get_running_loop().create_future()
    for signum in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(signum, stop.set_result, None)
    async with serve(
        handler,
        host,
        port,
        max_size=MAX_FRAME_BYTES,
        compression="deflate" if deflate else None,
        backlog=4096,
    ):
        await stop  # silent while it serves: anything in its log is a problem


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--deflate", action="store_true", help="negotiate permessage-deflate")
    args = parser.parse_args()
    raise_open_files()
    uvloop.run(serve_rooms(args.host, args.port, args.deflate))


if __name__ == "__main__":
    main()
