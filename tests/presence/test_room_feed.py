"""One presence feed per room per process: a burst of changes heard by every local socket becomes
one read of the room's state and one flush an interval, to each socket that is behind it."""

from __future__ import annotations

import asyncio

from presence.live import RoomPresenceFeed


class Member:
    def __init__(self) -> None:
        self.frames: list[tuple[int, list[str]]] = []


async def test_every_sockets_copy_of_a_burst_becomes_one_read_and_one_flush() -> None:
    members = [Member() for _ in range(1000)]
    flushes: list[int] = []
    state: dict = {"version": 0, "online": []}
    reads: list[int] = []

    def send(member: Member, version: int, online: list, key: tuple) -> bool:
        member.frames.append((version, [o["username"] for o in online]))
        return True

    async def fetch() -> tuple[int, list]:
        reads.append(1)
        return state["version"], state["online"]

    feed = RoomPresenceFeed(
        members=lambda: members,
        send=send,
        fetch=fetch,
        interval=lambda: 0.2,
        flushed=flushes.append,
    )
    for version in (1, 2, 3):  # three joins within the interval, each heard by every socket
        state["version"] = version
        state["online"] = [{"username": f"p{n}", "typing": False} for n in range(version)]
        for _ in members:
            feed.offer(version)
    feed.offer(2)  # an older version arriving late changes nothing
    await asyncio.sleep(0.05)
    assert (len(reads), flushes) == (1, [1000])  # one read of the state, one frame per socket
    assert all(m.frames == [(3, ["p0", "p1", "p2"])] for m in members)

    state["version"], state["online"] = 4, [{"username": "p0", "typing": True}]
    feed.offer(4)
    await asyncio.sleep(0.05)
    assert len(flushes) == 1  # at most one flush an interval
    await asyncio.sleep(0.25)
    assert len(flushes) == 2 and members[0].frames[-1] == (4, ["p0"])
    feed.offer(5)
    feed.close()  # the room's last socket left: no flush after it
    await asyncio.sleep(0.3)
    assert len(flushes) == 2
