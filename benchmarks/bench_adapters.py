"""Benchmark of the registry adapters: listing and registration throughput.

Usage::

    python benchmarks/bench_adapters.py [--count N] [--repeats R] [--only NAME[,NAME]]
                                        [--json]

Each adapter has one section function (``bench_<name>``, listed in :data:`SECTIONS`)
that starts its server (a real one or the fake the tests use) on loopback, fresh for
every repeat, and measures through the adapter API:

* ``register``: N copies registered with ``register()``, 32 in flight (copies/s);
* ``list``: ``list_instances()`` of those N copies (instances listed/s; the mean of
  several listings);
* ``renew``: one ``renew()`` of all N refs (leases/s).

Sections today: ``servicecomb`` (the ServiceComb adapter over HTTP against the embedded
registry's real server), ``embedded`` (the in-process adapter on the same registry),
``eureka`` (the Eureka adapter against ``tests/fakes/eureka.py``), ``zookeeper`` and
``etcd`` (real servers from the Debian packages, started as the tests start them; these
run in their own processes), ``nacos`` (v1 API against ``tests/fakes/nacos.py``),
``consul`` and ``consul-catalog`` (agent and catalog mode against
``tests/fakes/consul.py``). A new adapter adds a ``bench_<name>(count)`` coroutine
returning :class:`Figures` and an entry in :data:`SECTIONS`; :func:`measure` does the
timing.

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
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pysyncer._core import IMPLEMENTATION
from pysyncer.adapters import Adapter, LocalRef, load_adapter
from pysyncer.model import ORIGIN_DC_PROPERTY, ORIGIN_ID_PROPERTY, Instance, ServiceKey

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


# -- sections: one per adapter --------------------------------------------------------------


async def bench_servicecomb(count: int) -> Figures:
    from pysyncer.testing.embedded import EmbeddedHarness

    harness = EmbeddedHarness("servicecomb")
    await harness.start()
    try:
        adapter = load_adapter("servicecomb", harness.addresses(), harness.settings())
        return await measure(adapter, count)
    finally:
        await harness.stop()


async def bench_embedded(count: int) -> Figures:
    from pysyncer.testing.embedded import EmbeddedHarness

    harness = EmbeddedHarness("embedded")
    await harness.start()
    try:
        adapter = load_adapter("embedded", harness.addresses(), harness.settings())
        return await measure(adapter, count)
    finally:
        await harness.stop()


async def bench_eureka(count: int) -> Figures:
    from tests.support.fakes.eureka import EurekaHarness

    harness = EurekaHarness()
    await harness.start()
    try:
        adapter = load_adapter("eureka", harness.addresses(), harness.settings())
        return await measure(adapter, count)
    finally:
        await harness.stop()


async def bench_zookeeper(count: int) -> Figures:
    from tests.support.zk import ZkServer

    server = ZkServer(tick_ms=500)
    server.start()
    try:
        adapter = load_adapter("zookeeper", [server.address], {"root": "/dubbo"})
        return await measure(adapter, count)
    finally:
        server.cleanup()


async def bench_etcd(count: int) -> Figures:
    import shutil

    from tests.support.etcd import EtcdServer

    binary = shutil.which("etcd") or "/usr/bin/etcd"
    server = EtcdServer(binary)
    server.start()
    try:
        adapter = load_adapter("etcd", [server.endpoint], {"layout": "kratos"})
        return await measure(adapter, count)
    finally:
        server.close()


async def bench_nacos(count: int) -> Figures:
    from tests.support.fakes.nacos import NacosHarness

    harness = NacosHarness(api="v1")
    await harness.start()
    try:
        adapter = load_adapter("nacos", harness.addresses(), harness.settings())
        return await measure(adapter, count)
    finally:
        await harness.stop()


async def bench_consul(count: int, mode: str = "agent") -> Figures:
    from tests.support.fakes.consul import ConsulHarness

    harness = ConsulHarness(mode=mode)
    await harness.start()
    try:
        adapter = load_adapter("consul", harness.addresses(), harness.settings())
        return await measure(adapter, count)
    finally:
        await harness.stop()


async def bench_consul_catalog(count: int) -> Figures:
    return await bench_consul(count, "catalog")


SECTIONS: dict[str, Callable[[int], Coroutine[Any, Any, Figures]]] = {
    "servicecomb": bench_servicecomb,
    "embedded": bench_embedded,
    "eureka": bench_eureka,
    "zookeeper": bench_zookeeper,
    "etcd": bench_etcd,
    "nacos": bench_nacos,
    "consul": bench_consul,
    "consul-catalog": bench_consul_catalog,
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
