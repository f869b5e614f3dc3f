"""Benchmark of pysyncer._core digest: the compiled module against its pure-Python twin.

Usage::

    python -m benchmarks.bench_digest [--records N] [--repeats R] [--json]

Both implementations run the same workloads in the same process, each ``R`` times;
the report gives the median with the min and max, and the speedup of the compiled
module (median against median):

* ``record_digest`` of typical instance records (10 fields, including a small
  metadata map and an endpoints list), records/s, over ``min(N, 50000)`` records;
* ``SlotDigestTable.add_many`` with array('H') slots and array('Q') digests,
  records/s, and single ``add()`` calls/s from a Python loop, over ``N`` records;
* ``snapshot_diff`` of two N-record snapshots differing in 1% of the records (a
  third added, a third changed, a third removed), ms;
* ``DigestSnapshot(keys, digests)`` from unsorted array('Q') key hashes and
  ``DigestSnapshot.from_mapping`` of a dict, ms.

Exits 1 when the compiled module is not built.
"""

from __future__ import annotations

import argparse
import importlib
import json
import random
import statistics
import sys
import time
from array import array
from collections.abc import Callable
from types import ModuleType
from typing import Any, NamedTuple

DIGEST_RECORDS_MAX = 50_000


class Metric(NamedTuple):
    """One workload: what is measured, in which unit, and how many items per run."""

    name: str
    unit: str  # "records/s", "calls/s" or "ms"
    items: int


def _load() -> tuple[ModuleType, ModuleType]:
    twin = importlib.import_module("pysyncer._core._digest_py")
    try:
        compiled = importlib.import_module("pysyncer._core._digest_c")
    except ImportError as exc:
        print(
            f"pysyncer._core._digest_c is not built ({exc}); build it with: "
            "CFLAGS=-O3 cythonize -i -3 pysyncer/_core/_digest_c.pyx",
            file=sys.stderr,
        )
        raise SystemExit(1) from None
    return compiled, twin


def _time(run: Callable[[], object], repeats: int) -> list[float]:
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        seconds.append(time.perf_counter() - start)
    return seconds


def _record(i: int, rng: random.Random) -> tuple[str, dict[str, Any]]:
    service = f"default/orders-{i % 40}"
    host = f"10.{i % 200}.{(i >> 8) % 250}.{i % 250}"
    return service, {
        "instanceId": f"{rng.getrandbits(64):016x}",
        "serviceId": service,
        "hostName": f"node-{i % 300}.dc1.example.com",
        "status": "UP",
        "version": "1.4.2",
        "timestamp": 1_700_000_000 + i,
        "weight": 1.0,
        "healthCheck": {"mode": "push", "interval": 30, "times": 3},
        "endpoints": [f"rest://{host}:8080", f"highway://{host}:7070"],
        "metadata": {"zone": f"az{i % 3}", "region": "eu-west-1", "canary": i % 10 == 0},
    }


