"""Name conflicts, resolved as Serf does: the ``_serf_conflict`` query and a majority vote.

Owns serf/serf.go ``handleNodeConflict`` / ``resolveNodeConflict`` and
serf/internal_query.go ``handleConflict``. When memberlist hears another address claim
a name it knows at a live address, it reports a conflict. About another member, that is
only logged. About this node, it asks the pool with the internal query
``_serf_conflict`` (payload: our name) where that name lives; every member answers with
the member record it holds for the name (message type 6, a go-msgpack ``Member``: Name,
Addr, Port, Tags, Status, six protocol versions), or nil when it knows none, and never
about itself. If fewer than a majority (``responses // 2 + 1``) of the answers give our
address and port, this node lost the vote and shuts down, without a leave, as Serf does.

The :class:`~pysyncer.gossip.serf.Serf` composes this part; it must not import it at
run time nor reach the network except through the Serf's queries.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from pysyncer._core import wire
from pysyncer.errors import MalformedDataError
from pysyncer.gossip import messages as m
from pysyncer.gossip import serf_messages as sm
from pysyncer.gossip.membership import NodeState
from pysyncer.gossip.serf_model import MemberStatus, MemberTable

if TYPE_CHECKING:
    from pysyncer.gossip.serf import Serf

__all__ = ["CONFLICT_QUERY", "SerfConflicts", "decode_conflict_answer", "encode_conflict_answer"]

log = logging.getLogger(__name__)

CONFLICT_QUERY = "_serf_conflict"
_STATUS_NUMBERS = {  # serf MemberStatus as Go numbers it
    MemberStatus.NONE: 0,
    MemberStatus.ALIVE: 1,
    MemberStatus.LEAVING: 2,
    MemberStatus.LEFT: 3,
    MemberStatus.FAILED: 4,
}


def encode_conflict_answer(table: MemberTable, name: str) -> bytes:
    """Our answer to a conflict query about ``name``: type 6 + the Member, or nil."""
    record = table.get(name)
    body: object = None
    if record is not None:
        member = record.member
        body = {
            "Name": member.name,
            "Addr": m.ip_bytes(member.addr),
            "Port": member.port,
            "Tags": dict(member.tags),
            "Status": _STATUS_NUMBERS[member.status],
            "ProtocolMin": member.protocol_min,
            "ProtocolMax": member.protocol_max,
            "ProtocolCur": member.protocol_cur,
            "DelegateMin": member.delegate_min,
            "DelegateMax": member.delegate_max,
            "DelegateCur": member.delegate_cur,
        }
    return bytes((sm.SerfMessageType.CONFLICT_RESPONSE,)) + wire.pack(body)


def decode_conflict_answer(payload: bytes) -> tuple[str, int] | None:
    """The address and port one answer gives (None for nil); MalformedDataError if bad."""
    if not payload or payload[0] != sm.SerfMessageType.CONFLICT_RESPONSE:
        raise MalformedDataError("not a conflict response")
    body = wire.unpack(payload[1:])
    if body is None:
        return None
    if type(body) is not dict:
        raise MalformedDataError("conflict response is not a member")
    addr, port = body.get(b"Addr"), body.get(b"Port")
    if type(addr) is not bytes or type(port) is not int:
        raise MalformedDataError("conflict response has no address")
    try:
        return str(ipaddress.ip_address(addr)), port
    except ValueError:
        raise MalformedDataError("conflict response address is not an IP") from None


def _same_address(a: tuple[str, int], b: tuple[str, int]) -> bool:
    """Equal IPs (an IPv4 address and its IPv4-mapped IPv6 form are equal) and ports."""

    def plain(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
        ip = ipaddress.ip_address(host)
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            return ip.ipv4_mapped
        return ip

    return a[1] == b[1] and plain(a[0]) == plain(b[0])


class SerfConflicts:
    """Answers ``_serf_conflict`` for others; resolves a conflict about ourselves."""

    def __init__(self, serf: Serf, table: MemberTable) -> None:
        self._serf = serf
        self._table = table
        self._resolving: asyncio.Task[bool] | None = None
        self.lost = False  # we lost a vote and shut down
        self.on_lost: Callable[[], None] | None = None  # told when that happens

    def register(self) -> None:
        self._serf.internal_handlers[CONFLICT_QUERY] = self.answer

    def answer(self, query: sm.SerfQuery) -> bytes | None:
        """``handleConflict``: where we believe the named node is; silent about ourselves."""
        try:
            name = (query.payload or b"").decode()
        except UnicodeDecodeError:
            return None
        if name == self._serf.name:
            return None
        return encode_conflict_answer(self._table, name)

    def notify(self, existing: NodeState, other: NodeState) -> None:
        """memberlist saw ``other``'s address claim ``existing``'s name."""
        serf = self._serf
        other_at = f"{m.ip_text(other.addr)}:{other.port}"
        if existing.name != serf.name:
            log.warning(
                "serf %s: name conflict for %r: both %s:%d and %s claim it",
                serf.name,
                existing.name,
                m.ip_text(existing.addr),
                existing.port,
                other_at,
            )
            return
        log.error(
            "serf %s: our node name is claimed by another node at %s; names must be unique "
            "(resolving by majority vote)",
            serf.name,
            other_at,
        )
        if self._resolving is not None and not self._resolving.done():
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._resolving = loop.create_task(self.resolve(), name="serf-conflict")

    async def resolve(self) -> bool:
        """``resolveNodeConflict``: ask the pool; shut down on a minority. True if we won."""
        serf = self._serf
        local = serf.node.membership.local
        ours = (m.ip_text(local.addr), local.port)
        result = await serf.query(CONFLICT_QUERY, serf.name.encode())
        responses = matching = 0
        for node, payload in result.responses.items():
            try:
                claimed = decode_conflict_answer(payload)
            except MalformedDataError as exc:
                log.warning("serf %s: bad conflict answer from %s: %s", serf.name, node, exc)
                continue
            responses += 1
            if claimed is not None and _same_address(claimed, ours):
                matching += 1
        majority = responses // 2 + 1
        if matching >= majority:
            log.info("serf %s: majority in name conflict [%d/%d]", serf.name, matching, responses)
            return True
        log.error(
            "serf %s: minority in name conflict [%d/%d]: shutting down",
            serf.name,
            matching,
            responses,
        )
        self.lost = True
        await serf.shutdown()
        if self.on_lost is not None:
            self.on_lost()
        return False
