"""Failure detector tuning in the simulator: detection time against false failures.

For several detector profiles (memberlist's LAN timings, pysyncer's default and
variants around it) and packet loss rates, it measures in the deterministic simulator:

* detection: one member killed after the pool settled; the virtual seconds until every
  other member declares it dead (p50 and p99 over seeds);
* false failures: four members CPU-starved (frozen for 0.1-1.0 s, then running for
  0.2-1.0 s, over and over) in a lossy pool; every declaration of a healthy member as
  dead, and of a starved one, by any observer;
* the headline runs of the issue: N=100 detection with the default profile, N=100 for
  ``--fp-minutes`` with four starved members and 5 % loss, N=1,000 detection.

``--plot DIR`` writes ``gossip_tradeoff.png`` (detection p50 against false failures,
one point per profile and loss rate) and ``gossip_detection_cdf.png`` (detection time
CDFs at N=100) into DIR (matplotlib, the ``bench`` extra).

    python -m benchmarks.bench_gossip_tuning [--seeds 8] [--fp-seconds 60] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import random
import statistics
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pysyncer.gossip.membership import NodeStatus
from pysyncer.gossip.simulator import Simulation
from pysyncer.gossip.timing import LAN, PYSYNCER, GossipProfile

VARIANTS: dict[str, GossipProfile] = {
    "fast-0.2s-no-lifeguard": replace(
        PYSYNCER,
        name="fast-0.2s-no-lifeguard",
        probe_interval=0.2,
        probe_timeout=0.1,
        suspicion_mult=1,
        suspicion_confirmations=0,
        awareness_max_multiplier=1,
    ),
    "fast-0.2s": replace(PYSYNCER, name="fast-0.2s", probe_interval=0.2, probe_timeout=0.1),
    "pysyncer": PYSYNCER,
    "slow-0.6s": replace(PYSYNCER, name="slow-0.6s", probe_interval=0.6, probe_timeout=0.3),
    "lan": LAN,
}
STARVED = 4
SETTLE = 3.0


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


async def detection(profile: GossipProfile, size: int, seed: int, loss: float) -> float:
    """Virtual seconds from a kill until every other member declares the victim dead."""
    sim = Simulation(size, profile=profile, seed=seed, loss=loss)
    sim.seed_full_membership()
    sim.start()
    await sim.run(SETTLE)
    victim = f"n{(seed * 7919) % size}"
    sim.kill(victim)
    step = 0.05 if size <= 200 else 0.1
    took = await sim.run_until(lambda: sim.all_see(victim, NodeStatus.DEAD), 180, step)
    if took is None:
        raise RuntimeError(f"{profile.name} n={size} seed={seed}: crash not detected in 180 s")
    return took


@dataclass
class FalseFailures:
    healthy: int  # declarations of a healthy member as dead (any observer)
    starved: int  # declarations of a starved member as dead
    suspicions: int
    refutations: int
    seconds: float

    def per_10_min(self) -> float:
        return (self.healthy + self.starved) * 600.0 / self.seconds


async def false_failures(
    profile: GossipProfile, size: int, seed: int, loss: float, seconds: float
) -> FalseFailures:
    """Four members starved of CPU in a lossy pool for ``seconds``: who was declared dead."""
    sim = Simulation(size, profile=profile, seed=seed, loss=loss)
    sim.seed_full_membership()
    sim.start()
    await sim.run(SETTLE)
    starved = [f"n{(i * size) // STARVED + 1}" for i in range(STARVED)]
    rng = random.Random(seed)
    start = sim.clock.now()
    wake = {name: start + rng.uniform(0.0, 1.0) for name in starved}
    for member in sim.nodes.values():
        member.delegate.events.clear()
    while sim.clock.now() - start < seconds:
        now = sim.clock.now()
        for name in starved:
            if now >= wake[name]:
                frozen = rng.uniform(0.1, 1.0)
                sim.stall(name, frozen)
                wake[name] = now + frozen + rng.uniform(0.2, 1.0)
        await sim.run(0.05, 0.05)
    deaths = [
        subject
        for member in sim.nodes.values()
        for kind, subject in member.delegate.events
        if kind == "dead"
    ]
    return FalseFailures(
        healthy=sum(1 for s in deaths if s not in starved),
        starved=sum(1 for s in deaths if s in starved),
        suspicions=sum(m.node.stats.counters["suspicions"] for m in sim.nodes.values()),
        refutations=sum(m.node.membership.refutations for m in sim.nodes.values()),
        seconds=seconds,
    )


def measure(args: argparse.Namespace) -> dict[str, Any]:
    report: dict[str, Any] = {"profiles": {}, "headline": {}}
    losses = [float(x) for x in args.losses.split(",")]
    names = [n for n in args.profiles.split(",") if n]
    for name in names:
        profile = VARIANTS[name]
        rows = []
        for loss in losses:
            started = time.perf_counter()
            times = [
                asyncio.run(detection(profile, args.size, seed, loss))
                for seed in range(1, args.seeds + 1)
            ]
            ff = asyncio.run(false_failures(profile, args.fp_size, 1, loss, args.fp_seconds))
            rows.append(
                {
                    "loss": loss,
                    "detect_p50_s": statistics.median(times),
                    "detect_p99_s": percentile(times, 0.99),
                    "detect_s": times,
                    "false_healthy": ff.healthy,
                    "false_starved": ff.starved,
                    "false_per_10_min": ff.per_10_min(),
                    "suspicions": ff.suspicions,
                    "refutations": ff.refutations,
                }
            )
            print(
                f"  {name:>24} loss {loss:4.0%}: detect p50 {rows[-1]['detect_p50_s']:.2f} s"
                f" p99 {rows[-1]['detect_p99_s']:.2f} s; false: healthy {ff.healthy},"
                f" starved {ff.starved} ({time.perf_counter() - started:.0f} s wall)",
                file=sys.stderr,
            )
        report["profiles"][name] = rows
    if args.fp_minutes > 0:
        ff = asyncio.run(false_failures(PYSYNCER, 100, 2, 0.05, args.fp_minutes * 60.0))
        report["headline"]["n100_starved4_loss5_minutes"] = args.fp_minutes
        report["headline"]["n100_starved4_loss5"] = ff.__dict__
        print(f"  N=100, 4 starved, 5 % loss, {args.fp_minutes} min: {ff}", file=sys.stderr)
    if args.big_seeds > 0:
        times = [
            asyncio.run(detection(PYSYNCER, 1000, s, 0.0)) for s in range(1, args.big_seeds + 1)
        ]
        report["headline"]["n1000_detect_s"] = times
        print(f"  N=1000 detection: {times}", file=sys.stderr)
    return report


def plot(report: dict[str, Any], directory: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    directory.mkdir(parents=True, exist_ok=True)
    out = []
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    losses = sorted({row["loss"] for rows in report["profiles"].values() for row in rows})
    markers = dict(zip(report["profiles"], "osD^v<>", strict=False))
    for loss in losses:
        xs, ys, labels = [], [], []
        for name, rows in report["profiles"].items():
            for row in rows:
                if row["loss"] == loss:
                    xs.append(row["detect_p50_s"])
                    ys.append(row["false_per_10_min"])
                    labels.append(name)
        (line,) = ax.plot(xs, ys, "-", alpha=0.4, label=f"loss {loss:.0%}")
        for x, y, name in zip(xs, ys, labels, strict=True):
            ax.plot(x, y, markers[name], color=line.get_color())
    for name, marker in markers.items():
        ax.plot([], [], marker, color="grey", label=name)
    ax.set_xlabel("crash detection p50, N=100 (s, simulated)")
    ax.set_yscale("symlog", linthresh=1.0)
    ax.set_ylabel("false failure declarations per 10 min (symlog)")
    ax.set_title("Detection time vs false failures (4 CPU-starved members)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    path = directory / "gossip_tradeoff.png"
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    out.append(path)

    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    for name, rows in report["profiles"].items():
        row = min(rows, key=lambda r: r["loss"])
        times = sorted(row["detect_s"])
        ys = [(i + 1) / len(times) for i in range(len(times))]
        ax.step(times, ys, where="post", label=f"{name} (loss {row['loss']:.0%})")
    ax.set_xlabel("seconds until every member declares the crashed one dead (N=100)")
    ax.set_ylabel("fraction of runs")
    ax.set_title("Crash detection CDF, simulator")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    path = directory / "gossip_detection_cdf.png"
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    out.append(path)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--profiles", default=",".join(VARIANTS), help="profiles to compare")
    parser.add_argument("--losses", default="0,0.05,0.1,0.2", help="packet loss rates")
    parser.add_argument("--size", type=int, default=100, help="pool size for detection (100)")
    parser.add_argument("--seeds", type=int, default=8, help="detection runs per point (8)")
    parser.add_argument("--fp-size", type=int, default=50, help="pool size, false failures")
    parser.add_argument("--fp-seconds", type=float, default=60.0, help="per point (60)")
    parser.add_argument("--fp-minutes", type=float, default=0.0, help="N=100 headline run")
    parser.add_argument("--big-seeds", type=int, default=0, help="N=1000 detection runs")
    parser.add_argument("--plot", type=Path, help="directory for the PNG plots")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--from-json", type=Path, help="plot/print a saved --json report")
    args = parser.parse_args(argv)
    logging.disable(logging.WARNING)  # the TCP-fallback warnings of lossy runs
    report = json.loads(args.from_json.read_text()) if args.from_json else measure(args)
    if args.plot:
        for path in plot(report, args.plot):
            print(f"wrote {path}", file=sys.stderr)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    for name, rows in report["profiles"].items():
        for row in rows:
            print(
                f"{name:>24} loss {row['loss']:4.0%}  detect p50 {row['detect_p50_s']:5.2f} s"
                f"  p99 {row['detect_p99_s']:5.2f} s  false healthy {row['false_healthy']}"
                f"  starved {row['false_starved']}"
            )
    for key, value in report["headline"].items():
        print(f"{key}: {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
