"""A deterministic gossip simulator: real GossipNodes on a virtual clock and network.

Owns the simulated world only: one shared :class:`~pysyncer.gossip.clock.VirtualClock`,
a network that delivers packets after a seeded random delay, and faults injected on
purpose: packet loss, partitions, killed members and stalled (CPU-starved) members,
whose timers and incoming packets wait until the stall ends. The nodes are the real
:class:`~pysyncer.gossip.node.GossipNode` state machines, byte encoding included, so
a simulation exercises exactly the code that runs on sockets. Same seed, same run.
Must not import Serf, the agent or the real transport: it drives nodes only.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from pysyncer.gossip.clock import Clock, VirtualClock
from pysyncer.gossip.membership import NodeState, NodeStatus, RemoteNodeState
from pysyncer.gossip.node import Address, GossipNode, NodeConfig, NodeDelegate
from pysyncer.gossip.timing import DEFAULT_PROFILE, GossipProfile

__all__ = ["DelegateFactory", "LayerHooks", "SilentDelegate", "SimNode", "Simulation"]

DelegateFactory = Callable[[str, GossipProfile, Clock[Hashable], random.Random], NodeDelegate]
"""Builds a node's delegate (e.g. a Serf) from its name, profile, clock and rng."""


@runtime_checkable
class LayerHooks(Protocol):
    """Optional hooks of a delegate: bound to its node once built, started with it."""

    def attach(self, node: GossipNode) -> None: ...

    def start(self) -> None: ...


class SilentDelegate:
    """A node with no layer above memberlist: no meta, no user messages or state."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []

    def node_meta(self, limit: int) -> bytes:
        return b""

    def notify_msg(self, payload: bytes) -> None:
        pass

    def get_broadcasts(self, overhead: int, limit: int) -> list[bytes]:
        return []

    def local_state(self, join: bool) -> bytes:
        return b""

    def merge_remote_state(self, state: bytes, join: bool) -> None:
        pass

    def ack_payload(self) -> bytes | None:
        return None

    def notify_ping_complete(self, state: NodeState, rtt: float, payload: bytes | None) -> None:
        pass

    def notify_join(self, state: NodeState) -> None:
        self.events.append(("join", state.name))

    def notify_leave(self, state: NodeState) -> None:
        self.events.append((state.status.name.lower(), state.name))

    def notify_update(self, state: NodeState) -> None:
        self.events.append(("update", state.name))

    def notify_conflict(self, existing: NodeState, other: NodeState) -> None:
        self.events.append(("conflict", existing.name))


@dataclass
class SimNode:
    name: str
    address: Address
    node: GossipNode
    layer: NodeDelegate  # the delegate the node runs with
    alive: bool = True
    stalled_until: float = 0.0

    @property
    def delegate(self) -> SilentDelegate:
        """The default :class:`SilentDelegate` (TypeError with a delegate_factory)."""
        if not isinstance(self.layer, SilentDelegate):
            raise TypeError(f"{self.name} runs {type(self.layer).__name__}: use .layer")
        return self.layer


class _NodeClock:
    """One node's view of the shared clock: its own key space, frozen while stalled."""

    def __init__(self, sim: Simulation, name: str) -> None:
        self._sim = sim
        self._name = name

    def now(self) -> float:
        return self._sim.clock.now()

    def call_at(
        self, key: Hashable, deadline: float, callback: Callable[[Hashable], object]
    ) -> None:
        def fire(_: Hashable) -> None:
            member = self._sim.nodes[self._name]
            if not member.alive:
                return
            if member.stalled_until > self.now():
                self.call_at(key, member.stalled_until, callback)
                return
            callback(key)

        self._sim.clock.call_at((self._name, key), deadline, fire)

    def call_later(
        self, key: Hashable, delay: float, callback: Callable[[Hashable], object]
    ) -> None:
        self.call_at(key, self.now() + delay, callback)

    def cancel(self, key: Hashable) -> bool:
        return self._sim.clock.cancel((self._name, key))

    def deadline_of(self, key: Hashable) -> float | None:
        return self._sim.clock.deadline_of((self._name, key))


class _SimNetwork:
    def __init__(self, sim: Simulation, name: str) -> None:
        self._sim = sim
        self._name = name

    def send_packet(self, addr: Address, data: bytes) -> None:
        self._sim.deliver(self._name, addr, data)

    async def exchange(self, addr: Address, message: bytes, timeout: float) -> bytes | None:
        target = self._sim.reachable(self._name, addr)
        if target is None:
            raise ConnectionRefusedError(f"{addr[0]}:{addr[1]} is unreachable")
        self._sim.stats["streams"] += 1
        clock = self._sim.clock
        deadline = clock.now() + timeout
        while target.stalled_until > clock.now():  # a starved peer answers late
            if clock.now() >= deadline:
                raise TimeoutError(f"{addr[0]}:{addr[1]} did not answer in {timeout} s")
            await asyncio.sleep(0)
        return target.node.handle_stream_message(message)


