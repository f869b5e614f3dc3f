"""Propagation latency between registries of different kinds, through real daemons.

Usage::

    python -m benchmarks.bench_mixed [--count N] [--eureka-poll SECONDS]
                                     [--sources KIND[,KIND]] [--new-services] [--json]

Starts the four-data-center pool of ``tests/mixed_helpers.py`` (real ``pysyncer
daemon`` subprocesses on 127.0.0.121-124: the embedded registry, the Eureka fake with
``poll-interval`` = ``--eureka-poll``, the Consul fake in agent mode, a real ZooKeeper
with Dubbo providers). For each source kind it registers N instances one after the
other (instances of one service; ``--new-services``: each under a service of its own),
natively (as the registry's own client), and measures from just before the
registration call until each of the three other registries shows the copy (polled as
that registry's client, every few ms); then it unregisters the instance and measures
until the copy is gone from every other registry. Prints, per source -> destination
pair, the median, min and max in ms for "appear" and "remove".

Each registration and each removal starts after a random pause of up to one Eureka
poll interval, so it lands at a random phase of the Eureka adapter's polling (starting
right after the previous change was seen would always land just after a poll).

Resolution: one polling round of the destination registries (about 5-20 ms on the
2-core machine). The Eureka fake answers current data, so Eureka as a source costs up
to one ``poll-interval`` (half of it on average) plus a request; a real Eureka server
adds its read cache refresh (30 s by default).
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from pysyncer._core import IMPLEMENTATION
from tests.support.mixed import KINDS, MixedPool, Native, Side, census
from tests.support.zk import zookeeper_available

HOSTS = ("127.0.0.121", "127.0.0.122", "127.0.0.123", "127.0.0.124")
LABEL = {"servicecomb": "embedded"}
POLL = 0.003  # s between polling rounds
BOUND = 30.0  # s: a copy not seen by then is an error


def label(kind: str) -> str:
    return LABEL.get(kind, kind)


def has_copy(side: Side, native: Native) -> bool:
    return native.native_id in census(side).copies.get(native.dc, {})


def wait_all(
    targets: dict[str, Side], native: Native, present: bool, start: float
) -> dict[str, float]:
    """Seconds from ``start`` until each target shows (``present``) or lost the copy."""
    done: dict[str, float] = {}
    deadline = start + BOUND
    while len(done) < len(targets):
        for kind, side in targets.items():
            if kind not in done and has_copy(side, native) == present:
                done[kind] = time.perf_counter() - start
        if time.perf_counter() > deadline:
            missing = sorted(set(targets) - set(done))
            raise SystemExit(f"{native.kind} {native.native_id}: not seen in {missing}")
        time.sleep(POLL)
    return done


def run(count: int, eureka_poll: float, sources: list[str], new_services: bool) -> dict[str, Any]:
    appear: dict[str, list[float]] = {}
    remove: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-mixed-") as tmp:
        pool = MixedPool(Path(tmp), prefix="bm", hosts=HOSTS, eureka_poll=eureka_poll)
        try:
            for n, source in enumerate(sources):
                side = pool.by_kind(source)
                targets = {s.kind: s for s in pool.sides.values() if s.kind != source}
                for k in range(count):
                    time.sleep(random.uniform(0, eureka_poll))  # a random Eureka poll phase
                    props = {"bench": str(k)}
                    start = time.perf_counter()
                    tag = pool.tag() if new_services else "bench"
                    native = side.register(tag, f"10.30.{n}.{k + 1}", 7000 + k, props)
                    for kind, seconds in wait_all(targets, native, True, start).items():
                        appear.setdefault(f"{label(source)} -> {label(kind)}", []).append(seconds)
                    time.sleep(random.uniform(0, eureka_poll))
                    start = time.perf_counter()
                    side.unregister(native)
                    for kind, seconds in wait_all(targets, native, False, start).items():
                        remove.setdefault(f"{label(source)} -> {label(kind)}", []).append(seconds)
        finally:
            pool.close()

    def summary(values: list[float]) -> dict[str, float]:
        ms = [v * 1000 for v in values]
        return {"median_ms": statistics.median(ms), "min_ms": min(ms), "max_ms": max(ms)}

    return {
        "implementation": IMPLEMENTATION,
        "python": platform.python_version(),
        "count": count,
        "eureka_poll_s": eureka_poll,
        "new_services": new_services,
        "appear": {pair: summary(v) for pair, v in appear.items()},
        "remove": {pair: summary(v) for pair, v in remove.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=20, help="registrations per source kind")
    parser.add_argument("--eureka-poll", type=float, default=0.5, help="Eureka poll-interval, s")
    parser.add_argument(
        "--sources",
        default=",".join(KINDS),
        help="source kinds (servicecomb = the embedded registry, eureka, consul, zookeeper)",
    )
    parser.add_argument(
        "--new-services",
        action="store_true",
        help="register each instance under a new service (default: one service per source)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args()
    sources = [s.strip() for s in args.sources.split(",") if s.strip()]
    unknown = set(sources) - set(KINDS)
    if unknown:
        parser.error(f"unknown source kinds {sorted(unknown)}; known: {', '.join(KINDS)}")
    reason = zookeeper_available()
    if reason is not None:
        raise SystemExit(reason)
    result = run(args.count, args.eureka_poll, sources, args.new_services)
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(
        f"propagation between registry kinds ({result['implementation']} core, "
        f"Python {result['python']}, {args.count} registrations per source, "
        f"Eureka poll-interval {args.eureka_poll:g} s, "
        + ("a new service per registration)" if args.new_services else "one service per source)")
    )
    print(
        f"{'source -> destination':32} {'appear median (min-max) ms':>30} {'remove median ms':>18}"
    )
    for pair, fig in result["appear"].items():
        gone = result["remove"][pair]
        span = f"{fig['median_ms']:.0f} ({fig['min_ms']:.0f}-{fig['max_ms']:.0f})"
        print(f"{pair:32} {span:>30} {gone['median_ms']:>18.0f}")


if __name__ == "__main__":
    main()
