"""The chaos runner: a seeded schedule of faults during continuous churn, checked throughout.

    python -m lab.chaos --duration 600 --seed 7 [--soak] [--origin-policy remove]

Builds the lab (:mod:`lab.net`, :mod:`lab.cluster`): three data centers, ``dc-a`` (one
syncer, keeps ``private-*`` services home), ``dc-b`` (three syncers sharing a 3-member
etcd), ``dc-c`` (one syncer reaching its registry through the fault proxy, imports nothing
of ``dc-b``'s ``svc-1``), links 20-80 ms with jitter and 0-3 % loss. The applications of
each data center churn (:mod:`lab.churn`). Then, fault after fault (:mod:`lab.faults`):
inject, hold while a sampler feeds the :class:`~lab.invariants.Monitor` every second,
heal, pause the churn and poll :func:`~lab.invariants.check_converged` until it passes
(the convergence time) or a deadline (its violations count), resume the churn. At the end
it prints the results table and writes ``results.json`` in the work directory.

``--soak`` compresses an hour into about ten minutes: 2 s application heartbeats (6 s
TTL), origin-grace 15 s, anti-entropy every 5 s, member TTL 2 s, twice the churn and
short holds. Everything is stopped and removed on exit, on SIGINT and on SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType

from lab.churn import PRIVATE_PREFIX, Applications
from lab.cluster import DataCenter, DcSpec, Lab, Timing
from lab.faults import KINDS, Fault, Injector, policy_slack, schedule
from lab.invariants import (
    Admission,
    Monitor,
    Observation,
    RegistryView,
    Violation,
    check_converged,
    registry_view,
)
from lab.net import LabError, Network, committed_tree, lab_unavailable

__all__ = ["ChaosConfig", "Results", "main", "run"]


@dataclass(frozen=True)
class ChaosConfig:
    seed: int = 1
    duration: float = 300.0
    soak: bool = False
    origin_policy: str = "expire"
    workdir: Path | None = None
    instances: int = 40  # per data center
    verbose: bool = True
    only: tuple[str, ...] = ()  # fault kinds to draw from (empty: all)
    committed: bool = False  # run the commit at HEAD (a copy), not the working tree

    def timing(self) -> Timing:
        if self.soak:
            return Timing(2, 2, member_ttl=2, anti_entropy=5, origin_grace=15,
                          origin_policy=self.origin_policy)  # fmt: skip
        return Timing(5, 2, member_ttl=3, anti_entropy=20, origin_grace=45,
                      origin_policy=self.origin_policy)  # fmt: skip


@dataclass
class Results:
    seed: int
    duration: float
    soak: bool
    origin_policy: str
    faults: dict[str, int] = field(default_factory=dict)
    checks: int = 0
    samples: int = 0
    violations: list[str] = field(default_factory=list)
    convergence: list[float] = field(default_factory=list)
    convergence_by_kind: dict[str, list[float]] = field(default_factory=dict)
    lapses: int = 0
    lapses_by_cause: dict[str, int] = field(default_factory=dict)
    policy_expiries: int = 0
    lapse_log: list[str] = field(default_factory=list)
    repairs: int = 0  # digest repairs run by all links of all syncers (their status)
    slots_pulled: int = 0  # slots those repairs pulled (a resync storm would show here)
    catch_up_by_kind: dict[str, list[int]] = field(default_factory=dict)  # slots per heal
    duplicates: int = 0
    churn: dict[str, int] = field(default_factory=dict)
    links: dict[str, str] = field(default_factory=dict)
    log: list[str] = field(default_factory=list)


ADMISSION = Admission(
    export_exclude={"dc-a": [f"{PRIVATE_PREFIX}*"]},
    import_exclude={"dc-c": [("dc-b", "svc-1")]},
)
SPECS = [
    DcSpec("dc-a", config=ADMISSION.toml("dc-a")),
    DcSpec("dc-b", syncers=3, etcd=True, config=ADMISSION.toml("dc-b")),
    DcSpec("dc-c", proxy=True, config=ADMISSION.toml("dc-c")),
]


def percentile(values: list[float], share: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


Counters = dict[tuple[str, str], tuple[int, int]]  # (syncer, remote dc): (repairs, slots)


def pulled_since(before: Counters, after: Counters) -> int:
    """Slots pulled between two readings of the links' counters (a syncer restarted in
    between counts from 0)."""
    total = 0
    for key, (_, slots) in after.items():
        earlier = before.get(key, (0, 0))[1]
        total += slots - earlier if slots >= earlier else slots
    return total


class Runner:
    def __init__(self, config: ChaosConfig, workdir: Path) -> None:
        self.config = config
        self.timing = config.timing()
        self.network = Network(workdir, len(SPECS))
        if config.committed:
            self.network.source = committed_tree(Path(tempfile.gettempdir()))
        self.lab = Lab(self.network, SPECS, self.timing)
        self.injector = Injector(self.lab, clock=time.monotonic())
        self.monitor = Monitor(self.timing.origin_grace, policy_slack(self.timing))
        self.results = Results(config.seed, config.duration, config.soak, config.origin_policy)
        self.apps: list[Applications] = []
        self.cause = ""
        self.sampling = threading.Event()
        self.stop = threading.Event()
        self.lock = threading.Lock()

    def say(self, text: str) -> None:
        wall = time.strftime("%H:%M:%S", time.gmtime())
        line = f"[{self.injector.now():7.1f}s {wall}] {text}"
        self.results.log.append(line)
        if self.config.verbose:
            print(line, flush=True)

    # -- reading the lab --------------------------------------------------------------

    def snapshot(self, with_exports: bool = False) -> Observation:
        registries: dict[str, RegistryView] = {}
        for dc in self.lab.dcs:
            try:
                registries[dc.name] = registry_view(dc.name, dc.client.instances(timeout=5))
            except (OSError, ValueError):
                registries[dc.name] = RegistryView(dc.name, up=False)
        exported = {dc.name: self.exported(dc) for dc in self.lab.dcs} if with_exports else {}
        return Observation(self.injector.now(), registries,
                        {k: v for k, v in exported.items() if v is not None})  # fmt: skip

    def exported(self, dc: DataCenter) -> int | None:
        """The exported count of ``dc``'s exporter (its leader), None if unknown."""
        statuses = {}
        for syncer in dc.syncers:
            try:
                statuses[syncer.name] = syncer.status()
            except (OSError, ValueError):
                return None
        if len(dc.syncers) == 1:
            return int(statuses[dc.syncers[0].name]["exported"])
        leaders = {s["ownership"].get("leader") for s in statuses.values()}
        if len(leaders) != 1 or (leader := leaders.pop()) not in statuses:
            return None
        return int(statuses[leader]["exported"])

    def link_counters(self) -> Counters:
        """(repairs, slots pulled) of every link of every syncer, by (syncer, remote dc):
        counters since each syncer's last start."""
        counters: Counters = {}
        for dc in self.lab.dcs:
            for syncer in dc.syncers:
                try:
                    remote = syncer.status()["remote"]
                except (OSError, ValueError, KeyError):
                    continue
                for name, link in remote.items():
                    counters[(syncer.name, name)] = (
                        int(link.get("repairs", 0)),
                        int(link.get("slots_pulled", 0)),
                    )
        return counters

    def count_repairs(self) -> None:
        """Repairs and slots pulled by every link (a restarted syncer's earlier ones are
        not counted)."""
        for repairs, slots in self.link_counters().values():
            self.results.repairs += repairs
            self.results.slots_pulled += slots

    def sample_forever(self) -> None:
        while not self.stop.wait(1.0):
            if not self.sampling.is_set():
                continue
            with self.lock:
                snapshot = self.snapshot()
                new = self.monitor.observe(snapshot, dict(self.injector.cut),
                                           dict(self.injector.gone), set(self.injector.wiped),
                                           self.cause)  # fmt: skip
                self.results.samples += 1
            for violation in new:
                self.say(f"VIOLATION {violation}")

    # -- phases ----------------------------------------------------------------------

    def converge(self, deadline: float, since: float) -> tuple[float | None, list[Violation]]:
        """Poll the steady-state check until it passes: (seconds since ``since``, the
        heal, []) or (None, last)."""
        start = reported = since
        found: list[Violation] = []
        while time.monotonic() - start < deadline:
            found = check_converged(self.snapshot(with_exports=True), ADMISSION)
            self.results.checks += 1
            if not found:
                return time.monotonic() - start, []
            if time.monotonic() - reported > 5:  # what is still missing, for the logs
                reported = time.monotonic()
                pending = Counter(f"{v.kind} in {v.dc}" for v in found)
                self.say(f"  not yet converged: {dict(pending)}")
            time.sleep(0.5)
        return None, found

    def quiet(self, fault: Fault | None) -> None:
        healed = time.monotonic()  # convergence counts from here, the settling included
        before = self.link_counters()
        for app in self.apps:
            app.paused.set()
        time.sleep(0.5)  # let in-flight operations land
        deadline = 10 + self.timing.anti_entropy + 3 * self.timing.instance_ttl
        took, found = self.converge(deadline, healed)
        if took is None:
            for violation in found[:20]:
                self.say(f"VIOLATION {violation}")
            self.results.violations += [str(v) for v in found]
            # resynchronise the expectations, so one failure is not counted at every step
        else:
            kind = fault.kind if fault else "start"
            self.results.convergence.append(took)
            self.results.convergence_by_kind.setdefault(kind, []).append(took)
            pulled = pulled_since(before, self.link_counters())  # the catch-up's slots
            self.results.catch_up_by_kind.setdefault(kind, []).append(pulled)
            self.say(f"converged {took:.1f} s after heal, {pulled} slot(s) pulled")
        self.injector.settle()
        for app in self.apps:
            app.paused.clear()

    def shape_links(self, rng: random.Random) -> None:
        links = {}
        count = len(SPECS)
        for src in range(1, count + 1):
            for dst in range(1, count + 1):
                if src < dst:
                    delay = rng.uniform(20, 80)
                    jitter = delay * rng.uniform(0.1, 0.25)
                    loss = rng.uniform(0.0, 0.03)
                    for a, b in ((src, dst), (dst, src)):
                        links[(a, b)] = (delay, jitter)
                        self.network.set_loss(a, b, loss)
                    self.results.links[f"dc{src}<->dc{dst}"] = (
                        f"{delay:.0f} ms +-{jitter:.0f} ms, loss {loss * 100:.1f} %"
                    )
        self.network.start_delays(links, self.config.seed)

    def run(self) -> Results:
        config, timing = self.config, self.timing
        rng = random.Random(config.seed)
        self.network.open()
        self.shape_links(rng)
        self.say(f"links: {self.results.links}")
        self.lab.start()
        self.say(
            "lab up: " + ", ".join(f"{d.name} ({len(d.syncers)} syncers)" for d in self.lab.dcs)
        )
        for dc in self.lab.dcs:
            app = Applications(dc.name, dc.client, config.seed, target=config.instances,
                               interval=timing.instance_interval, times=timing.instance_times,
                               ops_per_second=4.0 if config.soak else 2.0)  # fmt: skip
            app.start()
            self.apps.append(app)
        sampler = threading.Thread(target=self.sample_forever, name="sampler", daemon=True)
        sampler.start()
        self.quiet(None)
        short_hold = 8.0 if config.soak else 15.0
        specs = [(s.etcd, s.proxy) for s in SPECS]
        faults = schedule(config.seed, 10_000, specs, timing, short_hold, config.only)
        began = time.monotonic()
        for fault in faults:
            if time.monotonic() - began > config.duration:
                break
            self.cause = fault.kind
            self.sampling.set()
            self.say(f"inject {self.injector.inject(fault)}")
            self.results.faults[fault.kind] = self.results.faults.get(fault.kind, 0) + 1
            time.sleep(fault.hold)
            self.injector.heal()
            self.say(f"healed {fault.kind}")
            self.quiet(fault)
            with self.lock:
                self.cause = ""
            time.sleep(rng.uniform(2, 6) * (0.5 if config.soak else 1.0))
        self.sampling.clear()
        self.quiet(None)
        self.count_repairs()
        self.stop.set()
        sampler.join(10)
        for app in self.apps:
            app.stopped.set()
        results = self.results
        results.violations += [str(v) for v in self.monitor.violations]
        results.lapses = self.monitor.lapses
        results.lapses_by_cause = dict(self.monitor.lapses_by_cause)
        results.policy_expiries = self.monitor.policy_expiries
        results.lapse_log = [str(v) for v in self.monitor.lapse_log]
        results.duplicates = self.monitor.duplicates
        results.churn = dict(sum((Counter(a.counts) for a in self.apps), Counter()))
        return results


