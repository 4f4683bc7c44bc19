"""`TurnBatch`: the calls of one turn of the event loop answered by one call for them all."""

from __future__ import annotations

import asyncio

import pytest

from realtime.batch import TurnBatch


async def test_each_caller_gets_its_own_answer_from_one_call_a_turn():
    runs: list[list[int]] = []

    async def double(items: list[int]) -> list[int]:
        runs.append(items)
        await asyncio.sleep(0)
        return [2 * item for item in items]

    batch: TurnBatch[int, int] = TurnBatch(double, max_items=4)
    assert await asyncio.gather(*(batch(n) for n in range(10))) == [2 * n for n in range(10)]
    assert runs == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]  # at most max_items a call, in order
    assert await batch(21) == 42
    assert runs[-1] == [21]


async def test_a_failed_call_fails_each_of_its_callers_and_the_next_turn_runs():
    fail = True

    async def flaky(items: list[str]) -> list[str]:
        if fail:
            raise ConnectionError("away")
        return items

    batch: TurnBatch[str, str] = TurnBatch(flaky)
    outcomes = await asyncio.gather(batch("a"), batch("b"), return_exceptions=True)
    assert [type(o) for o in outcomes] == [ConnectionError, ConnectionError]
    fail = False
    assert await batch("c") == "c"


async def test_a_caller_that_gives_up_does_not_spoil_the_others():
    release = asyncio.Event()

    async def slow(items: list[int]) -> list[int]:
        await release.wait()
        return items

    batch: TurnBatch[int, int] = TurnBatch(slow)
    impatient = asyncio.ensure_future(batch(1))
    patient = asyncio.ensure_future(batch(2))
    await asyncio.sleep(0.01)
    impatient.cancel()
    release.set()
    assert await patient == 2
    with pytest.raises(asyncio.CancelledError):
        await impatient


async def test_calls_a_closed_loop_left_behind_do_not_hold_up_a_new_loop_with_its_id():
    async def echo(items: list[int]) -> list[int]:
        return items

    batch: TurnBatch[int, int] = TurnBatch(echo)
    gone = asyncio.new_event_loop()
    gone.close()
    loop = asyncio.get_running_loop()
    batch._pending[id(loop)] = (gone, [])  # what a loop that closed mid-turn leaves
    assert await asyncio.wait_for(batch(7), 2) == 7
