"""A rolling restart of two uvicorn processes behind the deployment's nginx, while people submit.

Six people sit in one room, each with a JSON-mode socket opened through nginx (TLS, the site file
of deploy/) and a few submissions a second. Then each process in turn gets SIGTERM, as systemd's
`systemctl restart calcrooms@<port>` sends it, and is started again on its port before the other
one goes. Each client behaves as the protocol asks of one (DESIGN.md, "Catch-up"): on every
(re)open it is live first, then fetches what it missed over HTTP through nginx, applies entries in
seq order only, and sends again, with the same client_id, every expression not yet answered by
its stored entry; it reconnects on 1012, and sends an expression answered `unavailable` or
`rate_limited` again a moment later, as the page does.

Shown: every socket of a stopping process is closed with 1012 (nothing abnormal), each process
exits within the wait, without a traceback, and afterwards nothing is lost or stored twice
and every client's view is the room's whole history, gap-free and in order. The counts are printed.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import random
import signal
import ssl
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import connections
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake
from websockets.typing import Origin, Subprotocol

from accounts.models import User
from rooms.models import Entry, Room
from tests.deploy.nginx_site import NginxProxy, nginx_in_front_of_two
from tests.factories import MembershipFactory, UserFactory
from tests.live import ServerProcess, _session_cookie
from tests.live import test_database_url as database_url  # not a test of this module

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not settings.REDIS_URL, reason="two processes share Redis"),
]

PEOPLE = 6
SUBMIT_EVERY_SECONDS = 0.5
# s: "eventually", for anything that must happen (a whole run took 30-66 s in nine runs here, and
# one step once missed 60 s; a failure says what each client and process was doing)
DEADLINE = 120
SERVER_ENV = {
    "DJANGO_SERVE_STATIC": "0",
    # nginx's origin, and the processes' own for a socket opened on one of them directly.
    "DJANGO_ALLOWED_ORIGINS": "https://127.0.0.1:*,http://127.0.0.1:*",
    # Each person submits twice a second, and on every reopen sends again all that is still
    # unanswered at once: the bucket holds a couple of minutes of that, so no answer is
    # rate_limited (with 40, a slow restart left some clients 40 behind, their resends were
    # refused, and 30 refusals closed them with 1008, as the limits say).
    "EXPRESSION_BUCKET_CAPACITY": "400",
    "EXPRESSION_BUCKET_REFILL_PER_SECOND": "20",
}

Frame = dict[str, Any]


def _tls() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # the test's own self-signed certificate
    return context


TLS = _tls()


class Person:
    """One person's client: a socket through nginx, catch-up over HTTP, an outbox."""

    def __init__(self, name: str, cookie: str, proxy: NginxProxy) -> None:
        self.name = name
        self.cookie = f"{settings.SESSION_COOKIE_NAME}={cookie}"
        self.proxy = proxy
        self.socket_url = f"wss://127.0.0.1:{proxy.https_port}/ws/rooms/lobby/"
        self.origin = proxy.url
        self.reconnect = asyncio.Event()  # cleared: stay away after a close until it is set
        self.reconnect.set()
        self.ws: ClientConnection | None = None
        self.last_seq = 0
        self.view: list[int] = []  # the seqs this client applied, in the order it applied them
        self.client_ids: dict[int, str | None] = {}  # seq -> client_id, as this client saw it
        self.pending: dict[str, str] = {}  # client_id -> expression, sent but not yet answered
        self.submitted: list[str] = []
        self.acknowledged: set[str] = set()  # answered by their stored entry on a socket
        # Sent on a socket that closed before answering, then found stored by the catch-up: the
        # stopping process finished them after it had closed the socket.
        self.unanswered_at_close: set[str] = set()
        self.stored_in_flight: set[str] = set()
        self.out_of_order: list[str] = []
        self.errors: list[Frame] = []
        # `unavailable` / `rate_limited`: not stored now, sent again later (as the page does).
        self.refused_for_now: Counter[str] = Counter()
        self.resends: set[asyncio.Task[None]] = set()
        self.closes: list[int | None] = []
        self.connections = 0
        self.numbers = itertools.count(1)
        self.stopped = False

    # --- the socket ---------------------------------------------------------------------------

    async def run(self) -> None:
        while not self.stopped:
            try:
                async with connect(
                    self.socket_url,
                    ssl=TLS if self.socket_url.startswith("wss:") else None,
                    origin=Origin(self.origin),
                    additional_headers={"Cookie": self.cookie},
                    subprotocols=[Subprotocol("calcrooms.v1.json")],
                    open_timeout=10,
                    ping_interval=None,  # the server's sync frame is the heartbeat
                ) as ws:
                    self.connections += 1
                    try:
                        await self.catch_up()  # live first (the socket is open), then fetch
                        self.ws = ws
                        for client_id, expression in list(self.pending.items()):
                            await self.send(client_id, expression)
                        async for raw in ws:
                            await self.handle(json.loads(raw))
                    except ConnectionClosed:
                        pass
                    finally:
                        self.ws = None
                        if not self.stopped:
                            self.closes.append(ws.close_code)
                            self.unanswered_at_close |= set(self.pending)
            except (OSError, InvalidHandshake, TimeoutError):
                pass  # nginx or both processes not there yet: try again
            await asyncio.sleep(random.uniform(0.2, 0.6))  # jittered, as the page does
            await self.reconnect.wait()

    async def send(self, client_id: str, expression: str) -> None:
        if self.ws is None:
            return  # sent on the next open
        with contextlib.suppress(ConnectionClosed):
            frame = {"type": "expression", "expression": expression, "client_id": client_id}
            await self.ws.send(json.dumps(frame))

    async def handle(self, frame: Frame) -> None:
        if frame["type"] == "entry":
            entry = frame["entry"]
            if entry["seq"] > self.last_seq + 1:
                await self.catch_up()  # a gap: fetch it, then this one is already applied
            self.apply(entry)
            if entry["author"] == self.name and entry["client_id"] in self.pending:
                self.acknowledged.add(entry["client_id"])
                del self.pending[entry["client_id"]]
        elif frame["type"] == "sync":
            if frame["last_seq"] > self.last_seq:
                await self.catch_up()
        elif frame["type"] == "error":
            client_id = frame.get("client_id")
            if frame["code"] in ("unavailable", "rate_limited") and client_id in self.pending:
                self.refused_for_now[frame["code"]] += 1
                resend = asyncio.create_task(self.resend_later(client_id))
                self.resends.add(resend)
                resend.add_done_callback(self.resends.discard)
            else:
                self.errors.append(frame)

    async def resend_later(self, client_id: str) -> None:
        await asyncio.sleep(random.uniform(0.2, 0.6))  # jittered, as the page does
        if client_id in self.pending:
            await self.send(client_id, self.pending[client_id])

    def apply(self, entry: Frame) -> None:
        seq = entry["seq"]
        if seq <= self.last_seq:
            return  # already shown (live and fetched both brought it)
        if seq != self.last_seq + 1:
            self.out_of_order.append(f"{seq} after {self.last_seq}")
        self.view.append(seq)
        client_id = entry["client_id"]
        mine = entry["author"] == self.name
        if mine and client_id in self.unanswered_at_close and client_id in self.pending:
            self.stored_in_flight.add(client_id)
        self.client_ids[seq] = entry["client_id"]
        self.last_seq = seq

    # --- catch-up over HTTP ---------------------------------------------------------------------

    async def catch_up(self) -> None:
        while True:
            page = await self.fetch(self.last_seq)
            for entry in page["entries"]:
                self.apply(entry)
            if not page["has_more"]:
                return

    async def fetch(self, after: int) -> Frame:
        url = f"{self.proxy.url}/rooms/lobby/entries/?after={after}&limit=500&format=json"
        request = urllib.request.Request(
            url, headers={"Cookie": self.cookie, "Accept": "application/json"}
        )
        opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=TLS))

        def get() -> Frame:
            with opener.open(request, timeout=10) as response:
                return json.loads(response.read())

        loop = asyncio.get_running_loop()
        deadline = loop.time() + DEADLINE
        while True:
            try:
                return await asyncio.to_thread(get)
            except OSError:
                if loop.time() > deadline:
                    raise
                await asyncio.sleep(0.3)  # a 502/503 while a process restarts: again

    # --- submitting -----------------------------------------------------------------------------

    async def submit_forever(self) -> None:
        while True:
            client_id = str(uuid.uuid4())
            expression = f"{next(self.numbers)} + 0"
            self.pending[client_id] = expression
            self.submitted.append(client_id)
            await self.send(client_id, expression)
            await asyncio.sleep(random.uniform(0.5, 1.5) * SUBMIT_EVERY_SECONDS)


