"""A memberlist-compatible gossip node: SWIM probes, Lifeguard, dissemination, push/pull.

Owns the protocol *behaviour* of one node: piggybacking broadcasts on every packet,
the receive dispatch, the gossip tick, push/pull anti-entropy on join and
periodically, graceful leave, and the replies other nodes expect over streams
(push/pull state, TCP pings). The probe cycle (direct ping, indirect pings with
nacks, TCP fallback ping, suspicion, awareness of its own health) and the ping
replies are its :class:`~pysyncer.gossip.probe.Prober` part. What members are believed
to be lives in :class:`~pysyncer.gossip.membership.Membership`; bytes on the wire in
:mod:`pysyncer.gossip.messages` and :mod:`pysyncer.gossip.packet`. Nothing here
knows about Serf beyond the :class:`NodeDelegate` protocol.

Time comes from a :class:`~pysyncer.gossip.clock.Clock` and the network from a
:class:`Network`, so the same code runs on real sockets (``LoopClock`` + UDP/TCP) and in
the deterministic simulator (``VirtualClock`` + an in-memory network). Nothing here
awaits except stream exchanges, which run as tasks the node tracks.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import Counter
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from pysyncer._core import wire
from pysyncer.errors import MalformedDataError
from pysyncer.gossip import messages as m
from pysyncer.gossip.broadcast import Broadcast, TransmitLimitedQueue
from pysyncer.gossip.clock import Clock
from pysyncer.gossip.keyring import Keyring, encrypted_length
from pysyncer.gossip.membership import Membership, NodeState, NodeStatus, RemoteNodeState
from pysyncer.gossip.messages import ip_bytes, ip_text
from pysyncer.gossip.packet import (
    COMPOUND_OVERHEAD,
    COMPOUND_PART_OVERHEAD,
    PacketError,
    decode_packet,
    encode_packet,
    label_overhead,
)
from pysyncer.gossip.probe import Prober
from pysyncer.gossip.timing import (
    DEFAULT_PROFILE,
    GossipProfile,
    push_pull_scale,
)

__all__ = ["GossipNode", "Network", "NodeConfig", "NodeDelegate"]

log = logging.getLogger(__name__)

Address = tuple[str, int]
MAX_COMPOUND_PARTS = 255
USER_MSG_OVERHEAD = 1  # the type byte framing a delegate broadcast
_GOSSIP_NEWS_KEY = ("gossip-news",)


class Network(Protocol):
    """Packets and request/reply streams to other nodes."""

    def send_packet(self, addr: Address, data: bytes) -> None: ...

    async def exchange(self, addr: Address, message: bytes, timeout: float) -> bytes | None:
        """Send one stream message; return the peer's reply message (None when none)."""


class NodeDelegate(Protocol):
    """The layer above (Serf): node meta, user messages, its broadcasts and state."""

    def node_meta(self, limit: int) -> bytes: ...

    def notify_msg(self, payload: bytes) -> None: ...

    def get_broadcasts(self, overhead: int, limit: int) -> list[bytes]: ...

    def local_state(self, join: bool) -> bytes: ...

    def merge_remote_state(self, state: bytes, join: bool) -> None: ...

    def ack_payload(self) -> bytes | None: ...

    def notify_ping_complete(self, state: NodeState, rtt: float, payload: bytes | None) -> None:
        """A direct ping of ``state`` was acked after ``rtt`` seconds with ``payload``."""

    def notify_join(self, state: NodeState) -> None: ...

    def notify_leave(self, state: NodeState) -> None: ...

    def notify_update(self, state: NodeState) -> None: ...

    def notify_conflict(self, existing: NodeState, other: NodeState) -> None:
        """Another address claims ``existing.name`` (Serf resolves it when it is ours)."""


