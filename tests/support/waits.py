"""Waiting in asyncio tests for a condition to hold, bounded.

Owns :func:`eventually`, the one async poll the tests use: it takes a plain or an async
check and fails the test with an AssertionError naming what it waited for. (Waits on
subprocesses, with their log tails, are :func:`pysyncer.procs.eventually`.)
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable

__all__ = ["eventually"]

POLL_INTERVAL = 0.02  # seconds between two checks


async def eventually(
    check: Callable[[], bool | Awaitable[bool]],
    timeout: float = 10.0,
    what: str = "the condition",
) -> None:
    """Run ``check`` (awaiting what it returns, if awaitable) until it is true; an
    AssertionError naming ``what`` when it is still false after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        outcome = check()
        if inspect.isawaitable(outcome):
            outcome = await outcome
        if outcome:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        await asyncio.sleep(POLL_INTERVAL)
