"""Presence and typing through the real ASGI stack, in process (Redis store and channel layer).

No test races the clock. A frame that must come is waited for with a generous deadline
(`DEADLINE`, many times any bound of the product), and where "at once" has to be told apart from
"after an expiry" the expiry is set far beyond that deadline, so only what the test did can
explain the frame. A frame that must not come is watched for a short window only: a slow machine
makes such a window see less, never more. Presence frames are coalesced to at most one per
interval per socket (1 s; typing tests shorten it to 0.2 s).

Beware: a `receive` that times out on a channels test communicator cancels the application, so
windows in which frames may or may not come are watched with `receive_nothing`; and the
communicator's own `disconnect` gives the application one second to finish, so tests that need
the leave to happen close sockets with `hang_up`.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable
from typing import Any

import pytest
from django.conf import settings as django_settings

from presence.services import presence_join, presence_leave
from presence.store import RedisPresenceStore, get_presence_store, reset_presence_store

pytestmark = pytest.mark.django_db(transaction=True)

Frame = dict[str, Any]

# "Eventually": every wait for a frame that must come. Only a broken product waits this long.
DEADLINE = 10.0
# Expiries and TTLs that must not explain what a test sees: longer than any test waits.
NEVER = 300.0


def online(frame: Frame) -> dict[str, bool]:
    """username -> typing, from a JSON presence frame."""
    return {person["username"]: person["typing"] for person in frame["online"]}


async def presence_until(
    socket, predicate: Callable[[Frame], bool], within: float = DEADLINE
) -> Frame:
    """The first presence frame matching `predicate`; fails if none comes within `within` s."""
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


async def first_presence(socket) -> Frame:
    return await socket.receive_type("presence", timeout=DEADLINE)


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


def presence_frames(texts: list[str]) -> list[Frame]:
    return [frame for frame in map(json.loads, texts) if frame["type"] == "presence"]


def is_presence_html(text: str) -> bool:
    return 'id="typing"' in text


TYPING_LINE = re.compile(r'<p id="typing"[^>]*>(.*?)</p>', re.S)


def typing_line(fragment: str) -> str:
    """The text of the `#typing` line of an HTML presence fragment."""
    found = TYPING_LINE.search(fragment)
    assert found, fragment
    return found.group(1).strip()


async def fragment_until(socket, viewer: str, predicate: Callable[[str], bool]) -> str:
    """The first HTML presence fragment whose typing line matches `predicate`. Every fragment
    `viewer` gets on the way is checked: none may show them their own typing."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE
    seen: list[str] = []
    while True:
        try:
            message = await socket.communicator.receive_output(max(0.01, deadline - loop.time()))
        except TimeoutError:
            pytest.fail(f"no matching fragment for {viewer} within {DEADLINE}s; saw {seen}")
        text = message.get("text") or ""
        if not is_presence_html(text):
            continue
        line = typing_line(text)
        seen.append(line)
        assert viewer not in line, f"{viewer} was shown their own typing: {line!r}"
        if predicate(line):
            return text


async def hang_up(socket) -> None:
    """Close the socket as a tab does, and let the server finish handling it (the test
    communicator's own `disconnect` cancels the application after one second)."""
    await socket.communicator.disconnect(timeout=DEADLINE)


@pytest.fixture
def quick_broadcasts(settings):
    """Presence coalesced to 0.2 s instead of 1 s: typing tests wait less."""
    settings.PRESENCE_BROADCAST_INTERVAL_SECONDS = 0.2
    return settings


@pytest.fixture
def typing_never_expires(quick_broadcasts):
    """Typing outlives every deadline: whatever clears it is what the test did, not the expiry."""
    quick_broadcasts.TYPING_EXPIRY_SECONDS = NEVER
    reset_presence_store()  # the store reads its typing TTL when it is built
    return quick_broadcasts


def bob_typing(typing: bool) -> Callable[[Frame], bool]:
    return lambda frame: online(frame).get("bob") is typing


async def both_online(alice_ws, bob_ws) -> None:
    """Wait until each socket has seen both people online."""
    for socket in (alice_ws, bob_ws):
        await presence_until(socket, lambda f: set(online(f)) == {"alice", "bob"})


def dead_process_store(*, ttl: float) -> RedisPresenceStore:
    """The store of another process that shares Redis (and will be killed)."""
    store = get_presence_store()
    if not isinstance(store, RedisPresenceStore):
        pytest.skip("a second process's store needs Redis")
    return RedisPresenceStore(django_settings.REDIS_URL, prefix=store.prefix, ttl_seconds=ttl)


