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


async def test_sockets_joining_together_share_one_read_that_shows_each_of_them() -> None:
    """A join storm: every joining socket needs a state with its own join in it. Those that join
    while a read is under way share the next read, not one read each; a read that began before a
    socket's join is never given to that socket."""
    state: dict = {"version": 0, "online": []}
    reads: list[int] = []
    reading = asyncio.Event()
    release = asyncio.Event()

    async def fetch() -> tuple[int, list]:
        version, online = state["version"], list(state["online"])  # what the store holds now
        reads.append(version)
        reading.set()
        await release.wait()
        return version, online

    feed = RoomPresenceFeed(
        members=lambda: [], send=lambda *a: False, fetch=fetch, interval=lambda: 1.0
    )

    def join(n: int) -> int:
        state["version"] += 1
        state["online"] = [*state["online"], {"username": f"p{n}", "typing": False}]
        return state["version"]

    first = asyncio.create_task(feed.state_since(join(0)))
    await reading.wait()  # the first read is under way (it began with p0 only)...
    # ...and 499 more sockets join meanwhile: none of them may be given that read.
    rest = [asyncio.create_task(feed.state_since(join(n))) for n in range(1, 500)]
    await asyncio.sleep(0)
    release.set()
    shown = await asyncio.gather(first, *rest)

    assert reads == [1, 500]  # two reads for 500 joins: the one under way and the next
    assert shown[0].version == 1 and [o["username"] for o in shown[0].online] == ["p0"]
    assert all(s.version == 500 and len(s.online) == 500 for s in shown[1:])
    assert len({id(s.key) for s in shown[1:]}) == 1  # they share one state, not 499 copies
    # A socket joining once nothing moved is answered from the newest read, with no read at all.
    assert (await feed.state_since(500)).version == 500 and len(reads) == 2


async def test_a_read_that_fails_fails_every_join_waiting_for_it_and_the_next_read_again() -> None:
    calls: list[int] = []

    async def fetch() -> tuple[int, list]:
        calls.append(1)
        await asyncio.sleep(0.01)
        if len(calls) == 1:
            raise ConnectionError("Redis went away")
        return 3, [{"username": "p0", "typing": False}]

    feed = RoomPresenceFeed(
        members=lambda: [], send=lambda *a: False, fetch=fetch, interval=lambda: 1.0
    )
    waiting = await asyncio.gather(*(feed.state_since(1) for _ in range(3)), return_exceptions=True)
    assert [type(w) for w in waiting] == [ConnectionError] * 3 and len(calls) == 1
    assert (await feed.state_since(1)).version == 3  # the next socket's join reads again
