"""The store threads (ENTRY_STORE_THREADS): each hands its database connection back after each turn,
and what waited for a busy one is stored together in one transaction, each as if alone.

Each thread lives as long as the process. A connection it kept between submissions is one pooled
connection fewer for every request and socket of the process: with a thread per lane holding
one, a pool of DATABASE_POOL_MAX_SIZE runs dry under load it served before, and requests wait for
the pool's timeout and answer 503.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import IntegrityError, connections

from rooms import services
from rooms.consumers import STORING_MAX
from rooms.models import Entry, Room
from tests.factories import RoomFactory

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        "pool" not in settings.DATABASES["default"].get("OPTIONS", {}),
        reason="only a pooled database lends connections to threads",
    ),
]


def _pool_in_use() -> int:
    stats = connections["default"].pool.get_stats()
    return stats["pool_size"] - stats["pool_available"]


async def test_every_store_thread_gives_its_connection_back(connect: Any, alice: Any) -> None:
    lanes = settings.ENTRY_STORE_THREADS
    assert lanes >= 2, "the store threads are on in this configuration"

    def rooms_on_every_lane() -> list[str]:
        rooms = [RoomFactory(owner=alice) for _ in range(lanes * 2)]
        assert {room.pk % lanes for room in rooms} == set(range(lanes))
        return [room.slug for room in rooms]

    slugs = await sync_to_async(rooms_on_every_lane)()
    sockets = [await connect(alice, slug) for slug in slugs]
    for ws in sockets:
        await ws.receive_type("sync")
    in_use_before = await sync_to_async(_pool_in_use)()

    for round_ in range(3):
        for ws in sockets:
            await ws.send({"type": "expression", "expression": f"{round_} + 1"})
            entry = (await ws.receive_type("entry"))["entry"]
            assert entry["result"] == str(round_ + 1)

    assert await sync_to_async(Entry.objects.count)() == 3 * len(slugs)
    # Every lane stored entries; none of its threads holds a connection now.
    assert await sync_to_async(_pool_in_use)() == in_use_before


def _lane_of(room_id: int) -> Any:
    key = (id(asyncio.get_running_loop()), room_id % settings.ENTRY_STORE_THREADS)
    return services._LaneStore._lanes.get(key)


async def _queued(room_id: int, count: int) -> None:
    """Until `count` submissions wait for the room's store thread."""
    for _ in range(500):
        store = _lane_of(room_id)
        if store is not None and store.waiting_for(room_id) >= count:
            return
        await asyncio.sleep(0.01)
    pytest.fail(f"{count} submissions never queued")


class Held:
    """The first entry stored waits until `release()`, holding its store thread: what is
    submitted to its room meanwhile queues, as under load."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.entered = threading.Event()

    async def holding(self) -> None:
        assert await asyncio.to_thread(self.entered.wait, 30), "the store thread never stored"

    def release(self) -> None:
        self.gate.set()


@pytest.fixture
def store_thread_held(monkeypatch: pytest.MonkeyPatch) -> Any:
    held = Held()
    real_store = services._lane_store

    def held_store(rooms: dict[int, list[Any]]) -> dict[int, list[Any]]:
        if not held.entered.is_set():
            held.entered.set()
            held.gate.wait(30)
        return real_store(rooms)

    monkeypatch.setattr(services, "_lane_store", held_store)
    yield held
    held.release()


@pytest.fixture
def turn_sizes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many submissions each one-room turn stored together, in turn order."""
    sizes: list[int] = []
    real_together = services._entries_store_together

    def spy(room_id: int, items: list[Any]) -> list[Any]:
        sizes.append(len(items))
        return real_together(room_id, items)

    monkeypatch.setattr(services, "_entries_store_together", spy)
    return sizes


