"""PostgreSQL is allowed to fail: a real uvicorn process on a PostgreSQL of the test's own, which
the test stops (fast and immediate) and starts again.

While it is down every route answers 503 (JSON for JSON clients, a page otherwise) and sockets
answer `unavailable` and stay open; once it is back the first requests succeed (the pool checks its
connections instead of handing out the ones the restart broke), and an expression resent with its
client_id is stored exactly once. The server's log says so in a line or two, with no traceback.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from email.message import Message
from typing import Any

import pytest
from django.conf import settings
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Origin, Subprotocol

from rooms.services import SERVER_BUSY
from tests.pg_cluster import Site, site_on_own_postgres

WITHIN = 60  # generous deadline for anything that has to happen "soon"


@pytest.fixture(scope="module")
def site() -> Iterator[Site]:
    with site_on_own_postgres() as made:
        yield made


def http(
    site: Site,
    path: str,
    *,
    user: str | None = "bob",
    accept: str = "text/html",
    method: str = "GET",
    data: dict[str, str] | None = None,
    token: bool = False,
) -> tuple[int, Message, str]:
    """Status, headers (any letter case) and body of one request to the server."""
    headers = {"Accept": accept}
    if token:
        headers["Authorization"] = f"Bearer {site.token}"
    elif user:
        headers["Cookie"] = f"{settings.SESSION_COOKIE_NAME}={site.cookies[user]}"
    body = None
    if data is not None:
        body = urllib.parse.urlencode(data).encode()
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    request = urllib.request.Request(
        site.server.url + path, data=body, headers=headers, method=method
    )
    try:
        with urllib.request.urlopen(request, timeout=WITHIN) as response:
            return response.status, response.headers, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read().decode()


JSON = "application/json"
# (what, path, how): every kind of route a person or a script uses.
ROUTES: list[tuple[str, str, dict[str, Any]]] = [
    ("room list", "/", {}),
    ("room page", "/rooms/lobby/", {}),
    ("history page", "/rooms/lobby/history/", {}),
    ("history JSON", "/rooms/lobby/export.json", {"accept": JSON}),
    ("entries after", "/rooms/lobby/entries/?after=0", {"accept": JSON}),
    ("entries fragments", "/rooms/lobby/entries/?after=0", {}),
    ("presence", "/rooms/lobby/presence/", {"accept": JSON}),
    ("login page", "/accounts/login/", {"user": None}),
    ("tokens page", "/accounts/tokens/", {}),
    (
        "POST entry (token)",
        "/rooms/lobby/entries/",
        {"method": "POST", "data": {"expression": "1+1"}, "token": True, "accept": JSON},
    ),
]


def first_success(site: Site) -> tuple[float, list[int]]:
    """Seconds from now to the first 200 of the presence route, and every status seen."""
    started = time.monotonic()
    statuses: list[int] = []
    while time.monotonic() - started < WITHIN:
        status, _, _ = http(site, "/rooms/lobby/presence/", accept=JSON)
        statuses.append(status)
        if status == 200:
            return time.monotonic() - started, statuses
    pytest.fail(f"no 200 within {WITHIN}s of PostgreSQL's return: {statuses}")


def outage_lines(log: str) -> list[str]:
    return [line for line in log.splitlines() if "database" in line.lower()]


@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_every_route_answers_503_while_postgresql_is_down_and_serves_at_once_after(
    site: Site, mode: str
) -> None:
    for what, path, how in ROUTES:  # all up: they answer (a POST stores)
        status, _, body = http(site, path, **how)
        assert status in (200, 201), (what, status, body[:300])
    offset = site.log_offset()

    site.cluster.stop(mode)
    seen = {}
    for what, path, how in ROUTES:
        status, headers, body = http(site, path, **how)
        seen[what] = status
        assert status == 503, (what, status, body[:500])
        assert int(headers["Retry-After"]) > 0, what
        if how.get("accept") == JSON:
            assert headers["Content-Type"] == JSON, what
            assert json.loads(body)["error"]["code"] == "unavailable", what
        else:
            assert headers["Content-Type"].startswith("text/html"), what
            assert "Unavailable for a moment" in body, what
            assert 'id="unavailable"' in body, what
    print(f"\n{mode} stop: {seen}")
    status, _, body = http(site, "/healthz", user=None)  # says itself what is down
    assert status == 503 and json.loads(body)["database"].startswith("error"), body

    site.cluster.start()
    waited, statuses = first_success(site)
    print(f"{mode}: first success {waited:.2f} s after PostgreSQL accepted connections: {statuses}")
    assert statuses == [200]  # no burst of failures from connections the restart broke
    after = [http(site, path, **how)[0] for _, path, how in ROUTES]
    assert all(status in (200, 201) for status in after), after

    log = site.log_since(offset)
    print(f"server log during the {mode} outage:\n{log}")
    assert "Traceback" not in log
    assert "Internal Server Error" not in log and "_session_cache" not in log
    lines = outage_lines(log)
    assert len(lines) == 2, lines  # it went away; it is back
    assert "database unavailable" in lines[0] and "database available again" in lines[1]


def test_a_quick_restart_without_traffic_leaves_no_broken_connection_to_hand_out(
    site: Site,
) -> None:
    """Connections the pool held across a restart are checked and replaced, not handed out."""
    # Several requests at once grow the pool past one connection.
    for _ in range(3):
        asyncio.run(_burst(site, 8))
    site.cluster.stop("fast")
    site.cluster.start()  # nothing asked meanwhile: every pooled connection is now broken
    statuses = [http(site, path, **how)[0] for _, path, how in ROUTES for _ in range(2)]
    print(f"\nafter a quick restart: {Counter(statuses)}")
    assert all(status in (200, 201) for status in statuses), statuses


async def _burst(site: Site, n: int) -> None:
    await asyncio.gather(
        *(asyncio.to_thread(http, site, "/rooms/lobby/presence/", accept=JSON) for _ in range(n))
    )


# --- Sockets ---------------------------------------------------------------------------------


async def socket_for(site: Site, user: str = "bob") -> ClientConnection:
    ws = await connect(
        f"ws://127.0.0.1:{site.server.port}/ws/rooms/lobby/",
        origin=Origin(site.server.url),
        additional_headers={"Cookie": f"{settings.SESSION_COOKIE_NAME}={site.cookies[user]}"},
        subprotocols=[Subprotocol("calcrooms.v1.json")],
        open_timeout=WITHIN,
    )
    assert ws.subprotocol == "calcrooms.v1.json"
    return ws


async def answer_to(ws: ClientConnection, client_id: str) -> dict[str, Any]:
    """The entry or error frame that answers `client_id`."""
    async with asyncio.timeout(WITHIN):
        while True:
            frame = json.loads(await ws.recv())
            if frame["type"] == "entry" and frame["entry"]["client_id"] == client_id:
                return frame
            if frame["type"] == "error" and frame["client_id"] == client_id:
                return frame


def stored_client_ids(site: Site) -> Counter[str]:
    """Every client_id in the room's history, counted."""
    found: Counter[str] = Counter()
    after = 0
    while True:
        status, _, body = http(site, f"/rooms/lobby/entries/?after={after}&limit=500", accept=JSON)
        assert status == 200, body[:300]
        page = json.loads(body)
        found.update(e["client_id"] for e in page["entries"] if e["client_id"])
        if not page["has_more"] or not page["entries"]:
            return found
        after = page["entries"][-1]["seq"]


