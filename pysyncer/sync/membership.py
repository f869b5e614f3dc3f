"""What the sync engine needs from the gossip pool: members with tags, own tags, events.

Owns the :class:`Membership` protocol the engine is written against. The Serf layer
(:class:`pysyncer.gossip.serf.Serf`) satisfies it structurally; so does any in-memory
pool a test builds. Uses the pool's value types (member status, events) and nothing else
from gossip: the engine never sees the Serf class, the node or the sockets.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

from pysyncer.gossip.serf import MemberStatus, SerfEvent

__all__ = ["Membership", "PoolMember"]


class PoolMember(Protocol):
    """One member of the pool as the engine reads it."""

    @property
    def name(self) -> str: ...

    @property
    def addr(self) -> str: ...

    @property
    def status(self) -> MemberStatus: ...

    @property
    def tags(self) -> Mapping[str, str]: ...


class Membership(Protocol):
    """The pool this syncer is a member of."""

    @property
    def tags(self) -> Mapping[str, str]:
        """This member's own tags."""
        ...

    def set_tags(self, tags: Mapping[str, str]) -> None:
        """Replace this member's tags and advertise them."""

    def members(self) -> Sequence[PoolMember]:
        """Every known member, this one included, in any status."""
        ...

    def subscribe(self, observer: Callable[[SerfEvent], None]) -> Callable[[], None]:
        """Call ``observer`` with every member and user event; returns unsubscribe."""
        ...

    def user_event(self, name: str, payload: bytes = b"", coalesce: bool = False) -> int:
        """Broadcast a user event to the pool."""
        ...
