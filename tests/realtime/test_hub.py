"""The hub's contract, for both hubs: a sink hears what is published to its topic from the moment
`subscribe` returns, and nothing after it unsubscribed; the Redis hub heals a subscription that
Redis lost."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from django.conf import settings

from realtime import hub as hub_module
from realtime.hub import LocalHub, RedisHub


class Sink:
    def __init__(self) -> None:
        self.events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.resumes = 0

    def deliver(self, event: dict[str, Any]) -> None:
        self.events.put_nowait(event)

    def resumed(self) -> None:
        self.resumes += 1

    async def next(self, within: float = 5) -> dict[str, Any]:
        return await asyncio.wait_for(self.events.get(), within)

    async def nothing(self, within: float = 0.3) -> bool:
        try:
            await asyncio.wait_for(self.events.get(), within)
        except TimeoutError:
            return True
        return False


def make(kind: str):
    if kind == "redis":
        return RedisHub(settings.REDIS_URL, prefix=f"{settings.REDIS_KEY_PREFIX}-hubtest")
    return LocalHub()


needs_redis = pytest.mark.skipif(not settings.REDIS_URL, reason="needs Redis")


@pytest.fixture(params=["local", pytest.param("redis", marks=needs_redis)])
async def hub(request):
    made = make(request.param)
    yield made
    await made.aclose()


async def test_subscribers_hear_from_the_moment_subscribe_returns(hub) -> None:
    first, second, elsewhere = Sink(), Sink(), Sink()
    # Two sockets of one room subscribing at once: neither returns before the topic is live.
    await asyncio.gather(hub.subscribe("room.1", first), hub.subscribe("room.1", second))
    await hub.subscribe("room.2", elsewhere)
    await hub.publish("room.1", {"type": "entry.created", "n": 1})
    assert (await first.next())["n"] == 1
    assert (await second.next())["n"] == 1
    assert await elsewhere.nothing()  # never a wrong room

    await hub.unsubscribe("room.1", first)
    await hub.publish("room.1", {"type": "entry.created", "n": 2})
    assert (await second.next())["n"] == 2
    assert await first.nothing()


async def test_published_from_another_thread_in_order(hub) -> None:
    sink = Sink()
    await hub.subscribe("room.1", sink)

    def from_a_thread() -> None:
        for n in range(50):
            assert hub.publish_soon([("room.1", {"type": "entry.created", "n": n})])

    await asyncio.to_thread(from_a_thread)
    assert [(await sink.next())["n"] for _ in range(50)] == list(range(50))


@needs_redis
async def test_a_subscription_redis_lost_is_taken_again(monkeypatch) -> None:
    monkeypatch.setattr(hub_module, "RECONCILE_SECONDS", 0.2)
    monkeypatch.setattr(hub_module, "READ_TIMEOUT_SECONDS", 0.1)
    hub = make("redis")
    sink = Sink()
    try:
        await hub.subscribe("room.7", sink)
        # The subscription goes away under the hub (as when an UNSUBSCRIBE won a race).
        await hub._pubsub.unsubscribe(hub.channel("room.7"))
        await asyncio.sleep(1)  # a few reconcile rounds
        await hub.publish("room.7", {"type": "entry.created", "n": 1})
        assert (await sink.next())["n"] == 1
    finally:
        await hub.aclose()
