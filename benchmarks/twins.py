"""What the compiled-against-twin benchmarks share: their options, timing, report.

Two runs of the same work (e.g. the compiled module and its pure-Python twin) are timed
alternately after one warm-up each; a figure is the median of R runs in items/s, with
min and max, and the ratio of the medians. ``--json`` prints one JSON object, otherwise
a small table.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

__all__ = ["Run", "add_common_options", "measure", "print_cases", "print_json", "system"]

Run = Callable[[], object]


def add_common_options(parser: argparse.ArgumentParser, repeats: int) -> None:
    """``--repeats`` (timed runs per figure) and ``--json``."""
    parser.add_argument("--repeats", type=int, default=repeats, help="timed runs per figure")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def _seconds(run: Run) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def measure(runs: dict[str, Run], count_key: str, count: int, repeats: int) -> dict[str, Any]:
    """Items/s of both ``runs`` (median, min, max over ``repeats``) and their ratio (the
    first's median over the second's)."""
    for run in runs.values():  # warm-up
        run()
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            times[name].append(_seconds(run))
    result: dict[str, Any] = {count_key: count}
    for name, seconds in times.items():
        result[name] = {
            "median": count / statistics.median(seconds),
            "min": count / max(seconds),
            "max": count / min(seconds),
        }
    first, second = runs
    result["ratio"] = result[first]["median"] / result[second]["median"]
    return result


def system() -> str:
    """``Python 3.x.y machine``."""
    return f"Python {platform.python_version()} {platform.machine()}"


def print_json(repeats: int, unit: str, cases: dict[str, Any], **extra: Any) -> None:
    """One JSON object: the platform, ``repeats``, ``extra`` fields, ``unit``, ``cases``."""
    report = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "repeats": repeats,
        **extra,
        "unit": unit,
        "cases": cases,
    }
    print(json.dumps(report, indent=2))


def print_cases(cases: dict[str, Any], count_key: str, names: tuple[str, str]) -> None:
    """A case per block: its count, both runs in M/s (min-max), the ratio."""
    for name, case in cases.items():
        print(f"{name} ({case[count_key]:,} {count_key})")
        for impl in names:
            figures = case[impl]
            print(
                f"  {impl:9s}{figures['median'] / 1e6:9.2f} M/s"
                f"  ({figures['min'] / 1e6:.2f}-{figures['max'] / 1e6:.2f})"
            )
        print(f"  ratio    {case['ratio']:9.1f}x")