@dataclass
class NodeConfig:
    name: str
    advertise: Address
    profile: GossipProfile = DEFAULT_PROFILE
    keyring: Keyring | None = None
    label: str = ""
    protocol_version: int = 2  # spoken memberlist protocol
    delegate_versions: tuple[int, int, int] = (2, 5, 4)  # Serf protocol min, max, current
    verify_incoming: bool = True

    @property
    def vsn(self) -> bytes:
        low, high = wire.PROTOCOL_VERSION_MIN, wire.PROTOCOL_VERSION_MAX
        return bytes((low, high, self.protocol_version, *self.delegate_versions))


@dataclass
class NodeStats:
    counters: Counter[str] = field(default_factory=Counter)

    def incr(self, name: str, amount: int = 1) -> None:
        self.counters[name] += amount


class GossipNode:
    """One member of a memberlist/Serf gossip pool."""

    def __init__(
        self,
        config: NodeConfig,
        clock: Clock[Hashable],
        network: Network,
        delegate: NodeDelegate,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self.profile = config.profile
        self.clock = clock
        self.network = network
        self.delegate = delegate
        self.rng = rng or random.Random()
        self.stats = NodeStats()
        self.queue = TransmitLimitedQueue(self.profile.retransmit_mult, self._num_nodes)
        self._seq = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._running = False
        self._stopped = False
        self._last_gossip_round = float("-inf")
        self._leave_finished: Callable[[], None] | None = None
        host, port = config.advertise
        local = NodeState(
            config.name,
            ip_bytes(host),
            port,
            delegate.node_meta(wire.META_MAX_SIZE),
            vsn=config.vsn,
        )
        self.membership = Membership(local, self.profile, clock, self, self.rng)
        self.prober = Prober(self)

    # -- lifecycle ---------------------------------------------------------------

    def start(self) -> None:
        """Start the probe, gossip and push/pull timers."""
        self._running = True
        interval = self.profile.probe_interval
        first = self.rng.uniform(0, interval)
        self.prober.start(first)
        gossip = self.profile.gossip_interval
        self.clock.call_later(("gossip",), self.rng.uniform(0, gossip), self._gossip_tick)
        if self.profile.push_pull_interval > 0:
            delay = self.rng.uniform(0, self.profile.push_pull_interval)
            self.clock.call_later(("push-pull",), delay, self._push_pull_tick)

    async def stop(self) -> None:
        """Stop timers and wait for stream tasks (after :meth:`leave` for a clean exit)."""
        self._running = False
        self._stopped = True  # from now on, packets and streams are not answered
        self.prober.stop()
        for key in (("gossip",), ("push-pull",), _GOSSIP_NEWS_KEY):
            self.clock.cancel(key)
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def join(self, addresses: Sequence[Address]) -> int:
        """Push/pull with each address; the number that answered."""
        joined = 0
        for address in addresses:
            try:
                await self._push_pull_with(address, join=True)
                joined += 1
            except (OSError, TimeoutError, MalformedDataError) as exc:
                log.warning("join %s:%d failed: %s", address[0], address[1], exc)
                self.stats.incr("join_failures")
        return joined

    async def leave(self, timeout: float | None = None) -> bool:
        """Broadcast our graceful leave and wait until it has been gossiped (or timeout)."""
        finished = asyncio.Event()
        self._leave_finished = finished.set
        self.membership.leave()
        if not any(n.status == NodeStatus.ALIVE for n in self._others()):
            return True
        try:
            await asyncio.wait_for(finished.wait(), timeout or self.profile.broadcast_timeout)
        except TimeoutError:
            return False
        return True

    def update_meta(self) -> None:
        """Re-read the delegate's meta (Serf tags) and advertise it."""
        self.membership.update_local(self.delegate.node_meta(wire.META_MAX_SIZE))

    # -- queries -----------------------------------------------------------------

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def running(self) -> bool:
        """Between :meth:`start` and :meth:`stop`: the timers re-arm themselves."""
        return self._running

    def members(self) -> list[NodeState]:
        return self.membership.members()

    def health_score(self) -> int:
        return self.membership.awareness.score

    def _num_nodes(self) -> int:
        return len(self.membership.nodes)

    def _others(self) -> list[NodeState]:
        return [n for n in self.membership.nodes if n.name != self.name]

    # -- sending -------------------------------------------------------------------

    def _packet_room(self) -> int:
        room = self.profile.udp_buffer_size - label_overhead(self.config.label)
        if self.config.keyring is not None:
            room -= encrypted_length(1, 0)
        return room

    def _pending_broadcasts(self, overhead: int, limit: int) -> list[bytes]:
        """Our broadcasts, then the delegate's, each framed as a user message [8]."""
        own = self.queue.get_broadcasts(overhead, limit)
        room = limit - sum(overhead + len(x) for x in own)
        if room <= overhead + USER_MSG_OVERHEAD:
            return own
        user = self.delegate.get_broadcasts(overhead + USER_MSG_OVERHEAD, room)
        return own + [m.serf_user_msg(message) for message in user]

    def send_packet(self, addr: Address, message: bytes, target: NodeState | None = None) -> None:
        """Send one message, piggybacking pending broadcasts in the free space."""
        self.send_messages(addr, [message], target)

    def send_messages(
        self, addr: Address, parts: Sequence[bytes], target: NodeState | None
    ) -> None:
        """Send messages in one packet, piggybacking pending broadcasts in the free space."""
        room = self._packet_room() - sum(len(p) for p in parts) - COMPOUND_OVERHEAD
        extra = self._pending_broadcasts(COMPOUND_PART_OVERHEAD, room)
        self._send_compound(addr, [*parts, *extra], target)

    def _send_compound(
        self, addr: Address, parts: Sequence[bytes], target: NodeState | None
    ) -> None:
        crc = target is not None and len(target.vsn) >= 2 and target.vsn[1] >= 5
        for start in range(0, len(parts), MAX_COMPOUND_PARTS):
            data = encode_packet(
                parts[start : start + MAX_COMPOUND_PARTS],
                keyring=self.config.keyring,
                label=self.config.label,
                crc=crc,
                compress=self.profile.enable_compression,
            )
            self.stats.incr("packets_out")
            self.stats.incr("bytes_out_udp", len(data))
            self.network.send_packet(addr, data)

    def address_of(self, state: NodeState) -> Address:
        return ip_text(state.addr), state.port

    def next_seq(self) -> int:
        """The next ping sequence number (memberlist nextSeqNo)."""
        self._seq = (self._seq + 1) & 0xFFFFFFFF
        return self._seq

    # -- MembershipDelegate: broadcasts and events -----------------------------------

    def broadcast_alive(self, state: NodeState) -> None:
        alive = m.Alive(
            state.incarnation, state.name, state.addr, state.port, state.meta, state.vsn
        )
        self.queue.queue(Broadcast(alive.to_bytes(), name=state.name))
        self.gossip_soon()

    def broadcast_suspect(self, node: str, incarnation: int, accuser: str) -> None:
        self.stats.incr("suspicions")
        message = m.Suspect(incarnation, node, accuser).to_bytes()
        self.queue.queue(Broadcast(message, name=node))
        self.gossip_soon()

    def broadcast_dead(self, node: str, incarnation: int, accuser: str) -> None:
        message = m.Dead(incarnation, node, accuser).to_bytes()
        on_finished = self._leave_finished if node == self.name else None
        self.queue.queue(Broadcast(message, name=node, on_finished=on_finished))
        self.gossip_soon()

    def notify_join(self, state: NodeState) -> None:
        self.delegate.notify_join(state)

    def notify_leave(self, state: NodeState) -> None:
        self.delegate.notify_leave(state)

    def notify_update(self, state: NodeState) -> None:
        self.delegate.notify_update(state)

    def notify_conflict(self, existing: NodeState, other: NodeState) -> None:
        self.stats.incr("address_conflicts")
        log.error(
            "name conflict for %s: known at %s:%d, claimed by %s:%d",
            existing.name,
            ip_text(existing.addr),
            existing.port,
            ip_text(other.addr),
            other.port,
        )
        self.delegate.notify_conflict(existing, other)

    # -- receiving packets ---------------------------------------------------------

    def handle_packet(self, data: bytes, source: Address) -> None:
        """Everything that arrives over UDP; never raises."""
        if self._stopped:
            return
        self.stats.incr("packets_in")
        try:
            parts, truncated = decode_packet(
                data,
                keyring=self.config.keyring,
                label=self.config.label,
                verify_incoming=self.config.verify_incoming,
            )
        except PacketError as exc:
            self.stats.incr(f"packets_dropped_{exc.reason}")
            log.debug("dropped packet from %s:%d: %s", source[0], source[1], exc)
            return
        if truncated:
            self.stats.incr("compound_parts_truncated", truncated)
        for part in parts:
            try:
                self._handle_message(part, source)
            except MalformedDataError as exc:
                self.stats.incr("packets_dropped_decode")
                log.debug("dropped message from %s:%d: %s", source[0], source[1], exc)
            except Exception:  # a bug must cost one message, never the receive loop
                self.stats.incr("packets_dropped_internal_error")
                log.exception("error handling a message from %s:%d", source[0], source[1])

    def _handle_message(self, data: bytes, source: Address) -> None:
        kind = data[0]
        if kind == wire.PING_MSG:
            self.prober.on_ping(m.Ping.from_bytes(data), source)
        elif kind == wire.INDIRECT_PING_MSG:
            self.prober.on_indirect_ping(m.IndirectPingReq.from_bytes(data), source)
        elif kind == wire.ACK_RESP_MSG:
            self.prober.on_ack(m.AckResp.from_bytes(data))
        elif kind == wire.NACK_RESP_MSG:
            self.prober.on_nack(m.NackResp.from_bytes(data))
        elif kind == wire.ALIVE_MSG:
            alive = m.Alive.from_bytes(data)
            if len(alive.addr) not in (4, 16):
                raise MalformedDataError(f"alive for {alive.node} has a bad address")
            self.membership.alive(
                RemoteNodeState(
                    alive.node,
                    alive.addr,
                    alive.port,
                    alive.meta or b"",
                    alive.incarnation,
                    NodeStatus.ALIVE,
                    alive.vsn,
                )
            )
        elif kind == wire.SUSPECT_MSG:
            suspect = m.Suspect.from_bytes(data)
            self.membership.suspect(suspect.node, suspect.incarnation, suspect.from_node)
        elif kind == wire.DEAD_MSG:
            dead = m.Dead.from_bytes(data)
            self.membership.dead(dead.node, dead.incarnation, dead.from_node)
        elif kind == wire.USER_MSG:
            self.delegate.notify_msg(data[1:])
        else:
            self.stats.incr("packets_dropped_unknown_type")

    def source_fields(self) -> tuple[bytes, int, str]:
        """Our address and name, as pings carry them so replies find us."""
        host, port = self.config.advertise
        return ip_bytes(host), port, self.name

    # -- gossip ------------------------------------------------------------------

    def gossip_soon(self) -> None:
        """News was queued: with ``gossip_on_news``, gossip it now, not at the next tick.

        One extra gossip round, run once the current callback returns, so news queued
        together leaves in one packet per target; rounds are at least a quarter gossip
        interval apart, so a storm of news (a pool joining at once) costs at most four
        times the ticks' rounds. Each send counts against the broadcast's transmit limit
        as a tick's would: the news leaves earlier, not more often (a pysyncer
        extension; the packets are ordinary gossip).
        """
        if not (self._running and self.profile.gossip_on_news):
            return
        if self.clock.deadline_of(_GOSSIP_NEWS_KEY) is None:
            spacing = self.profile.gossip_interval / 4
            delay = max(0.0, self._last_gossip_round + spacing - self.clock.now())
            self.clock.call_later(_GOSSIP_NEWS_KEY, delay, self._gossip_round)

    def _gossip_tick(self, _: Hashable) -> None:
        if not self._running:
            return
        self.clock.call_later(("gossip",), self.profile.gossip_interval, self._gossip_tick)
        self._gossip_round(None)

    def _gossip_round(self, _: Hashable) -> None:
        if not self._running:
            return
        self._last_gossip_round = self.clock.now()
        room = self._packet_room() - COMPOUND_OVERHEAD
        for target in self.membership.gossip_targets():
            parts = self._pending_broadcasts(COMPOUND_PART_OVERHEAD, room)
            if not parts:
                return
            self._send_compound(self.address_of(target), parts, target)

    # -- push/pull -------------------------------------------------------------------

    def _push_pull_tick(self, _: Hashable) -> None:
        if not self._running:
            return
        interval = push_pull_scale(self.profile.push_pull_interval, self._num_nodes())
        self.clock.call_later(("push-pull",), interval, self._push_pull_tick)
        peers = self.membership.random_members(
            1, lambda n: n.name == self.name or n.status != NodeStatus.ALIVE
        )
        if peers:
            self.spawn(self.push_pull_quietly(self.address_of(peers[0])), "push-pull")

    async def push_pull_quietly(self, address: Address) -> None:
        """One push/pull exchange; a failure is counted and logged at debug level."""
        try:
            await self._push_pull_with(address, join=False)
        except (OSError, TimeoutError, MalformedDataError) as exc:
            self.stats.incr("push_pull_failures")
            log.debug("push/pull with %s:%d failed: %s", address[0], address[1], exc)

    async def _push_pull_with(self, address: Address, *, join: bool) -> None:
        self.stats.incr("push_pulls")
        state = self.local_state(join)
        self.stats.incr("bytes_out_tcp", len(state))
        reply = await self.network.exchange(address, state, self.profile.tcp_timeout)
        if reply is None:
            raise MalformedDataError("no push/pull reply")
        if reply[0] == wire.ERR_MSG:
            raise MalformedDataError(f"remote error: {m.ErrResp.from_bytes(reply).error}")
        self.merge_remote(m.decode_push_pull(reply))

    def local_state(self, join: bool) -> bytes:
        nodes = tuple(
            m.PushNodeState(n.name, n.addr, n.port, n.meta, n.incarnation, int(n.status), n.vsn)
            for n in self.membership.nodes
        )
        return m.encode_push_pull(m.PushPull(join, nodes, self.delegate.local_state(join)))

    def merge_remote(self, remote: m.PushPull) -> None:
        states = []
        for node in remote.nodes:
            if len(node.addr) not in (4, 16) or not 0 <= node.state <= 3:
                raise MalformedDataError(f"push/pull entry for {node.name!r} is malformed")
            states.append(
                RemoteNodeState(
                    node.name,
                    node.addr,
                    node.port,
                    node.meta or b"",
                    node.incarnation,
                    NodeStatus(node.state),
                    node.vsn,
                )
            )
        self.membership.merge_remote(states)
        if remote.user_state:
            self.delegate.merge_remote_state(remote.user_state, remote.join)

    # -- streams -----------------------------------------------------------------

    def handle_stream_message(self, message: bytes) -> bytes | None:
        """A message that arrived over TCP; the reply to write back, if any."""
        if self._stopped:
            return None
        self.stats.incr("streams_in")
        kind = message[0] if message else -1
        if kind == wire.PUSH_PULL_MSG:
            remote = m.decode_push_pull(message)
            self.merge_remote(remote)
            state = self.local_state(remote.join)
            self.stats.incr("bytes_out_tcp", len(state))
            return state
        if kind == wire.PING_MSG:
            ping = m.Ping.from_bytes(message)
            if ping.node and ping.node != self.name:
                return m.ErrResp(f"ping for {ping.node}, but this is {self.name}").to_bytes()
            return self.prober.ack_for(ping.seq_no)
        if kind == wire.USER_MSG:
            payload, _ = wire.decode_user_stream(message)
            self.delegate.notify_msg(payload)
            return None
        raise MalformedDataError(f"unexpected stream message type {kind}")

    def spawn(self, coroutine: object, what: str) -> None:
        """Run a stream exchange as a task the node tracks (and cancels on stop)."""
        assert asyncio.iscoroutine(coroutine)
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coroutine, name=what)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
