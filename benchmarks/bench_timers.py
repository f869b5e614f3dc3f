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
timed). Times are CPU times of this process (``time.process_time``), which other work
on a shared machine disturbs less than the wall clock.

Floors: the cases that make one call per operation (schedule, reschedule, cancel) pay
for the call and for finding the key, whatever the queue does with deadlines. Beside
them the benchmark times two floors through the same driver (see :func:`floors`): the
call alone, and the same operation on a plain dict of the same keys. ``twin / dict``
(``ceiling`` in JSON) is the twin's time over the dict floor: a queue would have to
find its keys faster than CPython's dict does to be more than that many times faster
than the twin. Exits 1 when the compiled module is not built.
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

Run = Callable[[], object]
Setup = Callable[[ModuleType], Run]  # builds the state, returns the run


def _timed(module: ModuleType, setup: Setup) -> float:
    """CPU seconds of one run (its setup untimed)."""
    run = setup(module)
    start = time.process_time()
    run()
    return time.process_time() - start


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


def floors(size: int) -> dict[str, dict[str, Callable[[], Run]]]:
    """For each case making one call per operation, two floors timed like the cases
    (``setup()`` builds the dict, untimed, and returns the timed run):

    * ``call``: ``{}.get`` on an empty dict with the case's arguments, the cost of one
      call to a C method that hashes the key and does nothing else;
    * ``dict``: the same calls to a dict holding the case's keys (insert a new key,
      find a key, remove a key), what any queue keyed by hashable objects must do
      before it touches its deadlines.
    """
    keys: list[Hashable] = [f"node-{i}" for i in range(size)]
    int_keys: list[Hashable] = list(range(size))
    deadlines = [float(i) for i in range(size)]
    empty: dict[Hashable, float] = {}

    def call(arguments: int) -> Callable[[], Run]:
        if arguments == 1:
            return lambda: lambda: list(map(empty.get, keys))
        return lambda: lambda: list(map(empty.get, keys, deadlines))

    def insert(with_keys: list[Hashable]) -> Callable[[], Run]:
        def setup() -> Run:
            table: dict[Hashable, float] = {}
            return lambda: list(map(table.setdefault, with_keys, deadlines))

        return setup

    def find() -> Run:
        table = dict.fromkeys(keys, 0.0)
        return lambda: list(map(table.get, keys, deadlines))

    def remove() -> Run:
        table = dict.fromkeys(keys, 0.0)
        return lambda: list(map(table.pop, keys))

    return {
        "schedule": {"call": call(2), "dict": insert(keys)},
        "reschedule": {"call": call(2), "dict": find},
        "cancel": {"call": call(1), "dict": remove},
        "schedule int keys": {"call": call(2), "dict": insert(int_keys)},
    }


def floor_ns(setup: Callable[[], Run], ops: int, repeats: int) -> float:
    """Median CPU nanoseconds per operation of a floor (after one warm-up)."""
    setup()()
    seconds = []
    for _ in range(repeats):
        run = setup()
        start = time.process_time()
        run()
        seconds.append(time.process_time() - start)
    return statistics.median(seconds) / ops * 1e9


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
        def setup(module: ModuleType) -> Run:
            queue = module.TimerQueue()
            return lambda: list(map(queue.schedule, with_keys, deadlines))

        return setup

    def reschedule(module: ModuleType) -> Run:
        queue = filled(module)
        return lambda: list(map(queue.schedule, keys, later))

    def cancel(module: ModuleType) -> Run:
        queue = filled(module)
        return lambda: list(map(queue.cancel, keys))

    def pop_due(module: ModuleType) -> Run:
        queue = filled(module)
        return lambda: [queue.pop_due(float(now)) for now in range(1, 101)]

    def churn(module: ModuleType) -> Run:
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
        floor_setups = floors(size)
        for name, setup in cases(size).items():
            case = measure(compiled, twin, setup, size, args.repeats)
            if name in floor_setups:
                for floor, floor_setup in floor_setups[name].items():
                    case[f"{floor}_floor_ns"] = floor_ns(floor_setup, size, args.repeats)
                case["ceiling"] = 1e9 / case["twin"]["median"] / case["dict_floor_ns"]
            results[f"{name} @{size}"] = case

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
        f"median of {args.repeats} runs, operations/s of CPU time (min-max)"
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
        if "ceiling" in case:
            line.append(
                f"floors: call {case['call_floor_ns']:4.1f} ns, "
                f"dict {case['dict_floor_ns']:5.1f} ns (twin / dict {case['ceiling']:4.1f}x)"
            )
        print("  ".join(line))
    return 0


if __name__ == "__main__":
    sys.exit(main())