@pytest.fixture
def people(lobby: Room, alice: User, bob: User) -> list[User]:
    others = [UserFactory(username=f"person{n}") for n in range(PEOPLE - 2)]
    for user in others:
        MembershipFactory(room=lobby, user=user)
    return [alice, bob, *others]


@pytest.fixture
def stack(people: list[User]) -> Iterator[tuple[NginxProxy, list[ServerProcess]]]:
    with nginx_in_front_of_two(SERVER_ENV) as stack:
        yield stack


def _stop(server: ServerProcess) -> tuple[int | None, str]:
    """SIGTERM, as systemd sends it (SIGKILL after 10 s); the exit code and the process's log."""
    server.stop()
    assert server.process is not None
    return server.process.returncode, server.log_path.read_text(errors="replace")


async def eventually(
    condition: Any, what: str, within: float = DEADLINE, explain: Any = None
) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not condition():
        if loop.time() > deadline:
            pytest.fail(f"not within {within}s: {what}" + (f": {explain()}" if explain else ""))
        await asyncio.sleep(0.1)


def _stored() -> list[tuple[int, str | None]]:
    try:
        rows = Entry.objects.filter(room__slug="lobby").values_list("seq", "client_id")
        return [(seq, str(client_id) if client_id else None) for seq, client_id in rows]
    finally:
        connections.close_all()


