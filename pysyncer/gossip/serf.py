"""The Serf layer of one gossip node: members with tags, intents, user events, queries.

Owns what HashiCorp Serf adds on top of memberlist, compatible on the wire with real
Serf agents (serf/serf.go, delegate.go, event_delegate.go, query.go, ping_delegate.go):

* the Serf member view (alive / leaving / left / failed, tags decoded from node meta,
  addresses, protocol versions), ordered by the member Lamport clock (``statusLTime``)
  through join and leave *intents*; intents heard before memberlist's own news about a
  node are buffered for ``recent_intent_timeout``; left members stay as tombstones
  until ``tombstone_timeout``, failed ones until ``reconnect_timeout`` (reap timer);
  a random failed member is re-joined now and then (``reconnect_interval``);
* user events (size limits, Lamport dedupe, replay through push/pull);
* queries: origin side (acks and responses that come back by direct UDP, default
  timeout, and, unlike Serf, *early completion* when every expected responder has
  answered), receiving side (dedupe, node/tag filters, acks, one responder callback,
  rebroadcast, relayed responses), the internal ``_serf_ping``, and
  ``internal_handlers`` for other ``_serf_*`` queries (key rotation registers there,
  see :mod:`pysyncer.gossip.keymanager`);
* Serf's push/pull state, its three broadcast queues, and the default Vivaldi
  coordinate it piggybacks on acks.

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
"""

from __future__ import annotations

import asyncio
import enum
import logging
import random
import re
from collections import Counter
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from pysyncer._core import wire
from pysyncer.errors import MalformedDataError, PysyncerError
from pysyncer.gossip import messages as m
from pysyncer.gossip.broadcast import Broadcast, TransmitLimitedQueue
from pysyncer.gossip.clock import Clock
from pysyncer.gossip.lamport import EventBuffer, LamportClock, QueryBuffer, UserEvent
from pysyncer.gossip.membership import NodeState, NodeStatus
from pysyncer.gossip.node import GossipNode, ip_text
from pysyncer.gossip.timing import (
    USER_EVENT_SIZE_LIMIT_MAX,
    GossipProfile,
    default_query_timeout,
    queue_max_depth,
    reconnect_probability,
)

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

INTERNAL_QUERY_PREFIX = "_serf_"
"""Queries with this prefix are Serf's own (serf/internal_query.go), never the user's."""

_PING_QUERY = INTERNAL_QUERY_PREFIX + "ping"
_FILTER_NODE = 0
_FILTER_TAG = 1
_NS = 1_000_000_000

DEFAULT_COORDINATE_PAYLOAD = b"\x01" + wire.pack(
    {"Adjustment": 0.0, "Error": 1.5, "Height": 10.0e-6, "Vec": [0.0] * 8}
)
"""Serf's ack payload: ping version 1 + a fresh Vivaldi coordinate (coordinate.NewCoordinate
with the default config), keys sorted as go-msgpack 0.5 writes them."""


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
Responder = Callable[[str, bytes], bytes | None]
InternalHandler = Callable[[m.SerfQuery], bytes | None]
"""Answers one internal (``_serf_*``) query with a raw response payload, or None."""


@dataclass(slots=True)
class _MemberState:
    member: Member
    status_ltime: int = 0
    leave_time: float = 0.0  # when it became failed or left (tombstone age)


@dataclass(frozen=True, slots=True)
class _Intent:
    kind: m.SerfMessageType
    ltime: int
    seen: float


# -- filters ------------------------------------------------------------------------


def encode_node_filter(nodes: Sequence[str]) -> bytes:
    """A query filter naming the nodes that should answer (serf ``filterNodeType``)."""
    return bytes((_FILTER_NODE,)) + wire.pack(list(nodes))


def encode_tag_filter(tag: str, expr: str) -> bytes:
    """A query filter: the tag must match the regular expression (serf ``filterTag``)."""
    return bytes((_FILTER_TAG,)) + wire.pack({"Expr": expr, "Tag": tag})


