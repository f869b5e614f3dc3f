"""The member table and its state machine: alive, suspect, dead and left, as memberlist.

Owns the rules that decide what a node believes about every member: incarnation
ordering, refutation of accusations about ourselves, Lifeguard suspicion with
confirmation-shortened timeouts, graceful leave (a dead message from the node itself),
address conflicts, push/pull state merges, the randomised round-robin probe order and
the reaping of dead members at each wrap.

It is synchronous and owns no sockets: the network node feeds it decoded news and
implements :class:`MembershipDelegate` to send broadcasts and deliver events. Time comes
from a :class:`~pysyncer.gossip.clock.Clock` (the event loop, or a virtual clock in the
simulator), so every rule here is testable without real time. Member statuses are
:class:`~pysyncer.gossip.messages.NodeStatus`, the wire enum, re-exported here.
Must not import the node, the probe cycle or the Serf layer.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from pysyncer.gossip.clock import Clock
from pysyncer.gossip.messages import NodeStatus
from pysyncer.gossip.timing import (
    Awareness,
    GossipProfile,
    initial_suspicion_timeout,
    remaining_suspicion_time,
    suspicion_max_timeout,
    suspicion_min_timeout,
)

__all__ = [
    "Membership",
    "MembershipDelegate",
    "NodeState",
    "NodeStatus",
    "RemoteNodeState",
]


@dataclass(slots=True)
class NodeState:
    """What this node believes about one member."""

    name: str
    addr: bytes  # 4 or 16 raw IP bytes, as on the wire
    port: int
    meta: bytes = b""
    incarnation: int = 0
    status: NodeStatus = NodeStatus.DEAD
    status_change: float = 0.0
    vsn: bytes = b""  # [pmin, pmax, pcur, dmin, dmax, dcur]

    @property
    def dead_or_left(self) -> bool:
        return self.status in (NodeStatus.DEAD, NodeStatus.LEFT)


@dataclass(frozen=True, slots=True)
class RemoteNodeState:
    """One entry of a push/pull state transfer."""

    name: str
    addr: bytes
    port: int
    meta: bytes
    incarnation: int
    status: NodeStatus
    vsn: bytes = b""


class MembershipDelegate(Protocol):
    """What the state machine asks of the network node."""

    def broadcast_alive(self, state: NodeState) -> None:
        """Gossip an alive message for ``state`` (named by its node name)."""

    def broadcast_suspect(self, node: str, incarnation: int, accuser: str) -> None: ...

    def broadcast_dead(self, node: str, incarnation: int, accuser: str) -> None: ...

    def notify_join(self, state: NodeState) -> None: ...

    def notify_leave(self, state: NodeState) -> None:
        """The member is now dead (failed) or left; ``state.status`` tells which."""

    def notify_update(self, state: NodeState) -> None:
        """The member's meta (Serf tags) changed."""

    def notify_conflict(self, existing: NodeState, other: NodeState) -> None:
        """Another address claims a name we know at a live address."""


@dataclass(slots=True)
class _Suspicion:
    """A running suspicion: Lifeguard shortens it with each independent confirmation."""

    k: int
    min_timeout: float
    max_timeout: float
    start: float
    confirmations: set[str] = field(default_factory=set)

    @property
    def count(self) -> int:
        return len(self.confirmations) - 1  # the first accuser is not a confirmation