async def test_a_rolling_restart_behind_nginx_loses_nothing(
    stack: tuple[NginxProxy, list[ServerProcess]], people: list[User]
) -> None:
    proxy, servers = stack
    cookies = [await sync_to_async(_session_cookie)(user) for user in people]
    clients = [
        Person(user.username, cookie, proxy) for user, cookie in zip(people, cookies, strict=True)
    ]
    tasks = [asyncio.create_task(client.run()) for client in clients]

    def everyone_connected() -> bool:
        return all(c.ws is not None for c in clients)

    def progress(mark: dict[str, int], more: int = 3) -> bool:
        return all(len(c.acknowledged) >= mark[c.name] + more for c in clients)

    def acknowledged_now() -> dict[str, int]:
        return {c.name: len(c.acknowledged) for c in clients}

    def state() -> dict[str, Any]:
        """What each client and each process's log say (a failure's message)."""
        seen: dict[str, Any] = {
            c.name: {
                "acknowledged": len(c.acknowledged),
                "pending": len(c.pending),
                "connected": c.ws is not None,
                "run ended": repr(tasks[i].exception()) if tasks[i].done() else None,
                "closes": c.closes,
                "sent again": dict(c.refused_for_now),
                "errors": c.errors[-3:],
            }
            for i, c in enumerate(clients)
        }
        for server in servers:
            quiet = ("socket connected", "socket closed")
            lines = server.log_path.read_text(errors="replace").splitlines()
            seen[f"log of :{server.port}"] = [line for line in lines if not line.startswith(quiet)][
                -15:
            ]
        return seen

    closes_by_restart: list[Counter[int | None]] = []
    try:
        await eventually(everyone_connected, "every client connected through nginx")
        submitters = [asyncio.create_task(client.submit_forever()) for client in clients]
        await eventually(lambda: progress(dict.fromkeys(acknowledged_now(), 0)), "first entries")

        for index, server in enumerate(servers):
            mark = acknowledged_now()
            code, log = await asyncio.to_thread(_stop, server)
            # After its graceful shutdown uvicorn re-raises the SIGTERM it caught, so it "dies" of
            # SIGTERM (systemd counts that as a clean stop); -9 would be stop()'s SIGKILL after
            # 10 s of waiting.
            assert code == -signal.SIGTERM, f"process {index} ended with {code}:\n{log}"
            assert "Traceback" not in log, log
            # Everyone is (still, or again) connected, through the other process, and storing:
            # whoever was on the stopped one has reconnected by now.
            await eventually(
                lambda m=mark: progress(m), f"entries stored while {index} restarts", explain=state
            )
            closes_by_restart.append(Counter(code for c in clients for code in c.closes))
            closes_by_restart[-1] -= sum(closes_by_restart[:-1], Counter())
            await eventually(everyone_connected, "every client connected again")
            replacement = ServerProcess(port=server.port, env=SERVER_ENV)
            await asyncio.to_thread(replacement.start)
            servers[index] = replacement
            mark = acknowledged_now()
            await eventually(lambda m=mark: progress(m), "entries after the restart", explain=state)

        for submitter in submitters:
            submitter.cancel()
        await asyncio.gather(*submitters, return_exceptions=True)
        await eventually(
            lambda: all(not c.pending for c in clients),
            "every submission answered",
            explain=lambda: {
                c.name: {"pending": list(c.pending), "errors": c.errors, "connected": bool(c.ws)}
                for c in clients
                if c.pending
            },
        )
        stored = await sync_to_async(_stored)()
        last_seq = max(seq for seq, _ in stored)
        await eventually(
            lambda: all(c.last_seq == last_seq for c in clients), "every client caught up"
        )
    finally:
        for client in clients:
            client.stopped = True
            if client.ws is not None:
                await client.ws.close()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    submitted = [cid for c in clients for cid in c.submitted]
    acknowledged = set().union(*(c.acknowledged for c in clients))
    stored_ids = Counter(cid for _, cid in stored)
    lost = [cid for cid in submitted if cid not in stored_ids]
    doubled = [cid for cid, times in stored_ids.items() if times > 1]
    history = sorted(seq for seq, _ in stored)
    refused_for_now = sum((c.refused_for_now for c in clients), Counter())
    print(
        f"\nrolling restart behind nginx: {len(submitted)} submitted, {len(stored)} stored, "
        f"{len(acknowledged)} acknowledged, {len(lost)} lost, {len(doubled)} doubled; "
        f"{sum(len(c.stored_in_flight) for c in clients)} in flight at a 1012 and stored by "
        f"the stopping process, found by the catch-up; "
        f"sockets closed per restart: {[dict(c) for c in closes_by_restart]}; "
        f"sent again after unavailable/rate_limited: {sum(refused_for_now.values())}; "
        f"connections per client: {[c.connections for c in clients]}"
    )
    assert len(lost) == 0
    assert len(doubled) == 0
    assert acknowledged == set(submitted)
    assert len(stored) == len(submitted)
    assert history == list(range(1, len(stored) + 1))  # seqs gap-free
    # Each restart closed the sockets it held, every one with 1012 (service restart).
    for closes in closes_by_restart:
        assert set(closes) == {1012}, closes_by_restart
    for client in clients:
        assert client.errors == [], (client.name, client.errors)
        assert client.out_of_order == [], (client.name, client.out_of_order)
        assert client.view == history, f"{client.name}'s view is not the whole history"
        assert client.client_ids == dict(stored), f"{client.name} saw other entries"