def decode_filter(raw: bytes) -> tuple[str, str, str] | list[str]:
    """A node filter as a list of names, a tag filter as ``("tag", tag, expr)``."""
    if not raw:
        raise MalformedDataError("empty query filter")
    body = wire.unpack(raw[1:])
    if raw[0] == _FILTER_NODE:
        if type(body) is not list:
            raise MalformedDataError("node filter is not a list")
        return [_text(item) for item in body]
    if raw[0] == _FILTER_TAG:
        if type(body) is not dict:
            raise MalformedDataError("tag filter is not a map")
        return ("tag", _text(body.get(b"Tag")), _text(body.get(b"Expr")))
    raise MalformedDataError(f"unknown query filter type {raw[0]}")


def _text(value: object) -> str:
    if value is None:
        return ""
    if type(value) is not bytes:
        raise MalformedDataError("filter field is not a string")
    try:
        return value.decode()
    except UnicodeDecodeError:
        raise MalformedDataError("filter field is not UTF-8") from None


def _tags_match(tags: Mapping[str, str], tag: str, expr: str) -> bool:
    """Go ``regexp.MatchString``: an unanchored search; a bad expression never matches."""
    try:
        return re.search(expr, tags.get(tag, "")) is not None
    except re.error:
        return False


# -- queries ------------------------------------------------------------------------


@dataclass(eq=False)
class QueryResult:
    """Acks and responses of one query, by node name; filled until it finishes."""

    name: str
    ltime: int
    id: int
    started: float
    deadline: float
    request_ack: bool
    expected: set[str]
    acks: set[str] = field(default_factory=set)
    responses: dict[str, bytes] = field(default_factory=dict)
    finished_at: float | None = None
    completed_early: bool = False
    _waiters: list[asyncio.Future[None]] = field(default_factory=list, repr=False)

    @property
    def finished(self) -> bool:
        return self.finished_at is not None

    def all_answered(self) -> bool:
        """Every expected responder answered (and acked, when acks were requested)."""
        if not self.expected.issubset(self.responses):
            return False
        return not self.request_ack or self.expected.issubset(self.acks)

    async def wait(self) -> QueryResult:
        """Until the query finishes (early or at its deadline)."""
        if not self.finished:
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            await waiter
        return self

    def _finish(self, now: float, early: bool) -> None:
        if self.finished:
            return
        self.finished_at = now
        self.completed_early = early
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._waiters.clear()