def table(results: Results) -> str:
    """The results table (plain text)."""
    conv = results.convergence
    lines = [
        f"seed {results.seed}, duration {results.duration:.0f} s"
        f"{', soak' if results.soak else ''}, origin policy {results.origin_policy}",
        "",
        f"{'fault':<22}{'count':>6}{'conv p50':>10}{'conv p99':>10}{'conv max':>10}"
        f"{'slots/heal p50':>16}{'max':>6}",
    ]
    for kind, count in sorted(results.faults.items()):
        times = results.convergence_by_kind.get(kind, [])
        p50 = f"{percentile(times, 0.5):.1f}s" if times else "-"
        p99 = f"{percentile(times, 0.99):.1f}s" if times else "-"
        top = f"{max(times):.1f}s" if times else "-"
        slots = results.catch_up_by_kind.get(kind, [])
        slots50 = f"{percentile([float(n) for n in slots], 0.5):.0f}" if slots else "-"
        slots_top = f"{max(slots)}" if slots else "-"
        lines.append(f"{kind:<22}{count:>6}{p50:>10}{p99:>10}{top:>10}{slots50:>16}{slots_top:>6}")
    lines += [
        "",
        f"faults injected:              {sum(results.faults.values())}",
        f"invariant checks run:         {results.checks} steady-state, "
        f"{results.samples} monitor samples",
        f"violations:                   {len(results.violations)}",
        f"convergence after heal:       p50 {percentile(conv, 0.5):.1f} s, "
        f"p99 {percentile(conv, 0.99):.1f} s ({len(conv)} heals)",
        f"copies that lapsed:           {results.lapses} "
        f"{dict(sorted(results.lapses_by_cause.items())) if results.lapses else ''}".rstrip(),
        f"copies gone by origin policy: {results.policy_expiries}",
        f"digest repairs (slots pulled): {results.repairs} ({results.slots_pulled})",
        f"duplicate copies seen:        {results.duplicates}",
        f"churn operations:             {dict(sorted(results.churn.items()))}",
    ]
    for violation in results.violations[:30]:
        lines.append(f"  {violation}")
    return "\n".join(lines)


