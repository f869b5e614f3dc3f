"""Fault kinds, the seeded schedule, and how each fault is injected and healed.

A :class:`Fault` is a kind, a target and a hold time; :func:`schedule` draws them from a
seed (the same seed gives the same list). :class:`Injector` applies one to a running
:class:`~lab.cluster.Lab` and undoes it, and tells the invariant monitor what is cut off
(:attr:`Injector.cut`, :attr:`Injector.gone`) and which registries lost their state
(:attr:`Injector.wiped`). Clock steps are not among the kinds: see docs/reliability.md
(``date -s`` in a namespace sets the one system clock, time namespaces shift only the
monotonic clocks, and libfaketime is not in the lab's packages).

Owns no checks and no churn.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from lab.cluster import DataCenter, Lab, Syncer, Timing, wait

__all__ = ["KINDS", "Fault", "Injector", "schedule"]

KINDS = {
    # kind: (weight, needs)
    "partition-both": (4, ""),
    "partition-one-way": (4, ""),
    "isolate-past-grace": (1, ""),
    "loss-burst": (2, ""),
    "kill-syncer": (3, ""),
    "pause-syncer": (2, ""),
    "kill-leader": (3, "etcd"),
    "registry-restart": (2, ""),
    "proxy-slow": (2, "proxy"),
    "proxy-errors": (2, "proxy"),
    "etcd-member-loss": (2, "etcd"),
    "etcd-leader-loss": (2, "etcd"),
}


@dataclass(frozen=True)
class Fault:
    kind: str
    dc: int  # 1-based data center the fault hits
    other: int = 0  # the other end of a link fault
    hold: float = 0.0  # seconds between inject and heal
    pick: int = 0  # which syncer / etcd member (modulo how many there are)

    def __str__(self) -> str:
        link = f"->dc{self.other}" if self.other else ""
        return f"{self.kind} dc{self.dc}{link} hold {self.hold:.1f}s"


def schedule(
    seed: int,
    count: int,
    dcs: list[tuple[bool, bool]],
    timing: Timing,
    short_hold: float,
    only: tuple[str, ...] = (),
) -> list[Fault]:
    """``count`` faults from ``seed``. ``dcs``: per data center (has etcd, has proxy);
    ``only``: the kinds to draw from (empty: all)."""
    rng = random.Random(seed)
    kinds = [
        kind
        for kind, (weight, needs) in KINDS.items()
        for _ in range(weight)
        if needs == "" or any(etcd if needs == "etcd" else proxy for etcd, proxy in dcs)
        if not only or kind in only
    ]
    with_etcd = [n for n, (etcd, _) in enumerate(dcs, start=1) if etcd]
    with_proxy = [n for n, (_, proxy) in enumerate(dcs, start=1) if proxy]
    faults = []
    for _ in range(count):
        kind = rng.choice(kinds)
        dc = rng.randint(1, len(dcs))
        if kind in ("kill-leader", "etcd-member-loss", "etcd-leader-loss"):
            dc = rng.choice(with_etcd)
        elif kind.startswith("proxy-"):
            dc = rng.choice(with_proxy)
        other = rng.choice([n for n in range(1, len(dcs) + 1) if n != dc])
        hold = rng.uniform(0.3, 1.0) * short_hold
        if kind in ("kill-syncer", "pause-syncer"):
            # a data center's only syncer away for longer than its copies' TTL lets them
            # lapse by design: hold it for a part of the TTL, so a lapse means a fault
            hold = rng.uniform(0.15, 0.5) * timing.instance_ttl
        elif kind == "isolate-past-grace":
            hold = timing.origin_grace + policy_slack(timing) + 5
        elif kind == "registry-restart":
            hold = 0.0
        faults.append(Fault(kind, dc, other if kind.endswith(("both", "way", "burst")) else 0,
                            round(hold, 1), rng.randrange(1000)))  # fmt: skip
    return faults


def policy_slack(timing: Timing) -> float:
    """Seconds after origin-grace by which its policy must show: gossip failure detection
    (Lifeguard's suspicion timeout stays near its maximum when few members are left to
    confirm, and an isolated member's own probes slow down as its health score drops:
    measured up to 23 s for an isolated dc-b, 36 s from inside an isolated dc-c), plus
    the copies' TTL and a renewal pace when they expire."""
    detection = 45.0
    if timing.origin_policy == "expire":
        return detection + timing.instance_ttl * 1.25 + 2
    return detection + 2


