"""A broadcast's frame made once and written to each socket's transport (`realtime.wire`),
through a real uvicorn serving the app in this process (its websockets-sansio protocol, as
`make run` serves it)."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import pytest
import uvicorn
from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from django.conf import settings
from django.db import connections
from websockets.asyncio.client import connect
from websockets.protocol import OPEN, Protocol, Side
from websockets.typing import Origin, Subprotocol

from realtime import wire
from rooms.consumers import room_ticker
from tests.conftest import ORIGIN, session_cookie
from tests.live import free_port


@pytest.mark.parametrize("size", [0, 1, 125, 126, 65535, 65536, 200_000])
def test_a_frame_is_the_bytes_websockets_sends_for_the_text(size):
    text = ("é€" * size)[:size]
    server = Protocol(Side.SERVER, state=OPEN)
    server.send_text(text.encode())
    assert wire.framed(text) == b"".join(server.data_to_send())


def test_a_broadcast_s_text_is_framed_once():
    text = json.dumps({"type": "entry", "n": str(uuid.uuid4())})
    assert wire.framed(text) is wire.framed(text)
    others = [wire.framed(f"{text}{n}") for n in range(20)]  # a few are kept, not all
    assert len(wire._framed) <= wire._FRAMED_KEPT and len(others) == 20


def test_another_server_s_send_has_no_wire():
    async def send(message: dict[str, Any]) -> None: ...

    assert wire.Wire.of(send) is None


needs_db = pytest.mark.django_db(transaction=True)


@pytest.fixture
async def served(settings: Any):
    """The app under uvicorn in this process, on a port of its own."""
    from project.asgi import application

    settings.EXPRESSION_BUCKET_CAPACITY = 1000
    config = uvicorn.Config(
        application,
        host="127.0.0.1",
        port=free_port(),
        ws="websockets-sansio",
        ws_per_message_deflate=False,
        lifespan="off",
        log_level="warning",
    )
    server = uvicorn.Server(config)
    serving = asyncio.ensure_future(server.serve())
    for _ in range(500):  # uvicorn's own flag: it has no event to wait on
        if server.started:
            break
        await asyncio.sleep(0.01)
    yield config.port
    server.should_exit = True
    await serving
    await database_sync_to_async(connections.close_all)()


async def _join(port: int, user: Any):
    cookie = await sync_to_async(session_cookie)(user)
    ws = await connect(
        f"ws://127.0.0.1:{port}/ws/rooms/lobby/",
        origin=Origin(ORIGIN.decode()),
        additional_headers={"Cookie": f"{settings.SESSION_COOKIE_NAME}={cookie}"},
        subprotocols=[Subprotocol("calcrooms.v1.json")],
        open_timeout=5,
    )
    while json.loads(await ws.recv())["type"] != "sync":
        pass
    return ws


async def _entries(ws, n: int) -> list[dict[str, Any]]:
    found = []
    async with asyncio.timeout(10):
        while len(found) < n:
            frame = json.loads(await ws.recv())
            if frame["type"] == "entry":
                found.append(frame["entry"])
    return found


def _submit(expression: str) -> str:
    return json.dumps(
        {"type": "expression", "expression": expression, "client_id": str(uuid.uuid4())}
    )


def _socket_of(room_id: int, username: str):
    [socket] = [s for s in room_ticker.members(room_id) if s.username == username]
    return socket


@needs_db
async def test_broadcasts_are_written_to_each_transport_and_arrive_whole(
    served, lobby, alice, bob, monkeypatch
):
    written = []
    real_write = wire.Wire.write

    def counted(self, frame):
        done = real_write(self, frame)
        written.append(done)
        return done

    monkeypatch.setattr(wire.Wire, "write", counted)
    alice_ws, bob_ws = await _join(served, alice), await _join(served, bob)
    long = "+".join(["1"] * 200)  # 399 characters: most of the longest allowed
    sent = [f"{n}*3" for n in range(20)] + [long]
    for expression in sent:
        await alice_ws.send(_submit(expression))
    heard = await _entries(bob_ws, len(sent))
    assert [(e["seq"], e["expression"]) for e in heard] == list(
        zip(range(1, len(sent) + 1), sent, strict=True)
    )
    assert heard[-1]["result"] == "200"
    assert written.count(True) >= len(sent)  # bob's and alice's copies went straight out
    await alice_ws.close()
    await bob_ws.close()


@needs_db
async def test_a_paused_transport_gets_its_frames_through_the_server_in_order(
    served, lobby, alice, bob
):
    alice_ws, bob_ws = await _join(served, alice), await _join(served, bob)
    protocol = _socket_of(lobby.id, "bob")._wire._protocol
    protocol.pause_writing()  # bob's client reads slowly: its transport's buffer is full
    for n in range(3):
        await alice_ws.send(_submit(f"{n}+100"))
    await _entries(alice_ws, 3)  # stored and broadcast; alice's own socket was not paused
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.3):
            await bob_ws.recv()
    protocol.resume_writing()
    assert [e["result"] for e in await _entries(bob_ws, 3)] == ["100", "101", "102"]
    await alice_ws.close()
    await bob_ws.close()
