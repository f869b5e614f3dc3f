"""Timer queue of the failure detector, pure Python (twin of :mod:`pysyncer._core._timers_c`).

:class:`TimerQueue` holds thousands of deadlines (probe timeouts, suspicion timers,
reaping, gossip ticks) keyed by hashable objects, so that one event-loop handle can
drive them all (see :mod:`pysyncer.gossip.clock`).

Order: by deadline, then by scheduling order: every :meth:`TimerQueue.schedule` call
stamps its key with the next number of a per-queue counter, and of two equal
deadlines the smaller stamp pops first. Re-scheduling a key gives it a new stamp, even
when its deadline does not change.

Layout: :mod:`heapq` (C-accelerated) of ``(deadline, stamp, key)`` tuples with lazy
deletion, and a dict key -> its live tuple. A heap tuple is live while the dict maps
its key to that very tuple; cancelling or re-scheduling leaves the old tuple in the
heap, skipped when it surfaces, and the heap is rebuilt from the dict once stale
tuples outnumber live ones. This beats an indexed heap written in Python, whose
sifts run in the interpreter. A key whose ``__hash__``/``__eq__`` calls back into the
queue gets unspecified results here (the compiled queue raises RuntimeError).
"""

from __future__ import annotations

from collections.abc import Hashable
from heapq import heapify, heappop, heappush
from itertools import count
from typing import Generic, TypeVar

__all__ = ["TimerQueue"]

K = TypeVar("K", bound=Hashable)

_COMPACT_SLACK = 64  # stale tuples tolerated on top of one per live timer


def _as_deadline(value: object) -> float:
    """``value`` as a float deadline, converted as the compiled ``double`` argument is."""
    if isinstance(value, (str, bytes, bytearray)):
        raise TypeError(f"must be real number, not {type(value).__name__}")
    return float(value)  # type: ignore[arg-type]  # TypeError for non-numbers, as in C


class TimerQueue(Generic[K]):
    """Deadlines keyed by hashable objects; pops due keys in (deadline, stamp) order.

    ``schedule`` (insert or re-schedule) and ``cancel`` are O(log n) amortized,
    ``deadline_of``, ``__contains__`` and ``__len__`` O(1), ``next_deadline`` O(1)
    amortized, ``pop_due`` O(log n) per key popped. Deadlines are floats (ints are
    converted); NaN raises ValueError.
    """

    __slots__ = ("_entries", "_heap", "_stale", "_stamps")

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, K]] = []
        self._entries: dict[K, tuple[float, int, K]] = {}
        self._stale = 0  # heap tuples no longer live
        self._stamps = count(1)

    def schedule(self, key: K, deadline: float) -> None:
        """Set the deadline of ``key`` (a new timer, or a re-scheduled one)."""
        if type(deadline) is not float:
            deadline = _as_deadline(deadline)
        if deadline != deadline:
            raise ValueError("a timer deadline cannot be NaN")
        entries = self._entries
        old = entries.get(key)
        if old is not None:
            key = old[2]  # keep the first key object, as a dict does
            self._stale += 1
        entry = (deadline, next(self._stamps), key)
        entries[key] = entry
        heappush(self._heap, entry)
        if self._stale > len(entries) + _COMPACT_SLACK:
            self._compact()

    def cancel(self, key: K) -> bool:
        """Remove the timer of ``key``; True if there was one."""
        if self._entries.pop(key, None) is None:
            return False
        self._stale += 1
        if self._stale > len(self._entries) + _COMPACT_SLACK:
            self._compact()
        return True

    def deadline_of(self, key: K) -> float | None:
        """Deadline of ``key``, or None when it has no timer."""
        entry = self._entries.get(key)
        return None if entry is None else entry[0]

    def pop_due(self, now: float, limit: int | None = None) -> list[K]:
        """Remove and return the keys whose deadline is <= ``now``, in order.

        At most ``limit`` keys when it is not None (a negative limit is a ValueError).
        """
        if limit is None:
            limit = -1
        elif limit < 0:
            raise ValueError("limit must be None or >= 0")
        heap, entries, due = self._heap, self._entries, []
        while heap and heap[0][0] <= now and limit != 0:
            entry = heappop(heap)
            key = entry[2]
            if entries.get(key) is entry:
                del entries[key]
                due.append(key)
                limit -= 1
            else:
                self._stale -= 1
        return due

    def next_deadline(self) -> float | None:
        """Earliest deadline, or None when the queue is empty."""
        heap, entries = self._heap, self._entries
        while heap:
            entry = heap[0]
            if entries.get(entry[2]) is entry:
                return entry[0]
            heappop(heap)
            self._stale -= 1
        return None

    def clear(self) -> None:
        """Remove every timer."""
        self._heap = []
        self._stale = 0
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def __repr__(self) -> str:
        return f"<TimerQueue of {len(self._entries)} timers>"

    def _compact(self) -> None:
        """Rebuild the heap from the live tuples only."""
        heap = list(self._entries.values())
        heapify(heap)
        self._heap = heap
        self._stale = 0
