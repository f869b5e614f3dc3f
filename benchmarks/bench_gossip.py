"""Gossip pool figures from the deterministic simulator: detection time and cost.

For pools of several sizes, with a gossip profile (``--profile``: pysyncer, the default,
or memberlist's lan, wan, local), it kills one member after the pool settled and measures
the virtual time until every other member declares it dead (median and max over seeds),
the packets sent per member per second, and how many
simulated seconds one wall-clock second runs (the cost of the real node code, byte
encoding included). With ``--compare-twin`` the same run repeats in a subprocess on the
pure-Python twins and the wall-clock ratio is printed.

    python -m benchmarks.bench_gossip [--sizes 10,100,500] [--seeds 5] [--profile lan] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from pysyncer import _core
from pysyncer.gossip.membership import NodeStatus
from pysyncer.gossip.simulator import Simulation
from pysyncer.gossip.timing import GossipProfile, profile_named


async def one_run(size: int, seed: int, profile: GossipProfile) -> dict[str, float]:
    sim = Simulation(size, profile=profile, seed=seed)
    sim.seed_full_membership()
    sim.start()
    await sim.run(5.0)
    victim = f"n{(seed * 7919) % size}"
    sim.kill(victim)
    packets_before = sim.stats["packets"]
    started_virtual = sim.clock.now()
    started_wall = time.perf_counter()
    took = await sim.run_until(lambda: sim.all_see(victim, NodeStatus.DEAD), limit=120, step=0.1)
    wall = time.perf_counter() - started_wall
    virtual = sim.clock.now() - started_virtual
    if took is None:
        raise RuntimeError(f"n={size} seed={seed}: {victim} not detected in 120 s")
    return {
        "detect_s": took,
        "packets_per_member_s": (sim.stats["packets"] - packets_before) / virtual / (size - 1),
        "virtual_per_wall": virtual / wall,
    }


def measure(sizes: list[int], seeds: int, profile: GossipProfile) -> dict[str, Any]:
    results: dict[str, Any] = {
        "implementation": _core.IMPLEMENTATION,
        "profile": profile.name,
        "sizes": {},
    }
    for size in sizes:
        runs = [asyncio.run(one_run(size, seed, profile)) for seed in range(1, seeds + 1)]
        detect = [r["detect_s"] for r in runs]
        results["sizes"][str(size)] = {
            "detect_median_s": statistics.median(detect),
            "detect_max_s": max(detect),
            "packets_per_member_s": statistics.median(r["packets_per_member_s"] for r in runs),
            "virtual_per_wall": statistics.median(r["virtual_per_wall"] for r in runs),
        }
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sizes", default="10,100,500", help="pool sizes, comma separated")
    parser.add_argument("--seeds", type=int, default=5, help="runs per size (5)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--compare-twin", action="store_true", help="also run on the twins")
    parser.add_argument("--profile", default="pysyncer", help="gossip profile (pysyncer)")
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    if not sizes or min(sizes) < 3 or args.seeds < 1:
        parser.error("sizes must be >= 3 and --seeds >= 1")
    report = measure(sizes, args.seeds, profile_named(args.profile))
    if args.compare_twin and _core.IMPLEMENTATION == "cython":
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                __spec__.name,
                "--sizes",
                args.sizes,
                "--seeds",
                str(args.seeds),
                "--profile",
                args.profile,
                "--json",
            ],
            env={**os.environ, "PYSYNCER_NO_EXTENSIONS": "1"},
            cwd=Path(__file__).resolve().parent.parent,
            capture_output=True,
            text=True,
            check=True,
        )
        report["twin"] = json.loads(out.stdout)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(
        f"gossip simulator, profile {report['profile']}, core {report['implementation']}, "
        f"{args.seeds} seeds"
    )
    print(f"{'members':>8} {'detect p50':>11} {'detect max':>11} {'pkts/member/s':>14} "
          f"{'sim s per wall s':>17}")  # fmt: skip
    for size, row in report["sizes"].items():
        line = (
            f"{size:>8} {row['detect_median_s']:>10.2f}s {row['detect_max_s']:>10.2f}s "
            f"{row['packets_per_member_s']:>14.1f} {row['virtual_per_wall']:>17.1f}"
        )
        twin = report.get("twin", {}).get("sizes", {}).get(size)
        if twin:
            ratio = row["virtual_per_wall"] / twin["virtual_per_wall"]
            line += f"   (twin {twin['virtual_per_wall']:.1f}, compiled {ratio:.1f}x)"
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