@dataclass
class Injector:
    lab: Lab
    cut: dict[tuple[str, str], float] = field(default_factory=dict)  # (origin, holder) -> since
    gone: dict[str, float] = field(default_factory=dict)  # origin -> since
    wiped: set[str] = field(default_factory=set)
    clock: float = 0.0  # the runner's t=0 (monotonic)
    _undo: list[Callable[[], None]] = field(default_factory=list)

    def now(self) -> float:
        return time.monotonic() - self.clock

    def _dc(self, n: int) -> DataCenter:
        return self.lab.dcs[n - 1]

    def _syncer(self, dc: DataCenter, pick: int) -> Syncer:
        return dc.syncers[pick % len(dc.syncers)]

    def _leader(self, dc: DataCenter) -> Syncer:
        for syncer in self.lab.live_syncers(dc):
            try:
                leader = syncer.status()["ownership"].get("leader")
            except (OSError, ValueError, KeyError):
                continue
            for candidate in dc.syncers:
                if candidate.name == leader:
                    return candidate
        return dc.syncers[0]

    def _mark_links(self) -> None:
        """``cut`` from the network's blocked directions (a pair is cut either way)."""
        net = self.lab.network
        now = self.now()
        pairs = set()
        for src, dst in net.blocked:
            a, b = self._dc(src).name, self._dc(dst).name
            pairs |= {(a, b), (b, a)}
        for pair in pairs:
            self.cut.setdefault(pair, now)
        for pair in set(self.cut) - pairs:
            del self.cut[pair]

    def inject(self, fault: Fault) -> str:
        """Apply ``fault``; a one-line description of what was done."""
        lab, net = self.lab, self.lab.network
        dc = self._dc(fault.dc)
        if fault.kind == "partition-both":
            net.partition(fault.dc, fault.other)
            net.partition(fault.other, fault.dc)
        elif fault.kind == "partition-one-way":
            net.partition(fault.dc, fault.other)
        elif fault.kind == "isolate-past-grace":
            for other in range(1, len(lab.dcs) + 1):
                if other != fault.dc:
                    net.partition(fault.dc, other)
                    net.partition(other, fault.dc)
            self.gone[dc.name] = self.now()
        elif fault.kind == "loss-burst":
            before = net.loss.get((fault.dc, fault.other), 0.0)
            self._undo.append(lambda: net.set_loss(fault.dc, fault.other, before))
            net.set_loss(fault.dc, fault.other, 0.05)
        elif fault.kind in ("kill-syncer", "kill-leader"):
            syncer = (
                self._leader(dc) if fault.kind == "kill-leader" else self._syncer(dc, fault.pick)
            )
            syncer.process.kill()
            self._undo.append(lambda: lab.restart_syncer(dc, syncer))
            if not lab.live_syncers(dc):
                self.gone[dc.name] = self.now()
            self._mark_links()
            return f"{fault} ({syncer.name})"
        elif fault.kind == "pause-syncer":
            syncer = self._syncer(dc, fault.pick)
            syncer.process.pause()
            self._undo.append(syncer.process.resume)
            if not lab.live_syncers(dc):
                self.gone[dc.name] = self.now()
            self._mark_links()
            return f"{fault} ({syncer.name})"
        elif fault.kind == "registry-restart":
            self.wiped.add(dc.name)
            lab.restart_registry_empty(dc)
        elif fault.kind == "proxy-slow":
            dc.set_proxy_fault(delay=2.0, error_rate=0.0)
            self._undo.append(lambda: dc.set_proxy_fault(delay=0.0, error_rate=0.0))
        elif fault.kind == "proxy-errors":
            dc.set_proxy_fault(delay=0.0, error_rate=0.5)
            self._undo.append(lambda: dc.set_proxy_fault(delay=0.0, error_rate=0.0))
        elif fault.kind in ("etcd-member-loss", "etcd-leader-loss"):
            leader = dc.etcd_leader()
            member = fault.pick % 3
            if fault.kind == "etcd-leader-loss" and leader is not None:
                member = leader
            elif leader is not None and member == leader:
                member = (member + 1) % 3
            dc.etcd[member].kill()
            self._undo.append(lambda: lab.restart_etcd(dc, member))
            self._mark_links()
            return f"{fault} ({dc.etcd[member].name}, leader was e{(leader or 0) + 1})"
        self._mark_links()
        return str(fault)

    def heal(self) -> None:
        """Undo every fault in effect (links, processes, proxy)."""
        lab, net = self.lab, self.lab.network
        net.heal_all()
        for undo in reversed(self._undo):
            undo()
        self._undo.clear()
        for dc in lab.dcs:
            for syncer in dc.syncers:
                wait(syncer.ready, 60, f"{syncer.name} back", syncer.process)
        self.gone.clear()
        self._mark_links()

    def settle(self) -> None:
        """After a converged check: registry restarts are no longer in the window."""
        self.wiped.clear()