async def test_a_socket_is_answered_unavailable_and_stays_open_and_the_resend_is_stored_once(
    site: Site,
) -> None:
    ws = await socket_for(site)
    offset = site.log_offset()
    try:
        site.cluster.stop("immediate")
        # A new socket cannot be let in meanwhile (its session is in the database): closed
        # with 1012, on which every client reconnects with its backoff.
        newcomer = await socket_for(site, "alice")
        with pytest.raises(ConnectionClosed):
            async with asyncio.timeout(WITHIN):
                await newcomer.recv()
        assert newcomer.close_code == 1012
        client_id = str(uuid.uuid4())
        frame = {"type": "expression", "expression": "6*7", "client_id": client_id}
        await ws.send(json.dumps(frame))
        answer = await answer_to(ws, client_id)
        assert (answer["type"], answer["code"]) == ("error", "unavailable"), answer

        await asyncio.to_thread(site.cluster.start)
        # The same socket, still open: the same expression, sent again, is stored.
        await ws.send(json.dumps(frame))
        answer = await answer_to(ws, client_id)
        assert answer["type"] == "entry" and answer["entry"]["result"] == "42", answer
        await ws.send(json.dumps(frame))  # once more: answered with the stored entry
        again = await answer_to(ws, client_id)
        assert again["entry"]["seq"] == answer["entry"]["seq"]
        assert ws.close_code is None
    finally:
        await ws.close()
    assert (await asyncio.to_thread(stored_client_ids, site))[client_id] == 1
    log = site.log_since(offset)
    print(f"\nserver log:\n{log}")
    assert "Traceback" not in log and "Exception in ASGI application" not in log