async def test_submissions_that_waited_are_stored_together_in_order(
    connect: Any,
    lobby: Any,
    alice: Any,
    bob: Any,
    carol: Any,
    store_thread_held: Held,
    turn_sizes: list[int],
) -> None:
    """While the room's store thread is busy, what arrives waits; the next turn stores all of it
    in one transaction, each as it would have been alone: in arrival order with consecutive
    seqs, `ans` reading the entry before it in the same turn, a resend answered with the entry
    its first copy got, a non-member refused without failing the others; the room hears every
    entry, in seq order."""
    watcher = await connect(bob, "lobby")
    await watcher.receive_type("sync")

    def submit(author: Any, expression: str, client_id: str | None = None) -> asyncio.Task[Any]:
        return asyncio.ensure_future(
            services.entry_submit(
                room_id=lobby.id, author=author, expression=expression, client_id=client_id
            )
        )

    first = submit(alice, "40 + 2")  # holds the thread
    await store_thread_held.holding()
    again = str(uuid.uuid4())
    waiting = []
    for author, expression, client_id in [
        (bob, "ans + 1", None),  # 43: reads the entry stored just before it
        (alice, "7 * 6", again),
        (carol, "1 + 1", None),  # no member: refused
        (alice, "7 * 6", again),  # the page sending it again: the same entry
        (bob, "ans * 2", None),  # 84: the resend is not an entry of its own
    ]:
        waiting.append(submit(author, expression, client_id))
        await _queued(lobby.id, len(waiting))  # in this order
    store_thread_held.release()
    stored = await first
    answers = await asyncio.gather(*waiting, return_exceptions=True)

    assert turn_sizes == [1, len(waiting)]  # the first alone, then one turn for all that waited
    assert stored.entry.seq == 1
    sum1, product, refused, resend, doubled = answers
    assert (sum1.entry.seq, sum1.entry.result) == (2, "43")
    assert (product.entry.seq, product.entry.result, product.created) == (3, "42", True)
    assert isinstance(refused, services.Refused) and refused.code == "forbidden"
    assert (resend.entry.pk, resend.created) == (product.entry.pk, False)
    assert (doubled.entry.seq, doubled.entry.result) == (4, "84")

    def stored_rows() -> list[tuple[int, str]]:
        return list(Entry.objects.filter(room=lobby).order_by("seq").values_list("seq", "result"))

    assert await sync_to_async(stored_rows)() == [(1, "42"), (2, "43"), (3, "42"), (4, "84")]
    assert (await sync_to_async(Room.objects.get)(pk=lobby.pk)).last_seq == 4
    heard = [(await watcher.receive_type("entry"))["entry"]["seq"] for _ in range(4)]
    assert heard == [1, 2, 3, 4]


async def test_one_socket_sending_many_at_once_has_them_stored_together_in_its_order(
    connect: Any,
    lobby: Any,
    alice: Any,
    bob: Any,
    store_thread_held: Held,
    turn_sizes: list[int],
) -> None:
    """A client that sends expressions faster than one is stored does not wait for each: the
    socket reads the next frame while the one before is stored (up to STORING_MAX of them; then
    it waits for the oldest answer), so what it sent while the store was busy is stored in one
    turn, in the order sent (`ans` reading the one before it), and the room hears them in that
    order."""
    sender, watcher = await connect(alice, "lobby"), await connect(bob, "lobby")
    for ws in (sender, watcher):
        await ws.receive_type("sync")
    first = asyncio.ensure_future(
        services.entry_submit(room_id=lobby.id, author=bob, expression="1", client_id=None)
    )
    await store_thread_held.holding()
    sent = ["ans + 1", "ans * 10", "7", "ans - 2", "ans / 5"]
    assert len(sent) == STORING_MAX + 1
    for n, expression in enumerate(sent):
        await sender.send(
            {"type": "expression", "expression": expression, "client_id": str(uuid.uuid4())}
        )
        if n < STORING_MAX:
            await _queued(lobby.id, n + 1)  # queued before the one before it was stored
    await asyncio.sleep(0.3)
    assert _lane_of(lobby.id).waiting_for(lobby.id) == STORING_MAX  # the last waits its turn
    store_thread_held.release()
    await first

    heard = [(await watcher.receive_type("entry"))["entry"] for _ in range(6)]
    assert [(e["seq"], e["expression"], e["result"]) for e in heard] == [
        (1, "1", "1"),
        (2, "ans + 1", "2"),
        (3, "ans * 10", "20"),
        (4, "7", "7"),
        (5, "ans - 2", "5"),
        (6, "ans / 5", "1"),
    ]
    acked = [(await sender.receive_type("entry"))["entry"]["seq"] for _ in range(6)]
    assert acked == [1, 2, 3, 4, 5, 6]
    assert turn_sizes == [1, STORING_MAX, 1]  # the first alone, one turn for what queued, the last


