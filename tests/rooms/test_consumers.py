"""The room socket through the real ASGI stack (origin check, session, router) on PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid

import pytest
from channels.db import database_sync_to_async
from django.test import Client

from rooms import services
from rooms.models import Entry, Membership, Room
from tests.factories import MembershipFactory, UserFactory

pytestmark = pytest.mark.django_db(transaction=True)


async def _drain(socket, within: float = 0.3) -> list[dict]:
    """The frames waiting for `socket`, until none comes for `within` seconds."""
    frames = []
    try:
        while True:
            frames.append(await socket.receive(timeout=within))
    except (TimeoutError, ConnectionError):
        return frames


def _seqs(room: Room) -> list[int]:
    return list(Entry.objects.filter(room=room).order_by("seq").values_list("seq", flat=True))


async def test_member_submission_is_stored_and_seen_by_everyone(connect, lobby, alice, bob):
    alice_ws = await connect(alice, "lobby")
    bob_ws = await connect(bob, "lobby")
    client_id = str(uuid.uuid4())
    await alice_ws.send({"type": "expression", "expression": "12*7", "client_id": client_id})
    for socket in (alice_ws, bob_ws):
        frame = await socket.receive_type("entry")
        assert frame["v"] == 1
        entry = frame["entry"]
        assert entry["seq"] == 1
        assert entry["author"] == "alice"
        assert entry["expression"] == "12*7"
        assert entry["result"] == "84"
        assert entry["error"] is None
        assert entry["client_id"] == client_id
        assert entry["created"].endswith("Z")
    room = await database_sync_to_async(Room.objects.get)(pk=lobby.pk)
    assert room.last_seq == 1


async def test_failed_evaluation_is_stored_with_its_error(connect, lobby, alice):
    ws = await connect(alice, "lobby")
    await ws.send({"type": "expression", "expression": "1/0"})
    entry = (await ws.receive_type("entry"))["entry"]
    assert entry["result"] is None
    assert entry["error"] == "division by zero"
    assert entry["client_id"] is None
    stored = await database_sync_to_async(Entry.objects.get)(room=lobby, seq=1)
    assert stored.error == "division by zero"


async def test_concurrent_submissions_get_seqs_without_gap_or_duplicate(
    connect, lobby, db, settings
):
    # Every one of the 40 must be taken: on a slow machine the burst could fill the room's store
    # queue (32) or make its lane late, and those are answered `unavailable` for the client to
    # send again (tested on their own below), which this test's senders do not do.
    settings.ENTRY_STORE_QUEUE_LIMIT = 1000
    settings.ENTRY_STORE_WAIT_TARGET_SECONDS = 60
    people = []
    for n in range(8):
        user = await database_sync_to_async(UserFactory)(username=f"calc{n}")
        await database_sync_to_async(MembershipFactory)(room=lobby, user=user)
        people.append(user)
    sockets = [await connect(user, "lobby") for user in people]
    per_socket = 5

    async def burst(socket, n):
        for i in range(per_socket):
            await socket.send({"type": "expression", "expression": f"{n}+{i}"})

    await asyncio.gather(*(burst(s, n) for n, s in enumerate(sockets)))
    total = len(sockets) * per_socket
    seen = []
    try:
        while len(seen) < total:
            seen.append((await sockets[0].receive_type("entry", timeout=10))["entry"]["seq"])
    except TimeoutError:
        # Say what went missing: stored but not delivered, or answered instead of stored.
        answers = [[f for f in await _drain(s) if f["type"] == "error"] for s in sockets]
        stored = await database_sync_to_async(_seqs)(lobby)
        pytest.fail(f"{len(seen)} of {total} delivered; stored {stored}; errors {answers}")
    assert seen == list(range(1, total + 1))  # live order is seq order
    assert await database_sync_to_async(_seqs)(lobby) == list(range(1, total + 1))


async def test_resent_client_id_stores_one_entry_and_answers_the_sender_only(
    connect, lobby, alice, bob
):
    alice_ws = await connect(alice, "lobby")
    bob_ws = await connect(bob, "lobby")
    frame = {"type": "expression", "expression": "2+2", "client_id": str(uuid.uuid4())}
    await alice_ws.send(frame)
    first = (await alice_ws.receive_type("entry"))["entry"]
    assert (await bob_ws.receive_type("entry"))["entry"]["seq"] == first["seq"]
    await alice_ws.send(frame)  # the ws extension resends its queue after a reconnect
    again = (await alice_ws.receive_type("entry"))["entry"]
    assert again == first
    assert await bob_ws.nothing("entry", within=0.5)
    assert await database_sync_to_async(Entry.objects.filter(room=lobby).count)() == 1


async def test_same_client_id_from_another_author_is_a_separate_entry(connect, lobby, alice, bob):
    client_id = str(uuid.uuid4())
    alice_ws = await connect(alice, "lobby")
    bob_ws = await connect(bob, "lobby")
    await alice_ws.send({"type": "expression", "expression": "1", "client_id": client_id})
    await alice_ws.receive_type("entry")
    await bob_ws.send({"type": "expression", "expression": "2", "client_id": client_id})
    seqs = set()
    for _ in range(2):
        seqs.add((await bob_ws.receive_type("entry"))["entry"]["seq"])
    assert seqs == {1, 2}


async def test_stranger_is_refused_at_handshake(connect, lobby, vault, carol):
    assert not (await connect(carol, "lobby")).connected  # public, but not joined
    assert not (await connect(carol, "vault")).connected  # private
    assert not (await connect(carol, "no-such-room")).connected


async def test_member_removed_mid_connection_can_no_longer_submit(connect, lobby, alice, bob):
    bob_ws = await connect(bob, "lobby")
    await database_sync_to_async(Membership.objects.filter(room=lobby, user=bob).delete)()
    await bob_ws.send({"type": "expression", "expression": "6*7", "client_id": str(uuid.uuid4())})
    error = await bob_ws.receive_type("error")
    assert error["code"] == "forbidden"
    assert await bob_ws.receive_close() == 4403
    assert await database_sync_to_async(Entry.objects.filter(room=lobby).count)() == 0


async def test_owner_removing_a_member_closes_their_socket(connect, lobby, alice, bob):
    from rooms.services import member_remove

    bob_ws = await connect(bob, "lobby")
    await database_sync_to_async(member_remove)(room=lobby, actor=alice, user_id=bob.id)
    assert await bob_ws.receive_close() == 4403


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ({"type": "expression", "expression": ""}, "empty"),
        ({"type": "expression", "expression": "   "}, "empty"),
        ({"type": "expression", "expression": "1+" * 300}, "too_long"),
        ({"type": "expression", "expression": 42}, "invalid_frame"),
        ({"type": "expression", "expression": "1", "client_id": "not-a-uuid"}, "invalid_frame"),
        ({"type": "dance"}, "invalid_frame"),
        ("not json at all", "invalid_frame"),
        ("[1, 2, 3]", "invalid_frame"),
        ("null", "invalid_frame"),
        ("[" * 60000, "invalid_frame"),  # deep nesting, under the frame limit
    ],
)
async def test_bad_frames_get_an_error_and_store_nothing(connect, lobby, alice, frame, code):
    ws = await connect(alice, "lobby")
    await ws.send(frame)
    error = await ws.receive_type("error")
    assert error["code"] == code
    assert error["message"]
    # the connection survives and still works
    await ws.send({"type": "expression", "expression": "1+1"})
    assert (await ws.receive_type("entry"))["entry"]["result"] == "2"
    assert await database_sync_to_async(Entry.objects.filter(room=lobby).count)() == 1


async def test_error_frame_carries_the_client_id(connect, lobby, alice):
    ws = await connect(alice, "lobby")
    client_id = str(uuid.uuid4())
    await ws.send({"type": "expression", "expression": "", "client_id": client_id})
    error = await ws.receive_type("error")
    assert error == {
        "v": 1,
        "type": "error",
        "code": "empty",
        "message": error["message"],
        "client_id": client_id,
    }


async def test_binary_frame_is_refused_without_closing(connect, lobby, alice):
    ws = await connect(alice, "lobby")
    await ws.communicator.send_to(bytes_data=b"\x00\x01")
    assert (await ws.receive_type("error"))["code"] == "invalid_frame"


async def test_oversized_frame_closes_with_1009(connect, lobby, alice):
    ws = await connect(alice, "lobby")
    await ws.send(json.dumps({"type": "expression", "expression": "1" * (70 * 1024)}))
    assert await ws.receive_close() == 1009


async def test_eleventh_expression_in_a_burst_is_rate_limited(connect, lobby, alice):
    ws = await connect(alice, "lobby")
    for n in range(11):
        await ws.send({"type": "expression", "expression": f"{n}", "client_id": str(uuid.uuid4())})
    # The error may come before the ten entries' broadcasts (a socket reads its next frame
    # while one is stored): read both.
    errors, stored = [], []
    while not errors or len(stored) < 10:
        frame = await ws.receive(timeout=5)
        if frame["type"] == "error":
            errors.append(frame)
        elif frame["type"] == "entry":
            stored.append(frame["entry"]["expression"])
    [error] = errors
    assert error["code"] == "rate_limited"
    assert error["client_id"]
    assert stored == [str(n) for n in range(10)]
    count = await database_sync_to_async(Entry.objects.filter(room=lobby).count)()
    assert count == 10


async def test_thirty_refused_frames_close_the_socket_with_1008(connect, lobby, alice):
    ws = await connect(alice, "lobby")
    for _ in range(30):
        await ws.send("garbage")
    assert await ws.receive_close(timeout=5) == 1008


async def test_html_mode_sends_entry_fragments_for_htmx(connect, lobby, alice):
    ws = await connect(alice, "lobby", html=True)
    assert ws.subprotocol is None
    await ws.send({"expression": "0.1+0.2", "HEADERS": {"HX-Request": "true"}})
    while True:
        message = await ws.communicator.receive_output(3)
        if 'id="entries"' in message["text"]:
            break
    html = message["text"]
    assert 'hx-swap-oob="beforeend"' in html
    assert 'id="entry-1"' in html
    assert 'data-seq="1"' in html
    assert ">0.3</output>" in html


async def test_logout_closes_that_sessions_socket_with_4401(connect, lobby, alice):
    client = Client()
    await database_sync_to_async(client.force_login)(alice)
    cookie = client.cookies["sessionid"].value
    ws = await connect(alice, "lobby", cookie=cookie)
    await database_sync_to_async(client.post)("/accounts/logout/")
    assert await ws.receive_close() == 4401


async def test_sync_frame_on_connect_reports_last_seq(connect, lobby, alice):
    ws = await connect(alice, "lobby")
    assert (await ws.receive_type("sync"))["last_seq"] == 0
    await ws.send({"type": "expression", "expression": "1"})
    await ws.receive_type("entry")
    ws2 = await connect(alice, "lobby")
    assert (await ws2.receive_type("sync"))["last_seq"] == 1


async def test_deleting_the_room_closes_every_socket_in_it_with_4403(connect, lobby, alice, bob):
    from rooms.services import room_delete

    sockets = [await connect(alice, "lobby"), await connect(bob, "lobby")]
    await database_sync_to_async(room_delete)(room=lobby, actor=alice)
    for socket in sockets:
        assert await socket.receive_close() == 4403


async def test_database_outage_answers_unavailable_and_keeps_the_socket(
    connect, lobby, alice, monkeypatch
):
    from django.db import OperationalError

    from rooms import services

    ws = await connect(alice, "lobby")
    real_store = services._lane_store

    def database_down(rooms):
        raise OperationalError("connection refused")

    monkeypatch.setattr(services, "_lane_store", database_down)
    client_id = str(uuid.uuid4())
    await ws.send({"type": "expression", "expression": "1+1", "client_id": client_id})
    error = await ws.receive_type("error")
    assert (error["code"], error["client_id"]) == ("unavailable", client_id)

    monkeypatch.setattr(services, "_lane_store", real_store)  # the database is back
    await ws.send({"type": "expression", "expression": "1+1", "client_id": client_id})
    assert (await ws.receive_type("entry"))["entry"]["client_id"] == client_id


async def test_an_unknown_server_event_is_ignored_not_fatal(connect, lobby, alice):
    from realtime.hub import get_hub

    ws = await connect(alice, "lobby")
    await get_hub().publish(f"room.{lobby.id}", {"type": "mystery.event"})
    await ws.send({"type": "expression", "expression": "2+2"})
    assert (await ws.receive_type("entry"))["entry"]["result"] == "4"


async def test_an_overloaded_store_answers_unavailable_at_once(lobby, alice, settings, monkeypatch):
    """Past ENTRY_STORE_QUEUE_LIMIT submissions waiting for a room's store thread, the excess is
    answered `unavailable` at once (the page sends it again) instead of queueing for seconds."""
    settings.ENTRY_STORE_QUEUE_LIMIT = 2
    settings.EXPRESSION_BUCKET_CAPACITY = 1000
    gate = threading.Event()
    real_store, real_turn = services._entry_store, services._entries_store

    def slow_store(**kwargs):
        gate.wait(10)
        return real_store(**kwargs)

    def slow_turn(room_id, items):  # the store thread's turn (what waited, together)
        gate.wait(10)
        return real_turn(room_id, items)

    monkeypatch.setattr(services, "_entry_store", slow_store)
    monkeypatch.setattr(services, "_entries_store", slow_turn)

    async def submit(n: int):
        return await services.entry_submit(
            room_id=lobby.id, author=alice, expression=f"{n}+1", client_id=str(uuid.uuid4())
        )

    tasks = [asyncio.ensure_future(submit(n)) for n in range(6)]
    done, pending = await asyncio.wait(tasks, timeout=2)
    refused = [t.exception() for t in done]
    assert len(refused) == 4 and len(pending) == 2  # answered at once; two wait for the store
    assert all(isinstance(e, services.Refused) and e.code == "unavailable" for e in refused)
    gate.set()
    stored = await asyncio.gather(*pending)
    assert sorted(s.entry.seq for s in stored) == [1, 2]


@pytest.fixture
def store_gate(monkeypatch):
    """Every store turn waits until the gate is set (at the end of the test at the latest)."""
    gate = threading.Event()
    real_turn = services._entries_store

    def slow_turn(room_id, items):
        gate.wait(10)
        return real_turn(room_id, items)

    monkeypatch.setattr(services, "_entries_store", slow_turn)
    yield gate
    gate.set()


async def test_a_socket_that_ends_with_an_expression_in_store_ends_once_it_is_stored(
    connect, lobby, alice, store_gate
):
    """The connection's handler outlives its socket until what it queued is stored: a server
    shutting down waits for the handlers (not for the store threads), so one in store when the
    socket closed is stored before the process exits, and the resend finds it."""
    ws = await connect(alice, "lobby")
    client_id = str(uuid.uuid4())
    await ws.send({"type": "expression", "expression": "6*7", "client_id": client_id})
    await asyncio.sleep(0.3)  # queued, its turn waiting at the gate
    await ws.communicator.send_input({"type": "websocket.disconnect", "code": 1012})
    await asyncio.sleep(0.5)
    assert not ws.communicator.future.done(), "the handler ended with an expression in store"
    assert await database_sync_to_async(_seqs)(lobby) == []
    store_gate.set()
    await asyncio.wait_for(asyncio.shield(ws.communicator.future), 5)
    stored = await database_sync_to_async(Entry.objects.get)(room=lobby, seq=1)
    assert (str(stored.client_id), stored.result) == (client_id, "42")


async def test_an_expression_slow_to_store_is_counted_and_logged(
    connect, lobby, alice, settings, store_gate, caplog
):
    """Its frame's handler returns once it is queued: the store's wait is counted on its own
    (`expression.store`), from the frame to its answer; a quick one is not."""
    from prometheus_client import REGISTRY

    def slow_stores() -> float:
        sample = "calcrooms_slow_handlers_total"
        return REGISTRY.get_sample_value(sample, {"handler": "expression.store"}) or 0.0

    settings.SLOW_HANDLER_SECONDS = 0.3
    ws = await connect(alice, "lobby")
    before = slow_stores()
    with caplog.at_level("INFO", logger="rooms.consumers"):
        await ws.send({"type": "expression", "expression": "6*7", "client_id": str(uuid.uuid4())})
        await asyncio.sleep(0.5)  # held at the gate past the budget
        store_gate.set()
        assert (await ws.receive_type("entry"))["entry"]["result"] == "42"
        await ws.send({"type": "expression", "expression": "1+1", "client_id": str(uuid.uuid4())})
        assert (await ws.receive_type("entry"))["entry"]["result"] == "2"
    assert slow_stores() - before == 1
    slow = [r for r in caplog.records if getattr(r, "event", None) == "socket.slow_store"]
    assert len(slow) == 1 and slow[0].ms >= 500, [r.getMessage() for r in slow]
    assert "to store in room lobby" in slow[0].getMessage()


async def test_an_answer_of_unavailable_costs_the_author_no_token(
    lobby, alice, settings, store_gate
):
    """The server's being busy is not the person's doing: the expressions it turned away do not
    empty their bucket, so once it has room again they are not told to slow down."""
    settings.ENTRY_STORE_QUEUE_LIMIT = 1
    settings.EXPRESSION_BUCKET_CAPACITY = 2
    settings.EXPRESSION_BUCKET_REFILL_PER_SECOND = 0.001
    gate = store_gate

    async def submit(n: int):
        return await services.entry_submit(
            room_id=lobby.id, author=alice, expression=f"{n}+1", client_id=str(uuid.uuid4())
        )

    first = asyncio.ensure_future(submit(0))
    await asyncio.sleep(0.2)  # in the store, holding the one place
    for n in range(1, 6):
        with pytest.raises(services.Refused) as refused:
            await submit(n)
        assert refused.value.code == "unavailable"
    gate.set()
    assert (await first).entry.seq == 1
    assert (await submit(6)).entry.seq == 2  # the second token of two: still there
    with pytest.raises(services.Refused) as refused:
        await submit(7)
    assert refused.value.code == "rate_limited"


def test_a_store_thread_is_late_only_for_a_standing_queue_not_a_burst(
    lobby, alice, settings, monkeypatch
):
    """A lane is late when every turn begun over a whole window waited past the target (a queue
    that stands); one late turn among others on time (a burst) is not; a turn on time ends it."""
    settings.ENTRY_STORE_WAIT_TARGET_SECONDS = 0.1
    monkeypatch.setattr(services, "LATE_WINDOW_SECONDS", 0.2)
    monkeypatch.setattr(services, "_entries_store", lambda room_id, items: [])
    lane = lobby.id % settings.ENTRY_STORE_THREADS
    monkeypatch.setitem(services._admissions, lane, services._Admission())

    def turn(waited: float) -> bool:
        item = services._Waiting(
            author=alice,
            expression="1+1",
            client_id=None,
            transport="ws",
            since=time.monotonic() - waited,
        )
        services._lane_turn({lobby.id: [item]})
        return services._admissions[lane].late

    # A burst: one turn waited long, the others in the window did not.
    assert turn(0.0) is False
    assert turn(0.5) is False
    time.sleep(0.25)
    assert turn(0.01) is False  # the window ends: its shortest wait was on time
    # A standing queue: every turn of a window waited past the target.
    assert turn(0.3) is False  # not yet a whole window
    time.sleep(0.1)
    assert turn(0.3) is False
    time.sleep(0.15)
    assert turn(0.3) is True
    assert turn(0.3) is True  # still late: nothing on time since
    assert turn(0.02) is False  # on time: over at once


async def test_the_wait_for_the_bucket_counts_toward_a_late_store(
    lobby, alice, settings, monkeypatch
):
    """A submission's wait counts from its arrival, its wait for the rate-limit bucket (Redis)
    included: when that is what is slow, the lane is late all the same."""
    settings.ENTRY_STORE_WAIT_TARGET_SECONDS = 0.05
    monkeypatch.setattr(services, "LATE_WINDOW_SECONDS", 0.1)
    lane = lobby.id % settings.ENTRY_STORE_THREADS
    monkeypatch.setitem(services._admissions, lane, services._Admission())

    async def slow_bucket(**kwargs):
        await asyncio.sleep(0.15)
        return True

    monkeypatch.setattr(services, "take_expression_token", slow_bucket)
    for n in range(3):
        stored = await services.entry_submit(
            room_id=lobby.id, author=alice, expression=f"{n}+1", client_id=str(uuid.uuid4())
        )
        assert stored.entry.seq == n + 1
    assert services._admissions[lane].late is True


async def test_while_a_store_thread_is_late_newcomers_are_turned_away_at_once(
    lobby, alice, settings, monkeypatch, store_gate
):
    """Late, with something waiting for the lane: a new submission is answered `unavailable`
    at once. Late with nothing waiting: it is taken (and, begun on time, ends the lateness)."""
    settings.EXPRESSION_BUCKET_CAPACITY = 1000
    lane = lobby.id % settings.ENTRY_STORE_THREADS
    gate = store_gate
    admission = services._Admission()
    admission.late = True
    monkeypatch.setitem(services._admissions, lane, admission)

    async def submit(n: int):
        return await services.entry_submit(
            room_id=lobby.id, author=alice, expression=f"{n}+1", client_id=str(uuid.uuid4())
        )

    waiting = asyncio.ensure_future(submit(0))  # nothing waited: taken, though late
    await asyncio.sleep(0.2)
    assert admission.late is False  # its turn began on time
    admission.late = True  # as if the lane had been late for a window since
    with pytest.raises(services.Refused) as refused:
        await submit(1)
    assert refused.value.code == "unavailable"
    gate.set()
    assert (await waiting).entry.seq == 1
    assert (await submit(2)).entry.seq == 2  # nothing waits now: taken


async def test_unavailable_is_never_counted_as_abuse(connect, lobby, alice, settings, monkeypatch):
    settings.WS_ABUSE_LIMIT = 3
    real_queue = services.entry_queue

    async def busy(**kwargs):
        raise services.Refused("unavailable", services.SERVER_BUSY)

    monkeypatch.setattr(services, "entry_queue", busy)
    ws = await connect(alice, "lobby")
    client_id = str(uuid.uuid4())
    for _ in range(6):  # the page sending it again and again while the server is busy
        await ws.send({"type": "expression", "expression": "1+1", "client_id": client_id})
        assert (await ws.receive_type("error"))["code"] == "unavailable"
    monkeypatch.setattr(services, "entry_queue", real_queue)
    await ws.send({"type": "expression", "expression": "1+1", "client_id": client_id})
    assert (await ws.receive_type("entry"))["entry"]["client_id"] == client_id  # still open
