"""The retry delays of the registry adapters' change feeds, listings and repairs.

Owns the one backoff rule they share: wait :data:`FIRST_DELAY` after a failure, double
the wait after each further failure up to the adapter's ``retry-max`` (by default
:data:`RETRY_MAX`), and start again from :data:`FIRST_DELAY` once a call succeeds. Knows
nothing of any registry, and does not sleep itself: each adapter waits in its own way (a
sleep its close cuts short).
"""

from __future__ import annotations

from typing import Final

__all__ = ["FIRST_DELAY", "RETRY_MAX", "Backoff"]

FIRST_DELAY: Final = 0.2
"""Seconds before the first retry."""
RETRY_MAX: Final = 5.0
"""Default of the adapters' ``retry-max`` setting: the longest wait between retries."""


class Backoff:
    """The wait before the next retry: :data:`FIRST_DELAY`, doubled per failure up to
    ``cap``."""

    __slots__ = ("cap", "delay")

    def __init__(self, cap: float) -> None:
        self.cap = cap
        self.delay = FIRST_DELAY  # the wait after the next failure

    def failed(self) -> float:
        """The wait after this failure; the next one is twice as long (at most ``cap``)."""
        delay = self.delay
        self.delay = min(delay * 2, self.cap)
        return delay

    def succeeded(self) -> None:
        """A call succeeded: the next failure waits :data:`FIRST_DELAY` again."""
        self.delay = FIRST_DELAY

    @property
    def backing_off(self) -> bool:
        """True after a failure that no success has followed yet."""
        return self.delay > FIRST_DELAY
