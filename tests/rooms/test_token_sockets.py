"""The JSON socket with a personal access token, through `project.asgi.application`.

A token socket carries `Authorization: Bearer <token>` and no Origin (a script has none to give);
it must speak JSON; a read token's expressions are refused; revoking the token closes its sockets
with 4401 within a second (the `token.revoked` event), and within a tick when that event is lost.
Cookie sockets keep their Origin check.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.db import connections

from accounts.tokens import token_create, token_revoke
from rooms import selectors
from rooms.models import Entry
from rooms.selectors import Lost, Seat
from tests.conftest import Socket

pytestmark = pytest.mark.django_db(transaction=True)

TICK_DEADLINE = 5  # the product's bound is one tick (0.2 s here); generous for a busy machine
REVOKE_DEADLINE = 1.0  # DESIGN.md: revoking closes the token's sockets within a second
CLIENT_ID = "3f1c2b9e-8d4a-4c6e-9b7f-2a5d8e1c0f43"


@pytest.fixture
async def token_connect() -> AsyncIterator[Callable[..., Any]]:
    """`await token_connect(raw, slug)`: a socket with only an Authorization header."""
    from project.asgi import application

    sockets: list[Socket] = []

    async def _connect(
        raw: str,
        slug: str,
        *,
        subprotocols: tuple[str, ...] = ("calcrooms.v1.json",),
        extra: list[tuple[bytes, bytes]] | None = None,
    ) -> Socket:
        headers = [(b"authorization", f"Bearer {raw}".encode()), *(extra or [])]
        communicator = WebsocketCommunicator(
            application, f"/ws/rooms/{slug}/", headers=headers, subprotocols=list(subprotocols)
        )
        socket = Socket(communicator)
        connected, detail = await communicator.connect(timeout=5)
        socket.connected = connected
        if connected:
            socket.subprotocol = detail
        else:
            socket.close_code = detail
        sockets.append(socket)
        return socket

    yield _connect
    for socket in sockets:
        await socket.close()
    await database_sync_to_async(connections.close_all)()


async def _token(user, scope: str, name: str = "bot") -> tuple[int, str]:
    token, raw = await database_sync_to_async(token_create)(owner=user, name=name, scope=scope)
    return token.pk, raw


async def test_a_token_socket_without_origin_is_accepted_and_hears_the_room(
    token_connect, connect, lobby, alice, bob
):
    _id, raw = await _token(bob, "write")
    bot = await token_connect(raw, "lobby")
    assert bot.connected and bot.subprotocol == "calcrooms.v1.json"
    assert (await bot.receive_type("presence"))["online"] == [{"username": "bob", "typing": False}]
    await bot.receive_type("sync")
    alice_ws = await connect(alice, "lobby")
    await alice_ws.receive_type("sync")
    await alice_ws.send({"type": "expression", "expression": "6*7"})
    entry = (await bot.receive_type("entry"))["entry"]
    assert (entry["author"], entry["result"]) == ("alice", "42")
    # A write token submits as its owner, and the room sees it.
    await bot.send({"type": "expression", "expression": "ans+1", "client_id": str(uuid.uuid4())})
    seen = [(await alice_ws.receive_type("entry"))["entry"] for _ in range(2)]
    assert [(e["seq"], e["author"], e["result"]) for e in seen] == [
        (1, "alice", "42"),
        (2, "bob", "43"),
    ]


async def test_revoking_the_token_closes_its_socket_with_4401_within_a_second(
    token_connect, connect, lobby, alice, bob, monkeypatch
):
    # The room tick is kept from noticing, so only the revocation event can close the socket.
    monkeypatch.setattr(selectors, "seats_recheck", lambda **kwargs: {})
    token_id, raw = await _token(bob, "read")
    _other_id, other_raw = await _token(bob, "read", name="other bot")
    bot = await token_connect(raw, "lobby")
    other = await token_connect(other_raw, "lobby")
    alice_ws = await connect(alice, "lobby")
    for socket in (bot, other, alice_ws):
        await socket.receive_type("sync")
    loop = asyncio.get_running_loop()
    started = loop.time()
    await database_sync_to_async(token_revoke)(owner=bob, token_id=token_id)
    assert await bot.receive_close(timeout=REVOKE_DEADLINE) == 4401
    assert loop.time() - started < REVOKE_DEADLINE
    # Only that token's sockets: bob's other token still hears the room; the closed one nothing.
    await alice_ws.send({"type": "expression", "expression": "2+2"})
    assert (await other.receive_type("entry"))["entry"]["result"] == "4"
    assert await bot.communicator.receive_nothing(timeout=0.3)


async def test_a_dropped_revocation_event_still_closes_within_one_tick(
    token_connect, connect, lobby, alice, bob, sent_events, settings
):
    settings.ROOM_TICK_SECONDS = 0.2
    token_id, raw = await _token(bob, "write")
    bot = await token_connect(raw, "lobby")
    alice_ws = await connect(alice, "lobby")
    await bot.receive_type("sync")
    await alice_ws.receive_type("sync")
    await database_sync_to_async(token_revoke)(owner=bob, token_id=token_id)
    assert [event["type"] for _, event in sent_events] == ["token.revoked"]  # never delivered
    assert await bot.receive_close(timeout=TICK_DEADLINE) == 4401
    assert await bot.communicator.receive_nothing(timeout=0.5)


async def test_a_read_tokens_expression_is_refused_and_the_socket_stays(
    token_connect, connect, lobby, alice, bob
):
    _id, raw = await _token(bob, "read")
    bot = await token_connect(raw, "lobby")
    await bot.receive_type("sync")
    await bot.send({"type": "expression", "expression": "1+1", "client_id": CLIENT_ID})
    error = await bot.receive_type("error")
    assert (error["code"], error["client_id"]) == ("forbidden", CLIENT_ID)
    assert "read-only" in error["message"]
    assert not await Entry.objects.aexists()
    # Still open, still reading.
    alice_ws = await connect(alice, "lobby")
    await alice_ws.send({"type": "expression", "expression": "3*3"})
    assert (await bot.receive_type("entry"))["entry"]["result"] == "9"


async def test_a_token_socket_must_offer_the_json_subprotocol(token_connect, lobby, bob):
    _id, raw = await _token(bob, "write")
    html = await token_connect(raw, "lobby", subprotocols=())
    assert not html.connected


@pytest.mark.parametrize("raw", ["cr_nonsense", "", "not-even-ours"])
async def test_a_bad_token_refuses_the_handshake(token_connect, lobby, bob, raw):
    socket = await token_connect(raw, "lobby")
    assert not socket.connected


async def test_a_revoked_token_refuses_the_handshake(token_connect, lobby, bob):
    token_id, raw = await _token(bob, "write")
    await database_sync_to_async(token_revoke)(owner=bob, token_id=token_id)
    assert not (await token_connect(raw, "lobby")).connected


async def test_a_token_has_its_owners_access_and_no_more(token_connect, lobby, vault, carol):
    _id, raw = await _token(carol, "write")
    assert not (await token_connect(raw, "vault")).connected  # private, not a member
    assert not (await token_connect(raw, "lobby")).connected  # public, not joined


async def test_a_token_socket_with_a_foreign_origin_is_still_the_tokens_owner(
    token_connect, lobby, bob
):
    # The Origin check guards cookies; a token is not a cookie a page could ride on.
    _id, raw = await _token(bob, "read")
    socket = await token_connect(raw, "lobby", extra=[(b"origin", b"http://evil.example")])
    assert socket.connected


async def test_a_cookie_socket_without_a_valid_origin_is_still_refused(connect, lobby, bob):
    assert not (await connect(bob, "lobby", origin=b"")).connected
    assert not (await connect(bob, "lobby", origin=b"http://evil.example")).connected
    assert (await connect(bob, "lobby")).connected  # the same cookie with the site's origin


def test_seats_recheck_costs_one_more_query_only_when_a_seat_holds_a_token(
    lobby, alice, bob, carol, django_assert_num_queries
):
    live = token_create(owner=bob, name="live", scope="read")[0]
    gone = token_create(owner=bob, name="gone", scope="write")[0]
    carols = token_create(owner=carol, name="carol", scope="write")[0]
    token_revoke(owner=bob, token_id=gone.pk)
    seats = [Seat(bob.pk, None, live.pk), Seat(bob.pk, None, gone.pk)]
    seats += [Seat(carol.pk, None, carols.pk), Seat(bob.pk, None, carols.pk)]
    with django_assert_num_queries(2):  # users + memberships, tokens (no sessions)
        lost = selectors.seats_recheck(room_id=lobby.pk, seats=seats)
    assert lost == {
        Seat(bob.pk, None, gone.pk): Lost.SESSION,
        Seat(carol.pk, None, carols.pk): Lost.ACCESS,  # a live token, but not a member
        Seat(bob.pk, None, carols.pk): Lost.SESSION,  # someone else's token
    }
    with django_assert_num_queries(1):  # no token seat: no token query
        assert selectors.seats_recheck(room_id=lobby.pk, seats=[Seat(alice.pk, None)]) == {}