async def _wait_for_lock_waiters(lock: psycopg.AsyncConnection[Any], count: int) -> None:
    """Until `count` other sessions of this database wait for a lock (the held room row)."""
    query = (
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
    )

    async def waiting() -> int:
        row = await (await lock.execute(query)).fetchone()
        return row[0] if row else 0

    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE
    while await waiting() < count:
        if loop.time() > deadline:
            pytest.fail(f"no submission waited for the room's lock within {DEADLINE}s")
        await asyncio.sleep(0.1)


async def test_a_submission_in_flight_at_sigterm_is_stored_by_the_stopping_process(
    stack: tuple[NginxProxy, list[ServerProcess]], people: list[User]
) -> None:
    """The room's row lock, held here, keeps alice's submission in flight on process 0 while it
    gets SIGTERM: her socket closes with 1012 at once, the process waits for the submission,
    stores it once the lock is free, and only then exits; back through nginx, alice's catch-up
    finds it stored and her resend is answered with that entry."""
    proxy, servers = stack
    stopping_server = servers[0]
    cookie = await sync_to_async(_session_cookie)(people[0])
    alice = Person(people[0].username, cookie, proxy)
    alice.socket_url = f"ws://127.0.0.1:{stopping_server.port}/ws/rooms/lobby/"
    alice.origin = stopping_server.url
    runner = asyncio.create_task(alice.run())
    try:
        await eventually(lambda: alice.ws is not None, "alice connected to process 0")
        alice.socket_url = f"wss://127.0.0.1:{proxy.https_port}/ws/rooms/lobby/"
        alice.origin = proxy.url
        alice.reconnect.clear()

        database = await psycopg.AsyncConnection.connect(database_url())
        async with database as lock, lock.transaction():
            await lock.execute("SELECT 1 FROM rooms_room WHERE slug = 'lobby' FOR UPDATE")
            client_id = str(uuid.uuid4())
            alice.pending[client_id] = "6*7"
            alice.submitted.append(client_id)
            await alice.send(client_id, "6*7")
            await _wait_for_lock_waiters(lock, 1)  # process 0 is storing it

            stopping = asyncio.create_task(asyncio.to_thread(_stop, stopping_server))
            await eventually(lambda: alice.closes, "alice's socket closed")
            assert alice.closes == [1012]
            assert not stopping.done(), "the process exited with a submission in flight"
        # The lock is free: the stopping process stores the entry, then exits.
        code, log = await stopping
        assert code == -signal.SIGTERM, log
        assert "Traceback" not in log, log
        stored = await sync_to_async(_stored)()
        assert stored == [(1, client_id)], "not stored by the process that was stopping"

        alice.reconnect.set()  # through nginx, to the other process
        await eventually(lambda: not alice.pending, "alice's submission answered")
    finally:
        alice.stopped = True
        alice.reconnect.set()
        if alice.ws is not None:
            await alice.ws.close()
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
    print(
        f"\nin flight at SIGTERM: closed with {alice.closes[0]}, stored once by the stopping "
        f"process, found by the catch-up: {client_id in alice.stored_in_flight}"
    )
    assert client_id in alice.stored_in_flight  # the catch-up found it before any resend
    assert alice.acknowledged == {client_id}
    assert alice.view == [1] and alice.errors == []
    assert await sync_to_async(_stored)() == [(1, client_id)]
