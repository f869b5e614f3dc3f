"""Benchmark of the registry adapters: listing and registration throughput.

Usage::

    python -m benchmarks.bench_adapters [--count N] [--repeats R] [--only NAME[,NAME]]
                                        [--json]

Each adapter has one section function (``bench_<name>``, listed in :data:`SECTIONS`)
that starts its real server on loopback, fresh for every repeat, and measures through
the adapter API:

* ``register``: N copies registered with ``register()``, 32 in flight (copies/s);
* ``list``: ``list_instances()`` of those N copies (instances listed/s; the mean of
  several listings);
* ``renew``: one ``renew()`` of all N refs (leases/s).

Sections: ``servicecomb`` (the ServiceComb adapter over HTTP against the embedded
registry's real server), ``embedded`` (the in-process adapter on the same registry) and
``etcd`` (a real etcd from the Debian package, :class:`pysyncer.procs.EtcdServer`).
Adapters whose registry runs here only as a test fake (Eureka, Nacos, Consul) are not
benchmarked: a figure would measure the fake. A new adapter adds a
``bench_<name>(count)`` coroutine returning :class:`Figures` and an entry in
:data:`SECTIONS`; :func:`measure` does the timing.

Figures are medians of R repeats, with min and max. The server runs in the same process
and event loop as the adapter, so a figure is the cost of both sides together.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from pysyncer._core import IMPLEMENTATION
from pysyncer.adapters import Adapter, LocalRef, load_adapter
from pysyncer.model import ORIGIN_DC_PROPERTY, ORIGIN_ID_PROPERTY, Instance, ServiceKey
from pysyncer.procs import EtcdServer, find_etcd
from pysyncer.servicecenter import EmbeddedRegistry, RegistryServer

CONCURRENCY = 32
LISTINGS = 3


@dataclass(frozen=True, slots=True)
class Figures:
    """One repeat of one adapter: rates per second."""

    register: float
    list: float
    renew: float


def copies(count: int) -> list[Instance]:
    """N copies across 50 services, shaped like the importer's."""
    out = []
    for n in range(count):
        service = ServiceKey("shop", f"svc-{n % 50}", "1.0.0", "production")
        out.append(
            Instance(
                service=service,
                instance_id=f"copy-{n}",
                host_name=f"host-{n}",
                endpoints=(f"rest://10.{n // 65536 % 256}.{n // 256 % 256}.{n % 256}:8080",),
                properties={ORIGIN_DC_PROPERTY: "dc-b", ORIGIN_ID_PROPERTY: f"o-{n}"},
            )
        )
    return out


async def measure(adapter: Adapter, count: int) -> Figures:
    """Register N copies, list them, renew them; the adapter is started and closed here."""
    await adapter.start()
    try:
        batch = copies(count)
        semaphore = asyncio.Semaphore(CONCURRENCY)

        async def one(instance: Instance) -> LocalRef:
            async with semaphore:
                return await adapter.register(instance)

        start = time.perf_counter()
        refs = await asyncio.gather(*(one(i) for i in batch))
        register = count / (time.perf_counter() - start)

        listed = 0
        start = time.perf_counter()
        for _ in range(LISTINGS):
            listed += len(await adapter.list_instances())
        listing = listed / (time.perf_counter() - start)
        if listed < count * LISTINGS:
            raise RuntimeError(f"{adapter.name}: listed {listed // LISTINGS} of {count}")

        start = time.perf_counter()
        results = await adapter.renew(list(refs))
        renew = count / (time.perf_counter() - start)
        if not all(r.ok for r in results):
            raise RuntimeError(f"{adapter.name}: renewals failed")
        return Figures(register, listing, renew)
    finally:
        await adapter.close()


# -- sections: one per adapter with a real server here ----------------------------------------


async def _embedded_section(kind: str, count: int) -> Figures:
    """The embedded registry behind its real HTTP server; ``kind`` reaches it over HTTP
    (``servicecomb``) or in process (``embedded``)."""
    registry = EmbeddedRegistry()
    server = RegistryServer(registry)
    await server.start()
    try:
        if kind == "embedded":
            adapter = load_adapter("embedded", [], {"registry": registry})
        else:
            adapter = load_adapter("servicecomb", [server.url], {})
        return await measure(adapter, count)
    finally:
        await server.close()


async def bench_servicecomb(count: int) -> Figures:
    return await _embedded_section("servicecomb", count)


async def bench_embedded(count: int) -> Figures:
    return await _embedded_section("embedded", count)


async def bench_etcd(count: int) -> Figures:
    binary = find_etcd()
    if binary is None:
        raise SystemExit("etcd not installed (apt-get install etcd-server)")
    with EtcdServer(binary) as server:
        adapter = load_adapter("etcd", [server.endpoint], {"layout": "kratos"})
        return await measure(adapter, count)


SECTIONS: dict[str, Callable[[int], Coroutine[Any, Any, Figures]]] = {
    "servicecomb": bench_servicecomb,
    "embedded": bench_embedded,
    "etcd": bench_etcd,
}


def summary(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else "")
    parser.add_argument("--count", type=int, default=2000, help="copies per repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", default="", help="comma-separated section names")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    names = [n for n in args.only.split(",") if n] or list(SECTIONS)
    unknown = [n for n in names if n not in SECTIONS]
    if unknown:
        parser.error(f"unknown section(s) {', '.join(unknown)}; known: {', '.join(SECTIONS)}")

    report: dict[str, Any] = {
        "python": platform.python_version(),
        "implementation": IMPLEMENTATION,
        "count": args.count,
        "repeats": args.repeats,
        "adapters": {},
    }
    for name in names:
        runs = [asyncio.run(SECTIONS[name](args.count)) for _ in range(args.repeats)]
        report["adapters"][name] = {
            "register_per_s": summary([r.register for r in runs]),
            "list_per_s": summary([r.list for r in runs]),
            "renew_per_s": summary([r.renew for r in runs]),
        }
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(
        f"adapters: {args.count} copies, median of {args.repeats} (min-max); "
        f"core {IMPLEMENTATION}, Python {report['python']}"
    )
    header = f"{'adapter':<12} {'register copies/s':>26} {'list instances/s':>28} {'renew/s':>26}"
    print(header)
    for name, fig in report["adapters"].items():
        cells = []
        for key in ("register_per_s", "list_per_s", "renew_per_s"):
            s = fig[key]
            cells.append(f"{s['median']:>9,.0f} ({s['min']:,.0f}-{s['max']:,.0f})")
        print(f"{name:<12} {cells[0]:>26} {cells[1]:>28} {cells[2]:>26}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
