"""The WebSocket door of the real ASGI stack, and the channel layer under it."""

from __future__ import annotations

import asyncio

import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from channels_redis.core import RedisChannelLayer
from django.conf import settings

from tests.conftest import ORIGIN, session_cookie

pytestmark = pytest.mark.django_db(transaction=True)


async def test_anonymous_handshake_is_refused(connect, lobby) -> None:
    socket = await connect(None, "lobby")
    assert not socket.connected


async def _handshake(*headers: tuple[bytes, bytes]) -> bool:
    from project.asgi import application

    communicator = WebsocketCommunicator(
        application,
        "/ws/rooms/lobby/",
        headers=[(b"origin", ORIGIN), *headers],
        subprotocols=["calcrooms.v1.json"],
    )
    connected, _ = await communicator.connect(timeout=5)
    await communicator.disconnect()
    return connected


async def test_the_session_cookie_signs_a_socket_in_among_other_cookies(lobby, alice) -> None:
    key = await sync_to_async(session_cookie)(alice)
    name = settings.SESSION_COOKIE_NAME
    assert await _handshake((b"cookie", f"theme=dark; {name}={key}; lang=en".encode()))
    # Only the first Cookie header counts (as Channels' cookie middleware reads it).
    assert not await _handshake((b"cookie", b"theme=dark"), (b"cookie", f"{name}={key}".encode()))
    assert not await _handshake((b"cookie", f"{name}=not-a-session".encode()))


async def test_a_session_from_before_a_password_change_cannot_open_a_socket(lobby, alice) -> None:
    key = await sync_to_async(session_cookie)(alice)
    cookie = (b"cookie", f"{settings.SESSION_COOKIE_NAME}={key}".encode())
    assert await _handshake(cookie)
    alice.set_password("a brand new password")
    await sync_to_async(alice.save)()
    assert not await _handshake(cookie)


async def test_foreign_origin_handshake_is_refused(connect, lobby, alice) -> None:
    socket = await connect(alice, "lobby", origin=b"http://evil.example.com")
    assert not socket.connected


async def test_member_with_allowed_origin_is_accepted(connect, lobby, alice) -> None:
    socket = await connect(alice, "lobby")
    assert socket.connected
    assert socket.subprotocol == "calcrooms.v1.json"


@pytest.mark.skipif(not settings.REDIS_URL, reason="needs Redis")
async def test_idle_layer_socket_survives_ten_seconds_then_receives() -> None:
    """redis-py 8's default 5 s socket timeout would kill this idle receive."""
    layer = get_channel_layer()
    assert isinstance(layer, RedisChannelLayer)  # channels-redis core, on bounded pools
    channel = await layer.new_channel()
    await layer.group_add("idle-check", channel)
    receiving = asyncio.ensure_future(layer.receive(channel))
    await asyncio.sleep(10.5)
    assert not receiving.done(), receiving.exception() if receiving.done() else None
    await layer.group_send("idle-check", {"type": "still.here", "n": 1})
    message = await asyncio.wait_for(receiving, 5)
    assert message == {"type": "still.here", "n": 1}
    await layer.group_discard("idle-check", channel)


@pytest.mark.skipif(not settings.REDIS_URL, reason="needs Redis")
async def test_idle_live_subscription_survives_ten_seconds_then_delivers() -> None:
    """The hub's one subscriber connection waits without a socket timeout: an idle room (no
    event for a long while) keeps its subscription, and the next event arrives."""
    from realtime import outage
    from realtime.hub import get_hub

    class Sink:
        def __init__(self) -> None:
            self.events: asyncio.Queue[dict] = asyncio.Queue()

        def deliver(self, event: dict) -> None:
            self.events.put_nowait(event)

        def resumed(self) -> None:
            raise AssertionError("the subscription was lost while idle")

    hub = get_hub()
    sink = Sink()
    await hub.subscribe("idle-check", sink)
    await asyncio.sleep(10.5)
    assert not outage.REDIS.down
    await hub.publish("idle-check", {"type": "still.here", "n": 1})
    assert await asyncio.wait_for(sink.events.get(), 5) == {"type": "still.here", "n": 1}
    await hub.unsubscribe("idle-check", sink)
