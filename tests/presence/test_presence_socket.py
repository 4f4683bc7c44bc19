"""Presence and typing through the real ASGI stack, in process (Redis store and channel layer).

Timings are bounds, not measurements: a frame must arrive before a deadline. Presence frames are
coalesced to at most one per interval per socket (1 s; typing tests shorten it to 0.2 s), so "at
once" means "within the next coalescing window" and never "after an expiry".

Beware: a `receive` that times out on a channels test communicator cancels the application, so
windows in which frames may or may not come are watched with `receive_nothing`.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from django.conf import settings as django_settings

from presence.services import presence_leave, presence_typing
from presence.store import RedisPresenceStore, get_presence_store, reset_presence_store

pytestmark = pytest.mark.django_db(transaction=True)

Frame = dict[str, Any]


def online(frame: Frame) -> dict[str, bool]:
    """username -> typing, from a JSON presence frame."""
    return {person["username"]: person["typing"] for person in frame["online"]}


async def presence_until(socket, predicate: Callable[[Frame], bool], within: float) -> Frame:
    """The first presence frame matching `predicate`, arriving within `within` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    seen: list[dict[str, bool]] = []
    while True:
        try:
            frame = await socket.receive_type("presence", timeout=max(0.01, deadline - loop.time()))
        except TimeoutError:
            pytest.fail(f"no matching presence frame within {within}s; saw {seen}")
        seen.append(online(frame))
        if predicate(frame):
            return frame


async def frames_during(socket, seconds: float) -> list[str]:
    """Every text frame the socket receives in the next `seconds` (raw text, any mode)."""
    communicator = socket.communicator
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    texts: list[str] = []
    while (remaining := deadline - loop.time()) > 0:
        if await communicator.receive_nothing(timeout=remaining, interval=0.005):
            break
        message = await communicator.receive_output(1)
        assert message["type"] == "websocket.send", message
        texts.append(message["text"])
    return texts


def is_presence_json(text: str) -> bool:
    return json.loads(text)["type"] == "presence"


def is_presence_html(text: str) -> bool:
    return 'id="typing"' in text


@pytest.fixture
def quick_broadcasts(settings):
    """Presence coalesced to 0.2 s instead of 1 s: typing tests wait less, bounds stay honest."""
    settings.PRESENCE_BROADCAST_INTERVAL_SECONDS = 0.2
    return settings


QUICK = 0.2 + 0.5  # one quick coalescing window plus slack: "at once", far below any expiry


def bob_typing(typing: bool) -> Callable[[Frame], bool]:
    return lambda frame: online(frame).get("bob") is typing


async def both_online(alice_ws, bob_ws) -> None:
    """Wait until each socket has seen both people online."""
    for socket in (alice_ws, bob_ws):
        await presence_until(socket, lambda f: set(online(f)) == {"alice", "bob"}, within=3)


# --- Who is online --------------------------------------------------------------------------------


async def test_connecting_sends_the_full_presence_state_at_once(connect, lobby, alice, bob):
    bob_ws = await connect(bob, "lobby")
    await presence_until(bob_ws, lambda f: set(online(f)) == {"bob"}, within=2)
    alice_ws = await connect(alice, "lobby")
    frame = await alice_ws.receive_type("presence", timeout=2)
    assert frame == {
        "v": 1,
        "type": "presence",
        "room": "lobby",
        "online": [
            {"username": "alice", "typing": False},
            {"username": "bob", "typing": False},
        ],
        "count": 2,
    }


async def test_two_tabs_of_one_person_count_once(connect, lobby, alice, bob):
    first = await connect(alice, "lobby")
    assert (await first.receive_type("presence"))["count"] == 1
    second = await connect(alice, "lobby")
    frame = await second.receive_type("presence")
    assert frame["count"] == 1
    assert frame["online"] == [{"username": "alice", "typing": False}]

    bob_ws = await connect(bob, "lobby")
    frame = await bob_ws.receive_type("presence")
    assert [p["username"] for p in frame["online"]] == ["alice", "bob"]
    assert frame["count"] == 2


