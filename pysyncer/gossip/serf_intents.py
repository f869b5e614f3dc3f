"""Join and leave intents: the Lamport-ordered Serf news of who joins and who leaves.

Owns the rules of serf/serf.go ``handleNodeJoinIntent``, ``handleNodeLeaveIntent``,
``broadcastJoin``, ``handlePrune`` and the ``recentIntents`` buffer
(``upsertIntent`` / ``recentIntent``): an intent newer than a member's
``status_ltime`` moves it (alive <-> leaving, failed -> left); an intent about a node
memberlist has not told us of yet is kept for ``recent_intent_timeout`` so that the
memberlist join that follows takes its status and time; a leave intent about
ourselves while we are alive is refuted with a fresh join intent.

Sending intents means queueing them on the Serf's intent broadcast queue; the wire
shapes are :class:`~pysyncer.gossip.serf_messages.SerfJoin` and ``SerfLeave``. Must not
import :mod:`pysyncer.gossip.serf` at run time (the Serf composes this part) nor the
other Serf parts.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from pysyncer.gossip import serf_messages as sm
from pysyncer.gossip.broadcast import Broadcast
from pysyncer.gossip.serf_model import (
    EventType,
    MemberEvent,
    MemberRecord,
    MemberStatus,
    MemberTable,
    SerfState,
)

if TYPE_CHECKING:
    from pysyncer.gossip.serf import Serf

__all__ = ["Intent", "SerfIntents"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Intent:
    """A join or leave intent heard before memberlist's news of the node."""

    kind: sm.SerfMessageType
    ltime: int
    seen: float


class SerfIntents:
    """Applies join and leave intents to the member table of one Serf."""

    def __init__(self, serf: Serf, table: MemberTable) -> None:
        self._serf = serf
        self._table = table
        self._recent: dict[str, Intent] = {}

    def recent(self, node: str) -> Intent | None:
        """The buffered intent about a node memberlist has not reported (serf recentIntent)."""
        return self._recent.get(node)

    def forget_stale(self, now: float, timeout: float) -> None:
        """Drop buffered intents older than ``timeout`` (part of serf's reap)."""
        for node, intent in list(self._recent.items()):
            if now - intent.seen > timeout:
                del self._recent[node]

    def broadcast_join(self, ltime: int) -> None:
        """Apply and gossip our own join intent at ``ltime``."""
        serf = self._serf
        message = sm.SerfJoin(ltime, serf.name)
        serf.member_clock.witness(ltime)
        self.handle_join(message)
        serf.intents.queue(Broadcast(message.to_bytes(), name=f"intent:{serf.name}"))

    def handle_join(self, message: sm.SerfJoin) -> bool:
        """Apply a join intent; whether it was news (and so is worth rebroadcasting)."""
        self._serf.member_clock.witness(message.ltime)
        record = self._table.get(message.node)
        if record is None:
            return self._upsert(message.node, sm.SerfMessageType.JOIN, message.ltime)
        if message.ltime <= record.status_ltime:
            return False
        record.status_ltime = message.ltime
        if record.member.status == MemberStatus.LEAVING:
            record.member = replace(record.member, status=MemberStatus.ALIVE)
        return True

    def handle_leave(self, message: sm.SerfLeave) -> bool:
        """Apply a leave intent; whether it was news (and so is worth rebroadcasting)."""
        serf = self._serf
        serf.member_clock.witness(message.ltime)
        record = self._table.get(message.node)
        if record is None:
            return self._upsert(message.node, sm.SerfMessageType.LEAVE, message.ltime)
        if message.ltime <= record.status_ltime:
            return False
        if message.node == serf.name and serf.state == SerfState.ALIVE:
            log.debug("serf %s: refuting an older leave intent", serf.name)
            self.broadcast_join(serf.member_clock.time)
            return False
        record.status_ltime = message.ltime  # also when the status stays (consul #8179)
        status = record.member.status
        if status == MemberStatus.ALIVE:
            record.member = replace(record.member, status=MemberStatus.LEAVING)
        elif status == MemberStatus.FAILED:
            record.member = replace(record.member, status=MemberStatus.LEFT)
            self._table.emit(MemberEvent(EventType.MEMBER_LEAVE, record.member))
        elif status not in (MemberStatus.LEAVING, MemberStatus.LEFT):
            return False
        if message.prune:
            self._prune(record)
        return True

    def _upsert(self, node: str, kind: sm.SerfMessageType, ltime: int) -> bool:
        known = self._recent.get(node)
        if known is None or ltime > known.ltime:
            self._recent[node] = Intent(kind, ltime, self._serf.clock.now())
            return True
        return False

    def _prune(self, record: MemberRecord) -> None:
        serf = self._serf
        name = record.member.name
        if record.member.status == MemberStatus.LEAVING:
            delay = serf.profile.broadcast_timeout + serf.profile.leave_propagate_delay
            serf.clock.call_later(("serf-prune", name), delay, lambda _: self._table.erase(name))
        else:
            self._table.erase(name)
