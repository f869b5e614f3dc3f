"""Timed waits on an :class:`asyncio.Event` that never swallow a cancellation.

Owns one helper, :func:`wait_event`. ``asyncio.wait_for(event.wait(), seconds)`` loses
a cancellation on Python 3.11 when it arrives in the loop turn the event is set (the
inner wait finished, so ``wait_for`` returns its result and the ``cancel()`` is gone): a
loop that sleeps that way between retries then runs on after its task was stopped, and
whoever awaits the stop hangs. ``asyncio.timeout`` has no such hole.

Standard library only: it must not import any other part of pysyncer.

Imports: -.
"""

from __future__ import annotations

import asyncio

__all__ = ["wait_event"]


async def wait_event(event: asyncio.Event, seconds: float) -> bool:
    """Wait until ``event`` is set or ``seconds`` pass; True when it was set.

    A cancellation of the caller always propagates, even one that meets the event being
    set in the same loop turn.
    """
    if event.is_set():
        return True
    try:
        async with asyncio.timeout(max(0.0, seconds)):
            await event.wait()
    except TimeoutError:
        return False
    return True