async def test_closing_one_of_two_tabs_keeps_the_person_online(connect, lobby, alice, bob):
    first = await connect(alice, "lobby")
    second = await connect(alice, "lobby")
    bob_ws = await connect(bob, "lobby")
    await presence_until(bob_ws, lambda f: set(online(f)) == {"alice", "bob"}, within=2)

    await second.close()
    texts = await frames_during(bob_ws, 1.2)  # a coalescing window and some
    assert not [t for t in texts if is_presence_json(t)], texts  # nothing changed for the room
    state = await get_presence_store().state(lobby.id)
    assert [o.username for o in state.online] == ["alice", "bob"]

    await first.close()
    frame = await presence_until(bob_ws, lambda f: "alice" not in online(f), within=2)
    assert frame["count"] == 1


async def test_clean_close_is_seen_by_the_room_within_a_second(connect, lobby, alice, bob):
    alice_ws = await connect(alice, "lobby")
    bob_ws = await connect(bob, "lobby")
    await both_online(alice_ws, bob_ws)
    # Let alice's coalescing window pass: "within a second" is measured from a quiet room.
    await asyncio.sleep(django_settings.PRESENCE_BROADCAST_INTERVAL_SECONDS)

    started = time.monotonic()
    await bob_ws.close()
    frame = await presence_until(alice_ws, lambda f: "bob" not in online(f), within=1.0)
    assert time.monotonic() - started < 1.0
    assert frame["online"] == [{"username": "alice", "typing": False}]
    assert frame["count"] == 1


async def test_presence_frames_are_coalesced_to_one_a_second_and_end_on_the_latest_state(
    connect, lobby, alice, bob
):
    alice_ws = await connect(alice, "lobby")
    bob_ws = await connect(bob, "lobby")
    await both_online(alice_ws, bob_ws)

    async def churn() -> None:
        for n in range(40):  # 20 changes a second for 2 s...
            await presence_typing(room_id=lobby.id, username="bob", typing=n % 2 == 0)
            await bob_ws.send({"type": "typing"})  # ...and typing frames, mostly dropped
            await asyncio.sleep(0.05)

    watching = asyncio.ensure_future(frames_during(alice_ws, 2.1))
    await churn()
    texts = await watching
    presence_frames = [t for t in texts if is_presence_json(t)]
    # Some 40 changes in 2.1 s; frames at least a second apart: three at most.
    assert 1 <= len(presence_frames) <= 3, presence_frames
    # The last change still reaches the room, in the next window at the latest.
    texts += await frames_during(alice_ws, 1.2)
    last = [json.loads(t) for t in texts if is_presence_json(t)][-1]
    state = await get_presence_store().state(lobby.id)
    assert last == {"v": 1, "type": "presence", **state.as_dict("lobby")}


# --- Typing ---------------------------------------------------------------------------------------


async def test_typing_shows_then_clears_after_the_expiry(
    connect, lobby, alice, bob, quick_broadcasts
):
    quick_broadcasts.TYPING_EXPIRY_SECONDS = 1
    reset_presence_store()  # the store reads its typing TTL when it is built
    alice_ws = await connect(alice, "lobby")
    bob_ws = await connect(bob, "lobby")
    await both_online(alice_ws, bob_ws)

    await bob_ws.send({"type": "typing"})
    await presence_until(alice_ws, bob_typing(True), within=QUICK)
    shown = time.monotonic()
    await presence_until(alice_ws, bob_typing(False), within=1 + QUICK)
    assert time.monotonic() - shown > 0.5  # cleared by the expiry, not at once


async def test_typing_stop_clears_typing_at_once(connect, lobby, alice, bob, quick_broadcasts):
    alice_ws = await connect(alice, "lobby")
    bob_ws = await connect(bob, "lobby")
    await both_online(alice_ws, bob_ws)

    await bob_ws.send({"type": "typing"})
    await presence_until(alice_ws, bob_typing(True), within=QUICK)
    await bob_ws.send({"type": "typing.stop"})
    await presence_until(alice_ws, bob_typing(False), within=QUICK)  # the expiry is 5 s


