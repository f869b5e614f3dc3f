"""The Serf layer of one gossip node: members with tags, intents, user events, queries.

Owns the :class:`Serf` object, what HashiCorp Serf adds on top of memberlist, compatible
on the wire with real Serf agents (serf/serf.go ``Serf``: ``Join``, ``Leave``,
``RemoveFailedNode``, ``SetTags``, ``UserEvent``, ``Query``, ``Members``). It composes
one part per job and keeps the public API, with every name other modules import from
here:

* the member view (:mod:`~pysyncer.gossip.serf_model`): alive / leaving / left /
  failed, tags decoded from node meta, addresses, protocol versions;
* join and leave *intents* (:mod:`~pysyncer.gossip.serf_intents`), ordered by the
  member Lamport clock (``statusLTime``); intents heard before memberlist's own news
  about a node are buffered for ``recent_intent_timeout``;
* the reaper (:mod:`~pysyncer.gossip.serf_reaper`): left members stay as tombstones
  until ``tombstone_timeout``, failed ones until ``reconnect_timeout``; a random failed
  member is re-joined now and then (``reconnect_interval``);
* queries (:mod:`~pysyncer.gossip.serf_queries`): origin side with, unlike Serf,
  *early completion* when every expected responder has answered; receiving side with
  filters, acks, one responder callback, relayed responses, the internal
  ``_serf_ping`` and ``internal_handlers`` for other ``_serf_*`` queries (key rotation
  registers there, see :mod:`pysyncer.gossip.keymanager`);
* the memberlist delegate (:mod:`~pysyncer.gossip.serf_delegate`): Serf messages,
  the three broadcast queues, push/pull state, memberlist's member news;
* network coordinates (:mod:`~pysyncer.gossip.serf_coordinates`): the Vivaldi
  coordinate in every ack, updated from probe round trips, and everyone's last one;
* name conflicts (:mod:`~pysyncer.gossip.serf_conflict`): the ``_serf_conflict``
  query, answered for others and asked with a majority vote when another address
  claims our name (the loser shuts down, as in Serf);
* user events (size limits, Lamport dedupe, replay through push/pull) and tags stay
  here.

Wiring (Serf must exist before the node, which asks it for node meta at once)::

    serf = Serf("n1", {"role": "web"}, profile, clock, rng)
    node = GossipNode(NodeConfig("n1", addr, profile), clock, network, serf, rng)
    serf.attach(node)
    node.start(); serf.start()
    await serf.join([seed])            # node.join + a join intent
    ...
    await serf.leave(); await serf.stop(); await node.stop()

Events go to observers registered with :meth:`Serf.subscribe` (plain callbacks, no
asyncio). Timers use the node's :class:`~pysyncer.gossip.clock.Clock` under keys that
start with ``"serf-"``, so the same code runs on the event loop and in the simulator.
The parts reach the shared state (name, clocks, stats, queues, node) through the Serf
that composes them. Nothing here knows about registries or the sync engine.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import Counter
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import replace

from pysyncer._core import wire
from pysyncer.errors import MalformedDataError
from pysyncer.gossip import serf_messages as sm
from pysyncer.gossip.broadcast import Broadcast, TransmitLimitedQueue
from pysyncer.gossip.clock import Clock
from pysyncer.gossip.lamport import EventBuffer, LamportClock, UserEvent
from pysyncer.gossip.membership import NodeState
from pysyncer.gossip.node import GossipNode
from pysyncer.gossip.serf_conflict import SerfConflicts
from pysyncer.gossip.serf_coordinates import DEFAULT_COORDINATE_PAYLOAD, SerfCoordinates
from pysyncer.gossip.serf_delegate import SerfDelegate
from pysyncer.gossip.serf_intents import SerfIntents
from pysyncer.gossip.serf_model import (
    EventType,
    Member,
    MemberEvent,
    MemberStatus,
    MemberTable,
    Observer,
    QueryEvent,
    QueryTooLargeError,
    SerfError,
    SerfEvent,
    SerfState,
    SerfStateError,
    TagsTooLargeError,
    UserEventTooLargeError,
)
from pysyncer.gossip.serf_queries import (
    INTERNAL_QUERY_PREFIX,
    InternalHandler,
    QueryResult,
    Responder,
    SerfQueries,
    decode_filter,
    encode_node_filter,
    encode_tag_filter,
)
from pysyncer.gossip.serf_reaper import SerfReaper
from pysyncer.gossip.timing import USER_EVENT_SIZE_LIMIT_MAX, GossipProfile

__all__ = [
    "DEFAULT_COORDINATE_PAYLOAD",
    "INTERNAL_QUERY_PREFIX",
    "EventType",
    "InternalHandler",
    "Member",
    "MemberEvent",
    "MemberStatus",
    "QueryEvent",
    "QueryResult",
    "QueryTooLargeError",
    "Serf",
    "SerfError",
    "SerfEvent",
    "SerfState",
    "SerfStateError",
    "TagsTooLargeError",
    "UserEvent",
    "UserEventTooLargeError",
    "decode_filter",
    "encode_node_filter",
    "encode_tag_filter",
]

log = logging.getLogger(__name__)


class Serf:
    """Serf for one :class:`~pysyncer.gossip.node.GossipNode` (its NodeDelegate)."""

    def __init__(
        self,
        name: str,
        tags: Mapping[str, str] | None,
        profile: GossipProfile,
        clock: Clock[Hashable],
        rng: random.Random | None = None,
        *,
        responder: Responder | None = None,
    ) -> None:
        self.name = name
        self.profile = profile
        self.clock = clock
        self.rng = rng or random.Random()
        self.responder = responder
        self.internal_handlers: dict[str, InternalHandler] = {}  # e.g. the key queries
        self.stats: Counter[str] = Counter()
        self.state = SerfState.ALIVE
        self._tags = dict(tags or {})
        self._meta = self._encode_tags(self._tags)
        self._node: GossipNode | None = None
        self.member_clock = LamportClock()
        self.member_clock.increment()  # Serf starts at 1 so a default 0 is always older
        self.event_clock = LamportClock()
        self.query_clock = LamportClock()
        self._events = EventBuffer(profile.event_buffer)
        self._timer_seq = 0
        mult = profile.retransmit_mult
        self.intents = TransmitLimitedQueue(mult, self.num_nodes)
        self.query_queue = TransmitLimitedQueue(mult, self.num_nodes)
        self.event_queue = TransmitLimitedQueue(mult, self.num_nodes)
        self._table = MemberTable(name, self.stats)
        self._intents = SerfIntents(self, self._table)
        self._queries = SerfQueries(self, self._table)
        self._reaper = SerfReaper(self, self._table, self._intents)
        self._delegate = SerfDelegate(self, self._table, self._intents, self._queries, self._events)
        self.coordinates = SerfCoordinates(name, self.stats, self.rng)
        self.conflicts = SerfConflicts(self, self._table)
        self.conflicts.register()
        self._table.subscribe(self._forget_reaped)

    # -- wiring and lifecycle ----------------------------------------------------

    def attach(self, node: GossipNode) -> None:
        """Bind the node this Serf is the delegate of (after constructing the node)."""
        if node.delegate is not self:
            raise SerfStateError("attach the node that was built with this Serf as delegate")
        self._node = node

    @property
    def attached(self) -> bool:
        """:meth:`attach` was called: :attr:`node` is there."""
        return self._node is not None

    @property
    def node(self) -> GossipNode:
        if self._node is None:
            raise SerfStateError("Serf.attach(node) was not called")
        return self._node

    def start(self) -> None:
        """Announce our join intent and start the reap, reconnect and queue timers."""
        self._intents.broadcast_join(self.member_clock.time)
        self._reaper.start()
        self._delegate.start()

    async def stop(self) -> None:
        """Stop timers and background joins; finish running queries (after leave)."""
        if self.state != SerfState.LEFT:
            log.warning("serf %s: stop without a leave", self.name)
        self.state = SerfState.SHUTDOWN
        self._delegate.stop()
        self._queries.finish_all()
        await self._reaper.stop()

    async def shutdown(self) -> None:
        """Stop at once, without a leave (serf ``Shutdown``): the pool will see a failure."""
        if self.state == SerfState.SHUTDOWN:
            return
        self.state = SerfState.SHUTDOWN
        self._delegate.stop()
        self._queries.finish_all()
        await self._reaper.stop()
        if self._node is not None:
            await self._node.stop()

    async def join(self, addresses: Sequence[tuple[str, int]], ignore_old: bool = False) -> int:
        """memberlist join, then a join intent; ``ignore_old`` skips events sent before."""
        if self.state != SerfState.ALIVE:
            raise SerfStateError("Serf can't join after leave or shutdown")
        self._delegate.ignore_old_events = ignore_old
        try:
            joined = await self.node.join(addresses)
        finally:
            self._delegate.ignore_old_events = False
        if joined:
            self._intents.broadcast_join(self.member_clock.time)
        return joined

    async def leave(self) -> None:
        """Graceful leave: leave intent, memberlist leave, then LeavePropagateDelay."""
        if self.state == SerfState.LEFT:
            return
        if self.state != SerfState.ALIVE:
            raise SerfStateError(f"leave while {self.state.value}")
        self.state = SerfState.LEAVING
        message = sm.SerfLeave(self.member_clock.time, self.name)
        self.member_clock.increment()
        self._intents.handle_leave(message)
        if self._table.has_alive_others():
            sent = self._new_future()
            self.intents.queue(
                Broadcast(message.to_bytes(), name=f"intent:{self.name}", on_finished=_setter(sent))
            )
            await self._wait(sent, self.profile.broadcast_timeout, "serf-leave-wait")
        if not await self.node.leave(self.profile.broadcast_timeout):
            log.warning("serf %s: timeout waiting for the leave broadcast", self.name)
        await self._wait(self._new_future(), self.profile.leave_propagate_delay, "serf-leave-delay")
        if self.state != SerfState.SHUTDOWN:
            self.state = SerfState.LEFT

    def force_leave(self, node: str, prune: bool = False) -> None:
        """Mark a failed member left (``prune``: erase it at once) cluster-wide."""
        message = sm.SerfLeave(self.member_clock.time, node, prune)
        self.member_clock.increment()
        self._intents.handle_leave(message)
        if self._table.has_alive_others():
            self.intents.queue(Broadcast(message.to_bytes(), name=f"intent:{node}"))

    def reap(self) -> None:
        """Erase tombstones and failed members past their timeouts; forget old intents."""
        self._reaper.reap()

    # -- observers, tags, members ------------------------------------------------

    def subscribe(self, observer: Observer) -> Callable[[], None]:
        """Call ``observer`` with every member, user and query event; returns unsubscribe."""
        return self._table.subscribe(observer)

    @property
    def tags(self) -> dict[str, str]:
        return dict(self._tags)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        """Replace our tags and advertise them (a new alive with a fresh incarnation)."""
        meta = self._encode_tags(tags)
        self._tags, self._meta = dict(tags), meta
        local = self._table.get(self.name)
        if local is not None:
            local.member = replace(local.member, tags=dict(tags))
            self._table.emit(MemberEvent(EventType.MEMBER_UPDATE, local.member))
        self.node.update_meta()

    def members(self) -> list[Member]:
        return self._table.members()

    def member(self, name: str) -> Member | None:
        record = self._table.get(name)
        return None if record is None else record.member

    def local_member(self) -> Member:
        return self._table.records[self.name].member

    def num_nodes(self) -> int:
        """Serf's member count (failed and left tombstones included), as serf NumNodes."""
        return max(1, len(self._table))

    def intent_pending(self, node: str) -> bool:
        """An intent about ``node`` is buffered, waiting for memberlist's news of it."""
        return self._intents.recent(node) is not None

    def restore_clocks(self, member: int, event: int, query: int) -> None:
        """Resume from a snapshot: witness the saved clocks and ignore what came before.

        As Serf after a restart: events and queries at or before the saved clocks were
        already handled by the previous run, so they are not delivered again.
        """
        self.member_clock.witness(member)
        self.event_clock.witness(event)
        self.query_clock.witness(query)
        self._events.min_time = max(self._events.min_time, event + 1)
        seen = self._queries.seen
        seen.min_time = max(seen.min_time, query + 1)

    def recent_events(self) -> list[UserEvent]:
        """The user events still in the dedupe buffer, oldest Lamport time first."""
        return self._events.recent()

    # -- user events -------------------------------------------------------------

    def user_event(self, name: str, payload: bytes = b"", coalesce: bool = False) -> int:
        """Broadcast a user event; its Lamport time. Size limits as serf UserEvent."""
        self._require_alive()
        limit = self.profile.user_event_size_limit
        before = len(name.encode()) + len(payload)
        if before > limit:
            raise UserEventTooLargeError(
                f"user event exceeds configured limit of {limit} bytes before encoding"
            )
        if before > USER_EVENT_SIZE_LIMIT_MAX:
            raise UserEventTooLargeError(
                f"user event exceeds sane limit of {USER_EVENT_SIZE_LIMIT_MAX} bytes"
            )
        message = sm.SerfUserEvent(self.event_clock.time, name, payload, coalesce)
        raw = message.to_bytes()
        if len(raw) > limit:
            raise UserEventTooLargeError(
                f"encoded user event exceeds configured limit of {limit} bytes after encoding"
            )
        if len(raw) > USER_EVENT_SIZE_LIMIT_MAX:
            raise UserEventTooLargeError(
                f"encoded user event exceeds limit of {USER_EVENT_SIZE_LIMIT_MAX} bytes"
            )
        self.event_clock.increment()
        self.handle_user_event(message)
        self.event_queue.queue(Broadcast(raw))
        self.news_queued()
        return message.ltime

    def handle_user_event(self, message: sm.SerfUserEvent) -> bool:
        """A user event heard (or sent by us): deliver it if new; whether to rebroadcast."""
        event = UserEvent(message.ltime, message.name, message.payload or b"", message.cc)
        if not self._events.accept(self.event_clock, event):
            return False
        self.stats["events"] += 1
        self._table.emit(event)
        return True

    # -- queries -----------------------------------------------------------------

    def default_query_timeout(self) -> float:
        return self._queries.default_timeout()

    def start_query(
        self,
        name: str,
        payload: bytes = b"",
        timeout: float | None = None,
        filter_nodes: Sequence[str] = (),
        filter_tags: Mapping[str, str] | None = None,
        request_ack: bool = False,
        relay_factor: int = 0,
    ) -> QueryResult:
        """Broadcast a query and return its (still filling) result at once."""
        self._require_alive()
        return self._queries.start(
            name, payload, timeout, filter_nodes, filter_tags, request_ack, relay_factor
        )

    async def query(
        self,
        name: str,
        payload: bytes = b"",
        timeout: float | None = None,
        filter_nodes: Sequence[str] = (),
        filter_tags: Mapping[str, str] | None = None,
        request_ack: bool = False,
        relay_factor: int = 0,
    ) -> QueryResult:
        """Query the cluster; returns when every expected node answered or at the timeout.

        Expected responders are the members alive now that match the filters (by tags as
        this node knows them); members that fail or leave meanwhile are no longer
        waited for. A node whose responder returns None never answers, so a query to
        it runs to the timeout, as in Serf.
        """
        result = self.start_query(
            name, payload, timeout, filter_nodes, filter_tags, request_ack, relay_factor
        )
        return await result.wait()

    # -- NodeDelegate (serf_delegate does the work) --------------------------------

    def node_meta(self, limit: int) -> bytes:
        if len(self._meta) > limit:
            raise TagsTooLargeError(f"encoded tags take {len(self._meta)} bytes, over {limit}")
        return self._meta

    def notify_msg(self, payload: bytes) -> None:
        """A Serf message from a memberlist user message (type byte 8 removed)."""
        self._delegate.notify_msg(payload)

    def get_broadcasts(self, overhead: int, limit: int) -> list[bytes]:
        """Intents first, then queries, then user events, as serf's delegate."""
        return self._delegate.get_broadcasts(overhead, limit)

    def local_state(self, join: bool) -> bytes:
        return self._delegate.local_state(join)

    def merge_remote_state(self, state: bytes, join: bool) -> None:
        self._delegate.merge_remote_state(state, join)

    def ack_payload(self) -> bytes | None:
        return self.coordinates.ack_payload()

    def notify_ping_complete(self, state: NodeState, rtt: float, payload: bytes | None) -> None:
        self.coordinates.ping_complete(state.name, rtt, payload)

    def notify_conflict(self, existing: NodeState, other: NodeState) -> None:
        self.conflicts.notify(existing, other)

    def notify_join(self, state: NodeState) -> None:
        self._delegate.notify_join(state)

    def notify_leave(self, state: NodeState) -> None:
        self._delegate.notify_leave(state)

    def notify_update(self, state: NodeState) -> None:
        self._delegate.notify_update(state)

    # -- helpers -------------------------------------------------------------------

    def news_queued(self) -> None:
        """A Serf broadcast was queued: the node may gossip it at once (``gossip_on_news``)."""
        if self._node is not None:
            self._node.gossip_soon()

    def _forget_reaped(self, event: SerfEvent) -> None:
        if isinstance(event, MemberEvent) and event.type == EventType.MEMBER_REAP:
            self.coordinates.forget(event.member.name)

    def decode_tags(self, meta: bytes) -> dict[str, str]:
        """Tags from a member's node meta; bad meta is counted, logged and read as none."""
        try:
            return wire.decode_tags(meta)
        except (MalformedDataError, ValueError) as exc:
            self.stats["bad_tags"] += 1
            log.warning("serf %s: failed to decode tags: %s", self.name, exc)
            return {}

    def _require_alive(self) -> None:
        if self.state != SerfState.ALIVE:
            raise SerfStateError(f"serf is {self.state.value}")

    def _encode_tags(self, tags: Mapping[str, str]) -> bytes:
        try:
            return wire.encode_tags(tags)
        except ValueError as exc:
            raise TagsTooLargeError(str(exc)) from None

    def _new_future(self) -> asyncio.Future[None]:
        return asyncio.get_running_loop().create_future()

    async def _wait(self, future: asyncio.Future[None], timeout: float, what: str) -> None:
        """Until ``future`` is done or ``timeout`` has passed on the node's clock."""
        self._timer_seq += 1
        key = (what, self._timer_seq)
        self.clock.call_later(key, timeout, lambda _: _set(future))
        try:
            await future
        finally:
            self.clock.cancel(key)


def _set(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _setter(future: asyncio.Future[None]) -> Callable[[], None]:
    return lambda: _set(future)