def _snapshots(n: int, rng: random.Random) -> tuple[dict[int, int], dict[int, int]]:
    old = {rng.getrandbits(64): rng.getrandbits(64) for _ in range(n)}
    while len(old) < n:  # collisions are astronomically unlikely, but be exact
        old[rng.getrandbits(64)] = 0
    new = dict(old)
    touched = rng.sample(list(old), n // 100 * 2 // 3)
    for pos, key in enumerate(touched):
        if pos % 2:
            del new[key]
        else:
            new[key] ^= 0xFF
    for _ in range(n // 100 - len(touched)):
        new[rng.getrandbits(64)] = rng.getrandbits(64)
    return old, new


def run(records: int, repeats: int) -> dict[str, Any]:
    """All measurements as a JSON-ready dict."""
    compiled, twin = _load()
    rng = random.Random(20240601)
    digest_inputs = [_record(i, rng) for i in range(min(records, DIGEST_RECORDS_MAX))]
    slots = array("H", (rng.randrange(16384) for _ in range(records)))
    digests = array("Q", (rng.getrandbits(64) for _ in range(records)))
    slot_list, digest_list = slots.tolist(), digests.tolist()
    old, new = _snapshots(records, rng)
    keys, values = array("Q", old), array("Q", old.values())

    def workloads(mod: ModuleType) -> dict[Metric, Callable[[], object]]:
        table = mod.SlotDigestTable()
        add = table.add
        record_digest = mod.record_digest
        old_snap, new_snap = (
            mod.DigestSnapshot.from_mapping(old),
            mod.DigestSnapshot.from_mapping(new),
        )

        def digest_all() -> None:
            for service, fields in digest_inputs:
                record_digest(service, fields)

        def add_each() -> None:
            for slot, digest in zip(slot_list, digest_list, strict=True):
                add(slot, digest)

        return {
            Metric("record_digest", "records/s", len(digest_inputs)): digest_all,
            Metric("table add_many", "records/s", records): lambda: table.add_many(slots, digests),
            Metric("table add()", "calls/s", records): add_each,
            Metric("snapshot_diff 1%", "ms", records): lambda: mod.snapshot_diff(
                old_snap, new_snap
            ),
            Metric("DigestSnapshot(keys, digests)", "ms", records): lambda: mod.DigestSnapshot(
                keys, values
            ),
            Metric("DigestSnapshot.from_mapping", "ms", records): lambda: (
                mod.DigestSnapshot.from_mapping(old)
            ),
        }

    results: dict[str, Any] = {}
    c_work, py_work = workloads(compiled), workloads(twin)
    for metric, c_run in c_work.items():
        figures = {}
        for label, work in (("compiled", c_run), ("twin", py_work[metric])):
            seconds = _time(work, repeats)
            if metric.unit == "ms":
                values_ = [s * 1e3 for s in seconds]
            else:
                values_ = [metric.items / s for s in seconds]
            figures[label] = {
                "median": statistics.median(values_),
                "min": min(values_),
                "max": max(values_),
            }
        c_med, py_med = figures["compiled"]["median"], figures["twin"]["median"]
        speedup = py_med / c_med if metric.unit == "ms" else c_med / py_med
        results[metric.name] = {
            "unit": metric.unit,
            "items": metric.items,
            **figures,
            "speedup": speedup,
        }
    diff = compiled.snapshot_diff(
        compiled.DigestSnapshot(keys, values), compiled.DigestSnapshot.from_mapping(new)
    )
    sizes = {part: len(getattr(diff, part)) for part in ("added", "changed", "removed")}
    if sum(sizes.values()) != records // 100:
        raise RuntimeError(f"the snapshots should differ in 1% of the records, not {sizes}")
    return {
        "records": records,
        "repeats": repeats,
        "python": sys.version.split()[0],
        "diff_sizes": sizes,
        "metrics": results,
    }


def _fmt(value: float, unit: str) -> str:
    if unit == "ms":
        return f"{value:,.2f}"
    return f"{value / 1e6:,.3f} M"


def _print_table(report: dict[str, Any]) -> None:
    print(
        f"pysyncer digest benchmark: {report['records']:,} records, {report['repeats']} repeats, "
        f"Python {report['python']}; median [min .. max]"
    )
    print(f"{'metric':<26}{'unit':<11}{'compiled':<40}{'twin':<40}speedup")
    for name, m in report["metrics"].items():
        cells = [
            f"{_fmt(m[k]['median'], m['unit'])} [{_fmt(m[k]['min'], m['unit'])} .. "
            f"{_fmt(m[k]['max'], m['unit'])}]"
            for k in ("compiled", "twin")
        ]
        print(f"{name:<26}{m['unit']:<11}{cells[0]:<40}{cells[1]:<40}{m['speedup']:,.1f}x")
    print(
        f"(record_digest over {report['metrics']['record_digest']['items']:,} records; "
        f"snapshot_diff finds {report['diff_sizes']})"
    )


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run, print a table or (--json) one JSON object."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--records", type=int, default=1_000_000, help="records (1000000)")
    parser.add_argument("--repeats", type=int, default=5, help="runs per figure (5)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if args.records < 100 or args.repeats < 1:
        parser.error("--records must be >= 100 and --repeats >= 1")
    report = run(args.records, args.repeats)
    if args.json:
        print(json.dumps(report))
    else:
        _print_table(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