async def test_a_stop_soon_after_another_stop_still_clears_typing(
    connect, lobby, alice, bob, quick_broadcasts
):
    """A client within the limits: `typing` no more than every two intervals, a stop each time
    the input is cleared. The second stop comes a moment after the first: it must not be lost."""
    quick_broadcasts.TYPING_MIN_INTERVAL_SECONDS = interval = 0.5
    alice_ws = await connect(alice, "lobby")
    bob_ws = await connect(bob, "lobby")
    await both_online(alice_ws, bob_ws)
    loop = asyncio.get_running_loop()

    started = loop.time()
    await bob_ws.send({"type": "typing"})
    await presence_until(alice_ws, bob_typing(True), within=QUICK)
    await asyncio.sleep(started + 1.8 * interval - loop.time())
    await bob_ws.send({"type": "typing.stop"})  # input cleared
    await asyncio.sleep(started + 2 * interval + 0.02 - loop.time())
    await bob_ws.send({"type": "typing"})  # one key typed...
    await bob_ws.send({"type": "typing.stop"})  # ...and erased, 0.1 interval after the last stop

    texts = await frames_during(alice_ws, QUICK + 0.3)
    states = [online(json.loads(t)) for t in texts if is_presence_json(t)]
    assert states, texts
    assert states[-1] == {"alice": False, "bob": False}, states  # not until the 5 s expiry


async def test_storing_an_expression_clears_its_authors_typing_at_once(
    connect, lobby, alice, bob, quick_broadcasts
):
    alice_ws = await connect(alice, "lobby")
    bob_ws = await connect(bob, "lobby")
    await both_online(alice_ws, bob_ws)

    await bob_ws.send({"type": "typing"})
    await presence_until(alice_ws, bob_typing(True), within=QUICK)
    await bob_ws.send({"type": "expression", "expression": "6*7"})
    assert (await bob_ws.receive_type("entry"))["entry"]["result"] == "42"
    await presence_until(alice_ws, bob_typing(False), within=QUICK)  # the expiry is 5 s


async def test_typing_of_someone_not_online_is_never_shown(connect, lobby, alice, bob):
    alice_ws = await connect(alice, "lobby")
    await alice_ws.receive_type("presence")
    state = await get_presence_store().set_typing(lobby.id, "bob", True)
    assert state.typing_usernames() == ()
    bob_ws = await connect(bob, "lobby")
    frame = await bob_ws.receive_type("presence")
    assert online(frame) == {"alice": False, "bob": False}


async def test_html_fragments_never_show_the_viewer_their_own_typing(
    connect, lobby, alice, bob, quick_broadcasts
):
    alice_ws = await connect(alice, "lobby", html=True)
    bob_ws = await connect(bob, "lobby", html=True)
    await asyncio.sleep(0.2)

    await alice_ws.send({"type": "typing"})
    await bob_ws.send({"type": "typing"})
    alice_texts, bob_texts = await asyncio.gather(
        frames_during(alice_ws, 1), frames_during(bob_ws, 1)
    )
    alice_presence = [t for t in alice_texts if is_presence_html(t)]
    bob_presence = [t for t in bob_texts if is_presence_html(t)]

    # Each sees the other typing (the fragments are live), never themselves.
    assert "bob is typing…" in alice_presence[-1], alice_presence
    assert "alice is typing…" in bob_presence[-1], bob_presence
    for text in alice_presence:
        assert "alice is typing" not in text, text
        assert "alice and" not in text and "and alice" not in text, text
    for text in bob_presence:
        assert "bob is typing" not in text, text
        assert "bob and" not in text and "and bob" not in text, text
    # The online list still names everyone, the viewer included.
    assert 'data-username="alice"' in bob_presence[-1]
    assert 'data-username="bob"' in bob_presence[-1]


async def test_json_presence_carries_everyones_typing_for_the_client_to_filter(
    connect, lobby, alice, bob, quick_broadcasts
):
    alice_ws = await connect(alice, "lobby")
    bob_ws = await connect(bob, "lobby")
    await both_online(alice_ws, bob_ws)
    await bob_ws.send({"type": "typing"})
    frame = await presence_until(bob_ws, bob_typing(True), within=QUICK)
    assert online(frame) == {"alice": False, "bob": True}  # the same state the HTTP route gives


async def test_typing_stops_showing_after_the_expiry_when_the_typing_tab_closes(
    connect, lobby, alice, bob, quick_broadcasts
):
    """bob types in one tab and closes it while another of his tabs stays open."""
    quick_broadcasts.TYPING_EXPIRY_SECONDS = 2
    reset_presence_store()
    alice_ws = await connect(alice, "lobby")
    bob_typing_tab = await connect(bob, "lobby")
    await connect(bob, "lobby")
    await presence_until(alice_ws, lambda f: set(online(f)) == {"alice", "bob"}, within=QUICK)

    await bob_typing_tab.send({"type": "typing"})
    await presence_until(alice_ws, bob_typing(True), within=QUICK)
    await bob_typing_tab.close()  # well before the 2 s expiry
    await presence_until(alice_ws, bob_typing(False), within=2 + QUICK)


