"""The load generator's worker process: many WebSocket clients on one uvloop, driven over stdin.

`bench/live.py` starts several of these (pinned to the load core when `taskset` exists), each
holding a share of the sockets, and drives them with one JSON command a line on stdin; each
command is answered with one JSON line on stdout. The workers never decide anything: they
connect, send on a schedule, and count.

Commands:

- `connect`: open the given sockets (`kind` a | b0 | b1; per socket its URL, cookie, room and,
  for a sending socket, its sender id), a bounded number of handshakes at a time; answer how many
  opened, the first failures and the extension the server negotiated.
- `phase`: start measuring phase k: reset the counters, and for each sending socket of this
  worker send `rate` messages a second for `duration` seconds from `start_at` (the same
  `time.monotonic()` clock in every process on Linux). Open loop: message i is due at
  `start_at + (i + offset) / rate` and is stamped with that *scheduled* time, not the time it
  was actually sent, so a sender (or a server) that falls behind shows as latency instead of
  slowing the offered rate (coordinated omission counted).
- `acks`: what each sender sent and what came back to it (its own message in the broadcast; for
  Calcrooms the stored entry, with its client_id) and the refusals by code.
- `report`: given what was acknowledged, each receiving socket's loss (expected and never
  received), duplicates, reordering (a sender's seq lower than one already received) and, for
  Calcrooms, room order (an entry seq not above the previous one on the same connection), with
  a latency histogram (1 % buckets) over every delivery, and this worker's CPU time.
- `quiet`: seconds since the last frame of any kind arrived.
- `catchup`: Calcrooms clients that reconnect at once with `last_seq` and catch up to `until`
  over HTTP as the contract says (bench/catchup.py's `CatchUpClient`, with an asyncio HTTP
  client so 200 of them fetch concurrently); per client the time to caught up.
- `close`: close every socket; `exit`.

Message formats (phase, sender, seq, scheduled time in microseconds of `time.monotonic()`):

- Calcrooms: the expression `"<phase>+<sender>+<seq>+<stamp>"` (an exact integer sum: the
  server really evaluates and stores it; receivers read it back from the entry's `expression`);
- B0: the text `"<phase> <sender> <seq> <stamp>"`; B1: `{"message": "<the same>"}`.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import resource
import sys
import time
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import uvloop
from websockets.asyncio.client import ClientConnection, connect
from websockets.client import ClientProtocol
from websockets.exceptions import ConnectionClosed
from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.protocol import State
from websockets.uri import parse_uri

sys.path.insert(0, str(Path(__file__).resolve().parent))

from catchup import CatchUpClient, CatchUpError

SUBPROTOCOL = "calcrooms.v1.json"
KEY_BASE = 10_000_000  # key = sender * KEY_BASE + seq
LOG_STEP = math.log(1.01)  # latency histogram: 1 % wide buckets
EXPRESSION = re.compile(r"^(\d+)\+(\d+)\+(\d+)\+(\d+)$")


def bucket(latency_us: float) -> int:
    return int(math.log(max(latency_us, 1.0)) / LOG_STEP)


def planned_offset(sender: int) -> float:
    """Where in its interval a sender's first message falls: spread over the tick (golden
    ratio), so hundreds of senders at the same rate do not all send at the same instant."""
    return (sender * 0.6180339887) % 1.0


def planned_count(sender: int, rate: float, duration: float) -> int:
    """How many messages a sender sends: every i with (i + offset) / rate < duration, so the
    senders together offer rate x duration however slow each one is (0.2/s for 3 s: most
    send one, some none)."""
    return max(0, math.ceil(duration * rate - planned_offset(sender)))


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def now_us() -> int:
    return time.monotonic_ns() // 1000


class ReceiveOnly(asyncio.Protocol):
    """A receiving client socket on websockets' Sans-I/O protocol straight on a uvloop
    transport: the same handshake, framing, ping answers and (when negotiated) deflate as the
    asyncio client, without a future, a queue and a task switch per frame: a lighter path per
    frame for the load core. Senders keep the asyncio client."""

    def __init__(self, sock: Sock, headers: dict[str, str], compression: str | None) -> None:
        self.sock = sock
        origin = headers.pop("Origin", None)
        self.protocol = ClientProtocol(
            parse_uri(sock.url),
            origin=origin,  # type: ignore[arg-type]
            extensions=[ClientPerMessageDeflateFactory()] if compression == "deflate" else None,
            subprotocols=[SUBPROTOCOL] if sock.worker.kind == "a" else None,  # type: ignore[list-item]
            max_size=2**22,
        )
        self.request = self.protocol.connect()
        for name, value in headers.items():
            self.request.headers[name] = value
        self.opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.closed = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None
        self.response: Response | None = None
        self.parts: list[bytes] = []

    @property
    def close_code(self) -> int | None:
        if self.protocol.state is State.OPEN and not self.closed.done():
            return None
        return self.protocol.close_code or 1006

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.protocol.send_request(self.request)
        self._flush()

    def data_received(self, data: bytes) -> None:
        self.protocol.receive_data(data)
        for event in self.protocol.events_received():
            if isinstance(event, Frame):
                if event.opcode is Opcode.TEXT or event.opcode is Opcode.CONT:
                    self.parts.append(event.data)
                    if event.fin:
                        text = b"".join(self.parts).decode()
                        self.parts = []
                        self.sock.worker.on_frame(self.sock, text)
            elif isinstance(event, Response):
                self.response = event
                if self.protocol.handshake_exc is not None:
                    if not self.opened.done():
                        self.opened.set_exception(self.protocol.handshake_exc)
                elif not self.opened.done():
                    self.opened.set_result(None)
        self._flush()

    def _flush(self) -> None:
        assert self.transport is not None
        for data in self.protocol.data_to_send():
            if data:
                self.transport.write(data)
            elif self.transport.can_write_eof():
                self.transport.write_eof()

    def eof_received(self) -> bool | None:
        self.protocol.receive_eof()
        self._flush()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_exception(exc or ConnectionError("closed during the handshake"))
        if not self.closed.done():
            self.closed.set_result(None)

    async def close(self) -> None:
        if self.transport is None or self.closed.done():
            return
        if self.protocol.state is State.OPEN:
            self.protocol.send_close(1000)
            self._flush()
        try:
            await asyncio.wait_for(asyncio.shield(self.closed), 5)
        except TimeoutError:
            self.transport.abort()


class Sock:
    """One client socket and what it saw in the current phase."""

    def __init__(self, worker: Worker, spec: dict[str, Any]) -> None:
        self.worker = worker
        self.url: str = spec["url"]
        self.cookie: str | None = spec.get("cookie")
        self.room: str = spec["room"]
        self.sender: int | None = spec.get("sender")
        self.ws: ClientConnection | ReceiveOnly | None = None
        self.reader: asyncio.Task[None] | None = None
        self.closes: list[int | None] = []
        self.reset()

    def reset(self) -> None:
        self.received: set[int] = set()
        self.max_by_sender: dict[int, int] = {}
        self.dups = 0
        self.reorders = 0
        self.order_violations = 0
        self.room_last = 0
        self.sent = 0
        self.sent_seqs: list[int] = []
        self.acked: dict[int, str | None] = {}
        self.client_ids: list[str] = []
        self.max_lag_ms = 0.0

    async def open(self) -> None:
        w = self.worker
        headers = {}
        if w.origin:
            headers["Origin"] = w.origin
        if self.cookie:
            headers["Cookie"] = self.cookie
        self.room_last = 0
        if self.sender is None:
            await self._open_receive_only(headers)
            return
        self.ws = await connect(
            self.url,
            subprotocols=[SUBPROTOCOL] if w.kind == "a" else None,  # type: ignore[list-item]
            additional_headers=headers,
            compression=w.compression,
            proxy=None,
            ping_interval=None,  # a browser does not ping; the server's pings are answered
            open_timeout=120,
            max_size=2**22,
        )
        self.reader = asyncio.create_task(self._read())

    async def _open_receive_only(self, headers: dict[str, str]) -> None:
        loop = asyncio.get_running_loop()
        uri = parse_uri(self.url)
        conn = ReceiveOnly(self, headers, self.worker.compression)
        await asyncio.wait_for(
            loop.create_connection(lambda: conn, uri.host, uri.port), timeout=120
        )
        try:
            await asyncio.wait_for(asyncio.shield(conn.opened), timeout=120)
        except BaseException:
            if conn.transport is not None:
                conn.transport.abort()
            raise
        self.ws = conn
        self.reader = asyncio.create_task(self._watch(conn))

    async def _watch(self, conn: ReceiveOnly) -> None:
        await conn.closed
        self.closes.append(conn.close_code)
        if self.worker.closing:
            return
        await self._reopen()

    async def _reopen(self) -> None:
        self.worker.reconnects += 1
        await asyncio.sleep(0.5)
        try:
            await self.open()
        except Exception:
            self.worker.reconnect_failures += 1
            self.ws = None

    async def _read(self) -> None:
        while True:
            ws = self.ws
            assert ws is not None
            try:
                async for message in ws:
                    self.worker.on_frame(self, message)
            except ConnectionClosed:
                pass
            self.closes.append(ws.close_code)
            if self.worker.closing:
                return
            await self._reopen()
            return  # open() started a new reader (or the socket stays down)

    async def send_loop(self, phase: int, rate: float, start_at: float, duration: float) -> None:
        w = self.worker
        interval = 1.0 / rate
        offset = planned_offset(self.sender or 0)
        for index in range(planned_count(self.sender or 0, rate, duration)):
            due = start_at + (index + offset) * interval
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                self.max_lag_ms = max(self.max_lag_ms, -delay * 1000)
            seq = index + 1
            stamp = int(due * 1_000_000)
            if w.kind == "a":
                client_id = str(uuid.uuid4())
                self.client_ids.append(client_id)
                text = json.dumps(
                    {
                        "type": "expression",
                        "expression": f"{phase}+{self.sender}+{seq}+{stamp}",
                        "client_id": client_id,
                    }
                )
            elif w.kind == "b1":
                text = json.dumps({"message": f"{phase} {self.sender} {seq} {stamp}"})
            else:
                text = f"{phase} {self.sender} {seq} {stamp}"
            ws = self.ws
            if not isinstance(ws, ClientConnection):
                w.send_failures += 1
                continue
            try:
                await ws.send(text)
                self.sent += 1
                self.sent_seqs.append(seq)
            except ConnectionClosed:
                w.send_failures += 1


class AsyncCatchUpClient(CatchUpClient):
    """bench/catchup.py's client, fetching over an asyncio HTTP/1.1 keep-alive connection, so
    hundreds of clients in one process fetch at the same time instead of in a thread pool."""

    _conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def _get(self, path: str) -> tuple[int, bytes]:
        if self._conn is None:
            self._conn = await asyncio.open_connection(self.server.host, self.server.port)
        reader, writer = self._conn
        writer.write(
            (
                f"GET {path} HTTP/1.1\r\nHost: {self.server.host}:{self.server.port}\r\n"
                f"Accept: application/json\r\nCookie: {self.cookie}\r\n\r\n"
            ).encode()
        )
        await writer.drain()
        status = int((await reader.readline()).split()[1])
        headers: dict[str, str] = {}
        while True:
            line = await reader.readline()
            if line in (b"\r\n", b""):
                break
            name, _, value = line.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        if "content-length" in headers:
            body = await reader.readexactly(int(headers["content-length"]))
        else:  # chunked
            parts = []
            while True:
                size = int((await reader.readline()).strip() or b"0", 16)
                if size == 0:
                    await reader.readline()
                    break
                parts.append(await reader.readexactly(size))
                await reader.readline()
            body = b"".join(parts)
        if headers.get("connection", "").lower() == "close":
            writer.close()
            self._conn = None
        return status, body

    async def _fetch(self) -> None:
        self.fetching = True
        self.fetches += 1
        try:
            while True:
                query = f"after={self.last}&limit=500&format=json"
                path = f"/rooms/{self.slug}/entries/?{query}"
                status, body = await self._get(path)
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

    async def close(self) -> None:
        await super().close()
        if self._conn is not None:
            self._conn[1].close()
            self._conn = None


class Worker:
    def __init__(self) -> None:
        self.kind = "a"
        self.origin: str | None = None
        self.compression: str | None = None
        self.sockets: list[Sock] = []
        self.closing = False
        self.phase = -1
        self.hist: dict[int, int] = {}
        self.max_us = 0
        self.stale = 0
        self.ignored = 0
        self.errors: dict[str, int] = {}
        self.reconnects = 0
        self.reconnect_failures = 0
        self.send_failures = 0
        self.last_frame = time.monotonic()
        self.send_tasks: list[asyncio.Task[None]] = []
        self.planned = 0
        self.phase_cpu = cpu_seconds()
        self.phase_wall = time.monotonic()

    # --- receiving ---

    def on_frame(self, sock: Sock, message: str | bytes) -> None:
        now = now_us()
        self.last_frame = time.monotonic()
        if isinstance(message, bytes):
            message = message.decode()
        if self.kind == "a":
            frame = json.loads(message)
            kind = frame.get("type")
            if kind == "error":
                code = str(frame.get("code"))
                self.errors[code] = self.errors.get(code, 0) + 1
                return
            if kind != "entry":
                self.ignored += 1  # presence, sync
                return
            entry = frame["entry"]
            if entry["seq"] <= sock.room_last:
                sock.order_violations += 1
            sock.room_last = entry["seq"]
            match = EXPRESSION.match(entry["expression"])
            if match is None:
                self.ignored += 1
                return
            phase, sender, seq, stamp = (int(part) for part in match.groups())
            client_id = entry.get("client_id")
        else:
            text = json.loads(message)["message"] if self.kind == "b1" else message
            phase, sender, seq, stamp = (int(part) for part in text.split(" "))
            client_id = None
        if phase != self.phase:
            self.stale += 1
            return
        if sender == sock.sender:  # our own message back: the acknowledgement
            if seq not in sock.acked:
                sock.acked[seq] = client_id
            return
        key = sender * KEY_BASE + seq
        if key in sock.received:
            sock.dups += 1
            return
        sock.received.add(key)
        latency = now - stamp
        index = bucket(latency)
        self.hist[index] = self.hist.get(index, 0) + 1
        if latency > self.max_us:
            self.max_us = latency
        if seq < sock.max_by_sender.get(sender, 0):
            sock.reorders += 1
        else:
            sock.max_by_sender[sender] = seq

    # --- commands ---

    async def cmd_connect(self, cmd: dict[str, Any]) -> dict[str, Any]:
        self.kind = cmd["kind"]
        self.origin = cmd.get("origin")
        self.compression = cmd.get("compression")
        new = [Sock(self, spec) for spec in cmd["sockets"]]
        started = time.monotonic()
        cpu = cpu_seconds()
        gate = asyncio.Semaphore(cmd.get("concurrency", 50))
        failures: list[str] = []

        async def one(sock: Sock) -> bool:
            async with gate:
                try:
                    await sock.open()
                    return True
                except Exception as exc:
                    failures.append(f"{type(exc).__name__}: {str(exc)[:160]}")
                    return False

        results = await asyncio.gather(*(one(sock) for sock in new))
        self.sockets += [sock for sock, ok in zip(new, results, strict=True) if ok]
        negotiated = None
        for sock in self.sockets:
            if sock.ws is not None and sock.ws.response is not None:
                negotiated = sock.ws.response.headers.get("Sec-WebSocket-Extensions")
                break
        return {
            "connected": sum(results),
            "failed": len(failures),
            "failures": failures[:5],
            "seconds": round(time.monotonic() - started, 3),
            "cpu_seconds": round(cpu_seconds() - cpu, 3),
            "negotiated": negotiated,
        }

    async def cmd_phase(self, cmd: dict[str, Any]) -> dict[str, Any]:
        self.phase = cmd["phase"]
        for sock in self.sockets:
            sock.reset()
        self.hist = {}
        self.max_us = 0
        self.stale = self.ignored = self.send_failures = 0
        self.errors = {}
        self.phase_cpu = cpu_seconds()
        self.phase_wall = time.monotonic()
        rates: dict[str, float] = cmd.get("rates") or {}
        self.send_tasks = [
            asyncio.create_task(
                sock.send_loop(
                    self.phase, rates[str(sock.sender)], cmd["start_at"], cmd["duration"]
                )
            )
            for sock in self.sockets
            if sock.sender is not None and str(sock.sender) in rates
        ]
        planned = sum(
            planned_count(sock.sender, rates[str(sock.sender)], cmd["duration"])
            for sock in self.sockets
            if sock.sender is not None and str(sock.sender) in rates
        )
        self.planned = planned
        return {"ok": True, "senders": len(self.send_tasks), "planned": planned}

    async def cmd_acks(self, cmd: dict[str, Any]) -> dict[str, Any]:
        if self.send_tasks:
            await asyncio.gather(*self.send_tasks, return_exceptions=True)
        senders = {}
        for sock in self.sockets:
            if sock.sender is None or not sock.sent:
                continue
            senders[str(sock.sender)] = {
                "room": sock.room,
                "sent": sock.sent,
                "sent_seqs": sock.sent_seqs,
                "acked": sorted(sock.acked),
                "acked_client_ids": [cid for cid in sock.acked.values() if cid],
                "client_ids": sock.client_ids,
                "max_lag_ms": round(sock.max_lag_ms, 2),
            }
        return {"senders": senders, "errors": self.errors, "send_failures": self.send_failures}

    async def cmd_report(self, cmd: dict[str, Any]) -> dict[str, Any]:
        expected: dict[str, dict[str, Any]] = cmd.get("expected") or {}
        by_room: dict[str, list[tuple[int, set[int]]]] = {}
        for sender, info in expected.items():
            keys = {int(sender) * KEY_BASE + seq for seq in info["seqs"]}
            by_room.setdefault(info["room"], []).append((int(sender), keys))
        out = {
            "receivers": 0,
            "deliveries": 0,
            "expected_deliveries": 0,
            "lost": 0,
            "receivers_with_loss": 0,
            "duplicates": 0,
            "reordered": 0,
            "receivers_reordered": 0,
            "room_order_violations": 0,
            "extra": 0,
        }
        for sock in self.sockets:
            streams = [(s, keys) for s, keys in by_room.get(sock.room, []) if s != sock.sender]
            if not streams and sock.sender is not None:
                continue  # a sender alone: not a receiver
            out["receivers"] += 1
            wanted = set().union(*(keys for _s, keys in streams)) if streams else set()
            got = len(sock.received & wanted)
            lost = len(wanted) - got
            out["deliveries"] += len(sock.received)
            out["expected_deliveries"] += len(wanted)
            out["lost"] += lost
            out["receivers_with_loss"] += 1 if lost else 0
            out["extra"] += len(sock.received) - got
            out["duplicates"] += sock.dups
            out["reordered"] += sock.reorders
            out["receivers_reordered"] += 1 if sock.reorders else 0
            out["room_order_violations"] += sock.order_violations
        out.update(
            hist={str(k): v for k, v in self.hist.items()},
            max_ms=round(self.max_us / 1000, 3),
            stale=self.stale,
            ignored=self.ignored,
            cpu_seconds=round(cpu_seconds() - self.phase_cpu, 3),
            wall_seconds=round(time.monotonic() - self.phase_wall, 3),
            reconnects=self.reconnects,
            reconnect_failures=self.reconnect_failures,
            open=sum(1 for s in self.sockets if s.ws is not None and s.ws.close_code is None),
            close_codes=_count([code for s in self.sockets for code in s.closes]),
        )
        return out

    async def cmd_quiet(self, cmd: dict[str, Any]) -> dict[str, Any]:
        """Seconds since the last frame, and this phase's messages not answered yet (neither
        acknowledged nor refused): a server may be silent for a while with work queued."""
        answered = sum(len(sock.acked) for sock in self.sockets) + sum(self.errors.values())
        return {
            "quiet_seconds": round(time.monotonic() - self.last_frame, 3),
            "pending": max(0, self.planned - answered),
        }

    async def cmd_catchup(self, cmd: dict[str, Any]) -> dict[str, Any]:
        server = SimpleNamespace(host=cmd["host"], port=cmd["port"], origin=cmd["origin"])
        gate = asyncio.Event()

        async def one(spec: dict[str, Any]) -> dict[str, Any]:
            client = AsyncCatchUpClient(server, spec["slug"], spec["cookie"], spec["last_seq"])  # type: ignore[arg-type]
            await gate.wait()
            started = time.monotonic()
            try:
                await client.open()
                opened = time.monotonic()
                await client.catch_up()
                await client.wait_for(spec["until"], 60)
                done = time.monotonic()
                client.check(spec["last_seq"] + 1, spec["until"])
                return {
                    "ok": True,
                    "total_ms": round((done - started) * 1000, 3),
                    "after_open_ms": round((done - opened) * 1000, 3),
                    "connect_ms": round((opened - started) * 1000, 3),
                    "pages": client.pages,
                    "started": started,
                    "done": done,
                }
            except Exception as exc:
                return {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:300]}
            finally:
                await client.close()

        tasks = [asyncio.create_task(one(spec)) for spec in cmd["clients"]]
        await asyncio.sleep(0)
        cpu = cpu_seconds()
        wall = time.monotonic()
        gate.set()
        results = await asyncio.gather(*tasks)
        return {
            "clients": results,
            "cpu_seconds": round(cpu_seconds() - cpu, 3),
            "wall_seconds": round(time.monotonic() - wall, 3),
        }

    async def cmd_close(self, cmd: dict[str, Any]) -> dict[str, Any]:
        self.closing = True
        for task in self.send_tasks:
            task.cancel()
        await asyncio.gather(
            *(s.ws.close() for s in self.sockets if s.ws is not None), return_exceptions=True
        )
        for sock in self.sockets:
            if sock.reader is not None:
                sock.reader.cancel()
        closed = len(self.sockets)
        self.sockets = []
        self.closing = False
        return {"closed": closed}


def _count(values: list[Any]) -> dict[str, int]:
    out: dict[str, int] = {}
    for value in values:
        out[str(value)] = out.get(str(value), 0) + 1
    return out


def raise_open_files() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def serve() -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=2**28)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    worker = Worker()
    while True:
        line = await reader.readline()
        if not line:
            break
        cmd = json.loads(line)
        if cmd["cmd"] == "exit":
            break
        try:
            answer = await getattr(worker, f"cmd_{cmd['cmd']}")(cmd)
        except Exception as exc:
            answer = {"error": f"{type(exc).__name__}: {exc}"}
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()
    await worker.cmd_close({})


def _die_with_parent() -> None:
    """End when bench/live.py ends, however it ends (Linux: PR_SET_PDEATHSIG)."""
    try:
        import ctypes
        import signal

        ctypes.CDLL(None).prctl(1, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def main() -> None:
    _die_with_parent()
    raise_open_files()
    uvloop.run(serve())


if __name__ == "__main__":
    main()
