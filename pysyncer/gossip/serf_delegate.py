"""Serf as memberlist's delegate: messages, broadcast queues, push/pull state, member news.

Owns what the memberlist node asks of Serf and what it tells Serf, as in
serf/delegate.go (``NotifyMsg``, ``GetBroadcasts``, ``LocalState``,
``MergeRemoteState``; ``NodeMeta`` stays on the Serf with the tags),
serf/event_delegate.go with serf/serf.go ``handleNodeJoin`` / ``handleNodeLeave`` /
``handleNodeUpdate`` (memberlist joins, failures, leaves and meta changes become Serf
member statuses and events) and serf/serf.go ``checkQueueDepth`` (pruning of the three
broadcast queues: intents first, then queries, then user events).

The :class:`~pysyncer.gossip.serf.Serf` is the node's delegate and hands each call to
this part. Must not import :mod:`pysyncer.gossip.serf` at run time; it reaches the
intents, queries and user events through the parts it is given.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable
from dataclasses import replace
from typing import TYPE_CHECKING

from pysyncer.errors import MalformedDataError
from pysyncer.gossip import messages as m
from pysyncer.gossip import serf_messages as sm
from pysyncer.gossip.broadcast import Broadcast
from pysyncer.gossip.lamport import EventBuffer
from pysyncer.gossip.membership import NodeState, NodeStatus
from pysyncer.gossip.serf_intents import SerfIntents
from pysyncer.gossip.serf_model import (
    EventType,
    Member,
    MemberEvent,
    MemberRecord,
    MemberStatus,
    MemberTable,
    SerfState,
    member_versions,
)
from pysyncer.gossip.serf_queries import SerfQueries
from pysyncer.gossip.stream import PUSH_PULL_MEMBERS
from pysyncer.gossip.timing import GossipProfile, queue_max_depth
from pysyncer.supervisor import tolerate

if TYPE_CHECKING:
    from pysyncer.gossip.serf import Serf

__all__ = ["PUSH_PULL_USER_EVENTS", "SerfDelegate"]

log = logging.getLogger(__name__)

_QUEUE_CHECK_KEY = ("serf-queue-check",)

PUSH_PULL_USER_EVENTS = 4 * GossipProfile.event_buffer
"""The most user events, and event ring slots, one Serf push/pull may carry (2,048): four
times Serf's event ring (``EventBuffer``: the last 512 Lamport times, the profile's
``event_buffer``), room for a peer with a larger ring or several events at one time. Its
member lists (``StatusLTimes``, ``LeftMembers``) may each name at most
:data:`~pysyncer.gossip.stream.PUSH_PULL_MEMBERS` members, the pool size the stream
budget is sized for. A push/pull past either is refused whole and counted as
``pysyncer_gossip_packets_dropped{reason="push_pull_entries"}``."""

PUSH_PULL_ENTRIES_DROP = "packets_dropped_push_pull_entries"  # the node counter


def _entries_past_bounds(statuses: int, left: int, slots: int, events: int) -> str:
    """What a Serf push/pull carries past its bounds, or "" when it fits."""
    members = max(statuses, left)
    if members > PUSH_PULL_MEMBERS:
        return f"{members} members (at most {PUSH_PULL_MEMBERS})"
    entries = max(slots, events)
    if entries > PUSH_PULL_USER_EVENTS:
        return f"{entries} user events or event slots (at most {PUSH_PULL_USER_EVENTS})"
    return ""


class SerfDelegate:
    """The memberlist-facing half of one Serf."""

    def __init__(
        self,
        serf: Serf,
        table: MemberTable,
        intents: SerfIntents,
        queries: SerfQueries,
        events: EventBuffer,
    ) -> None:
        self._serf = serf
        self._table = table
        self._intents = intents
        self._queries = queries
        self._events = events
        self.ignore_old_events = False  # set by Serf.join(ignore_old=True) around the join

    def start(self) -> None:
        serf = self._serf
        serf.clock.call_later(
            _QUEUE_CHECK_KEY, serf.profile.queue_check_interval, self._queue_check_tick
        )

    def stop(self) -> None:
        self._serf.clock.cancel(_QUEUE_CHECK_KEY)

    # -- delegate.go -----------------------------------------------------------------

    def notify_msg(self, payload: bytes) -> None:
        """A Serf message from a memberlist user message (type byte 8 removed)."""
        serf = self._serf
        if not payload:
            return
        kind = payload[0]
        try:
            if kind == sm.SerfMessageType.RELAY:
                self._queries.forward_relay(payload)
                return
            message = sm.decode_serf(payload)
        except MalformedDataError as exc:
            serf.stats["messages_dropped"] += 1
            log.debug("serf %s: dropped message type %d: %s", serf.name, kind, exc)
            return
        rebroadcast, queue, name = False, serf.intents, None
        if isinstance(message, sm.SerfLeave):
            rebroadcast, name = self._intents.handle_leave(message), f"intent:{message.node}"
        elif isinstance(message, sm.SerfJoin):
            rebroadcast, name = self._intents.handle_join(message), f"intent:{message.node}"
        elif isinstance(message, sm.SerfUserEvent):
            rebroadcast, queue = serf.handle_user_event(message), serf.event_queue
        elif isinstance(message, sm.SerfQuery):
            rebroadcast, queue = self._queries.handle_query(message), serf.query_queue
        elif isinstance(message, sm.SerfQueryResponse):
            self._queries.handle_response(message)
        else:
            serf.stats["messages_unexpected"] += 1
        if rebroadcast:
            queue.queue(Broadcast(bytes(payload), name=name))
            serf.news_queued()

    def get_broadcasts(self, overhead: int, limit: int) -> list[bytes]:
        """Intents first, then queries, then user events, as serf's delegate.

        Raw Serf messages: the node frames each as a memberlist user message (and
        already counts that byte in ``overhead``), as memberlist's getBroadcasts does.
        """
        serf = self._serf
        out: list[bytes] = []
        used = 0
        for queue in (serf.intents, serf.query_queue, serf.event_queue):
            chosen = queue.get_broadcasts(overhead, limit - used)
            used += sum(overhead + len(x) for x in chosen)
            out += chosen
        return out

    def local_state(self, join: bool) -> bytes:
        """Serf's push/pull state: Lamport clocks, member status times, the event ring."""
        serf = self._serf
        size = self._events.size
        slots: list[sm.PushPullUserEvents | None] = [None] * size
        grouped: dict[int, list[sm.PushPullUserEvent]] = {}
        for event in self._events.recent():
            grouped.setdefault(event.ltime, []).append(
                sm.PushPullUserEvent(event.name, event.payload)
            )
        for ltime, events in grouped.items():
            slots[ltime % size] = sm.PushPullUserEvents(ltime, tuple(events))
        records = self._table.records
        state = sm.SerfPushPull(
            ltime=serf.member_clock.time,
            status_ltimes={name: r.status_ltime for name, r in records.items()},
            left_members=tuple(
                name for name, r in records.items() if r.member.status == MemberStatus.LEFT
            ),
            event_ltime=serf.event_clock.time,
            events=tuple(slots),
            query_ltime=serf.query_clock.time,
        )
        return state.to_bytes()

    def merge_remote_state(self, state: bytes, join: bool) -> None:
        """Witness a peer's clocks, replay its intents and the user events we missed."""
        serf = self._serf
        try:
            remote = sm.SerfPushPull.from_bytes(state)
        except MalformedDataError as exc:
            serf.stats["push_pull_dropped"] += 1
            log.warning("serf %s: bad remote state: %s", serf.name, exc)
            return
        past = _entries_past_bounds(
            len(remote.status_ltimes),
            len(remote.left_members),
            len(remote.events),
            sum(len(slot.events) for slot in remote.events if slot is not None),
        )
        if past:  # refused whole: nothing of it is merged
            serf.node.stats.incr(PUSH_PULL_ENTRIES_DROP)
            tolerate("serf-push-pull", MalformedDataError(f"remote state refused: {past}"))
            return
        if remote.ltime > 0:
            serf.member_clock.witness(remote.ltime - 1)
        if remote.event_ltime > 0:
            serf.event_clock.witness(remote.event_ltime - 1)
        if remote.query_ltime > 0:
            serf.query_clock.witness(remote.query_ltime - 1)
        left = set(remote.left_members)
        for name in remote.left_members:
            # The leave came after the join that put it on the list: one past its time.
            self._intents.handle_leave(sm.SerfLeave(remote.status_ltimes.get(name, 0) + 1, name))
        for name, ltime in remote.status_ltimes.items():
            if name not in left:
                self._intents.handle_join(sm.SerfJoin(ltime, name))
        if join and self.ignore_old_events:
            self._events.min_time = max(self._events.min_time, remote.event_ltime)
        for slot in remote.events:
            if slot is None:
                continue
            for event in slot.events:
                serf.handle_user_event(sm.SerfUserEvent(slot.ltime, event.name, event.payload))

    # -- event_delegate.go -------------------------------------------------------------

    def notify_join(self, state: NodeState) -> None:
        versions = member_versions(state.vsn)
        tags = self._serf.decode_tags(state.meta)
        record = self._table.get(state.name)
        if record is None:
            status, status_ltime = MemberStatus.ALIVE, 0
            intent = self._intents.recent(state.name)
            if intent is not None:
                status_ltime = intent.ltime
                if intent.kind == sm.SerfMessageType.LEAVE:
                    status = MemberStatus.LEAVING
            member = Member(state.name, m.ip_text(state.addr), state.port, tags, status, *versions)
            record = self._table.records[state.name] = MemberRecord(member, status_ltime)
        else:
            record.member = Member(
                state.name, m.ip_text(state.addr), state.port, tags, MemberStatus.ALIVE, *versions
            )
            record.leave_time = 0.0
        self._table.emit(MemberEvent(EventType.MEMBER_JOIN, record.member))

    def notify_leave(self, state: NodeState) -> None:
        record = self._table.get(state.name)
        if record is None:
            return
        status = record.member.status
        if status == MemberStatus.LEAVING or (
            status == MemberStatus.ALIVE and state.status == NodeStatus.LEFT
        ):
            # Serf proper needs the leave intent to say "left"; memberlist's own graceful
            # leave (a dead message from the node itself) is the same news, so take it.
            new, event = MemberStatus.LEFT, EventType.MEMBER_LEAVE
        elif status == MemberStatus.ALIVE:
            new, event = MemberStatus.FAILED, EventType.MEMBER_FAILED
        else:
            log.debug("serf %s: leave of %s while %s", self._serf.name, state.name, status.value)
            return
        record.member = replace(record.member, status=new)
        record.leave_time = self._serf.clock.now()
        self._table.emit(MemberEvent(event, record.member))
        self._queries.member_gone(state.name)

    def notify_update(self, state: NodeState) -> None:
        record = self._table.get(state.name)
        if record is None:
            return
        record.member = Member(
            state.name,
            m.ip_text(state.addr),
            state.port,
            self._serf.decode_tags(state.meta),
            record.member.status,
            *member_versions(state.vsn),
        )
        self._table.emit(MemberEvent(EventType.MEMBER_UPDATE, record.member))

    # -- checkQueueDepth ---------------------------------------------------------------

    def _queue_check_tick(self, _: Hashable) -> None:
        serf = self._serf
        if serf.state == SerfState.SHUTDOWN:
            return
        profile = serf.profile
        serf.clock.call_later(
            _QUEUE_CHECK_KEY, profile.queue_check_interval, self._queue_check_tick
        )
        limit = queue_max_depth(profile.max_queue_depth, profile.min_queue_depth, len(self._table))
        for name, queue in (
            ("intent", serf.intents),
            ("event", serf.event_queue),
            ("query", serf.query_queue),
        ):
            if len(queue) >= profile.queue_depth_warning:
                log.warning("serf %s: %s queue depth: %d", serf.name, name, len(queue))
            if len(queue) > limit:
                serf.stats[f"{name}_queue_pruned"] += queue.prune(limit)
