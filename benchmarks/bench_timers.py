"""Benchmark of the failure detector's timer queue: compiled ``_timers_c`` against its twin.

Usage::

    python -m benchmarks.bench_timers [--sizes 10000,100000] [--repeats R] [--json]

For each size N (live timers) and each implementation, on the same keys
(``node-<i>`` strings, as member names) and the same random deadlines:

* ``schedule``: N new keys into an empty queue;
* ``reschedule``: every key of a full queue (N live) gets a new deadline;
* ``cancel``: every key of a full queue is cancelled (N live down to 0);
* ``pop_due``: a full queue is drained by 100 ``pop_due(now)`` calls, ``now`` rising;
* ``churn``: with N live periodic timers, pop the due ones and re-schedule each one
  period later (the probe/gossip pattern), N keys in all;
* ``schedule int keys``: ``schedule`` with int keys, the figure behind keying by any
  hashable object rather than by int ids.

Both implementations run in the same process, alternating, after one warm-up each;
each figure is the median of R runs in operations/s, with min and max (setup is not
timed). Exits 1 when the compiled module is not built.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable, Hashable, Sequence
from types import ModuleType
from typing import Any

Setup = Callable[[ModuleType], Callable[[], object]]  # builds the state, returns the run


def _timed(module: ModuleType, setup: Setup) -> float:
    run = setup(module)
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def measure(
    compiled: ModuleType, twin: ModuleType, setup: Setup, ops: int, repeats: int
) -> dict[str, Any]:
    """Operations/s of both implementations (median, min, max) and their ratio."""
    _timed(compiled, setup)  # warm-up
    _timed(twin, setup)
    times: dict[str, list[float]] = {"compiled": [], "twin": []}
    for _ in range(repeats):
        times["compiled"].append(_timed(compiled, setup))
        times["twin"].append(_timed(twin, setup))
    result: dict[str, Any] = {"ops": ops}
    for name, seconds in times.items():
        result[name] = {
            "median": ops / statistics.median(seconds),
            "min": ops / max(seconds),
            "max": ops / min(seconds),
        }
    result["ratio"] = result["compiled"]["median"] / result["twin"]["median"]
    return result


def cases(size: int, seed: int = 1) -> dict[str, Setup]:
    """The benchmark cases for ``size`` live timers."""
    rng = random.Random(seed)
    keys: list[Hashable] = [f"node-{i}" for i in range(size)]
    int_keys: list[Hashable] = list(range(size))
    deadlines = [rng.uniform(0.0, 100.0) for _ in range(size)]
    later = [d + rng.uniform(0.0, 100.0) for d in deadlines]

    def filled(module: ModuleType, with_keys: list[Hashable] = keys) -> Any:
        queue = module.TimerQueue()
        for key, deadline in zip(with_keys, deadlines, strict=True):
            queue.schedule(key, deadline)
        return queue

    def schedule(with_keys: list[Hashable]) -> Setup:
        def setup(module: ModuleType) -> Callable[[], object]:
            queue = module.TimerQueue()
            return lambda: list(map(queue.schedule, with_keys, deadlines))

        return setup

    def reschedule(module: ModuleType) -> Callable[[], object]:
        queue = filled(module)
        return lambda: list(map(queue.schedule, keys, later))

    def cancel(module: ModuleType) -> Callable[[], object]:
        queue = filled(module)
        return lambda: list(map(queue.cancel, keys))

    def pop_due(module: ModuleType) -> Callable[[], object]:
        queue = filled(module)
        return lambda: [queue.pop_due(float(now)) for now in range(1, 101)]

    def churn(module: ModuleType) -> Callable[[], object]:
        queue = filled(module)
        period = 100.0

        def run() -> None:
            done, now = 0, 0.0
            while done < size:
                now += 0.5
                for key in queue.pop_due(now, size - done):
                    queue.schedule(key, now + period)
                    done += 1

        return run

    return {
        "schedule": schedule(keys),
        "reschedule": reschedule,
        "cancel": cancel,
        "pop_due": pop_due,
        "churn": churn,
        "schedule int keys": schedule(int_keys),
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; print a table, or one JSON object with ``--json``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000", help="live timers, comma-separated")
    parser.add_argument("--repeats", type=int, default=7, help="timed runs per figure")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    try:
        sizes = [int(size) for size in args.sizes.split(",")]
    except ValueError:
        parser.error("--sizes must be comma-separated integers")
    if args.repeats < 1 or min(sizes) < 1:
        parser.error("--sizes and --repeats must be at least 1")

    twin = importlib.import_module("pysyncer._core._timers_py")
    try:
        compiled = importlib.import_module("pysyncer._core._timers_c")
    except ImportError as exc:
        print(
            f"pysyncer._core._timers_c is not built ({exc}); build it with "
            "'cythonize -i -3 pysyncer/_core/_timers_c.pyx' or 'pip install -e .'",
            file=sys.stderr,
        )
        return 1

    results: dict[str, dict[str, Any]] = {}
    for size in sizes:
        for name, setup in cases(size).items():
            results[f"{name} @{size}"] = measure(compiled, twin, setup, size, args.repeats)

    if args.json:
        report = {
            "python": platform.python_version(),
            "machine": platform.machine(),
            "repeats": args.repeats,
            "unit": "operations/s",
            "cases": results,
        }
        print(json.dumps(report, indent=2))
        return 0
    print(
        f"Python {platform.python_version()} {platform.machine()}, "
        f"median of {args.repeats} runs, operations/s (min-max)"
    )
    for name, case in results.items():
        line = [f"{name:26s}"]
        for impl in ("compiled", "twin"):
            figures = case[impl]
            line.append(
                f"{impl} {figures['median'] / 1e6:6.2f} M/s "
                f"({figures['min'] / 1e6:.2f}-{figures['max'] / 1e6:.2f})"
            )
        line.append(f"ratio {case['ratio']:5.1f}x")
        print("  ".join(line))
    return 0


if __name__ == "__main__":
    sys.exit(main())
