"""Coalescing of user events before they reach the application, as Serf's coalescer.

A burst of events with the ``coalesce`` flag and the same name (say, "new revision"
from a busy data center) is delivered once, as the newest of the burst (highest
Lamport time). Pending events flush ``coalesce_period`` after the first one arrived,
or earlier when no new event came for ``quiescent_period``. Events without the flag
pass straight through. Timers run on the node's clock, so the simulator drives it too.
Must not import the Serf layer or the node: it sees user events only.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable

from pysyncer.gossip.clock import Clock
from pysyncer.gossip.lamport import UserEvent

__all__ = ["UserEventCoalescer"]

_FLUSH = ("serf-coalesce-flush",)
_QUIET = ("serf-coalesce-quiet",)


class UserEventCoalescer:
    """Feeds ``deliver`` with user events, coalescing bursts by event name."""

    def __init__(
        self,
        clock: Clock[Hashable],
        deliver: Callable[[UserEvent], None],
        *,
        coalesce_period: float,
        quiescent_period: float,
    ) -> None:
        if coalesce_period <= 0 or quiescent_period <= 0:
            raise ValueError("coalesce and quiescent periods must be positive")
        self._clock = clock
        self._deliver = deliver
        self._coalesce_period = coalesce_period
        self._quiescent_period = quiescent_period
        self._pending: dict[str, UserEvent] = {}
        self.coalesced = 0  # events absorbed by a newer one of the same name

    def __call__(self, event: UserEvent) -> None:
        if not event.coalesce:
            self._deliver(event)
            return
        if not self._pending:
            self._clock.call_later(_FLUSH, self._coalesce_period, self._flush)
        previous = self._pending.get(event.name)
        if previous is not None:
            self.coalesced += 1
            if previous.ltime > event.ltime:
                event = previous
        self._pending[event.name] = event
        self._clock.call_later(_QUIET, self._quiescent_period, self._flush)

    def flush(self) -> None:
        """Deliver everything pending now (on shutdown)."""
        self._flush(_FLUSH)

    def _flush(self, _: Hashable) -> None:
        self._clock.cancel(_FLUSH)
        self._clock.cancel(_QUIET)
        pending, self._pending = self._pending, {}
        for event in sorted(pending.values(), key=lambda e: e.ltime):
            self._deliver(event)
