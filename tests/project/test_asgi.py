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