async def test_a_client_submitting_through_an_outage_loses_nothing_and_doubles_nothing(
    site: Site,
) -> None:
    """One frame a second (the bucket's refill): a new expression, or the oldest one the server
    has not stored yet, again, until every one is acknowledged."""
    offset = site.log_offset()
    ws = await socket_for(site, "alice")
    sent: dict[str, str] = {}
    pending: list[str] = []
    acknowledged: set[str] = set()
    last_sent_in: dict[str, str] = {}  # client_id -> the phase it was last sent in
    unavailable = busy_after = 0
    unavailable_after: list[dict[str, Any]] = []  # the answers to those sent after it was back

    async def reader() -> None:
        nonlocal unavailable, busy_after
        async for message in ws:
            frame = json.loads(message)
            if frame["type"] == "entry" and frame["entry"]["client_id"] in sent:
                acknowledged.add(frame["entry"]["client_id"])
            elif frame["type"] == "error" and frame["client_id"] in sent:
                assert frame["code"] in ("unavailable", "rate_limited"), frame
                unavailable += frame["code"] == "unavailable"
                # Sent once PostgreSQL was back, and its store failed: a broken pooled
                # connection. One turned away before its store is not that: the store lane can
                # still be late (its turns waited on the database while it was down) for the
                # first moment after, and the page sends it again (it must then be stored).
                if (frame["code"], last_sent_in[frame["client_id"]]) == ("unavailable", "after"):
                    if frame["message"] == SERVER_BUSY:
                        busy_after += 1
                    else:
                        unavailable_after.append(frame)
                if frame["client_id"] not in acknowledged and frame["client_id"] not in pending:
                    pending.append(frame["client_id"])

    async def submit(n: int, phase: str) -> None:
        if pending:
            client_id = pending.pop(0)
        else:
            client_id = str(uuid.uuid4())
            sent[client_id] = f"{n}*3"
        last_sent_in[client_id] = phase
        await ws.send(json.dumps({"type": "expression", "expression": sent[client_id],
                                  "client_id": client_id}))  # fmt: skip

    reading = asyncio.create_task(reader())
    try:
        n = 0
        for phase in ("before", "outage", "after"):
            if phase == "outage":
                await asyncio.to_thread(site.cluster.stop, "fast")
            elif phase == "after":
                await asyncio.to_thread(site.cluster.start)
            for _ in range(6):
                n += 1
                await submit(n, phase)
                await asyncio.sleep(1)
        async with asyncio.timeout(WITHIN):
            while len(acknowledged) < len(sent):
                if pending:
                    n += 1
                    await submit(n, "after")
                await asyncio.sleep(1)
        assert ws.close_code is None
    finally:
        reading.cancel()
        await ws.close()

    stored = await asyncio.to_thread(stored_client_ids, site)
    mine = {client_id: stored[client_id] for client_id in sent}
    lost = sum(1 for c in acknowledged if mine[c] == 0)
    doubled = sum(1 for count in mine.values() if count > 1)
    print(
        f"\nsubmitted {len(sent)}, answered unavailable {unavailable} times "
        f"({len(unavailable_after)} of them sent after PostgreSQL was back failed to store, "
        f"{busy_after} were turned away as busy), acknowledged "
        f"{len(acknowledged)}, stored {sum(1 for c in mine.values() if c)}, lost {lost}, "
        f"doubled {doubled}"
    )
    assert len(acknowledged) == len(sent)
    assert lost == doubled == 0
    assert unavailable > 0  # it did submit through the outage
    assert unavailable_after == [], site.log_since(offset)
    log = site.log_since(offset)
    print(f"server log during the outage:\n{log}")
    assert "Traceback" not in log
