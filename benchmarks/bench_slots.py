"""Benchmark of Redis Cluster slot routing: compiled ``_slots_c`` against its twin.

Usage::

    python benchmarks/bench_slots.py [--keys N] [--repeats R] [--json]

Times ``key_slots`` on N plain keys (``default/app-7/service-123``) and on N keys with
a hash tag (``{default/app-7}/service-123``), and ``key_slot`` called once per key on
a smaller sample. Both implementations run in the same process, on the same keys,
alternating, after one warm-up each; each figure is the median of R runs in keys/s,
with min and max. Exits 1 when the compiled module is not built.
"""

from __future__ import annotations

import argparse
import collections
import importlib.util
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

Run = Callable[[], object]


def plain_keys(count: int) -> list[str]:
    """Realistic registry keys of 25-35 bytes, without hash tags."""
    return [f"default/app-{i % 50}/service-{i}" for i in range(count)]


def tagged_keys(count: int) -> list[str]:
    """The same keys with the application as hash tag (one slot per application)."""
    return [f"{{default/app-{i % 50}}}/service-{i}" for i in range(count)]


def _seconds(run: Run) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def measure(compiled: Run, twin: Run, keys: int, repeats: int) -> dict[str, Any]:
    """Keys/s of both runs (median, min, max over ``repeats``) and their ratio."""
    compiled()  # warm-up
    twin()
    times: dict[str, list[float]] = {"compiled": [], "twin": []}
    for _ in range(repeats):
        times["compiled"].append(_seconds(compiled))
        times["twin"].append(_seconds(twin))
    result: dict[str, Any] = {"keys": keys}
    for name, seconds in times.items():
        result[name] = {
            "median": keys / statistics.median(seconds),
            "min": keys / max(seconds),
            "max": keys / min(seconds),
        }
    result["ratio"] = result["compiled"]["median"] / result["twin"]["median"]
    return result


def _consume(function: Callable[[str], int], keys: Sequence[str]) -> Run:
    return lambda: collections.deque(map(function, keys), maxlen=0)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; print a table, or one JSON object with ``--json``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=1_000_000, help="keys per run")
    parser.add_argument("--repeats", type=int, default=7, help="timed runs per figure")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if args.keys < 1 or args.repeats < 1:
        parser.error("--keys and --repeats must be at least 1")

    if importlib.util.find_spec("pysyncer") is None:  # run from a source checkout
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from pysyncer._core import _slots_py as twin

    try:
        import pysyncer._core._slots_c as compiled
    except ImportError as exc:
        print(
            f"pysyncer._core._slots_c is not built ({exc}); build it with "
            "'cythonize -i -3 pysyncer/_core/_slots_c.pyx' or 'pip install -e .'",
            file=sys.stderr,
        )
        return 1

    plain, tagged = plain_keys(args.keys), tagged_keys(args.keys)
    sample = plain[: max(1, min(args.keys, 100_000))]
    for keys in (plain, tagged):
        if compiled.key_slots(keys) != twin.key_slots(keys):
            print("compiled and twin disagree: not benchmarking", file=sys.stderr)
            return 1

    cases = {
        "key_slots plain": measure(
            lambda: compiled.key_slots(plain),
            lambda: twin.key_slots(plain),
            len(plain),
            args.repeats,
        ),
        "key_slots hash-tag": measure(
            lambda: compiled.key_slots(tagged),
            lambda: twin.key_slots(tagged),
            len(tagged),
            args.repeats,
        ),
        "key_slot single calls": measure(
            _consume(compiled.key_slot, sample),
            _consume(twin.key_slot, sample),
            len(sample),
            args.repeats,
        ),
    }
    if args.json:
        report = {
            "python": platform.python_version(),
            "machine": platform.machine(),
            "repeats": args.repeats,
            "unit": "keys/s",
            "cases": cases,
        }
        print(json.dumps(report, indent=2))
        return 0
    print(
        f"Python {platform.python_version()} {platform.machine()}, "
        f"median of {args.repeats} runs, keys/s (min-max)"
    )
    for name, case in cases.items():
        print(f"{name} ({case['keys']:,} keys)")
        for impl in ("compiled", "twin"):
            figures = case[impl]
            print(
                f"  {impl:9s}{figures['median'] / 1e6:9.2f} M/s"
                f"  ({figures['min'] / 1e6:.2f}-{figures['max'] / 1e6:.2f})"
            )
        print(f"  ratio    {case['ratio']:9.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
