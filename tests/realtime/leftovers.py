"""What a room's connections leave behind in Redis and in the process, read from outside."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import redis.asyncio as aioredis
from django.conf import settings

from presence.store import get_presence_store
from realtime.events import room_group, user_group
from realtime.hub import RedisHub, get_hub
from rooms.consumers import room_ticker


def redis_client() -> aioredis.Redis:
    return aioredis.Redis.from_url(settings.REDIS_URL, decode_responses=True)


async def presence_conns(room_id: int) -> list[str]:
    """The connection ids that have a presence record in the room (raw, expired or not)."""
    store = get_presence_store()
    client = redis_client()
    try:
        return sorted(await client.hkeys(store.room_keys(room_id)[1]))
    finally:
        await client.aclose()


async def group_members(group: str) -> list[str]:
    """What listens to a topic: this process's sockets (by connection id), and a mark per Redis
    subscription to it (this process's, or a dead one's that Redis still holds)."""
    hub = get_hub()
    local = sorted(sink.channel_name for sink in hub._sinks.get(group, ()))
    if not isinstance(hub, RedisHub):
        return local
    client = redis_client()
    try:
        [(_, subscribers)] = await client.pubsub_numsub(hub.channel(group))
    finally:
        await client.aclose()
    return local + ["(redis subscription)"] * int(subscribers)


def consumer_tasks() -> list[str]:
    """Names of the tasks room sockets started that are still alive on this loop."""
    return sorted(
        task.get_name()
        for task in asyncio.all_tasks()
        if task.get_name().startswith("RoomConsumer:") and not task.done()
    )


@dataclass
class Leftovers:
    presence: list[str]
    room_group: list[str]
    user_groups: dict[int, list[str]]
    tasks: list[str]
    ticking: bool

    @property
    def none(self) -> bool:
        return (
            not self.presence
            and not self.room_group
            and not any(self.user_groups.values())
            and not self.tasks
            and not self.ticking
        )


async def leftovers(room_id: int, user_ids: list[int]) -> Leftovers:
    return Leftovers(
        presence=await presence_conns(room_id),
        room_group=await group_members(room_group(room_id)),
        user_groups={uid: await group_members(user_group(uid)) for uid in user_ids},
        tasks=consumer_tasks(),
        ticking=room_id in room_ticker.rooms(),
    )


async def nothing_left(room_id: int, user_ids: list[int], within: float = 10) -> Leftovers:
    """Wait (up to a generous deadline) until the room's connections left nothing behind."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        found = await leftovers(room_id, user_ids)
        if found.none or loop.time() > deadline:
            return found
        await asyncio.sleep(0.05)