class Membership:
    """The member table of one node, driven by news from the network layer."""

    def __init__(
        self,
        local: NodeState,
        profile: GossipProfile,
        timers: Clock[Hashable],
        delegate: MembershipDelegate,
        rng: random.Random | None = None,
    ) -> None:
        self.local_name = local.name
        self.profile = profile
        self.timers = timers
        self.delegate = delegate
        self.awareness = Awareness(profile.awareness_max_multiplier)
        self.rng = rng or random.Random()
        self.nodes: list[NodeState] = []  # probe order
        self.node_map: dict[str, NodeState] = {}
        self.left = False
        self.refutations = 0
        self._incarnation = local.incarnation
        self._suspicions: dict[str, _Suspicion] = {}
        self._probe_index = 0
        self._out_of_turn: list[str] = []  # suspects to probe before the round robin
        local.status = NodeStatus.DEAD  # becomes alive through the bootstrap alive below
        self.alive(
            RemoteNodeState(
                local.name,
                local.addr,
                local.port,
                local.meta,
                self.next_incarnation(),
                NodeStatus.ALIVE,
                local.vsn,
            ),
            bootstrap=True,
        )

    # -- queries -------------------------------------------------------------------

    @property
    def local(self) -> NodeState:
        return self.node_map[self.local_name]

    @property
    def incarnation(self) -> int:
        return self._incarnation

    def estimated_size(self) -> int:
        """Members that are not known dead or left (memberlist's estNumNodes)."""
        return max(1, sum(1 for n in self.nodes if not n.dead_or_left))

    def members(self) -> list[NodeState]:
        return list(self.nodes)

    def is_suspected(self, name: str) -> bool:
        return name in self._suspicions

    # -- incarnations ----------------------------------------------------------------

    def next_incarnation(self) -> int:
        self._incarnation = (self._incarnation + 1) & 0xFFFFFFFF
        return self._incarnation

    def _skip_incarnation(self, offset: int) -> int:
        self._incarnation = (self._incarnation + offset) & 0xFFFFFFFF
        return self._incarnation

    def refute(self, accused_incarnation: int) -> None:
        """Beat an accusation about ourselves with a higher incarnation and gossip it."""
        me = self.local
        incarnation = self.next_incarnation()
        if accused_incarnation >= incarnation:
            incarnation = self._skip_incarnation(accused_incarnation - incarnation + 1)
        me.incarnation = incarnation
        self.awareness.apply_delta(1)
        self.refutations += 1
        self.delegate.broadcast_alive(me)

    # -- news ----------------------------------------------------------------------

    def alive(self, news: RemoteNodeState, *, bootstrap: bool = False) -> None:
        """An alive message (or push/pull entry) about ``news.name``."""
        if self.left and news.name == self.local_name:
            return
        vsn = news.vsn
        if len(vsn) >= 3 and (vsn[0] == 0 or vsn[1] == 0 or vsn[0] > vsn[1]):
            return  # nonsensical protocol range
        state = self.node_map.get(news.name)
        updates_address = False
        if state is None:
            state = NodeState(news.name, news.addr, news.port, news.meta, vsn=news.vsn)
            self.node_map[news.name] = state
            # Insert at a random offset so a new member is probed as soon as any other.
            offset = self.rng.randrange(len(self.nodes) + 1)
            self.nodes.append(state)
            self.nodes[offset], self.nodes[-1] = self.nodes[-1], self.nodes[offset]
        elif state.addr != news.addr or state.port != news.port:
            reclaim = self.profile.dead_node_reclaim_time
            can_reclaim = reclaim > 0 and self.timers.now() - state.status_change > reclaim
            if state.status == NodeStatus.LEFT or (state.status == NodeStatus.DEAD and can_reclaim):
                updates_address = True
            else:
                other = NodeState(news.name, news.addr, news.port, news.meta)
                self.delegate.notify_conflict(state, other)
                return

        is_local = state.name == self.local_name
        if news.incarnation <= state.incarnation and not is_local and not updates_address:
            return
        if news.incarnation < state.incarnation and is_local:
            return

        self._drop_suspicion(news.name)
        old_status, old_meta = state.status, state.meta

        if is_local and not bootstrap:
            if (
                news.incarnation == state.incarnation
                and news.meta == state.meta
                and news.vsn == state.vsn
            ):
                return
            self.refute(news.incarnation)
        else:
            if len(news.vsn) >= 6:
                state.vsn = news.vsn
            state.incarnation = news.incarnation
            state.meta = news.meta
            state.addr = news.addr
            state.port = news.port
            if state.status != NodeStatus.ALIVE:
                state.status = NodeStatus.ALIVE
                state.status_change = self.timers.now()
            self.delegate.broadcast_alive(state)

        if old_status in (NodeStatus.DEAD, NodeStatus.LEFT):
            if not (is_local and not bootstrap):
                self.delegate.notify_join(state)
        elif old_meta != state.meta:
            self.delegate.notify_update(state)

    def suspect(self, node: str, incarnation: int, accuser: str) -> None:
        """A suspect message: ``accuser`` could not reach ``node``."""
        state = self.node_map.get(node)
        if state is None or incarnation < state.incarnation:
            return
        suspicion = self._suspicions.get(node)
        if suspicion is not None:
            if self._confirm(node, suspicion, accuser):
                self.delegate.broadcast_suspect(node, incarnation, accuser)
            return
        if state.status != NodeStatus.ALIVE:
            return
        if node == self.local_name:
            self.refute(incarnation)
            return
        self.delegate.broadcast_suspect(node, incarnation, accuser)
        state.incarnation = incarnation
        state.status = NodeStatus.SUSPECT
        now = self.timers.now()
        state.status_change = now

        n = self.estimated_size()
        k = self.profile.confirmations(n)
        low = suspicion_min_timeout(self.profile.suspicion_mult, n, self.profile.probe_interval)
        high = suspicion_max_timeout(self.profile.suspicion_max_timeout_mult, low)
        suspicion = _Suspicion(k, low, high, now, {accuser})
        self._suspicions[node] = suspicion
        probers = self.profile.suspicion_probers
        if accuser != self.local_name and probers and self.rng.random() < probers / n:
            self._out_of_turn.append(node)  # check it ourselves: confirm, or see it answer
        self.timers.call_later(
            ("suspicion", node), initial_suspicion_timeout(k, low, high), self._suspicion_expired
        )

    def dead(self, node: str, incarnation: int, accuser: str) -> None:
        """A dead message; ``accuser == node`` is a graceful leave."""
        state = self.node_map.get(node)
        if state is None or incarnation < state.incarnation:
            return
        self._drop_suspicion(node)
        if state.dead_or_left:
            return
        if node == self.local_name and not self.left:
            self.refute(incarnation)
            return
        self.delegate.broadcast_dead(node, incarnation, accuser)
        state.incarnation = incarnation
        state.status = NodeStatus.LEFT if node == accuser else NodeStatus.DEAD
        state.status_change = self.timers.now()
        self.delegate.notify_leave(state)

    def merge_remote(self, remote: Iterable[RemoteNodeState]) -> None:
        """Merge a push/pull state: a remote 'dead' only makes us suspect, never kill."""
        for entry in remote:
            if entry.status == NodeStatus.ALIVE:
                self.alive(entry)
            elif entry.status == NodeStatus.LEFT:
                self.dead(entry.name, entry.incarnation, entry.name)
            elif entry.status in (NodeStatus.DEAD, NodeStatus.SUSPECT):
                self.suspect(entry.name, entry.incarnation, self.local_name)

    def leave(self) -> None:
        """Start a graceful leave: broadcast our own death, marked as left."""
        self.left = True
        me = self.local
        self.dead(me.name, me.incarnation, me.name)

    def update_local(self, meta: bytes) -> None:
        """Advertise new meta (Serf tags) with a fresh incarnation."""
        me = self.local
        me.meta = meta
        me.incarnation = self.next_incarnation()
        self.delegate.broadcast_alive(me)

    # -- probing and gossip targets ------------------------------------------------

    def next_probe_target(self) -> NodeState | None:
        """Randomised round robin: the next live member other than us, or None.

        At each wrap the order is reshuffled and members dead for longer than
        ``gossip_to_the_dead_time`` are reaped from the table. A member another node
        suspects may go first (``suspicion_probers``, a pysyncer extension: about that
        many members check a new suspect themselves at their next probe, so a dead member
        gathers its confirmations within a probe period and a live one is seen answering).
        """
        while self._out_of_turn:
            suspect = self.node_map.get(self._out_of_turn.pop(0))
            if suspect is not None and suspect.status == NodeStatus.SUSPECT:
                return suspect
        for _ in range(2):
            while self._probe_index < len(self.nodes):
                candidate = self.nodes[self._probe_index]
                self._probe_index += 1
                if candidate.name != self.local_name and not candidate.dead_or_left:
                    return candidate
            self._probe_index = 0
            self.reset_nodes()
        return None

    def reset_nodes(self) -> None:
        """Reap long-dead members and reshuffle the probe order (memberlist resetNodes)."""
        now = self.timers.now()
        keep: list[NodeState] = []
        for state in self.nodes:
            expired = state.dead_or_left and (
                now - state.status_change > self.profile.gossip_to_the_dead_time
            )
            if expired and state.name != self.local_name:
                del self.node_map[state.name]
            else:
                keep.append(state)
        self.rng.shuffle(keep)
        self.nodes = keep

    def random_members(
        self, k: int, exclude: Callable[[NodeState], bool] | None = None
    ) -> list[NodeState]:
        """Up to ``k`` distinct random members for which ``exclude`` is false."""
        chosen: list[NodeState] = []
        if len(self.nodes) < 3 * k:
            pool: Sequence[NodeState] = self.rng.sample(self.nodes, len(self.nodes))
            chosen = [n for n in pool if exclude is None or not exclude(n)][:k]
            return chosen
        names: set[str] = set()
        for _ in range(3 * len(self.nodes)):
            if len(chosen) >= k:
                break
            state = self.nodes[self.rng.randrange(len(self.nodes))]
            if state.name in names or (exclude is not None and exclude(state)):
                continue
            names.add(state.name)
            chosen.append(state)
        return chosen

    def gossip_targets(self) -> list[NodeState]:
        """Members to send pending broadcasts to: live, suspect, or recently dead."""
        now = self.timers.now()

        def exclude(state: NodeState) -> bool:
            if state.name == self.local_name:
                return True
            if state.status in (NodeStatus.ALIVE, NodeStatus.SUSPECT):
                return False
            if state.status == NodeStatus.DEAD:
                return now - state.status_change > self.profile.gossip_to_the_dead_time
            return True

        return self.random_members(self.profile.gossip_nodes, exclude)

    # -- suspicion timers ----------------------------------------------------------

    def _confirm(self, node: str, suspicion: _Suspicion, accuser: str) -> bool:
        if suspicion.count >= suspicion.k or accuser in suspicion.confirmations:
            return False
        suspicion.confirmations.add(accuser)
        elapsed = self.timers.now() - suspicion.start
        remaining = remaining_suspicion_time(
            suspicion.count, suspicion.k, elapsed, suspicion.min_timeout, suspicion.max_timeout
        )
        self.timers.call_later(("suspicion", node), max(0.0, remaining), self._suspicion_expired)
        return True

    def _drop_suspicion(self, node: str) -> None:
        if self._suspicions.pop(node, None) is not None:
            self.timers.cancel(("suspicion", node))

    def _suspicion_expired(self, key: Hashable) -> None:
        assert isinstance(key, tuple)
        node = key[1]
        if node not in self._suspicions:
            return
        state = self.node_map.get(node)
        if state is None or state.status != NodeStatus.SUSPECT:
            self._suspicions.pop(node, None)
            return
        self.dead(node, state.incarnation, self.local_name)
