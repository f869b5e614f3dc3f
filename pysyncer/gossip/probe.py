"""The SWIM probe cycle of one node, with Lifeguard, and the pings it answers for others.

Owns memberlist's failure detection as in memberlist/state.go ``probe`` / ``probeNode``
(a direct ping with the Lifeguard buddy suspect, indirect pings through
``indirect_checks`` helpers that nack when they can, a TCP fallback ping, then a
suspicion, and the awareness deltas of each outcome), the round trip of each direct
ack handed to the delegate (memberlist's ``PingDelegate.NotifyPingComplete``, which
Serf feeds its Vivaldi coordinates from), and the replies of memberlist/net.go
``handlePing`` / ``handleIndirectPing``: acks (with the delegate's ack payload) and the
relayed probes with their nacks. Acks and nacks come back here by sequence number.

pysyncer extensions, each an option of the profile and made only of memberlist messages:
the loop-lag awareness; ``dead_probe_interval`` (a recently failed member is pinged
with its dead notice in the same packet: if it is back it refutes at once, and its ack
starts a push/pull that brings its current state); ``tell_the_dead`` (a ping from a
member we believe dead is answered with the ack and its dead notice, so it refutes).

The :class:`~pysyncer.gossip.node.GossipNode` composes this part and sends for it.
Must not import :mod:`pysyncer.gossip.node` at run time, nor know about Serf.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pysyncer._core import wire
from pysyncer.errors import MalformedDataError
from pysyncer.gossip import messages as m
from pysyncer.gossip.membership import NodeState, NodeStatus
from pysyncer.gossip.timing import failed_probe_awareness_delta, loop_lag_awareness_delta

if TYPE_CHECKING:
    from pysyncer.gossip.node import Address, GossipNode

__all__ = ["Prober"]

log = logging.getLogger(__name__)

_PROBE_KEY = ("probe",)
_DEAD_PROBE_KEY = ("dead-probe",)


@dataclass
class _Probe:
    target: NodeState
    seq: int
    start: float
    end: float
    acked: bool = False
    indirect: bool = False  # the direct ping timed out; later acks may be relayed
    expected_nacks: int = 0
    nacks: int = 0


@dataclass
class _AckHandler:
    on_ack: Callable[[bytes | None], None]
    on_nack: Callable[[], None] | None = None


class Prober:
    """Probes one member per (awareness-scaled) probe interval; answers pings."""

    def __init__(self, node: GossipNode) -> None:
        self._node = node
        self._ack_handlers: dict[int, _AckHandler] = {}
        self._due = 0.0

    def start(self, first: float) -> None:
        """The first probe in ``first`` seconds (random, so members do not probe in step)."""
        node = self._node
        self._due = node.clock.now() + first
        node.clock.call_later(_PROBE_KEY, first, self._tick)
        interval = node.profile.dead_probe_interval
        if interval > 0:
            node.clock.call_later(_DEAD_PROBE_KEY, interval + first, self._dead_tick)

    def stop(self) -> None:
        self._node.clock.cancel(_PROBE_KEY)
        self._node.clock.cancel(_DEAD_PROBE_KEY)

    # -- answers -------------------------------------------------------------------

    def ack_for(self, seq_no: int) -> bytes:
        """Our ack to ping ``seq_no``, carrying the delegate's ack payload."""
        return m.AckResp(seq_no, self._node.delegate.ack_payload()).to_bytes()

    def on_ack(self, ack: m.AckResp) -> None:
        handler = self._ack_handlers.pop(ack.seq_no, None)
        if handler is not None:
            handler.on_ack(ack.payload)

    def on_nack(self, nack: m.NackResp) -> None:
        waiting = self._ack_handlers.get(nack.seq_no)
        if waiting is not None and waiting.on_nack is not None:
            waiting.on_nack()

    def on_ping(self, ping: m.Ping, source: Address) -> None:
        node = self._node
        if ping.node and ping.node != node.name:
            node.stats.incr("pings_for_other_node")
            return
        reply_to = source
        if ping.source_addr and ping.source_port:
            reply_to = (m.ip_text(ping.source_addr), ping.source_port)
        target = node.membership.node_map.get(ping.source_node) if ping.source_node else None
        parts = [self.ack_for(ping.seq_no)]
        if node.profile.tell_the_dead and target is not None and target.status == NodeStatus.DEAD:
            node.stats.incr("dead_notices")  # it pings us, so it is back: it must refute
            parts.append(m.Dead(target.incarnation, target.name, node.name).to_bytes())
        node.send_messages(reply_to, parts, target)

    def on_indirect_ping(self, request: m.IndirectPingReq, source: Address) -> None:
        """Probe ``request.target`` for another node and relay the outcome."""
        node = self._node
        reply_to = source
        if request.source_addr and request.source_port:
            reply_to = (m.ip_text(request.source_addr), request.source_port)
        seq = node.next_seq()
        replied = False

        def on_ack(payload: bytes | None) -> None:
            nonlocal replied
            replied = True
            node.clock.cancel(("relay-nack", seq))
            node.send_packet(reply_to, m.AckResp(request.seq_no, payload).to_bytes())

        self._ack_handlers[seq] = _AckHandler(on_ack)
        ping = m.Ping(seq, request.node, *node.source_fields())
        node.send_packet((m.ip_text(request.target), request.port), ping.to_bytes())

        def expire(_: Hashable) -> None:
            self._ack_handlers.pop(seq, None)
            if request.nack and not replied:
                node.send_packet(reply_to, m.NackResp(request.seq_no).to_bytes())

        node.clock.call_later(("relay-nack", seq), node.profile.probe_timeout, expire)

    # -- probing ---------------------------------------------------------------

    def _tick(self, _: Hashable) -> None:
        node = self._node
        if not node.running:
            return
        profile = node.profile
        now = node.clock.now()
        lag = loop_lag_awareness_delta(
            self._due, now, profile.probe_timeout, profile.awareness_max_multiplier
        )
        if lag:  # our own loop was late: we may be the slow one, so accuse less eagerly
            node.stats.incr("loop_lag_events")
            node.membership.awareness.apply_delta(lag)
        interval = node.membership.awareness.scale_timeout(profile.probe_interval)
        self._due = now + interval
        node.clock.call_later(_PROBE_KEY, interval, self._tick)
        target = node.membership.next_probe_target()
        if target is not None:
            self.probe(target, interval)

    def probe(self, target: NodeState, period: float) -> None:
        """One SWIM probe of ``target``: direct, then indirect + TCP, then suspicion."""
        node = self._node
        now = node.clock.now()
        probe = _Probe(target, node.next_seq(), now, now + period)
        node.stats.incr("probes")
        parts = [m.Ping(probe.seq, target.name, *node.source_fields()).to_bytes()]
        if target.status != NodeStatus.ALIVE:  # Lifeguard buddy system: tell it at once
            parts.append(m.Suspect(target.incarnation, target.name, node.name).to_bytes())

        def on_ack(payload: bytes | None) -> None:
            if not probe.acked:
                probe.acked = True
                node.membership.awareness.apply_delta(-1)
                node.clock.cancel(("probe-indirect", probe.seq))
                node.clock.cancel(("probe-end", probe.seq))
                if not probe.indirect:
                    # a direct ack within the probe timeout: its round trip feeds coordinates
                    rtt = node.clock.now() - probe.start
                    node.delegate.notify_ping_complete(target, rtt, payload)

        def on_nack() -> None:
            probe.nacks += 1

        self._ack_handlers[probe.seq] = _AckHandler(on_ack, on_nack)
        node.send_messages(node.address_of(target), parts, target)
        timeout = min(node.profile.probe_timeout, period)
        node.clock.call_later(
            ("probe-indirect", probe.seq), timeout, lambda _: self._probe_indirect(probe)
        )
        node.clock.call_later(("probe-end", probe.seq), period, lambda _: self._probe_end(probe))

    def _probe_indirect(self, probe: _Probe) -> None:
        if probe.acked:
            return
        probe.indirect = True
        node = self._node
        target = probe.target

        def eligible(state: NodeState) -> bool:
            return state.name not in (node.name, target.name) and state.status == NodeStatus.ALIVE

        helpers = node.membership.random_members(
            node.profile.indirect_checks, lambda n: not eligible(n)
        )
        for helper in helpers:
            wants_nack = len(helper.vsn) >= 2 and helper.vsn[1] >= 4
            probe.expected_nacks += int(wants_nack)
            request = m.IndirectPingReq(
                probe.seq, target.addr, target.port, target.name, wants_nack, *node.source_fields()
            )
            node.send_packet(node.address_of(helper), request.to_bytes(), helper)
        node.stats.incr("indirect_probes", len(helpers))
        if not node.profile.disable_tcp_pings and len(target.vsn) >= 2 and target.vsn[1] >= 3:
            node.spawn(self._tcp_ping(probe), "tcp-ping")

    async def _tcp_ping(self, probe: _Probe) -> None:
        node = self._node
        ping = m.Ping(probe.seq, probe.target.name, *node.source_fields()).to_bytes()
        timeout = max(0.0, probe.end - node.clock.now())
        try:
            reply = await node.network.exchange(node.address_of(probe.target), ping, timeout)
        except (OSError, TimeoutError, MalformedDataError):
            return
        if reply and reply[0] == wire.ACK_RESP_MSG and not probe.acked:
            ack = m.AckResp.from_bytes(reply)
            if ack.seq_no == probe.seq:
                node.stats.incr("tcp_fallback_acks")
                log.warning(
                    "reached %s over TCP but UDP probes failed: check UDP between the nodes",
                    probe.target.name,
                )
                handler = self._ack_handlers.pop(probe.seq, None)
                if handler is not None:
                    handler.on_ack(ack.payload)

    def _probe_end(self, probe: _Probe) -> None:
        node = self._node
        self._ack_handlers.pop(probe.seq, None)
        if probe.acked:
            return
        node.stats.incr("probe_failures")
        delta = failed_probe_awareness_delta(probe.expected_nacks, probe.nacks)
        node.membership.awareness.apply_delta(delta)
        target = probe.target
        if target.status == NodeStatus.ALIVE or target.status == NodeStatus.SUSPECT:
            node.membership.suspect(target.name, target.incarnation, node.name)

    # -- recently failed members -------------------------------------------------------

    def _dead_tick(self, _: Hashable) -> None:
        """Ping one member we believe failed, with its dead notice in the same packet.

        A member that is back (it was stopped and resumed, or a partition healed) hears
        that it is believed dead and refutes with a higher incarnation, which the pool
        gossips at once; its ack also starts a push/pull with it, so we learn its
        current state even if it had refuted at an incarnation we never heard of.
        """
        node = self._node
        if not node.running:
            return
        node.clock.call_later(_DEAD_PROBE_KEY, node.profile.dead_probe_interval, self._dead_tick)
        dead = [
            state
            for state in node.membership.nodes
            if state.status == NodeStatus.DEAD and state.name != node.name
        ]
        if not dead:
            return
        target = dead[node.rng.randrange(len(dead))]
        seq = node.next_seq()
        node.stats.incr("dead_probes")
        parts = [
            m.Ping(seq, target.name, *node.source_fields()).to_bytes(),
            m.Dead(target.incarnation, target.name, node.name).to_bytes(),
        ]
        address = node.address_of(target)

        def on_ack(_: bytes | None) -> None:
            node.clock.cancel(("dead-probe", seq))
            if target.status == NodeStatus.DEAD:
                node.stats.incr("dead_probe_acks")
                node.spawn(node.push_pull_quietly(address), "push-pull")

        def expire(_: Hashable) -> None:
            self._ack_handlers.pop(seq, None)

        self._ack_handlers[seq] = _AckHandler(on_ack)
        node.clock.call_later(("dead-probe", seq), node.profile.probe_timeout * 2, expire)
        node.send_messages(address, parts, target)