# -- the layer ----------------------------------------------------------------------


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
        self._queries = QueryBuffer(profile.query_buffer)
        self._members: dict[str, _MemberState] = {}
        self._intents: dict[str, _Intent] = {}
        self._pending: dict[int, QueryResult] = {}
        self._observers: list[Observer] = []
        self._ignore_old_events = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._timer_seq = 0
        mult = profile.retransmit_mult
        self.intents = TransmitLimitedQueue(mult, self.num_nodes)
        self.query_queue = TransmitLimitedQueue(mult, self.num_nodes)
        self.event_queue = TransmitLimitedQueue(mult, self.num_nodes)

    # -- wiring and lifecycle ----------------------------------------------------

    def attach(self, node: GossipNode) -> None:
        """Bind the node this Serf is the delegate of (after constructing the node)."""
        if node.delegate is not self:
            raise SerfStateError("attach the node that was built with this Serf as delegate")
        self._node = node

    @property
    def node(self) -> GossipNode:
        if self._node is None:
            raise SerfStateError("Serf.attach(node) was not called")
        return self._node

    def start(self) -> None:
        """Announce our join intent and start the reap, reconnect and queue timers."""
        self._broadcast_join(self.member_clock.time)
        self.clock.call_later(("serf-reap",), self.profile.reap_interval, self._reap_tick)
        self.clock.call_later(
            ("serf-reconnect",), self.profile.reconnect_interval, self._reconnect_tick
        )
        self.clock.call_later(
            ("serf-queue-check",), self.profile.queue_check_interval, self._queue_check_tick
        )

    async def stop(self) -> None:
        """Stop timers and background joins; finish running queries (after leave)."""
        if self.state != SerfState.LEFT:
            log.warning("serf %s: stop without a leave", self.name)
        self.state = SerfState.SHUTDOWN
        for key in (("serf-reap",), ("serf-reconnect",), ("serf-queue-check",)):
            self.clock.cancel(key)
        for ltime, query in list(self._pending.items()):
            self.clock.cancel(("serf-query", ltime))
            query._finish(self.clock.now(), early=False)
        self._pending.clear()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def join(self, addresses: Sequence[tuple[str, int]], ignore_old: bool = False) -> int:
        """memberlist join, then a join intent; ``ignore_old`` skips events sent before."""
        if self.state != SerfState.ALIVE:
            raise SerfStateError("Serf can't join after leave or shutdown")
        self._ignore_old_events = ignore_old
        try:
            joined = await self.node.join(addresses)
        finally:
            self._ignore_old_events = False
        if joined:
            self._broadcast_join(self.member_clock.time)
        return joined

    async def leave(self) -> None:
        """Graceful leave: leave intent, memberlist leave, then LeavePropagateDelay."""
        if self.state == SerfState.LEFT:
            return
        if self.state != SerfState.ALIVE:
            raise SerfStateError(f"leave while {self.state.value}")
        self.state = SerfState.LEAVING
        message = m.SerfLeave(self.member_clock.time, self.name)
        self.member_clock.increment()
        self._handle_leave_intent(message)
        if self._has_alive_members():
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
        message = m.SerfLeave(self.member_clock.time, node, prune)
        self.member_clock.increment()
        self._handle_leave_intent(message)
        if self._has_alive_members():
            self.intents.queue(Broadcast(message.to_bytes(), name=f"intent:{node}"))

    # -- observers, tags, members ------------------------------------------------

    def subscribe(self, observer: Observer) -> Callable[[], None]:
        """Call ``observer`` with every member, user and query event; returns unsubscribe."""
        self._observers.append(observer)

        def unsubscribe() -> None:
            if observer in self._observers:
                self._observers.remove(observer)

        return unsubscribe

    @property
    def tags(self) -> dict[str, str]:
        return dict(self._tags)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        """Replace our tags and advertise them (a new alive with a fresh incarnation)."""
        meta = self._encode_tags(tags)
        self._tags, self._meta = dict(tags), meta
        local = self._members.get(self.name)
        if local is not None:
            local.member = replace(local.member, tags=dict(tags))
            self._emit(MemberEvent(EventType.MEMBER_UPDATE, local.member))
        self.node.update_meta()

    def members(self) -> list[Member]:
        return [state.member for state in self._members.values()]

    def member(self, name: str) -> Member | None:
        state = self._members.get(name)
        return None if state is None else state.member

    def local_member(self) -> Member:
        return self._members[self.name].member

    def num_nodes(self) -> int:
        """Serf's member count (failed and left tombstones included), as serf NumNodes."""
        return max(1, len(self._members))

    def restore_clocks(self, member: int, event: int, query: int) -> None:
        """Resume from a snapshot: witness the saved clocks and ignore what came before.

        As Serf after a restart: events and queries at or before the saved clocks were
        already handled by the previous run, so they are not delivered again.
        """
        self.member_clock.witness(member)
        self.event_clock.witness(event)
        self.query_clock.witness(query)
        self._events.min_time = max(self._events.min_time, event + 1)
        self._queries.min_time = max(self._queries.min_time, query + 1)

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
        message = m.SerfUserEvent(self.event_clock.time, name, payload, coalesce)
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
        self._handle_user_event(message)
        self.event_queue.queue(Broadcast(raw))
        return message.ltime

    # -- queries: origin ---------------------------------------------------------

    def default_query_timeout(self) -> float:
        n = len(self.node.members()) if self._node is not None else self.num_nodes()
        return default_query_timeout(
            self.profile.gossip_interval, n, self.profile.query_timeout_mult
        )

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
        if not 0 <= relay_factor <= 255:
            raise QueryTooLargeError(f"relay factor {relay_factor} is not in 0..255")
        if timeout is None or timeout <= 0:
            timeout = self.default_query_timeout()
        filter_tags = dict(filter_tags or {})
        filters = []
        if filter_nodes:
            filters.append(encode_node_filter(filter_nodes))
        filters += [encode_tag_filter(tag, expr) for tag, expr in filter_tags.items()]
        local = self.node.membership.local
        ltime = self.query_clock.time
        query = m.SerfQuery(
            ltime=ltime,
            id=self.rng.getrandbits(31),
            addr=local.addr,
            port=local.port,
            source_node=self.name,
            filters=tuple(filters) or None,
            flags=int(m.QueryFlag.ACK) if request_ack else 0,
            relay_factor=relay_factor,
            timeout=round(timeout * _NS),
            name=name,
            payload=payload,
        )
        raw = query.to_bytes()
        if len(raw) > self.profile.query_size_limit:
            raise QueryTooLargeError(
                f"query exceeds limit of {self.profile.query_size_limit} bytes"
            )
        now = self.clock.now()
        expected = {
            state.member.name
            for state in self._members.values()
            if state.member.status == MemberStatus.ALIVE
            and self._member_matches(state.member, filter_nodes, filter_tags)
        }
        result = QueryResult(name, ltime, query.id, now, now + timeout, request_ack, expected)
        old = self._pending.pop(ltime, None)
        if old is not None:
            old._finish(now, early=False)
        self._pending[ltime] = result
        self.clock.call_later(("serf-query", ltime), timeout, self._query_timeout)
        self._handle_query(query)
        self.query_queue.queue(Broadcast(raw))
        self._check_done(result)
        return result

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

    def _query_timeout(self, key: Hashable) -> None:
        assert isinstance(key, tuple)
        query = self._pending.pop(key[1], None)
        if query is not None:
            query._finish(self.clock.now(), early=False)

    def _check_done(self, query: QueryResult) -> None:
        if not query.finished and query.all_answered():
            self._pending.pop(query.ltime, None)
            self.clock.cancel(("serf-query", query.ltime))
            query._finish(self.clock.now(), early=True)

    def _member_gone(self, name: str) -> None:
        for query in list(self._pending.values()):
            if name in query.expected and name not in query.responses:
                query.expected.discard(name)
                self._check_done(query)

    def _member_matches(
        self, member: Member, nodes: Sequence[str], tags: Mapping[str, str]
    ) -> bool:
        if nodes and member.name not in nodes:
            return False
        return all(_tags_match(member.tags, tag, expr) for tag, expr in tags.items())

    # -- queries: receiving ------------------------------------------------------

    def _handle_query(self, query: m.SerfQuery) -> bool:
        """A query heard (or sent by us); whether to rebroadcast it."""
        if not self._queries.accept(self.query_clock, query.ltime, query.id):
            return False
        self.stats["queries"] += 1
        rebroadcast = not query.flags & m.QueryFlag.NO_BROADCAST
        if not self._should_process(query.filters or ()):
            return rebroadcast
        if query.flags & m.QueryFlag.ACK:
            ack = m.SerfQueryResponse(query.ltime, query.id, self.name, int(m.QueryFlag.ACK), None)
            self._send_response(query, ack)
        payload = query.payload or b""
        if query.name.startswith(INTERNAL_QUERY_PREFIX):
            self._handle_internal_query(query)
            return rebroadcast
        self._emit(QueryEvent(query.ltime, query.id, query.name, payload, query.source_node))
        answer = None
        if self.responder is not None:
            try:
                answer = self.responder(query.name, payload)
            except Exception:
                log.exception("serf %s: query responder failed on %s", self.name, query.name)
                self.stats["responder_errors"] += 1
        if answer is not None:
            response = m.SerfQueryResponse(query.ltime, query.id, self.name, 0, answer)
            if len(response.to_bytes()) > self.profile.query_response_size_limit:
                self.stats["responses_too_large"] += 1
                log.warning(
                    "serf %s: response to %s exceeds %d bytes, not sent",
                    self.name,
                    query.name,
                    self.profile.query_response_size_limit,
                )
                answer = None
            else:
                self._send_response(query, response)
        if answer is None and query.source_node == self.name:
            pending = self._pending.get(query.ltime)
            if pending is not None and pending.id == query.id:
                pending.expected.discard(self.name)  # we know we will not answer
        return rebroadcast

    def _handle_internal_query(self, query: m.SerfQuery) -> None:
        if query.name == _PING_QUERY:
            return  # the ack (when requested) is the answer
        handler = self.internal_handlers.get(query.name)
        if handler is not None:
            try:
                answer = handler(query)
            except Exception:
                log.exception("serf %s: internal query %s failed", self.name, query.name)
                self.stats["responder_errors"] += 1
                return
            if answer is not None:
                response = m.SerfQueryResponse(query.ltime, query.id, self.name, 0, answer)
                if len(response.to_bytes()) > self.profile.query_response_size_limit:
                    self.stats["responses_too_large"] += 1
                    log.error("serf %s: answer to %s is too large", self.name, query.name)
                    return
                self._send_response(query, response)
            return
        self.stats["internal_queries_unhandled"] += 1
        log.debug("serf %s: unhandled internal query %s", self.name, query.name)

    def _should_process(self, filters: Iterable[bytes]) -> bool:
        for raw in filters:
            try:
                decoded = decode_filter(raw)
            except MalformedDataError as exc:
                log.warning("serf %s: bad query filter: %s", self.name, exc)
                return False
            if isinstance(decoded, list):
                if self.name not in decoded:
                    return False
            elif not _tags_match(self._tags, decoded[1], decoded[2]):
                return False
        return True

    def _send_response(self, query: m.SerfQuery, response: m.SerfQueryResponse) -> None:
        if query.source_node == self.name:
            self._handle_query_response(response)
            return
        raw = response.to_bytes()
        if len(query.addr) not in (4, 16):
            self.stats["queries_bad_address"] += 1
            return
        address = (ip_text(query.addr), query.port)
        target = self.node.membership.node_map.get(query.source_node)
        self.node.send_packet(address, m.serf_user_msg(raw), target)
        if query.relay_factor:
            self._relay(query, raw, address)

    def _relay(self, query: m.SerfQuery, raw: bytes, address: tuple[str, int]) -> None:
        if len(self._members) < query.relay_factor + 1:
            return
        header = m.RelayHeader(query.addr, query.port, "", query.source_node)
        relayed = m.encode_relay(header, raw)
        if len(relayed) > self.profile.query_response_size_limit:
            self.stats["relays_too_large"] += 1
            return
        candidates = [
            s.member
            for s in self._members.values()
            if s.member.status == MemberStatus.ALIVE
            and s.member.protocol_max >= 5
            and s.member.name != self.name
        ]
        for member in self.rng.sample(candidates, min(query.relay_factor, len(candidates))):
            target = self.node.membership.node_map.get(member.name)
            self.node.send_packet((member.addr, member.port), m.serf_user_msg(relayed), target)
            self.stats["relays_sent"] += 1

    def _handle_query_response(self, response: m.SerfQueryResponse) -> None:
        query = self._pending.get(response.ltime)
        if query is None or query.id != response.id:
            self.stats["responses_unknown_query"] += 1
            return
        if query.finished:
            return
        if response.flags & m.QueryFlag.ACK:
            if response.from_node in query.acks:
                self.stats["query_duplicate_acks"] += 1
                return
            query.acks.add(response.from_node)
        else:
            if response.from_node in query.responses:
                self.stats["query_duplicate_responses"] += 1
                return
            query.responses[response.from_node] = response.payload or b""
        self._check_done(query)

    # -- NodeDelegate ------------------------------------------------------------

    def node_meta(self, limit: int) -> bytes:
        if len(self._meta) > limit:
            raise TagsTooLargeError(f"encoded tags take {len(self._meta)} bytes, over {limit}")
        return self._meta

    def notify_msg(self, payload: bytes) -> None:
        """A Serf message from a memberlist user message (type byte 8 removed)."""
        if not payload:
            return
        kind = payload[0]
        try:
            if kind == m.SerfMessageType.RELAY:
                self._forward_relay(payload)
                return
            message = m.decode_serf(payload)
        except MalformedDataError as exc:
            self.stats["messages_dropped"] += 1
            log.debug("serf %s: dropped message type %d: %s", self.name, kind, exc)
            return
        rebroadcast, queue, name = False, self.intents, None
        if isinstance(message, m.SerfLeave):
            rebroadcast, name = self._handle_leave_intent(message), f"intent:{message.node}"
        elif isinstance(message, m.SerfJoin):
            rebroadcast, name = self._handle_join_intent(message), f"intent:{message.node}"
        elif isinstance(message, m.SerfUserEvent):
            rebroadcast, queue = self._handle_user_event(message), self.event_queue
        elif isinstance(message, m.SerfQuery):
            rebroadcast, queue = self._handle_query(message), self.query_queue
        elif isinstance(message, m.SerfQueryResponse):
            self._handle_query_response(message)
        else:
            self.stats["messages_unexpected"] += 1
        if rebroadcast:
            queue.queue(Broadcast(bytes(payload), name=name))

    def _forward_relay(self, payload: bytes) -> None:
        header, inner = m.decode_relay(payload)
        if len(header.dest_ip) not in (4, 16):
            raise MalformedDataError("relay destination is not an IP address")
        target = self.node.membership.node_map.get(header.dest_name)
        address = (ip_text(header.dest_ip), header.dest_port)
        self.node.send_packet(address, m.serf_user_msg(inner), target)
        self.stats["relays_forwarded"] += 1

    def get_broadcasts(self, overhead: int, limit: int) -> list[bytes]:
        """Intents first, then queries, then user events, as serf's delegate.

        Raw Serf messages: the node frames each as a memberlist user message (and
        already counts that byte in ``overhead``), as memberlist's getBroadcasts does.
        """
        out: list[bytes] = []
        used = 0
        for queue in (self.intents, self.query_queue, self.event_queue):
            chosen = queue.get_broadcasts(overhead, limit - used)
            used += sum(overhead + len(x) for x in chosen)
            out += chosen
        return out

    def local_state(self, join: bool) -> bytes:
        slots: list[m.UserEvents | None] = [None] * self._events.size
        grouped: dict[int, list[m.UserEvent]] = {}
        for event in self._events.recent():
            grouped.setdefault(event.ltime, []).append(m.UserEvent(event.name, event.payload))
        for ltime, events in grouped.items():
            slots[ltime % self._events.size] = m.UserEvents(ltime, tuple(events))
        state = m.SerfPushPull(
            ltime=self.member_clock.time,
            status_ltimes={name: s.status_ltime for name, s in self._members.items()},
            left_members=tuple(
                name for name, s in self._members.items() if s.member.status == MemberStatus.LEFT
            ),
            event_ltime=self.event_clock.time,
            events=tuple(slots),
            query_ltime=self.query_clock.time,
        )
        return state.to_bytes()

    def merge_remote_state(self, state: bytes, join: bool) -> None:
        try:
            remote = m.SerfPushPull.from_bytes(state)
        except MalformedDataError as exc:
            self.stats["push_pull_dropped"] += 1
            log.warning("serf %s: bad remote state: %s", self.name, exc)
            return
        if remote.ltime > 0:
            self.member_clock.witness(remote.ltime - 1)
        if remote.event_ltime > 0:
            self.event_clock.witness(remote.event_ltime - 1)
        if remote.query_ltime > 0:
            self.query_clock.witness(remote.query_ltime - 1)
        left = set(remote.left_members)
        for name in remote.left_members:
            # The leave came after the join that put it on the list: one past its time.
            self._handle_leave_intent(m.SerfLeave(remote.status_ltimes.get(name, 0) + 1, name))
        for name, ltime in remote.status_ltimes.items():
            if name not in left:
                self._handle_join_intent(m.SerfJoin(ltime, name))
        if join and self._ignore_old_events:
            self._events.min_time = max(self._events.min_time, remote.event_ltime)
        for slot in remote.events:
            if slot is None:
                continue
            for event in slot.events:
                self._handle_user_event(m.SerfUserEvent(slot.ltime, event.name, event.payload))

    def ack_payload(self) -> bytes | None:
        return DEFAULT_COORDINATE_PAYLOAD

    def notify_join(self, state: NodeState) -> None:
        versions = _versions(state.vsn)
        tags = self._decode_tags(state.meta)
        existing = self._members.get(state.name)
        if existing is None:
            status, status_ltime = MemberStatus.ALIVE, 0
            intent = self._intents.get(state.name)
            if intent is not None:
                status_ltime = intent.ltime
                if intent.kind == m.SerfMessageType.LEAVE:
                    status = MemberStatus.LEAVING
            member = Member(state.name, ip_text(state.addr), state.port, tags, status, *versions)
            existing = self._members[state.name] = _MemberState(member, status_ltime)
        else:
            existing.member = Member(
                state.name, ip_text(state.addr), state.port, tags, MemberStatus.ALIVE, *versions
            )
            existing.leave_time = 0.0
        self._emit(MemberEvent(EventType.MEMBER_JOIN, existing.member))

    def notify_leave(self, state: NodeState) -> None:
        existing = self._members.get(state.name)
        if existing is None:
            return
        status = existing.member.status
        if status == MemberStatus.LEAVING or (
            status == MemberStatus.ALIVE and state.status == NodeStatus.LEFT
        ):
            # Serf proper needs the leave intent to say "left"; memberlist's own graceful
            # leave (a dead message from the node itself) is the same news, so take it.
            new, event = MemberStatus.LEFT, EventType.MEMBER_LEAVE
        elif status == MemberStatus.ALIVE:
            new, event = MemberStatus.FAILED, EventType.MEMBER_FAILED
        else:
            log.debug("serf %s: leave of %s while %s", self.name, state.name, status.value)
            return
        existing.member = replace(existing.member, status=new)
        existing.leave_time = self.clock.now()
        self._emit(MemberEvent(event, existing.member))
        self._member_gone(state.name)

    def notify_update(self, state: NodeState) -> None:
        existing = self._members.get(state.name)
        if existing is None:
            return
        existing.member = Member(
            state.name,
            ip_text(state.addr),
            state.port,
            self._decode_tags(state.meta),
            existing.member.status,
            *_versions(state.vsn),
        )
        self._emit(MemberEvent(EventType.MEMBER_UPDATE, existing.member))

    # -- intents -----------------------------------------------------------------

    def _broadcast_join(self, ltime: int) -> None:
        message = m.SerfJoin(ltime, self.name)
        self.member_clock.witness(ltime)
        self._handle_join_intent(message)
        self.intents.queue(Broadcast(message.to_bytes(), name=f"intent:{self.name}"))

    def _upsert_intent(self, node: str, kind: m.SerfMessageType, ltime: int) -> bool:
        known = self._intents.get(node)
        if known is None or ltime > known.ltime:
            self._intents[node] = _Intent(kind, ltime, self.clock.now())
            return True
        return False

    def _handle_join_intent(self, message: m.SerfJoin) -> bool:
        self.member_clock.witness(message.ltime)
        state = self._members.get(message.node)
        if state is None:
            return self._upsert_intent(message.node, m.SerfMessageType.JOIN, message.ltime)
        if message.ltime <= state.status_ltime:
            return False
        state.status_ltime = message.ltime
        if state.member.status == MemberStatus.LEAVING:
            state.member = replace(state.member, status=MemberStatus.ALIVE)
        return True

    def _handle_leave_intent(self, message: m.SerfLeave) -> bool:
        self.member_clock.witness(message.ltime)
        state = self._members.get(message.node)
        if state is None:
            return self._upsert_intent(message.node, m.SerfMessageType.LEAVE, message.ltime)
        if message.ltime <= state.status_ltime:
            return False
        if message.node == self.name and self.state == SerfState.ALIVE:
            log.debug("serf %s: refuting an older leave intent", self.name)
            self._broadcast_join(self.member_clock.time)
            return False
        state.status_ltime = message.ltime  # also when the status stays (consul #8179)
        status = state.member.status
        if status == MemberStatus.ALIVE:
            state.member = replace(state.member, status=MemberStatus.LEAVING)
        elif status == MemberStatus.FAILED:
            state.member = replace(state.member, status=MemberStatus.LEFT)
            self._emit(MemberEvent(EventType.MEMBER_LEAVE, state.member))
        elif status not in (MemberStatus.LEAVING, MemberStatus.LEFT):
            return False
        if message.prune:
            self._prune(state)
        return True

    def _prune(self, state: _MemberState) -> None:
        name = state.member.name
        if state.member.status == MemberStatus.LEAVING:
            delay = self.profile.broadcast_timeout + self.profile.leave_propagate_delay
            self.clock.call_later(("serf-prune", name), delay, lambda _: self._erase(name))
        else:
            self._erase(name)

    def _erase(self, name: str) -> None:
        state = self._members.pop(name, None)
        if state is not None:
            self._emit(MemberEvent(EventType.MEMBER_REAP, state.member))

    def _has_alive_members(self) -> bool:
        return any(
            s.member.status == MemberStatus.ALIVE and name != self.name
            for name, s in self._members.items()
        )

    # -- user events: receiving ----------------------------------------------------

    def _handle_user_event(self, message: m.SerfUserEvent) -> bool:
        event = UserEvent(message.ltime, message.name, message.payload or b"", message.cc)
        if not self._events.accept(self.event_clock, event):
            return False
        self.stats["events"] += 1
        self._emit(event)
        return True

    # -- timers --------------------------------------------------------------------

    def _reap_tick(self, _: Hashable) -> None:
        if self.state == SerfState.SHUTDOWN:
            return
        self.clock.call_later(("serf-reap",), self.profile.reap_interval, self._reap_tick)
        self.reap()

    def reap(self) -> None:
        """Erase tombstones and failed members past their timeouts; forget old intents."""
        now = self.clock.now()
        for name, state in list(self._members.items()):
            status = state.member.status
            if status == MemberStatus.FAILED:
                timeout = self.profile.reconnect_timeout
            elif status == MemberStatus.LEFT:
                timeout = self.profile.tombstone_timeout
            else:
                continue
            if now - state.leave_time > timeout:
                log.info("serf %s: EventMemberReap: %s", self.name, name)
                self._erase(name)
        for node, intent in list(self._intents.items()):
            if now - intent.seen > self.profile.recent_intent_timeout:
                del self._intents[node]

    def _reconnect_tick(self, _: Hashable) -> None:
        if self.state == SerfState.SHUTDOWN:
            return
        self.clock.call_later(
            ("serf-reconnect",), self.profile.reconnect_interval, self._reconnect_tick
        )
        failed = [
            s.member for s in self._members.values() if s.member.status == MemberStatus.FAILED
        ]
        if not failed or self._node is None:
            return
        left = sum(1 for s in self._members.values() if s.member.status == MemberStatus.LEFT)
        alive = len(self._members) - len(failed) - left
        if self.rng.random() > reconnect_probability(len(failed), alive):
            return
        target = self.rng.choice(failed)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self.stats["reconnects"] += 1
        task = loop.create_task(self._quiet_join((target.addr, target.port)))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _quiet_join(self, address: tuple[str, int]) -> None:
        await self.node.join([address])

    def _queue_check_tick(self, _: Hashable) -> None:
        if self.state == SerfState.SHUTDOWN:
            return
        self.clock.call_later(
            ("serf-queue-check",), self.profile.queue_check_interval, self._queue_check_tick
        )
        limit = queue_max_depth(
            self.profile.max_queue_depth, self.profile.min_queue_depth, len(self._members)
        )
        for name, queue in (
            ("intent", self.intents),
            ("event", self.event_queue),
            ("query", self.query_queue),
        ):
            if len(queue) >= self.profile.queue_depth_warning:
                log.warning("serf %s: %s queue depth: %d", self.name, name, len(queue))
            if len(queue) > limit:
                self.stats[f"{name}_queue_pruned"] += queue.prune(limit)

    # -- helpers -------------------------------------------------------------------

    def _require_alive(self) -> None:
        if self.state != SerfState.ALIVE:
            raise SerfStateError(f"serf is {self.state.value}")

    def _encode_tags(self, tags: Mapping[str, str]) -> bytes:
        try:
            return wire.encode_tags(tags)
        except ValueError as exc:
            raise TagsTooLargeError(str(exc)) from None

    def _decode_tags(self, meta: bytes) -> dict[str, str]:
        try:
            return wire.decode_tags(meta)
        except (MalformedDataError, ValueError) as exc:
            self.stats["bad_tags"] += 1
            log.warning("serf %s: failed to decode tags: %s", self.name, exc)
            return {}

    def _emit(self, event: SerfEvent) -> None:
        for observer in list(self._observers):
            try:
                observer(event)
            except Exception:
                self.stats["observer_errors"] += 1
                log.exception("serf %s: event observer failed", self.name)

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


def _versions(vsn: bytes) -> tuple[int, int, int, int, int, int]:
    padded = bytes(vsn[:6]).ljust(6, b"\0")
    return padded[0], padded[1], padded[2], padded[3], padded[4], padded[5]