async def ghost_joins(room_id: int, username: str) -> None:
    """A connection of `username` on another process, alive for now: the room surely sees it."""
    process = dead_process_store(ttl=NEVER)
    await process.join(room_id, "ghost-conn", username)
    await process.aclose()


async def ghost_dies(room_id: int, username: str) -> None:
    """The ghost's process sends a last heartbeat, leaving the record a second to live, and is
    killed: the record is never refreshed nor left again."""
    process = dead_process_store(ttl=1)
    await process.refresh(room_id, "ghost-conn", username)
    await process.aclose()


# --- Who is online --------------------------------------------------------------------------------


async def test_connecting_sends_the_full_presence_state_at_once(connect, lobby, alice, bob):
    bob_ws = await connect(bob, "lobby")
    await presence_until(bob_ws, lambda f: set(online(f)) == {"bob"})
    alice_ws = await connect(alice, "lobby")
    frame = await first_presence(alice_ws)
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
    assert (await first_presence(first))["count"] == 1
    second = await connect(alice, "lobby")
    frame = await first_presence(second)
    assert frame["count"] == 1
    assert frame["online"] == [{"username": "alice", "typing": False}]

    bob_ws = await connect(bob, "lobby")
    frame = await first_presence(bob_ws)
    assert [p["username"] for p in frame["online"]] == ["alice", "bob"]
    assert frame["count"] == 2


async def test_closing_one_of_two_tabs_keeps_the_person_online(connect, lobby, alice, bob):
    first = await connect(alice, "lobby")
    second = await connect(alice, "lobby")
    bob_ws = await connect(bob, "lobby")
    await presence_until(bob_ws, lambda f: set(online(f)) == {"alice", "bob"})

    await hang_up(second)
    state = await get_presence_store().state(lobby.id)
    assert [o.username for o in state.online] == ["alice", "bob"]
    texts = await frames_during(bob_ws, 1.2)  # a coalescing window and some
    assert not presence_frames(texts), texts  # nothing changed for the room

    await hang_up(first)
    frame = await presence_until(bob_ws, lambda f: "alice" not in online(f))
    assert frame["count"] == 1


async def test_clean_close_is_seen_by_the_room_at_once(connect, lobby, alice, bob, settings):
    # Records outlive the test: only bob's leave can tell the room he is gone.
    settings.PRESENCE_TTL_SECONDS = NEVER
    reset_presence_store()  # the store reads its TTL when it is built
    alice_ws = await connect(alice, "lobby")
    bob_ws = await connect(bob, "lobby")
    await both_online(alice_ws, bob_ws)

    await hang_up(bob_ws)
    frame = await presence_until(alice_ws, lambda f: "bob" not in online(f))
    assert frame["online"] == [{"username": "alice", "typing": False}]
    assert frame["count"] == 1


async def test_presence_frames_are_coalesced_to_one_a_second_and_end_on_the_latest_state(
    connect, lobby, alice, bob
):
    interval = django_settings.PRESENCE_BROADCAST_INTERVAL_SECONDS
    alice_ws = await connect(alice, "lobby")
    bob_ws = await connect(bob, "lobby")
    await both_online(alice_ws, bob_ws)
    loop = asyncio.get_running_loop()

    # The room changes 20 times a second (one more person online each time: a tab of someone
    # else's joining) until alice has had three presence frames: frames keep coming while what
    # the room shows keeps changing. Every state differs from the one before, so each flush has
    # something new to show whenever it reads (a state that went back and forth, like typing on
    # and off, could be read the same at every flush, and rightly make no frame).
    frames: list[Frame] = []
    changes = 0
    started = loop.time()
    try:
        while len(frames) < 3:
            if loop.time() - started > 2 * interval + DEADLINE:
                pytest.fail(f"frames held back while the room kept changing: {changes}, {frames}")
            await presence_join(room_id=lobby.id, conn_id=f"tab-{changes}", username=f"p{changes}")
            changes += 1
            frames += presence_frames(await frames_during(alice_ws, 0.05))
        elapsed = loop.time() - started
    finally:  # the last changes: the tabs close
        for n in range(changes):
            await presence_leave(room_id=lobby.id, conn_id=f"tab-{n}")
    # Coalesced: frames at least an interval apart, however many changes (bounded by the time
    # this took, so a slow machine only loosens it).
    assert len(frames) <= elapsed // interval + 1, (changes, elapsed, frames)
    assert changes > len(frames), (changes, frames)

    # The last change still reaches the room: alice ends up shown the stored state.
    latest = frames[-1]
    deadline = loop.time() + DEADLINE
    while True:
        state = await get_presence_store().state(lobby.id)
        stored = {"v": 1, "type": "presence", **state.as_dict("lobby")}
        if latest == stored:
            break
        try:
            latest = await alice_ws.receive_type("presence", timeout=deadline - loop.time())
        except TimeoutError:
            pytest.fail(f"the room never saw the latest state {stored}; last frame {latest}")


