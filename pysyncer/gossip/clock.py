"""Clocks of the gossip layer: monotonic time plus keyed timers, real or simulated.

The failure detector never calls ``loop.call_at`` or ``time.monotonic`` itself; it is
given a :class:`Clock`, so that the same state machine runs on the event loop
(:class:`LoopClock`) and in the deterministic simulator (:class:`VirtualClock`).

A timer is named by a hashable key (``("suspect", "node-7")``, ``"probe"``...):
:meth:`Clock.call_at` with a key that already has a timer re-schedules it (and
replaces its callback), so a membership table never holds timer handles. Both clocks
keep every timer in one :class:`pysyncer._core.timers.TimerQueue` (compiled when
available): :class:`LoopClock` arms a single ``loop.call_at`` handle for the earliest
deadline, whatever the number of timers.

Firing order is the queue's: by deadline, then by scheduling order. Each callback is
called with its key. Keys due together are popped as a batch; a callback may cancel
or re-schedule a key of its batch that has not run yet, and that key then does not
run now. A callback may schedule new timers, including ones already due: they run
after the current batch.
Must not import other gossip modules.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable, Hashable
from typing import Generic, Protocol, TypeVar

from pysyncer._core import timers
from pysyncer.supervisor import tolerate

__all__ = ["Callback", "Clock", "LoopClock", "VirtualClock"]

_EARLY_WAKE_BACKOFF = 0.001  # uvloop's time() and timers have millisecond resolution

K = TypeVar("K", bound=Hashable)

Callback = Callable[[K], object]
"""A timer callback: called with the timer's key; its result is ignored."""


class Clock(Protocol[K]):
    """Monotonic time in seconds and keyed timers on it."""

    def now(self) -> float:
        """Current time (monotonic, seconds; the origin is the clock's own)."""
        ...

    def call_at(self, key: K, deadline: float, callback: Callable[[K], object]) -> None:
        """Call ``callback(key)`` once ``now() >= deadline``; replaces ``key``'s timer."""
        ...

    def call_later(self, key: K, delay: float, callback: Callable[[K], object]) -> None:
        """``call_at(key, now() + delay, callback)``."""
        ...

    def cancel(self, key: K) -> bool:
        """Drop ``key``'s timer; True if it had one that had not run."""
        ...

    def deadline_of(self, key: K) -> float | None:
        """Deadline of ``key``'s pending timer, or None."""
        ...


class _QueueClock(Generic[K]):
    """Timers of both clocks: a TimerQueue plus the callback of each key."""

    def __init__(self) -> None:
        self._queue: timers.TimerQueue[K] = timers.TimerQueue()
        self._callbacks: dict[K, Callback[K]] = {}

    def now(self) -> float:
        raise NotImplementedError

    def _deadline_added(self, deadline: float) -> None:
        """Hook: a timer now ends at ``deadline``."""

    def call_at(self, key: K, deadline: float, callback: Callback[K]) -> None:
        """Call ``callback(key)`` once ``now() >= deadline``; replaces ``key``'s timer."""
        self._queue.schedule(key, deadline)
        self._callbacks[key] = callback
        self._deadline_added(deadline)

    def call_later(self, key: K, delay: float, callback: Callback[K]) -> None:
        """``call_at(key, now() + delay, callback)``."""
        self.call_at(key, self.now() + delay, callback)

    def cancel(self, key: K) -> bool:
        """Drop ``key``'s timer; True if it had one that had not run."""
        self._queue.cancel(key)
        return self._callbacks.pop(key, None) is not None

    def deadline_of(self, key: K) -> float | None:
        """Deadline of ``key``'s pending timer, or None."""
        return self._queue.deadline_of(key)

    def next_deadline(self) -> float | None:
        """Earliest pending deadline, or None."""
        return self._queue.next_deadline()

    def __len__(self) -> int:
        """Pending timers."""
        return len(self._queue)

    def _run(self, keys: list[K]) -> None:
        """Run the callbacks of a popped batch, skipping keys its own callbacks touched.

        A key cancelled meanwhile has no callback left; one re-scheduled is back in
        the queue and runs at its new deadline. On an exception the keys not run yet
        are put back, due at once, in their order, and the exception propagates.
        """
        queue, callbacks = self._queue, self._callbacks
        for index, key in enumerate(keys):
            if index and key in queue:
                continue
            callback = callbacks.pop(key, None)
            if callback is None:
                continue
            try:
                callback(key)
            except BaseException:
                self._requeue(keys[index + 1 :])
                raise

    def _requeue(self, keys: list[K]) -> None:
        now = self.now()
        for key in keys:
            if key in self._callbacks and key not in self._queue:
                self._queue.schedule(key, now)
                self._deadline_added(now)


