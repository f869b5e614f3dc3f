"""Serf queries: sending one and collecting its answers, answering others', relaying.

Owns serf/query.go (``QueryParam``, ``QueryResponse``, filters ``filterNodeType`` and
``filterTagType``) and the query halves of serf/serf.go (``Query``, ``handleQuery``,
``handleQueryResponse``, ``relayResponse``) with serf/messages.go's relay envelope:

* origin side: :class:`QueryResult` collects acks and responses that come back by
  direct UDP until the timeout (``DefaultQueryTimeout``) or, unlike Serf, *early* when
  every expected responder has answered (members that fail or leave meanwhile are no
  longer waited for);
* receiving side: Lamport dedupe (``QueryBuffer``), node/tag filters, acks, the one
  responder callback, the internal ``_serf_ping`` and ``internal_handlers`` for other
  ``_serf_*`` queries (key rotation registers there), response size limits, relayed
  responses, and forwarding relay envelopes addressed through us.

Must not import :mod:`pysyncer.gossip.serf` at run time (the Serf composes this part)
nor the other Serf parts.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pysyncer._core import wire
from pysyncer.errors import MalformedDataError
from pysyncer.gossip import messages as m
from pysyncer.gossip import serf_messages as sm
from pysyncer.gossip.broadcast import Broadcast
from pysyncer.gossip.lamport import QueryBuffer
from pysyncer.gossip.serf_model import (
    Member,
    MemberStatus,
    MemberTable,
    QueryEvent,
    QueryTooLargeError,
)
from pysyncer.gossip.timing import default_query_timeout
from pysyncer.supervisor import tolerate

if TYPE_CHECKING:
    from pysyncer.gossip.serf import Serf

__all__ = [
    "INTERNAL_QUERY_PREFIX",
    "InternalHandler",
    "QueryResult",
    "Responder",
    "SerfQueries",
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

Responder = Callable[[str, bytes], bytes | None]
"""Answers one user query (name, payload) with a response payload, or None for no answer."""

InternalHandler = Callable[[sm.SerfQuery], bytes | None]
"""Answers one internal (``_serf_*``) query with a raw response payload, or None."""


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


def _member_matches(member: Member, nodes: Sequence[str], tags: Mapping[str, str]) -> bool:
    if nodes and member.name not in nodes:
        return False
    return all(_tags_match(member.tags, tag, expr) for tag, expr in tags.items())


# -- one query's answers ---------------------------------------------------------------


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


# -- the part -----------------------------------------------------------------------


class SerfQueries:
    """The queries of one Serf: those it started (pending) and those it hears."""

    def __init__(self, serf: Serf, table: MemberTable) -> None:
        self._serf = serf
        self._table = table
        self._seen = QueryBuffer(serf.profile.query_buffer)
        self._pending: dict[int, QueryResult] = {}

    @property
    def seen(self) -> QueryBuffer:
        """The Lamport dedupe buffer of queries heard (a snapshot restore moves its floor)."""
        return self._seen

    def default_timeout(self) -> float:
        """serf ``DefaultQueryTimeout`` for the cluster size memberlist sees now."""
        serf = self._serf
        n = len(serf.node.members()) if serf.attached else serf.num_nodes()
        return default_query_timeout(
            serf.profile.gossip_interval, n, serf.profile.query_timeout_mult
        )

    # -- origin ------------------------------------------------------------------

    def start(
        self,
        name: str,
        payload: bytes,
        timeout: float | None,
        filter_nodes: Sequence[str],
        filter_tags: Mapping[str, str] | None,
        request_ack: bool,
        relay_factor: int,
    ) -> QueryResult:
        """Broadcast a query and return its (still filling) result at once."""
        serf = self._serf
        if not 0 <= relay_factor <= 255:
            raise QueryTooLargeError(f"relay factor {relay_factor} is not in 0..255")
        if timeout is None or timeout <= 0:
            timeout = self.default_timeout()
        filter_tags = dict(filter_tags or {})
        filters = []
        if filter_nodes:
            filters.append(encode_node_filter(filter_nodes))
        filters += [encode_tag_filter(tag, expr) for tag, expr in filter_tags.items()]
        local = serf.node.membership.local
        ltime = serf.query_clock.time
        query = sm.SerfQuery(
            ltime=ltime,
            id=serf.rng.getrandbits(31),
            addr=local.addr,
            port=local.port,
            source_node=serf.name,
            filters=tuple(filters) or None,
            flags=int(sm.QueryFlag.ACK) if request_ack else 0,
            relay_factor=relay_factor,
            timeout=round(timeout * _NS),
            name=name,
            payload=payload,
        )
        raw = query.to_bytes()
        if len(raw) > serf.profile.query_size_limit:
            raise QueryTooLargeError(
                f"query exceeds limit of {serf.profile.query_size_limit} bytes"
            )
        now = serf.clock.now()
        expected = {
            member.name
            for member in self._table.members(MemberStatus.ALIVE)
            if _member_matches(member, filter_nodes, filter_tags)
        }
        result = QueryResult(name, ltime, query.id, now, now + timeout, request_ack, expected)
        old = self._pending.pop(ltime, None)
        if old is not None:
            old._finish(now, early=False)
        self._pending[ltime] = result
        serf.clock.call_later(("serf-query", ltime), timeout, self._timeout)
        self.handle_query(query)
        serf.query_queue.queue(Broadcast(raw))
        serf.news_queued()
        self._check_done(result)
        return result

    def finish_all(self) -> None:
        """Finish every pending query now (at shutdown)."""
        for ltime, query in list(self._pending.items()):
            self._serf.clock.cancel(("serf-query", ltime))
            query._finish(self._serf.clock.now(), early=False)
        self._pending.clear()

    def member_gone(self, name: str) -> None:
        """A member failed or left: pending queries stop waiting for its answer."""
        for query in list(self._pending.values()):
            if name in query.expected and name not in query.responses:
                query.expected.discard(name)
                self._check_done(query)

    def _timeout(self, key: Hashable) -> None:
        assert isinstance(key, tuple)
        query = self._pending.pop(key[1], None)
        if query is not None:
            query._finish(self._serf.clock.now(), early=False)

    def _check_done(self, query: QueryResult) -> None:
        if not query.finished and query.all_answered():
            self._pending.pop(query.ltime, None)
            self._serf.clock.cancel(("serf-query", query.ltime))
            query._finish(self._serf.clock.now(), early=True)

    # -- receiving -------------------------------------------------------------------

    def handle_query(self, query: sm.SerfQuery) -> bool:
        """A query heard (or sent by us); whether to rebroadcast it."""
        serf = self._serf
        if not self._seen.accept(serf.query_clock, query.ltime, query.id):
            return False
        serf.stats["queries"] += 1
        rebroadcast = not query.flags & sm.QueryFlag.NO_BROADCAST
        if not self._should_process(query.filters or ()):
            return rebroadcast
        if query.flags & sm.QueryFlag.ACK:
            ack = sm.SerfQueryResponse(
                query.ltime, query.id, serf.name, int(sm.QueryFlag.ACK), None
            )
            self._send_response(query, ack)
        payload = query.payload or b""
        if query.name.startswith(INTERNAL_QUERY_PREFIX):
            self._handle_internal(query)
            return rebroadcast
        self._table.emit(QueryEvent(query.ltime, query.id, query.name, payload, query.source_node))
        answer = None
        if serf.responder is not None:
            try:
                answer = serf.responder(query.name, payload)
            except Exception as exc:
                tolerate("serf-query-responder", exc, level=logging.ERROR, trace=True)
                serf.stats["responder_errors"] += 1
        if answer is not None:
            response = sm.SerfQueryResponse(query.ltime, query.id, serf.name, 0, answer)
            if len(response.to_bytes()) > serf.profile.query_response_size_limit:
                serf.stats["responses_too_large"] += 1
                log.warning(
                    "serf %s: response to %s exceeds %d bytes, not sent",
                    serf.name,
                    query.name,
                    serf.profile.query_response_size_limit,
                )
                answer = None
            else:
                self._send_response(query, response)
        if answer is None and query.source_node == serf.name:
            pending = self._pending.get(query.ltime)
            if pending is not None and pending.id == query.id:
                pending.expected.discard(serf.name)  # we know we will not answer
        return rebroadcast

    def handle_response(self, response: sm.SerfQueryResponse) -> None:
        """An ack or a response to one of our queries (serf handleQueryResponse)."""
        stats = self._serf.stats
        query = self._pending.get(response.ltime)
        if query is None or query.id != response.id:
            stats["responses_unknown_query"] += 1
            return
        if query.finished:
            return
        if response.flags & sm.QueryFlag.ACK:
            if response.from_node in query.acks:
                stats["query_duplicate_acks"] += 1
                return
            query.acks.add(response.from_node)
        else:
            if response.from_node in query.responses:
                stats["query_duplicate_responses"] += 1
                return
            query.responses[response.from_node] = response.payload or b""
        self._check_done(query)

    def forward_relay(self, payload: bytes) -> None:
        """Pass on a relay envelope (type 9) to the query origin it names."""
        serf = self._serf
        header, inner = sm.decode_relay(payload)
        if len(header.dest_ip) not in (4, 16):
            raise MalformedDataError("relay destination is not an IP address")
        target = serf.node.membership.node_map.get(header.dest_name)
        address = (m.ip_text(header.dest_ip), header.dest_port)
        serf.node.send_packet(address, m.serf_user_msg(inner), target)
        serf.stats["relays_forwarded"] += 1

    def _handle_internal(self, query: sm.SerfQuery) -> None:
        serf = self._serf
        if query.name == _PING_QUERY:
            return  # the ack (when requested) is the answer
        handler = serf.internal_handlers.get(query.name)
        if handler is not None:
            try:
                answer = handler(query)
            except Exception as exc:
                tolerate("serf-internal-query", exc, level=logging.ERROR, trace=True)
                serf.stats["responder_errors"] += 1
                return
            if answer is not None:
                response = sm.SerfQueryResponse(query.ltime, query.id, serf.name, 0, answer)
                if len(response.to_bytes()) > serf.profile.query_response_size_limit:
                    serf.stats["responses_too_large"] += 1
                    log.error("serf %s: answer to %s is too large", serf.name, query.name)
                    return
                self._send_response(query, response)
            return
        serf.stats["internal_queries_unhandled"] += 1
        log.debug("serf %s: unhandled internal query %s", serf.name, query.name)

    def _should_process(self, filters: Iterable[bytes]) -> bool:
        serf = self._serf
        for raw in filters:
            try:
                decoded = decode_filter(raw)
            except MalformedDataError as exc:
                log.warning("serf %s: bad query filter: %s", serf.name, exc)
                return False
            if isinstance(decoded, list):
                if serf.name not in decoded:
                    return False
            elif not _tags_match(serf.tags, decoded[1], decoded[2]):
                return False
        return True

    def _send_response(self, query: sm.SerfQuery, response: sm.SerfQueryResponse) -> None:
        serf = self._serf
        if query.source_node == serf.name:
            self.handle_response(response)
            return
        raw = response.to_bytes()
        if len(query.addr) not in (4, 16):
            serf.stats["queries_bad_address"] += 1
            return
        address = (m.ip_text(query.addr), query.port)
        target = serf.node.membership.node_map.get(query.source_node)
        serf.node.send_packet(address, m.serf_user_msg(raw), target)
        if query.relay_factor:
            self._relay(query, raw)

    def _relay(self, query: sm.SerfQuery, raw: bytes) -> None:
        """Also send the response through ``relay_factor`` random members (relayResponse)."""
        serf = self._serf
        if len(self._table) < query.relay_factor + 1:
            return
        header = sm.RelayHeader(query.addr, query.port, "", query.source_node)
        relayed = sm.encode_relay(header, raw)
        if len(relayed) > serf.profile.query_response_size_limit:
            serf.stats["relays_too_large"] += 1
            return
        candidates = [
            member
            for member in self._table.members(MemberStatus.ALIVE)
            if member.protocol_max >= 5 and member.name != serf.name
        ]
        for member in serf.rng.sample(candidates, min(query.relay_factor, len(candidates))):
            target = serf.node.membership.node_map.get(member.name)
            serf.node.send_packet((member.addr, member.port), m.serf_user_msg(relayed), target)
            serf.stats["relays_sent"] += 1
