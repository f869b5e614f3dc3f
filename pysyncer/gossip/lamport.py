"""Lamport clocks and the dedupe buffers Serf keeps for user events and queries.

Serf orders member intents, user events and queries with three independent 64-bit
Lamport clocks. A node remembers the last ``size`` (512) Lamport times of events and
queries in ring buffers, to drop duplicates that keep arriving through gossip and
events too old to judge. These are plain data structures; the Serf layer drives them.
Imports nothing from pysyncer.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["EventBuffer", "LamportClock", "QueryBuffer", "UserEvent"]

_U64 = (1 << 64) - 1


class LamportClock:
    """A Lamport clock: ``witness`` moves past any time seen, ``increment`` ticks."""

    __slots__ = ("_time",)

    def __init__(self, time: int = 0) -> None:
        self._time = time

    @property
    def time(self) -> int:
        return self._time

    def increment(self) -> int:
        """Tick and return the new time."""
        self._time = (self._time + 1) & _U64
        return self._time

    def witness(self, seen: int) -> None:
        """Make the clock later than ``seen`` (Serf: ``max(cur, seen + 1)``)."""
        if seen >= self._time:
            self._time = min(seen + 1, _U64)


@dataclass(frozen=True, slots=True)
class UserEvent:
    ltime: int
    name: str
    payload: bytes
    coalesce: bool = False


@dataclass(slots=True)
class _Slot:
    ltime: int
    items: list[object] = field(default_factory=list)


def _too_old(ltime: int, now: int, size: int) -> bool:
    return now > size and ltime < now - size


class EventBuffer:
    """Recent user events by Lamport time: rejects duplicates, old and pre-snapshot events."""

    def __init__(self, size: int = 512) -> None:
        if size < 1:
            raise ValueError(f"buffer size must be >= 1, not {size}")
        self.size = size
        self.min_time = 0  # events before this are replays (set from a snapshot or on join)
        self._slots: list[_Slot | None] = [None] * size

    def accept(self, clock: LamportClock, event: UserEvent) -> bool:
        """Record ``event`` if new; False for duplicates and events too old to judge."""
        clock.witness(event.ltime)
        if event.ltime < self.min_time or _too_old(event.ltime, clock.time, self.size):
            return False
        index = event.ltime % self.size
        slot = self._slots[index]
        if slot is not None and slot.ltime == event.ltime:
            for seen in slot.items:
                assert isinstance(seen, UserEvent)
                if seen.name == event.name and seen.payload == event.payload:
                    return False
        else:
            slot = self._slots[index] = _Slot(event.ltime)
        slot.items.append(event)
        return True

    def recent(self) -> list[UserEvent]:
        """Every buffered event, oldest Lamport time first (push/pull and the admin API)."""
        events: list[UserEvent] = []
        for slot in sorted((s for s in self._slots if s is not None), key=lambda s: s.ltime):
            events.extend(e for e in slot.items if isinstance(e, UserEvent))
        return events


class QueryBuffer:
    """Recent query ids by Lamport time, so each query is handled once."""

    def __init__(self, size: int = 512) -> None:
        if size < 1:
            raise ValueError(f"buffer size must be >= 1, not {size}")
        self.size = size
        self.min_time = 0
        self._slots: list[_Slot | None] = [None] * size

    def accept(self, clock: LamportClock, ltime: int, query_id: int) -> bool:
        """Record the query if new; False for duplicates and queries too old to judge."""
        clock.witness(ltime)
        if ltime < self.min_time or _too_old(ltime, clock.time, self.size):
            return False
        index = ltime % self.size
        slot = self._slots[index]
        if slot is not None and slot.ltime == ltime:
            if query_id in slot.items:
                return False
        else:
            slot = self._slots[index] = _Slot(ltime)
        slot.items.append(query_id)
        return True