# --- Typing ---------------------------------------------------------------------------------------


async def test_typing_shows_then_clears_after_the_expiry(
    connect, lobby, alice, bob, quick_broadcasts
):
    quick_broadcasts.TYPING_EXPIRY_SECONDS = expiry = 1
    reset_presence_store()  # the store reads its typing TTL when it is built
    alice_ws = await connect(alice, "lobby")
    bob_ws = await connect(bob, "lobby")
    await both_online(alice_ws, bob_ws)
    loop = asyncio.get_running_loop()

    typed_at = loop.time()  # before the typing frame: the expiry can only end later
    await bob_ws.send({"type": "typing"})
    await presence_until(alice_ws, bob_typing(True))
    # Cleared by the expiry, not at once: through the first half of the expiry bob stays typing.
    early = await frames_during(alice_ws, typed_at + expiry / 2 - loop.time())
    assert all(online(f)["bob"] for f in presence_frames(early)), early
    await presence_until(alice_ws, bob_typing(False), within=expiry + DEADLINE)


async def test_typing_stop_clears_typing_at_once(connect, lobby, alice, bob, typing_never_expires):
    alice_ws = await connect(alice, "lobby")
    bob_ws = await connect(bob, "lobby")
    await both_online(alice_ws, bob_ws)

    await bob_ws.send({"type": "typing"})
    await presence_until(alice_ws, bob_typing(True))
    await bob_ws.send({"type": "typing.stop"})
    await presence_until(alice_ws, bob_typing(False))  # typing never expires here


async def test_a_stop_soon_after_another_stop_still_clears_typing(
    connect, lobby, alice, bob, typing_never_expires
):
    """A client within the limits: `typing` at most once an interval, a stop each time the input
    is cleared. bob clears his input, types one key and erases it: the second stop comes a moment
    after the first, and must not be lost."""
    typing_never_expires.TYPING_MIN_INTERVAL_SECONDS = interval = 1.0
    alice_ws = await connect(alice, "lobby")
    bob_ws = await connect(bob, "lobby")
    await both_online(alice_ws, bob_ws)

    await bob_ws.send({"type": "typing"})
    await presence_until(alice_ws, bob_typing(True))  # the server has taken bob's typing token
    await asyncio.sleep(interval + 0.05)  # ...and it is back by now
    await bob_ws.send({"type": "typing.stop"})  # input cleared
    await bob_ws.send({"type": "typing"})  # one key typed...
    await presence_until(alice_ws, bob_typing(True))
    await bob_ws.send({"type": "typing.stop"})  # ...and erased, well within an interval
    await presence_until(alice_ws, bob_typing(False))  # typing never expires here


async def test_storing_an_expression_clears_its_authors_typing_at_once(
    connect, lobby, alice, bob, typing_never_expires
):
    alice_ws = await connect(alice, "lobby")
    bob_ws = await connect(bob, "lobby")
    await both_online(alice_ws, bob_ws)

    await bob_ws.send({"type": "typing"})
    await presence_until(alice_ws, bob_typing(True))
    await bob_ws.send({"type": "expression", "expression": "6*7"})
    assert (await bob_ws.receive_type("entry", timeout=DEADLINE))["entry"]["result"] == "42"
    await presence_until(alice_ws, bob_typing(False))  # typing never expires here


async def test_typing_of_someone_not_online_is_never_shown(connect, lobby, alice, bob):
    alice_ws = await connect(alice, "lobby")
    await first_presence(alice_ws)
    state = await get_presence_store().set_typing(lobby.id, "bob", True)
    assert state.typing_usernames() == ()
    bob_ws = await connect(bob, "lobby")
    frame = await first_presence(bob_ws)
    assert online(frame) == {"alice": False, "bob": False}


async def test_html_fragments_never_show_the_viewer_their_own_typing(
    connect, lobby, alice, bob, typing_never_expires
):
    alice_ws = await connect(alice, "lobby", html=True)
    bob_ws = await connect(bob, "lobby", html=True)

    # Each sees the other typing (the fragments are live), never themselves: alice types, then
    # bob too (both are typing now), then alice stops (only bob is).
    await alice_ws.send({"type": "typing"})
    await fragment_until(bob_ws, "bob", lambda line: line == "alice is typing…")
    await bob_ws.send({"type": "typing"})
    alice_view = await fragment_until(alice_ws, "alice", lambda line: "bob" in line)
    assert typing_line(alice_view) == "bob is typing…"
    await alice_ws.send({"type": "typing.stop"})
    bob_view = await fragment_until(bob_ws, "bob", lambda line: "alice" not in line)
    assert typing_line(bob_view) == ""

    # The online list still names everyone, the viewer included.
    for view in (alice_view, bob_view):
        assert 'data-username="alice"' in view
        assert 'data-username="bob"' in view


