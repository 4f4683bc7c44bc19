"""Read positions, unread counts on the room list (and its socket), the unread divider, `data-mine`,
and history search (text, author, a date) with the trigram index behind it on PostgreSQL."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime, timedelta

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.db import connection
from django.test import Client

from rooms import selectors, services
from rooms.models import Entry, Membership, Room
from tests.conftest import ORIGIN, session_cookie
from tests.factories import EntryFactory, MembershipFactory, RoomFactory, UserFactory


def signed_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def write(room: Room, author, count: int, expression: str = "{seq}*1") -> None:
    for _ in range(count):
        services.entry_submit_sync(
            room_id=room.pk,
            author=author,
            expression=expression.format(seq=room.last_seq + 1),
            client_id=None,
        )
        room.refresh_from_db()


@pytest.fixture(autouse=True)
def _no_rate_limit(settings) -> None:
    settings.EXPRESSION_BUCKET_CAPACITY = 10_000
    settings.EXPRESSION_BUCKET_REFILL_PER_SECOND = 10_000


def read_of(room: Room, user) -> int:
    return Membership.objects.get(room=room, user=user).last_read_seq


# --- The service --------------------------------------------------------------------------------


@pytest.mark.django_db
def test_read_position_advances_and_never_goes_back(alice, bob, lobby):
    write(lobby, alice, 5)
    assert services.read_position_advance(room_id=lobby.pk, user=bob, seq=4) == 4
    assert services.read_position_advance(room_id=lobby.pk, user=bob, seq=2) == 4
    assert read_of(lobby, bob) == 4
    assert services.read_position_advance(room_id=lobby.pk, user=bob, seq=5) == 5


@pytest.mark.django_db
def test_read_position_refuses_a_seq_past_the_room_and_a_bad_seq(alice, bob, lobby):
    write(lobby, alice, 2)
    for bad in (3, -1, "2", 1.5, True, None):
        with pytest.raises(services.Refused) as refused:
            services.read_position_advance(room_id=lobby.pk, user=bob, seq=bad)
        assert refused.value.code == "invalid_frame"
    assert read_of(lobby, bob) == 0


@pytest.mark.django_db
def test_read_position_refuses_non_members(alice, carol, lobby, vault):
    write(lobby, alice, 1)
    with pytest.raises(services.Refused) as refused:
        services.read_position_advance(room_id=lobby.pk, user=carol, seq=1)  # public, not joined
    assert refused.value.code == "forbidden"
    with pytest.raises(services.Refused):
        services.read_position_advance(room_id=vault.pk, user=carol, seq=0)  # private
    assert not Membership.objects.filter(user=carol).exists()


@pytest.mark.django_db
def test_joining_starts_with_everything_read(alice, carol, lobby):
    write(lobby, alice, 3)
    services.room_join(room=lobby, user=carol)
    assert read_of(lobby, carol) == 3


@pytest.mark.django_db
def test_a_new_entry_is_one_event_for_every_members_room_list(
    alice, bob, lobby, sent_events, django_capture_on_commit_callbacks
):
    services.read_position_advance(room_id=lobby.pk, user=alice, seq=0)
    with django_capture_on_commit_callbacks(execute=True):
        write(lobby, alice, 2)
    with django_capture_on_commit_callbacks(execute=True):
        services.read_position_advance(room_id=lobby.pk, user=bob, seq=1)
    activity = [(g, e["last_seq"]) for g, e in sent_events if e["type"] == "room.activity"]
    # One event per entry for the room lists, however many members the room has.
    assert activity == [(f"activity.{lobby.pk}", 1), (f"activity.{lobby.pk}", 2)]
    unread = [
        (group, e["read_seq"], e["unread"], e["activity"])
        for group, e in sent_events
        if e["type"] == "unread.changed"
    ]
    assert unread == [(f"me.{bob.pk}", 1, 1, None)]  # bob read up to 1: one left
    # The room sockets' topics never hear it.
    assert all(
        not g.startswith(("room.", "user."))
        for g, e in sent_events
        if e["type"] in ("unread.changed", "room.activity")
    )


# --- Sockets ------------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
async def test_a_read_frame_advances_the_read_position(connect, alice, bob, lobby):
    await sync_to_async(write)(lobby, alice, 3)
    socket = await connect(bob, "lobby")
    await socket.send({"type": "read", "seq": 2})
    await socket.send({"type": "read", "seq": 1})
    await socket.send({"type": "read", "seq": 99})
    error = await socket.receive_type("error")
    assert error["code"] == "invalid_frame"
    # Kept, and stored by the room's next tick (every open page sends one a second).
    for _ in range(100):
        if await sync_to_async(read_of)(lobby, bob) == 2:
            break
        await asyncio.sleep(0.05)
    assert await sync_to_async(read_of)(lobby, bob) == 2


@pytest.mark.django_db(transaction=True)
async def test_many_pages_read_positions_are_stored_together_and_on_close(
    connect, alice, bob, lobby, settings
):
    settings.ROOM_TICK_SECONDS = 0.2
    await sync_to_async(write)(lobby, alice, 5)
    alice_ws = await connect(alice, "lobby")
    bob_ws = await connect(bob, "lobby")
    await alice_ws.send({"type": "read", "seq": 4})
    await bob_ws.send({"type": "read", "seq": 3})
    for _ in range(100):
        if (
            await sync_to_async(read_of)(lobby, alice),
            await sync_to_async(read_of)(lobby, bob),
        ) == (
            4,
            3,
        ):
            break
        await asyncio.sleep(0.05)
    assert await sync_to_async(read_of)(lobby, alice) == 4
    assert await sync_to_async(read_of)(lobby, bob) == 3
    # A position never moves back; a page that closes right after reading keeps what it read.
    settings.ROOM_TICK_SECONDS = 5
    await asyncio.sleep(0.3)
    await bob_ws.send({"type": "read", "seq": 1})
    await bob_ws.send({"type": "read", "seq": 5})
    await bob_ws.close()
    for _ in range(100):
        if await sync_to_async(read_of)(lobby, bob) == 5:
            break
        await asyncio.sleep(0.05)
    assert await sync_to_async(read_of)(lobby, bob) == 5


@pytest.mark.django_db
def test_storing_many_positions_takes_the_same_few_queries_and_tells_each_room_list(
    alice,
    bob,
    carol,
    lobby,
    sent_events,
    django_assert_num_queries,
    django_capture_on_commit_callbacks,
):
    MembershipFactory(room=lobby, user=carol)
    write(lobby, alice, 6)
    with django_capture_on_commit_callbacks(execute=True), django_assert_num_queries(5):
        # the room, the current positions, the update (and the transaction's savepoint pair)
        moved = services.read_positions_advance(
            room_id=lobby.pk, positions={alice.pk: 6, bob.pk: 2, carol.pk: 99, 12345: 3}
        )
    assert moved == 3  # carol clamped to the room's last seq; a stranger moves nothing
    assert (read_of(lobby, alice), read_of(lobby, bob), read_of(lobby, carol)) == (6, 2, 6)
    unread = sorted(
        (group, e["unread"]) for group, e in sent_events if e["type"] == "unread.changed"
    )
    assert unread == sorted([(f"me.{alice.pk}", 0), (f"me.{bob.pk}", 4), (f"me.{carol.pk}", 0)])
    assert services.read_positions_advance(room_id=lobby.pk, positions={bob.pk: 1}) == 0
    assert read_of(lobby, bob) == 2


async def _room_list_socket(user) -> WebsocketCommunicator:
    from project.asgi import application

    cookie = await sync_to_async(session_cookie)(user)
    communicator = WebsocketCommunicator(
        application,
        "/ws/me/",
        headers=[
            (b"origin", ORIGIN),
            (b"cookie", f"{settings.SESSION_COOKIE_NAME}={cookie}".encode()),
        ],
    )
    connected, _ = await communicator.connect(timeout=5)
    assert connected
    return communicator


@pytest.mark.django_db(transaction=True)
async def test_the_room_list_socket_hears_unread_counts(alice, bob, lobby):
    communicator = await _room_list_socket(bob)
    try:
        await sync_to_async(write)(lobby, alice, 1)
        frame = await communicator.receive_json_from(timeout=5)
        assert frame["type"] == "unread"
        assert frame["room"] == "lobby" and frame["unread"] == 1 and frame["activity"]
        await sync_to_async(services.read_position_advance)(room_id=lobby.pk, user=bob, seq=1)
        frame = await communicator.receive_json_from(timeout=5)
        assert (frame["room"], frame["unread"], frame["activity"]) == ("lobby", 0, None)
        # The next entries count from the position the socket heard move, not from the start.
        await sync_to_async(write)(lobby, alice, 2)
        counts = [(await communicator.receive_json_from(timeout=5))["unread"] for _ in range(2)]
        assert counts == [1, 2]
    finally:
        await communicator.disconnect()


@pytest.mark.django_db(transaction=True)
async def test_the_room_list_socket_refuses_strangers():
    from project.asgi import application

    communicator = WebsocketCommunicator(application, "/ws/me/", headers=[(b"origin", ORIGIN)])
    connected, _ = await communicator.connect(timeout=5)
    assert not connected


# --- Pages --------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_room_list_shows_unread_counts_and_orders_by_latest_activity(alice, bob, lobby):
    quiet = RoomFactory(name="Aardvark", owner=alice)
    MembershipFactory(room=quiet, user=bob)
    busy = RoomFactory(name="Zebra", owner=alice)
    MembershipFactory(room=busy, user=bob)
    write(quiet, alice, 1)
    write(lobby, alice, 2)
    write(busy, alice, 3)
    services.read_position_advance(room_id=busy.pk, user=bob, seq=1)
    body = signed_in(bob).get("/").content.decode()
    mine = body[body.index('id="my-rooms"') : body.index("</ul>", body.index('id="my-rooms"'))]
    items = re.findall(r'data-room="([^"]+)" data-unread="(\d+)"', mine)
    assert items == [(busy.slug, "2"), ("lobby", "2"), (quiet.slug, "1")]


@pytest.mark.django_db
def test_room_page_puts_the_divider_before_the_first_unread_entry_and_marks_mine(alice, bob, lobby):
    write(lobby, bob, 2)
    services.read_position_advance(room_id=lobby.pk, user=bob, seq=2)
    write(lobby, alice, 2)
    body = signed_in(bob).get("/rooms/lobby/").content.decode()
    assert body.count('id="unread-divider"') == 1
    assert body.index('id="unread-divider"') < body.index('id="entry-3"')
    assert body.index('id="entry-2"') < body.index('id="unread-divider"')
    assert re.search(r'id="entry-1"[^>]*data-mine', body)
    assert not re.search(r'id="entry-3"[^>]*data-mine', body)
    assert '"lastReadSeq": 2' in body
    services.read_position_advance(room_id=lobby.pk, user=bob, seq=4)
    assert 'id="unread-divider"' not in signed_in(bob).get("/rooms/lobby/").content.decode()


# --- History search -----------------------------------------------------------------------------


def history_seqs(client: Client, query: str) -> list[int]:
    response = client.get("/rooms/lobby/history/" + query)
    assert response.status_code == 200
    return [int(s) for s in re.findall(r'id="entry-(\d+)"', response.content.decode())]


@pytest.mark.django_db
def test_history_searches_expression_text_ignoring_case_with_the_author_filter(alice, bob, lobby):
    write(lobby, alice, 1, "sqrt(2)")
    write(lobby, bob, 1, "SQRT(9)")
    write(lobby, alice, 1, "1+1")
    write(lobby, alice, 1, "100%_x")
    client = signed_in(bob)
    assert history_seqs(client, "?q=Sqrt") == [1, 2]
    assert history_seqs(client, "?q=sqrt&author=bob") == [2]
    assert history_seqs(client, "?q=%25_") == [4]  # % and _ are text, not patterns
    assert history_seqs(client, "?q=nothing") == []
    assert "No entries match" in client.get("/rooms/lobby/history/?q=nothing").content.decode()
    assert re.search(
        r'id="entry-2"[^>]*data-mine', client.get("/rooms/lobby/history/").content.decode()
    )


@pytest.mark.django_db
def test_history_pages_through_search_results(alice, lobby):
    for seq in range(1, 251):
        EntryFactory(
            room=lobby, author=alice, seq=seq, expression=f"{'pi' if seq % 2 else 'e'}*{seq}"
        )
    Room.objects.filter(pk=lobby.pk).update(last_seq=250)
    client = signed_in(alice)
    first = history_seqs(client, "?q=PI")
    assert len(first) == 100 and first[-1] == 249 and all(s % 2 for s in first)
    body = client.get("/rooms/lobby/history/?q=PI").content.decode()
    older = re.search(r'id="older" href="([^"]+)"', body).group(1).replace("&amp;", "&")
    assert "q=PI" in older
    second = history_seqs(client, older)
    assert second[-1] == first[0] - 2 and len(second) == 25  # 125 match in all


@pytest.mark.django_db
def test_history_jumps_to_a_date(alice, lobby):
    days = [datetime(2026, 11, d, 12, tzinfo=UTC) for d in (1, 1, 2, 3, 3)]
    for seq, when in enumerate(days, start=1):
        EntryFactory(room=lobby, author=alice, seq=seq)
        Entry.objects.filter(room=lobby, seq=seq).update(created=when)
    Room.objects.filter(pk=lobby.pk).update(last_seq=len(days))
    client = signed_in(alice)
    assert history_seqs(client, "?date=2026-11-02") == [3, 4, 5]
    assert history_seqs(client, "?date=2026-11-03") == [4, 5]
    assert history_seqs(client, "?date=2026-10-01") == [1, 2, 3, 4, 5]
    assert history_seqs(client, "?date=2026-12-25") == []
    assert 'id="older"' in client.get("/rooms/lobby/history/?date=2026-11-03").content.decode()
    assert client.get("/rooms/lobby/history/?date=tomorrow").status_code == 400
    room = Room.objects.get(pk=lobby.pk)
    assert selectors.first_seq_since(room=room, when=days[2] - timedelta(hours=1)) == 3


@pytest.mark.django_db
def test_history_search_is_for_members_only(alice, carol, lobby, vault):
    assert signed_in(carol).get("/rooms/lobby/history/?q=1").status_code == 403
    assert signed_in(carol).get(f"/rooms/{vault.slug}/history/?q=1").status_code == 404


@pytest.mark.django_db
def test_search_on_a_big_room_is_served_by_the_trigram_index(alice, lobby):
    if connection.vendor != "postgresql":
        pytest.skip("the trigram index is PostgreSQL's")
    other = UserFactory()
    rows = [
        Entry(room=lobby, author=other, seq=seq, expression=f"{seq}*{seq}", result="1")
        for seq in range(1, 50_001)
    ]
    rows[31_337].expression = "needle(42)"
    Entry.objects.bulk_create(rows, batch_size=5000)
    Room.objects.filter(pk=lobby.pk).update(last_seq=50_000)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE rooms_entry")
    room = Room.objects.get(pk=lobby.pk)
    page = selectors.entries_before(room=room, before=None, limit=100, q="NEEDLE")
    assert [e["seq"] for e in page.entries] == [31_338]
    queryset = selectors._entries(room, None, "NEEDLE").order_by("-seq")[:101]
    plan = queryset.explain()
    assert "entry_expression_upper_trgm" in plan, plan
