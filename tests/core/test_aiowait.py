"""wait_event: a timed wait on an event that never loses its caller's cancellation."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from pysyncer.aiowait import wait_event

Wait = Callable[[asyncio.Event, float], Awaitable[object]]


async def _stop_meeting_a_wake(wait: Wait) -> bool:
    """A retry loop sleeping in ``wait`` is woken and stopped in the same loop turn;
    whether the stop took (the task ended cancelled within 2 s)."""
    event = asyncio.Event()

    async def retry_loop() -> None:
        while True:
            event.clear()
            await wait(event, 30.0)

    task = asyncio.create_task(retry_loop())
    await asyncio.sleep(0.01)  # it sleeps in the wait
    event.set()
    task.cancel()
    done, _ = await asyncio.wait((task,), timeout=2.0)
    if not done:
        task.cancel()
        await asyncio.wait((task,), timeout=2.0)
    return task in done and task.cancelled()


async def test_a_stop_that_meets_a_wake_stops_the_loop() -> None:
    assert await _stop_meeting_a_wake(wait_event)


async def test_the_race_is_real_for_wait_for_on_this_python() -> None:
    import sys

    if sys.version_info >= (3, 12):
        pytest.skip("wait_for keeps the cancellation from Python 3.12 on")

    async def with_wait_for(event: asyncio.Event, seconds: float) -> object:
        try:
            return await asyncio.wait_for(event.wait(), seconds)
        except TimeoutError:
            return False

    assert not await _stop_meeting_a_wake(with_wait_for)


async def test_true_when_set_false_after_the_time() -> None:
    event = asyncio.Event()
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await wait_event(event, 0.05) is False
    assert loop.time() - started >= 0.04
    loop.call_later(0.01, event.set)
    assert await wait_event(event, 5.0) is True
    assert await wait_event(event, 0.0) is True  # already set: at once


async def test_leaves_no_task_behind() -> None:
    event = asyncio.Event()
    before = len(asyncio.all_tasks())
    await wait_event(event, 0.01)
    await asyncio.sleep(0)
    assert len(asyncio.all_tasks()) == before
