"""Calls made in one turn of the event loop, answered by one call for them all.

A busy process hears many frames in one turn of its loop (every socket with data ready is read
before the loop looks again), and each asked Redis on its own: one round trip, one pooled
connection and one pass through redis-py's command path per frame. `TurnBatch` lets each caller
await its own answer while the turn's calls go as one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


class TurnBatch(Generic[Item, Result]):
    """``await batch(item)`` answers with ``run(items)[i]``, where ``items`` are the ones asked
    in the same turn of the loop, in the order asked (at most ``max_items`` a call; more make
    more calls). ``run`` starts once the turn's callbacks have run, so a lone call waits for no
    other. An exception of ``run`` is raised to each of its callers; a caller that gave up
    (cancelled) is skipped."""

    def __init__(
        self, run: Callable[[list[Item]], Awaitable[Sequence[Result]]], *, max_items: int = 256
    ) -> None:
        self._run = run
        self._max_items = max_items
        # Per event loop (by id, with the loop itself: a loop that closed before its turn ended
        # leaves its calls behind, and a new loop may get its id).
        self._pending: dict[
            int, tuple[asyncio.AbstractEventLoop, list[tuple[Item, asyncio.Future[Result]]]]
        ] = {}
        self._running: set[asyncio.Task[None]] = set()  # strong references (asyncio keeps weak)

    async def __call__(self, item: Item) -> Result:
        loop = asyncio.get_running_loop()
        turn = self._pending.get(id(loop))
        if turn is None or turn[0] is not loop:
            turn = self._pending[id(loop)] = (loop, [])
            loop.call_soon(self._send, loop)
        waiting = turn[1]
        answer: asyncio.Future[Result] = loop.create_future()
        waiting.append((item, answer))
        return await answer

    def _send(self, loop: asyncio.AbstractEventLoop) -> None:
        turn = self._pending.pop(id(loop), None)
        waiting = turn[1] if turn is not None and turn[0] is loop else []
        for start in range(0, len(waiting), self._max_items):
            task = loop.create_task(self._answer(waiting[start : start + self._max_items]))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _answer(self, calls: list[tuple[Item, asyncio.Future[Result]]]) -> None:
        try:
            results = await self._run([item for item, _ in calls])
        except Exception as exc:
            for _, answer in calls:
                if not answer.done():
                    answer.set_exception(exc)
            return
        except BaseException:  # cancelled (the loop is closing): so are the callers
            for _, answer in calls:
                answer.cancel()
            raise
        for (_, answer), result in zip(calls, results, strict=True):
            if not answer.done():
                answer.set_result(result)
