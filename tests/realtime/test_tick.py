"""The room ticker: one task per event loop ticks every room with members there."""

from __future__ import annotations

import asyncio

from realtime.tick import RoomTick, RoomTicker


async def test_one_task_ticks_every_room_and_ends_with_the_last_member():
    seen: list[dict[int, RoomTick[str]]] = []
    ticked = asyncio.Event()

    async def work(rooms: dict[int, RoomTick[str]]) -> None:
        seen.append(rooms)
        ticked.set()

    ticker: RoomTicker[str] = RoomTicker("test", work, interval=lambda: 0.01)
    ticker.enter(1, "ann")
    ticker.enter(1, "ben")
    ticker.enter(2, "cy")
    assert (ticker.count(1), ticker.count(2)) == (2, 1)
    while len(seen) < 3:
        ticked.clear()
        await asyncio.wait_for(ticked.wait(), 2)
    ticker.enter(3, "dee")
    while 3 not in seen[-1]:
        ticked.clear()
        await asyncio.wait_for(ticked.wait(), 2)

    assert seen[0] == {1: RoomTick({"ann", "ben"}, 1), 2: RoomTick({"cy"}, 1)}
    assert seen[-1][3] == RoomTick({"dee"}, 1)  # a room counts its ticks from its first member
    assert seen[-1][1].tick == len(seen)
    tasks = [t for t in asyncio.all_tasks() if t.get_name() == "test-tick"]
    assert len(tasks) == 1

    for room, member in ((1, "ann"), (1, "ben"), (2, "cy")):
        ticker.exit(room, member)
    assert ticker.rooms() == [3] and ticker.members(3) == {"dee"}
    assert (ticker.count(1), ticker.count(3), ticker.count(99)) == (0, 1, 0)
    ticker.exit(3, "dee")
    await asyncio.sleep(0.05)
    assert tasks[0].done() and ticker.rooms() == []
    calls = len(seen)
    await asyncio.sleep(0.05)
    assert len(seen) == calls  # nothing ticks with nobody here


async def test_a_tick_that_fails_is_logged_and_the_next_one_runs(caplog):
    calls = 0
    again = asyncio.Event()

    async def work(rooms: dict[int, RoomTick[str]]) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ValueError("a bug in one tick")
        again.set()

    ticker: RoomTicker[str] = RoomTicker("test", work, interval=lambda: 0.01)
    ticker.enter(7, "ann")
    await asyncio.wait_for(again.wait(), 2)
    ticker.exit(7, "ann")
    assert "test: tick of rooms [7] failed" in caplog.text
