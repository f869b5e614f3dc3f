"""What the Serf layer talks about: members, their statuses, events, errors, the member table.

Owns the vocabulary every Serf part shares (serf/serf.go ``Member``, ``MemberStatus``,
``SerfState``; serf/event.go ``EventType``, ``MemberEvent``, ``Query``) and the one
table of Serf members by name with the observers that hear about their changes
(:class:`MemberTable`). The rules that move a member from one status to another live in
the parts that own them: intents (:mod:`~pysyncer.gossip.serf_intents`), memberlist
news (:mod:`~pysyncer.gossip.serf_delegate`) and reaping
(:mod:`~pysyncer.gossip.serf_reaper`).

Plain data and callbacks: no clock, no sockets, no asyncio. Must not import the other
``serf*`` modules nor the memberlist node.
"""

from __future__ import annotations

import enum
import logging
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from pysyncer.errors import PysyncerError
from pysyncer.gossip.lamport import UserEvent
from pysyncer.supervisor import tolerate

__all__ = [
    "EventType",
    "Member",
    "MemberEvent",
    "MemberRecord",
    "MemberStatus",
    "MemberTable",
    "Observer",
    "QueryEvent",
    "QueryTooLargeError",
    "SerfError",
    "SerfEvent",
    "SerfState",
    "SerfStateError",
    "TagsTooLargeError",
    "UserEventTooLargeError",
    "member_versions",
]

log = logging.getLogger(__name__)


# -- errors ------------------------------------------------------------------------


class SerfError(PysyncerError):
    """Root of the errors the Serf layer raises on purpose."""


class UserEventTooLargeError(SerfError, ValueError):
    """A user event exceeds the configured or the hard (9 KB) size limit."""


class QueryTooLargeError(SerfError, ValueError):
    """A query (or a query response) exceeds its size limit."""


class TagsTooLargeError(SerfError, ValueError):
    """Encoded tags take more than the 512 bytes of memberlist node meta."""


class SerfStateError(SerfError, RuntimeError):
    """The operation does not fit the current state (not attached, leaving, left)."""


# -- members and events ---------------------------------------------------------------


class MemberStatus(enum.Enum):
    NONE = "none"
    ALIVE = "alive"
    LEAVING = "leaving"
    LEFT = "left"
    FAILED = "failed"


class SerfState(enum.Enum):
    ALIVE = "alive"
    LEAVING = "leaving"
    LEFT = "left"
    SHUTDOWN = "shutdown"


class EventType(enum.Enum):
    MEMBER_JOIN = "member-join"
    MEMBER_LEAVE = "member-leave"
    MEMBER_FAILED = "member-failed"
    MEMBER_UPDATE = "member-update"
    MEMBER_REAP = "member-reap"


@dataclass(frozen=True, slots=True)
class Member:
    """A snapshot of one Serf member (serf ``Member``); treat ``tags`` as read-only."""

    name: str
    addr: str
    port: int
    tags: Mapping[str, str]
    status: MemberStatus
    protocol_min: int = 0
    protocol_max: int = 0
    protocol_cur: int = 0
    delegate_min: int = 0
    delegate_max: int = 0
    delegate_cur: int = 0


@dataclass(frozen=True, slots=True)
class MemberEvent:
    type: EventType
    member: Member


@dataclass(frozen=True, slots=True)
class QueryEvent:
    """A query this node accepted (after filters); informational for observers."""

    ltime: int
    id: int
    name: str
    payload: bytes
    source_node: str


SerfEvent = MemberEvent | UserEvent | QueryEvent
Observer = Callable[[SerfEvent], None]


def member_versions(vsn: bytes) -> tuple[int, int, int, int, int, int]:
    """memberlist's 6-byte ``Vsn`` as the six protocol fields of :class:`Member`."""
    padded = bytes(vsn[:6]).ljust(6, b"\0")
    return padded[0], padded[1], padded[2], padded[3], padded[4], padded[5]


@dataclass(slots=True)
class MemberRecord:
    """One entry of the member table (serf ``memberState``)."""

    member: Member
    status_ltime: int = 0
    leave_time: float = 0.0  # when it became failed or left (tombstone age)


class MemberTable:
    """Serf members by name (tombstones included) and the observers of their events."""

    def __init__(self, owner: str, stats: Counter[str]) -> None:
        self.owner = owner  # our own node name, for the logs
        self.records: dict[str, MemberRecord] = {}
        self._observers: list[Observer] = []
        self._stats = stats

    def __len__(self) -> int:
        return len(self.records)

    def get(self, name: str) -> MemberRecord | None:
        return self.records.get(name)

    def members(self, status: MemberStatus | None = None) -> list[Member]:
        """Every member, or those with ``status``."""
        return [
            record.member
            for record in self.records.values()
            if status is None or record.member.status == status
        ]

    def has_alive_others(self) -> bool:
        """Some member other than us is alive (someone to hear a broadcast)."""
        return any(
            record.member.status == MemberStatus.ALIVE and name != self.owner
            for name, record in self.records.items()
        )

    def erase(self, name: str) -> None:
        """Forget a member for good (serf ``eraseNode``): a reap event."""
        record = self.records.pop(name, None)
        if record is not None:
            self.emit(MemberEvent(EventType.MEMBER_REAP, record.member))

    def subscribe(self, observer: Observer) -> Callable[[], None]:
        self._observers.append(observer)

        def unsubscribe() -> None:
            if observer in self._observers:
                self._observers.remove(observer)

        return unsubscribe

    def emit(self, event: SerfEvent) -> None:
        """Call every observer; one that raises is logged and counted, never fatal."""
        for observer in list(self._observers):
            try:
                observer(event)
            except Exception as exc:
                self._stats["observer_errors"] += 1
                tolerate("serf-event-observer", exc, level=logging.ERROR, trace=True)