async def test_json_presence_carries_everyones_typing_for_the_client_to_filter(
    connect, lobby, alice, bob, quick_broadcasts
):
    alice_ws = await connect(alice, "lobby")
    bob_ws = await connect(bob, "lobby")
    await both_online(alice_ws, bob_ws)
    await bob_ws.send({"type": "typing"})
    frame = await presence_until(bob_ws, bob_typing(True))
    assert online(frame) == {"alice": False, "bob": True}  # the same state the HTTP route gives


async def test_typing_stops_showing_at_once_when_the_typing_tab_closes(
    connect, lobby, alice, bob, typing_never_expires
):
    """bob types in one tab and closes it while another of his tabs stays open."""
    alice_ws = await connect(alice, "lobby")
    bob_typing_tab = await connect(bob, "lobby")
    await connect(bob, "lobby")
    await presence_until(alice_ws, lambda f: set(online(f)) == {"alice", "bob"})

    await bob_typing_tab.send({"type": "typing"})
    await presence_until(alice_ws, bob_typing(True))
    await hang_up(bob_typing_tab)
    frame = await presence_until(alice_ws, bob_typing(False))  # typing never expires here
    assert set(online(frame)) == {"alice", "bob"}


# --- Heartbeats and expiry ------------------------------------------------------------------------


async def test_a_surviving_connection_announces_the_leave_of_an_expired_record(
    connect, lobby, alice, quick_broadcasts
):
    quick_broadcasts.PRESENCE_HEARTBEAT_SECONDS = 0.3
    # No room tick during the test: only alice's heartbeats can notice the expired record.
    quick_broadcasts.ROOM_TICK_SECONDS = quick_broadcasts.SYNC_INTERVAL_SECONDS = NEVER
    await ghost_joins(lobby.id, "carol")

    alice_ws = await connect(alice, "lobby")
    frame = await first_presence(alice_ws)
    assert set(online(frame)) == {"alice", "carol"}
    await ghost_dies(lobby.id, "carol")
    # carol's record expires a second after her last heartbeat; one of alice's purges it.
    frame = await presence_until(alice_ws, lambda f: "carol" not in online(f), within=1 + DEADLINE)
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
    left = await presence_leave(room_id=lobby.id, conn_id=alice_conns[0])
    assert left.changed
    assert [o.username for o in (await store.state(lobby.id)).online] == ["bob"]
    # ...and her next heartbeat brings her back; the room ends up seeing her online.
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE
    latest: Frame | None = None
    while not (
        latest is not None
        and set(online(latest)) == {"alice", "bob"}
        and alice_conns[0] in await client.hgetall(users_key)
    ):
        if loop.time() > deadline:
            pytest.fail(f"alice was not restored within {DEADLINE}s; bob last saw {latest}")
        for frame in presence_frames(await frames_during(bob_ws, 0.05)):
            latest = frame


async def test_the_room_sweep_announces_a_ghost_between_heartbeats(
    connect, lobby, alice, quick_broadcasts
):
    """Heartbeats are far apart (the default is 10 s); the per-process room tick still notices a
    dead process's expired record and the room hears of it."""
    quick_broadcasts.PRESENCE_HEARTBEAT_SECONDS = 60  # no heartbeat of alice's during the test
    quick_broadcasts.ROOM_TICK_SECONDS = 0.3
    await ghost_joins(lobby.id, "carol")

    alice_ws = await connect(alice, "lobby")
    assert set(online(await first_presence(alice_ws))) == {"alice", "carol"}
    await ghost_dies(lobby.id, "carol")  # alice's own record (30 s) outlives the test
    frame = await presence_until(alice_ws, lambda f: "carol" not in online(f), within=1 + DEADLINE)
    assert frame["online"] == [{"username": "alice", "typing": False}]


async def test_one_tick_per_room_per_process_however_many_sockets(connect, lobby, alice, bob):
    from rooms.consumers import room_ticker

    sockets = [await connect(alice, "lobby"), await connect(bob, "lobby")]
    assert room_ticker.rooms().count(lobby.id) == 1
    assert len(room_ticker.members(lobby.id)) == 2
    for socket in sockets:
        await hang_up(socket)
    assert lobby.id not in room_ticker.rooms()