class VirtualClock(_QueueClock[K]):
    """Simulated time for the deterministic simulator: it moves only when told to.

    :meth:`advance` and :meth:`run_until` run every timer due on the way, in order,
    setting ``now()`` to each timer's deadline while its callback runs (never
    backwards: a timer scheduled in the past runs at the current time). Same calls,
    same results: ties are broken by scheduling order, or, with ``seed``, by a
    ``random.Random(seed)`` shuffle of each group of equal deadlines (to explore
    other interleavings, reproducibly). A callback's exception propagates out of
    ``advance``/``run_until`` with the clock at that timer's deadline.
    """

    def __init__(self, start: float = 0.0, seed: int | None = None) -> None:
        super().__init__()
        self._now = float(start)
        self._rng = None if seed is None else random.Random(seed)

    def now(self) -> float:
        """Current simulated time."""
        return self._now

    def advance(self, delta: float) -> int:
        """Move time forward by ``delta`` seconds; return the callbacks run."""
        if not delta >= 0.0:
            raise ValueError("a clock cannot go backwards")
        return self.run_until(self._now + delta)

    def run_until(self, deadline: float) -> int:
        """Run every timer due up to ``deadline``, then set the time to it (if later).

        Returns the number of timers popped (skipped ones included).
        """
        queue, popped = self._queue, 0
        while (due := queue.next_deadline()) is not None and due <= deadline:
            self._now = max(self._now, due)
            keys = queue.pop_due(due)
            if self._rng is not None and len(keys) > 1:
                self._rng.shuffle(keys)
            popped += len(keys)
            self._run(keys)
        self._now = max(self._now, deadline)
        return popped

    def run_all(self, max_timers: int = 1_000_000) -> int:
        """Run timers until none is left (or ``max_timers`` ran: RuntimeError)."""
        popped = 0
        while (due := self._queue.next_deadline()) is not None:
            if popped >= max_timers:
                raise RuntimeError(f"timers still pending after {max_timers} ran")
            popped += self.run_until(due)
        return popped


class LoopClock(_QueueClock[K]):
    """Real time on an asyncio (or uvloop) loop, through one re-armed ``call_at`` handle.

    ``now()`` is ``loop.time()``. The handle is armed for the earliest deadline; one
    wake-up runs the due timers (at most ``max_batch``, so that thousands of timers
    due at once do not stall the loop), then re-arms. Cancelling a timer leaves the
    handle armed: the wake-up finds nothing and re-arms, cheaper than re-arming on
    every cancel. A timer runs once ``loop.time() >= deadline``: on uvloop, whose
    clock counts whole milliseconds, up to 1 ms after its deadline. A callback's
    exception is logged with its traceback and counted (site ``gossip-timer``,
    :func:`pysyncer.supervisor.tolerate`) and the other timers still run.
    Use it from the loop's thread only.
    """

    def __init__(
        self, loop: asyncio.AbstractEventLoop | None = None, max_batch: int = 1024
    ) -> None:
        super().__init__()
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self._loop = asyncio.get_running_loop() if loop is None else loop
        self._max_batch = max_batch
        self._handle: asyncio.TimerHandle | None = None
        self._armed_at = 0.0
        self._firing = False
        self._early_wakes = 0  # wake-ups in a row that found nothing due
        self.arm_count = 0
        """Times the handle was (re-)armed: a test and metrics counter."""

    @property
    def armed_handles(self) -> int:
        """Loop handles this clock has pending: 0 or 1, whatever the number of timers."""
        return 0 if self._handle is None else 1

    def now(self) -> float:
        """``loop.time()``."""
        return self._loop.time()

    def close(self) -> None:
        """Cancel every timer and the loop handle."""
        self._queue.clear()
        self._callbacks.clear()
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _deadline_added(self, deadline: float) -> None:
        if self._firing:
            return  # _wake re-arms when the batch is done
        if self._handle is not None:
            if self._armed_at <= deadline:
                return
            self._handle.cancel()
        self._arm(deadline)

    def _arm(self, deadline: float) -> None:
        self._handle = self._loop.call_at(deadline, self._wake)
        self._armed_at = deadline
        self.arm_count += 1

    def _wake(self) -> None:
        self._handle = None
        self._firing = True
        keys: list[K] = []
        now = self._loop.time()
        try:
            keys = self._queue.pop_due(now, self._max_batch)
            for index, key in enumerate(keys):
                if index and key in self._queue:
                    continue  # re-scheduled by an earlier callback of this batch
                callback = self._callbacks.pop(key, None)
                if callback is None:
                    continue
                try:
                    callback(key)
                except (SystemExit, KeyboardInterrupt):
                    self._requeue(keys[index + 1 :])
                    raise
                except BaseException as exc:  # a bug: ERROR with its traceback, counted
                    tolerate("gossip-timer", exc, level=logging.ERROR, trace=True)
        finally:
            self._firing = False
            due = self._queue.next_deadline()
            if due is not None and self._handle is None:
                self._early_wakes = 0 if keys else self._early_wakes + 1
                if self._early_wakes > 1:
                    # Woken early twice for one deadline: the loop's time is coarser
                    # than the deadline (uvloop counts whole milliseconds). Wait one
                    # tick rather than spin until the millisecond turns.
                    due = max(due, now + _EARLY_WAKE_BACKOFF)
                self._arm(due)