async def test_a_turn_that_fails_as_a_whole_stores_each_on_its_own(
    lobby: Any, alice: Any, bob: Any, store_thread_held: Held, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A turn whose transaction fails on the unique constraint (a resend another process stored
    a moment ago) is stored again one by one: nothing lost, nothing twice."""

    together = services._entries_store_together

    def clash(room_id: int, items: list[Any]) -> list[Any]:
        if len(items) > 1:  # the turn; each one's store on its own goes through
            raise IntegrityError("duplicate key value violates unique constraint")
        return together(room_id, items)

    monkeypatch.setattr(services, "_entries_store_together", clash)
    first = asyncio.ensure_future(
        services.entry_submit(room_id=lobby.id, author=alice, expression="1", client_id=None)
    )
    await store_thread_held.holding()
    waiting = []
    for n in range(3):
        waiting.append(
            asyncio.ensure_future(
                services.entry_submit(
                    room_id=lobby.id, author=bob, expression=f"{n} + 1", client_id=str(uuid.uuid4())
                )
            )
        )
        await _queued(lobby.id, len(waiting))  # in this order
    store_thread_held.release()
    await first
    answers = await asyncio.gather(*waiting)
    assert [a.entry.result for a in answers] == ["1", "2", "3"]
    assert [a.entry.seq for a in answers] == [2, 3, 4]
    assert await sync_to_async(Entry.objects.filter(room=lobby).count)() == 4


def _rooms_on_the_lane_of(room: Any, owner: Any, count: int) -> list[Any]:
    lanes = settings.ENTRY_STORE_THREADS
    found = []
    while len(found) < count:
        other = RoomFactory(owner=owner)
        if other.pk % lanes == room.pk % lanes:
            found.append(other)
    return found


async def test_what_waited_for_one_thread_in_several_rooms_is_stored_in_one_turn(
    connect: Any,
    lobby: Any,
    alice: Any,
    store_thread_held: Held,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The rooms of one store thread share its turns: what waited for it in three rooms is
    stored in one transaction, each room's entries with that room's next seqs (`ans` reading its
    own room's entry of the same turn, a resend answered with the entry its first copy got), and
    each room hears its own entries and no other's."""
    turns: list[list[int]] = []
    real_lane_store = services._lane_store

    def spy(rooms: dict[int, list[Any]]) -> dict[int, list[Any]]:
        turns.append(sorted(rooms))
        return real_lane_store(rooms)

    monkeypatch.setattr(services, "_lane_store", spy)
    others = await sync_to_async(_rooms_on_the_lane_of)(lobby, alice, 2)
    rooms = [lobby, *others]
    watchers = [await connect(alice, room.slug) for room in rooms]
    for ws in watchers:
        await ws.receive_type("sync")

    def submit(room: Any, expression: str, client_id: str | None = None) -> asyncio.Task[Any]:
        return asyncio.ensure_future(
            services.entry_submit(
                room_id=room.id,
                author=alice,
                expression=expression,
                client_id=client_id or str(uuid.uuid4()),
            )
        )

    first = submit(lobby, "1 + 1")  # holds the thread
    await store_thread_held.holding()
    again = str(uuid.uuid4())
    waiting = []
    for room, expression, client_id in [
        (others[0], "5 * 10", None),
        (lobby, "10", None),
        (others[1], "20", again),
        (others[0], "ans + 30", None),  # 80: its own room's entry before it, not lobby's 10
        (others[1], "20", again),  # sent again: the same entry
    ]:
        waiting.append((room, submit(room, expression, client_id)))
        await _queued(room.id, sum(1 for r, _ in waiting if r is room))
    store_thread_held.release()
    assert (await first).entry.seq == 1
    answers = [(room, await task) for room, task in waiting]

    assert turns[-1] == sorted(room.id for room in rooms)  # one turn for all three rooms
    assert [(room.slug, a.entry.seq, a.entry.result, a.created) for room, a in answers] == [
        (others[0].slug, 1, "50", True),
        (lobby.slug, 2, "10", True),
        (others[1].slug, 1, "20", True),
        (others[0].slug, 2, "80", True),
        (others[1].slug, 1, "20", False),
    ]
    assert answers[4][1].entry.pk == answers[2][1].entry.pk
    last_seqs = {room.slug: 2 for room in rooms} | {others[1].slug: 1}
    heard = {}
    for room, ws in zip(rooms, watchers, strict=True):
        assert (await sync_to_async(Room.objects.get)(pk=room.pk)).last_seq == last_seqs[room.slug]
        heard[room.slug] = [
            (await ws.receive_type("entry"))["entry"]["result"] for _ in range(last_seqs[room.slug])
        ]
    assert heard == {lobby.slug: ["2", "10"], others[0].slug: ["50", "80"], others[1].slug: ["20"]}
    for ws in watchers:
        assert await ws.nothing("entry")  # no room heard another's


async def test_a_turn_of_several_rooms_that_fails_as_a_whole_stores_each_room_on_its_own(
    lobby: Any, alice: Any, store_thread_held: Held, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One room's unique-constraint clash rolls the whole turn back; each room is then stored
    in a transaction of its own: nothing lost, nothing twice."""
    real_insert = services._rooms_entries_insert
    clashed = []

    def clash_once(rooms: dict[int, list[Any]]) -> dict[int, list[Any]]:
        if not clashed:
            clashed.append(sorted(rooms))
            raise IntegrityError("duplicate key value violates unique constraint")
        return real_insert(rooms)

    monkeypatch.setattr(services, "_rooms_entries_insert", clash_once)
    others = await sync_to_async(_rooms_on_the_lane_of)(lobby, alice, 2)
    first = asyncio.ensure_future(
        services.entry_submit(room_id=lobby.id, author=alice, expression="1", client_id=None)
    )
    await store_thread_held.holding()
    waiting = []
    for n, room in enumerate(others * 2):
        waiting.append(
            asyncio.ensure_future(
                services.entry_submit(
                    room_id=room.id, author=alice, expression=f"{n}", client_id=str(uuid.uuid4())
                )
            )
        )
        await _queued(room.id, 1 + n // 2)
    store_thread_held.release()
    await first
    answers = await asyncio.gather(*waiting)
    assert clashed
    assert [(a.entry.room_id, a.entry.seq, a.entry.result) for a in answers] == [
        (others[0].id, 1, "0"),
        (others[1].id, 1, "1"),
        (others[0].id, 2, "2"),
        (others[1].id, 2, "3"),
    ]
    for room in others:
        assert await sync_to_async(Entry.objects.filter(room=room).count)() == 2