def run(config: ChaosConfig) -> Results:
    """One chaos run; everything it started is stopped and removed before it returns."""
    reason = lab_unavailable()
    if reason:
        raise LabError(reason)
    workdir = config.workdir or Path(tempfile.mkdtemp(prefix="pysyncer-lab-"))
    workdir.mkdir(parents=True, exist_ok=True)
    runner = Runner(config, workdir)

    def interrupted(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, interrupted)
    try:
        results = runner.run()
    finally:
        runner.stop.set()
        for app in runner.apps:
            app.stopped.set()
        runner.network.close()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    (workdir / "results.json").write_text(json.dumps(asdict(results), indent=1))
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lab.chaos",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--duration", type=float, default=300.0, help="seconds of faults")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--soak", action="store_true", help="compressed timings (see above)")
    parser.add_argument("--origin-policy", choices=("expire", "remove"), default="expire")
    parser.add_argument("--instances", type=int, default=40, help="per data center")
    parser.add_argument("--only", default="", help="comma-separated fault kinds to draw from")
    parser.add_argument(
        "--committed", action="store_true", help="run a copy of HEAD, not the working tree"
    )
    parser.add_argument("--workdir", type=Path, help="logs and results.json (default: a temp dir)")
    args = parser.parse_args(argv)
    only = tuple(k for k in args.only.split(",") if k)
    unknown = set(only) - set(KINDS)
    if unknown:
        parser.error(f"unknown fault kinds {sorted(unknown)}; known: {', '.join(KINDS)}")
    config = ChaosConfig(args.seed, args.duration, args.soak, args.origin_policy,
                         args.workdir, args.instances, only=only,
                         committed=args.committed)  # fmt: skip
    try:
        results = run(config)
    except LabError as exc:
        print(f"lab: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: lab removed", file=sys.stderr)
        return 130
    print()
    print(table(results))
    return 1 if results.violations else 0


if __name__ == "__main__":
    sys.exit(main())