# --- Heartbeats and expiry ------------------------------------------------------------------------


async def test_a_surviving_connection_announces_the_leave_of_an_expired_record(
    connect, lobby, alice, quick_broadcasts
):
    quick_broadcasts.PRESENCE_TTL_SECONDS = 1
    quick_broadcasts.PRESENCE_HEARTBEAT_SECONDS = 0.3
    reset_presence_store()  # the store reads its TTL when it is built
    # A connection whose process died: it joined, and will never refresh nor leave.
    await get_presence_store().join(lobby.id, "ghost-conn", "carol")

    alice_ws = await connect(alice, "lobby")
    frame = await alice_ws.receive_type("presence")
    assert set(online(frame)) == {"alice", "carol"}
    # carol's record expires 1 s after joining; alice's next heartbeat (0.3 s) purges it.
    ghost_gone = 1 + 0.3 + QUICK + 0.5
    frame = await presence_until(alice_ws, lambda f: "carol" not in online(f), within=ghost_gone)
    assert frame["online"] == [{"username": "alice", "typing": False}]
    state = await get_presence_store().state(lobby.id)
    assert [o.username for o in state.online] == ["alice"]


async def test_a_heartbeat_restores_a_record_that_vanished(
    connect, lobby, alice, bob, quick_broadcasts
):
    quick_broadcasts.PRESENCE_HEARTBEAT_SECONDS = 0.3
    alice_ws = await connect(alice, "lobby")
    bob_ws = await connect(bob, "lobby")
    await both_online(alice_ws, bob_ws)
    store = get_presence_store()
    if not isinstance(store, RedisPresenceStore):
        pytest.skip("needs the Redis store to find alice's connection")

    users_key = store.room_keys(lobby.id)[1]
    client = store._redis.client()
    alice_conns = [c for c, name in (await client.hgetall(users_key)).items() if name == "alice"]
    assert len(alice_conns) == 1
    await frames_during(bob_ws, 0.3)  # drain: what bob sees next comes after the loss

    # The record vanishes behind alice's back (say Redis lost it)...
    state = await presence_leave(room_id=lobby.id, conn_id=alice_conns[0])
    assert [o.username for o in state.online] == ["bob"]
    # ...and her next heartbeat brings her back; the room ends up seeing her online.
    texts = await frames_during(bob_ws, 0.3 + QUICK + 0.3)
    presence_frames = [json.loads(t) for t in texts if is_presence_json(t)]
    assert presence_frames, texts
    assert set(online(presence_frames[-1])) == {"alice", "bob"}
    assert alice_conns[0] in await client.hgetall(users_key)


async def test_the_room_sweep_announces_a_ghost_between_heartbeats(
    connect, lobby, alice, quick_broadcasts
):
    """Heartbeats are far apart (the default is 10 s); the per-process room tick still notices a
    dead process's expired record within one tick of its expiry."""
    quick_broadcasts.PRESENCE_HEARTBEAT_SECONDS = 60
    quick_broadcasts.ROOM_TICK_SECONDS = 0.3
    store = get_presence_store()
    if not isinstance(store, RedisPresenceStore):
        pytest.skip("a second process's store needs Redis")
    # The dead process wrote carol's record with a 1 s TTL; alice's (30 s) outlives the test.
    dead_process = RedisPresenceStore(django_settings.REDIS_URL, prefix=store.prefix, ttl_seconds=1)
    await dead_process.join(lobby.id, "ghost-conn", "carol")
    await dead_process.aclose()

    alice_ws = await connect(alice, "lobby")
    assert set(online(await alice_ws.receive_type("presence"))) == {"alice", "carol"}
    ghost_gone = 1 + 0.3 + QUICK + 0.5
    frame = await presence_until(alice_ws, lambda f: "carol" not in online(f), within=ghost_gone)
    assert frame["online"] == [{"username": "alice", "typing": False}]


async def test_one_tick_per_room_per_process_however_many_sockets(connect, lobby, alice, bob):
    from rooms.consumers import room_ticker

    sockets = [await connect(alice, "lobby"), await connect(bob, "lobby")]
    assert room_ticker.rooms().count(lobby.id) == 1
    assert len(room_ticker.members(lobby.id)) == 2
    for socket in sockets:
        await socket.close()
    assert lobby.id not in room_ticker.rooms()
