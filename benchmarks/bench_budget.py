"""The importer's write budget: convergence of a new data center against its bootstrap rate.

One origin data center A (a daemon filled in-process with ``--instances`` instances, as
:mod:`benchmarks.bench_sync` fills it); then, per budget, a new data center B (a real
``pysyncer daemon`` with a fresh data directory) joins and pulls everything. B's
``/v1/sync/status`` is sampled every 50 ms: the importer's ``registered`` counter (each
count is a registration the registry acknowledged) gives the registry's observed write
rate, its peak over any 1 s window and its mean over the whole sync;
convergence is from B's first registry write until B holds every copy, shown beside the
theoretical ``(N - burst) / rate``. B's steady rate is unlimited (bench_sync's nodes set
both rates to 0; only the bootstrap rate is set here), so its bucket starts with one token
and the whole sync runs at the bootstrap rate. No 1 s window may hold more than
``rate x (BURST_SECONDS + 1 s)`` writes: the bucket refills to its size whenever the
importer pauses (a store commit, the next slots pulled), and that burst may go at once.
B's CPU time (utime + stime) and the load average are printed with each row.

    python -m benchmarks.bench_budget [--instances 20000] [--budgets 500,2000,0] [--json]

A budget of 0 is unlimited. Every subprocess is stopped by its pid; every wait bounded.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.bench_sync import Node, proc_cpu, registry_quota, wait_until
from pysyncer.sync.writebudget import BURST_SECONDS

SAMPLE_EVERY = 0.05  # seconds between two status samples of B
WINDOW = 1.0  # seconds: the write rate is measured over windows this long


def window_rates(samples: list[tuple[float, int]]) -> list[float]:
    """Writes per second over every window of at least :data:`WINDOW` seconds that starts
    at a sample (the shortest such window from each sample)."""
    rates = []
    last = 0
    for first, (start, count) in enumerate(samples):
        last = max(last, first)
        while last < len(samples) and samples[last][0] - start < WINDOW:
            last += 1
        if last == len(samples):
            break
        end, reached = samples[last]
        rates.append((reached - count) / (end - start))
    return rates


def run_budget(
    origin: Node, workdir: Path, count: int, rate: float, bound: float, index: int
) -> dict[str, Any]:
    """A new data center B importing ``count`` copies at bootstrap ``rate``."""
    # bench_sync's nodes run unlimited (steady 0 too); only the bootstrap rate is set here
    flags = [*registry_quota(count), "--import-rate-bootstrap", str(rate)]
    load_before = os.getloadavg()[0]
    target = Node(f"b{index}", "127.0.0.62", workdir, join=origin.bind, extra=flags)
    try:
        wait_until(lambda: bool(target.status()), 30, "B's admin API", target)
        samples: list[tuple[float, int]] = []
        held = 0

        def converged() -> bool:
            nonlocal held
            asked = time.monotonic()
            status = target.status()
            if not status:
                return False
            # read somewhere between the request and the answer: the midpoint (a loaded
            # machine's late answers would otherwise squeeze the windows)
            now = (asked + time.monotonic()) / 2
            samples.append((now, int(status["importer"]["registered"])))
            held = sum(int(link["copies"]) for link in status["remote"].values())
            return held >= count

        wait_until(converged, bound, "B's full sync", target, origin)
        status = target.status()
        cpu = proc_cpu(target.pid)
    finally:
        target.stop()
    writing = [(t, c) for t, c in samples if c > 0]
    idle = [(t, c) for t, c in samples if c == 0][-1:]  # the last sample before any write
    started = (idle or writing)[0][0]  # the first write came after it (<= 50 ms late)
    rates = window_rates(idle + writing)
    # the bucket starts full at the steady rate (unlimited here: one token) and keeps
    # those tokens when the bootstrap rate takes over
    burst = 1.0 if rate else 0.0
    budget = status["importer"]["budget"]
    return {
        "budget_per_s": rate,
        "instances": count,
        "theoretical_s": (count - burst) / rate if rate else None,
        "converge_s": samples[-1][0] - started,
        "peak_per_s": max(rates, default=None),  # None: the sync took less than a window
        "mean_per_s": writing[-1][1] / max(1e-9, samples[-1][0] - started) if writing else 0.0,
        # the bucket refills to its size (BURST_SECONDS of the rate) whenever the importer
        # pauses (a store commit, the next slots pulled): a window may hold that much more
        "bound_per_window": rate * (BURST_SECONDS + WINDOW) if rate else None,
        "registered": int(status["importer"]["registered"]),
        "delayed": int(budget["delayed"]),
        "waited_s": float(budget["waited_seconds"]),
        "mode_after": budget["mode"],
        "cpu_s": cpu,
        "load_before": load_before,
        "load_after": os.getloadavg()[0],
    }


def print_table(rows: list[dict[str, Any]]) -> None:
    print(
        f"{'budget/s':>9} {'N':>7} {'N/rate s':>9} {'converge s':>11} {'peak/s':>8} "
        f"{'mean/s':>9} {'bound/1s':>11} {'delayed':>8} {'B CPU s':>8} {'load':>10}"
    )
    for row in rows:
        rate = f"{row['budget_per_s']:.0f}" if row["budget_per_s"] else "unlimited"
        theory = f"{row['theoretical_s']:.1f}" if row["theoretical_s"] is not None else "-"
        bound = f"{row['bound_per_window']:.0f}" if row["bound_per_window"] else "-"
        load = f"{row['load_before']:.1f}-{row['load_after']:.1f}"
        peak = f"{row['peak_per_s']:.0f}" if row["peak_per_s"] is not None else "-"
        print(
            f"{rate:>9} {row['instances']:>7} {theory:>9} {row['converge_s']:>11.1f} "
            f"{peak:>8} {row['mean_per_s']:>9.0f} {bound:>11} "
            f"{row['delayed']:>8} {row['cpu_s']:>8.1f} {load:>10}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--instances", type=int, default=20_000, help="instances at A (20000)")
    parser.add_argument(
        "--budgets", default="500,2000,0", help="bootstrap rates to run, 0 = unlimited"
    )
    parser.add_argument("--bound", type=float, default=180.0, help="seconds per sync (180)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    budgets = [float(b) for b in args.budgets.split(",") if b.strip()]
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-budget-") as tmp:
        workdir = Path(tmp)
        quota = registry_quota(args.instances)
        origin = Node("a", "127.0.0.61", workdir, helper_count=args.instances, extra=quota)
        try:
            assert origin.process.stdout is not None
            if not origin.process.stdout.readline():  # one line once filled and exported
                raise RuntimeError(f"origin helper failed:\n{origin.tail()}")
            for index, rate in enumerate(budgets):
                rows.append(run_budget(origin, workdir, args.instances, rate, args.bound, index))
        finally:
            origin.stop()
    if args.json:
        print(json.dumps({"python": sys.version.split()[0], "rows": rows}, indent=2))
    else:
        print_table(rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