@dataclass
class Simulation:
    """``size`` nodes named n0..n{size-1} on 10.x addresses that exist only here.

    ``delegate_factory`` gives each node its layer above memberlist (default: a
    :class:`SilentDelegate`); a delegate with :class:`LayerHooks` is attached to its node
    once built and started after it.
    """

    size: int
    profile: GossipProfile = DEFAULT_PROFILE
    seed: int = 1
    loss: float = 0.0
    delay: tuple[float, float] = (0.0005, 0.005)
    clock: VirtualClock[Hashable] = field(default_factory=VirtualClock)
    nodes: dict[str, SimNode] = field(default_factory=dict)
    stats: dict[str, int] = field(default_factory=lambda: {"packets": 0, "lost": 0, "streams": 0})
    delegate_factory: DelegateFactory | None = None

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self._by_address: dict[Address, str] = {}
        self._groups: dict[str, int] = {}
        self._packet_id = 0
        for i in range(self.size):
            name = f"n{i}"
            address = (f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}", 7946)
            clock = _NodeClock(self, name)
            node_rng = random.Random(self.rng.getrandbits(64))
            delegate: NodeDelegate
            if self.delegate_factory is None:
                delegate = SilentDelegate()
            else:
                layer_rng = random.Random(self.rng.getrandbits(64))
                delegate = self.delegate_factory(name, self.profile, clock, layer_rng)
            config = NodeConfig(name=name, advertise=address, profile=self.profile)
            node = GossipNode(config, clock, _SimNetwork(self, name), delegate, node_rng)
            if isinstance(delegate, LayerHooks):
                delegate.attach(node)
            self.nodes[name] = SimNode(name, address, node, delegate)
            self._by_address[address] = name

    # -- building the pool -------------------------------------------------------

    def start(self) -> None:
        for member in self.nodes.values():
            member.node.start()
            if isinstance(member.layer, LayerHooks):
                member.layer.start()

    async def join_all(self, via: str = "n0") -> None:
        """Every other node joins through ``via`` with a real push/pull exchange."""
        seed = self.nodes[via].address
        for member in self.nodes.values():
            if member.name != via:
                await member.node.join([seed])

    def seed_full_membership(self) -> None:
        """Make every node know every other at once, as if the join had settled.

        A shortcut for large pools, where n joins cost O(n^2) push/pull entries; the
        alive broadcasts the merge would queue are dropped, as after convergence.
        """
        locals_ = [member.node.membership.local for member in self.nodes.values()]
        for member in self.nodes.values():
            for local in locals_:
                if local.name != member.name:
                    member.node.membership.alive(
                        RemoteNodeState(
                            local.name,
                            local.addr,
                            local.port,
                            local.meta,
                            local.incarnation,
                            NodeStatus.ALIVE,
                            local.vsn,
                        )
                    )
            member.node.queue.reset()
            if isinstance(member.layer, SilentDelegate):
                member.layer.events.clear()

    # -- faults ------------------------------------------------------------------

    def kill(self, name: str) -> None:
        """Stop a node abruptly (kill -9): it never sends or answers again."""
        self.nodes[name].alive = False

    def stall(self, name: str, seconds: float) -> None:
        """Starve a node of CPU: its timers and received packets wait ``seconds``."""
        self.nodes[name].stalled_until = self.clock.now() + seconds

    def partition(self, *groups: Iterable[str]) -> None:
        """Only nodes of the same group can talk; nodes in no group form one more group."""
        self._groups = {name: index for index, group in enumerate(groups) for name in group}

    def heal(self) -> None:
        self._groups = {}

    def reachable(self, source: str, addr: Address) -> SimNode | None:
        name = self._by_address.get(addr)
        if name is None:
            return None
        target = self.nodes[name]
        if not target.alive or not self.nodes[source].alive:
            return None
        if self._groups.get(source, -1) != self._groups.get(name, -1):
            return None
        return target

    def deliver(self, source: str, addr: Address, data: bytes) -> None:
        self.stats["packets"] += 1
        target = self.reachable(source, addr)
        if target is None or (self.loss and self.rng.random() < self.loss):
            self.stats["lost"] += 1
            return
        self._packet_id += 1
        when = self.clock.now() + self.rng.uniform(*self.delay)
        source_address = self.nodes[source].address

        def arrive(_: Hashable) -> None:
            if not target.alive:
                return
            if target.stalled_until > self.clock.now():
                self.clock.call_at(("packet", self._next_id()), target.stalled_until, arrive)
                return
            target.node.handle_packet(data, source_address)

        self.clock.call_at(("packet", self._packet_id), when, arrive)

    def _next_id(self) -> int:
        self._packet_id += 1
        return self._packet_id

    # -- running and observing -----------------------------------------------------

    async def run(self, seconds: float, step: float = 0.05) -> None:
        """Advance virtual time, letting stream tasks (push/pull) finish between steps."""
        end = self.clock.now() + seconds
        while self.clock.now() < end:
            self.clock.run_until(min(end, self.clock.now() + step))
            await asyncio.sleep(0)
            await asyncio.sleep(0)

    async def run_until(
        self, condition: Callable[[], bool], limit: float, step: float = 0.05
    ) -> float | None:
        """Run until ``condition()`` holds; the virtual seconds it took, or None."""
        start = self.clock.now()
        while self.clock.now() - start < limit:
            if condition():
                return self.clock.now() - start
            await self.run(step, step)
        return self.clock.now() - start if condition() else None

    def view(self, observer: str) -> dict[str, NodeStatus]:
        return {n.name: n.status for n in self.nodes[observer].node.members()}

    def all_see(
        self, subject: str, status: NodeStatus, observers: Iterable[str] | None = None
    ) -> bool:
        names = (
            observers
            if observers is not None
            else (n for n, member in self.nodes.items() if member.alive and n != subject)
        )
        return all(self.view(name).get(subject) == status for name in names)

    def live_names(self) -> list[str]:
        return [name for name, member in self.nodes.items() if member.alive]
