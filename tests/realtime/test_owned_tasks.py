"""A connection's tasks end when it ends, even a task that swallows its first cancel."""

from __future__ import annotations

import asyncio

from realtime.connection import OwnedTasks


async def test_aclose_ends_every_task_even_one_that_swallows_a_cancel():
    tasks = OwnedTasks("test")
    swallowed = asyncio.Event()

    async def stubborn() -> None:
        # What Python 3.11's wait_for does to a cancel that lands as its inner call finishes.
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            swallowed.set()
        await asyncio.sleep(3600)  # carries on as if never cancelled

    async def plain() -> None:
        await asyncio.sleep(3600)

    stubborn_task = tasks.spawn(stubborn(), name="stubborn")
    plain_task = tasks.spawn(plain(), name="plain")
    await asyncio.sleep(0)
    await asyncio.wait_for(tasks.aclose(), timeout=10)
    assert swallowed.is_set()
    assert stubborn_task.done() and plain_task.done()
    assert len(tasks) == 0


async def test_nothing_starts_once_closed():
    tasks = OwnedTasks("test")
    await tasks.aclose()
    assert tasks.spawn(asyncio.sleep(3600), name="late") is None
    assert len(tasks) == 0
