"""The WebSocket door of the real ASGI stack, and the channel layer under it."""

from __future__ import annotations

import asyncio

import pytest
from channels.layers import get_channel_layer
from channels_redis.core import RedisChannelLayer
from django.conf import settings

pytestmark = pytest.mark.django_db(transaction=True)


async def test_anonymous_handshake_is_refused(connect, lobby) -> None:
    socket = await connect(None, "lobby")
    assert not socket.connected


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
