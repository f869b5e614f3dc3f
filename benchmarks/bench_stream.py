"""The streaming path's CPU per change, in one process: an origin and K following links.

Owns one measurement: what steady streaming costs in CPU, without REST clients, gossip or
other daemons around it. In this process: an origin data center (an embedded registry,
its :class:`~pysyncer.sync.exporter.Exporter` on a SQLite store, the gRPC
:class:`~pysyncer.rpc.server.SyncServer`) and ``--peers`` receiving data centers, each a
:class:`~pysyncer.sync.peers.PeerLink` on a gRPC client applying through its own
:class:`~pysyncer.sync.importer.Importer` into its own registry and SQLite store (durable,
as a daemon's). ``--changes`` instances are registered in the origin's registry at
``--rate`` per second, then deleted; the phase ends when every link holds every copy,
then none. Reported (medians over ``--repeats`` runs, each a fresh set-up):

* ``cpu_per_change_ms``: this process's CPU (every thread: the stores' too) over the
  phase, per change at the origin (registrations + deletions); ``cpu_per_copy_ms``: per
  copy delivered (changes x peers);
* ``loop_thread_share``: the event loop thread's part of that CPU (the rest: the
  stores' worker threads, gRPC's own threads);
* ``batches_per_copy``: Watch batches the server sent per copy delivered;
* ``lag_ms``: mean of origin commit -> applied at a peer (the links' own histograms).

The machine's other load inflates CPU time (the runs' spread shows it): compare medians
taken at similar load averages, printed beside them. Must not import the tests or the
daemon, and does not start processes; it runs on the daemon's event loop (uvloop when
installed).

    python -m benchmarks.bench_stream [--peers 3] [--changes 1000] [--rate 500]
        [--repeats 3] [--coalesce S] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks._harness import load_average
from pysyncer.adapters.embedded import EmbeddedAdapter
from pysyncer.cli import run_event_loop
from pysyncer.rpc.client import SyncClient
from pysyncer.rpc.server import SyncServer
from pysyncer.servicecenter.core import EmbeddedRegistry
from pysyncer.store.sqlite import SqliteStore
from pysyncer.sync.exporter import Exporter
from pysyncer.sync.importer import Importer
from pysyncer.sync.peers import PeerLink, RemoteSyncer

ORIGIN = "dc-o"
SERVICES = 20  # the instances registered are spread over these services
PHASE_BOUND_S = 120.0  # every copy arrived (or left) within this


def process_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def loop_thread_cpu() -> float:
    """CPU seconds of this process's main thread (the event loop's), from /proc."""
    with open(f"/proc/self/task/{os.getpid()}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _held(importers: list[Importer], count: int) -> None:
    deadline = time.monotonic() + PHASE_BOUND_S
    while any(imp.copies_by_origin().get(ORIGIN, 0) != count for imp in importers):
        if time.monotonic() > deadline:
            raise TimeoutError(f"the links did not reach {count} copies in {PHASE_BOUND_S} s")
        await asyncio.sleep(0.005)


async def one_run(
    peers: int, changes: int, rate: float, coalesce: float | None
) -> dict[str, float]:
    workdir = Path(tempfile.mkdtemp(prefix="bench-stream-"))
    registry = EmbeddedRegistry()
    origin_store = SqliteStore(workdir / "origin.db")
    await origin_store.open()
    exporter = Exporter(
        ORIGIN, "o1", EmbeddedAdapter(registry), origin_store, change_log_size=100_000
    )
    await exporter.start()
    server = SyncServer(exporter, "127.0.0.1", 0)
    if coalesce is not None:
        server.coalesce = coalesce
    await server.start()
    origin = RemoteSyncer("o1", ORIGIN, server.address)
    links: list[PeerLink] = []
    importers: list[Importer] = []
    stores = [origin_store]
    try:
        for k in range(peers):
            store = SqliteStore(workdir / f"peer{k}.db")
            await store.open()
            stores.append(store)
            importer = Importer(f"dc-p{k}", EmbeddedAdapter(EmbeddedRegistry()), store)
            await importer.start(renew_interval=3600)
            link = PeerLink(
                ORIGIN,
                lambda: [origin],
                importer,
                store,
                lambda syncer: SyncClient(syncer.rpc_target, dc=ORIGIN),
                anti_entropy_interval=3600,
            )
            link.start()
            importers.append(importer)
            links.append(link)
        await asyncio.wait_for(exporter.ready.wait(), PHASE_BOUND_S)
        sids = [
            await registry.create_service(
                {"appId": "stream", "serviceName": f"s{s}", "version": "1.0.0"}
            )
            for s in range(SERVICES)
        ]
        warm = {"instanceId": "warm", "hostName": "warm", "endpoints": ["rest://10.0.0.1:1"]}
        await registry.register_instance(sids[0], warm)  # every link is streaming
        await _held(importers, 1)
        loop = asyncio.get_running_loop()
        cpu0, loop0, began = process_cpu(), loop_thread_cpu(), time.monotonic()
        for deleting in (False, True):
            start = loop.time()
            for n in range(changes):
                delay = start + n / rate - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                sid, iid = sids[n % SERVICES], f"i{n}"
                if deleting:
                    await registry.unregister_instance(sid, iid)
                else:
                    body = {"instanceId": iid, "hostName": iid, "endpoints": [f"rest://h:{n}"]}
                    await registry.register_instance(sid, body)
            await _held(importers, 1 if deleting else changes + 1)
        wall, cpu = time.monotonic() - began, process_cpu() - cpu0
        loop_cpu = loop_thread_cpu() - loop0
        lag_sum = sum(link.status.lag_sum for link in links)
        lag_count = sum(link.status.lag_count for link in links)
        copies = 2 * changes * peers
        return {
            "cpu_per_change_ms": 1000 * cpu / (2 * changes),
            "cpu_per_copy_ms": 1000 * cpu / copies,
            "loop_thread_share": loop_cpu / cpu if cpu else 0.0,
            "batches_per_copy": server.stats.batches_sent / copies,
            "lag_ms": 1000 * lag_sum / max(1, lag_count),
            "phase_s": wall,
            "load_avg": load_average(),
        }
    finally:
        for link in links:
            await link.close()
        for importer in importers:
            await importer.close()
        await server.stop(0.1)
        await exporter.close()
        for store in stores:
            await store.close()
        shutil.rmtree(workdir, ignore_errors=True)


def run_once(peers: int, changes: int, rate: float, coalesce: float | None) -> dict[str, float]:
    """:func:`one_run` on the loop the daemon runs on (uvloop when installed)."""
    result: list[dict[str, float]] = []

    async def run() -> None:
        result.append(await one_run(peers, changes, rate, coalesce))

    run_event_loop(run())
    return result[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--peers", type=int, default=3, help="following links (3)")
    parser.add_argument("--changes", type=int, default=1000, help="registrations (1000)")
    parser.add_argument("--rate", type=float, default=500.0, help="changes/s (500)")
    parser.add_argument("--repeats", type=int, default=3, help="runs, medians (3)")
    parser.add_argument("--coalesce", type=float, help="the server's Watch window (s)")
    parser.add_argument("--json", action="store_true", help="print one flat JSON object")
    args = parser.parse_args(argv)
    runs = [
        run_once(args.peers, args.changes, args.rate, args.coalesce) for _ in range(args.repeats)
    ]
    report: dict[str, Any] = {"peers": args.peers, "changes": args.changes, "rate": args.rate}
    for key in runs[0]:
        report[key] = statistics.median(run[key] for run in runs)
    report["cpu_per_change_runs"] = ", ".join(f"{r['cpu_per_change_ms']:.3f}" for r in runs)
    report["load_avg_range"] = (
        f"{min(r['load_avg'] for r in runs):.1f}-{max(r['load_avg'] for r in runs):.1f}"
    )
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(
        f"{args.peers} links, {args.changes} registrations + deletions at {args.rate:.0f}/s "
        f"(medians of {args.repeats}, load average {report['load_avg_range']}):\n"
        f"  CPU {report['cpu_per_change_ms']:.3f} ms per change "
        f"(runs {report['cpu_per_change_runs']}), {report['cpu_per_copy_ms']:.3f} ms per copy; "
        f"{report['loop_thread_share']:.0%} of it on the event loop's thread; "
        f"{report['batches_per_copy']:.2f} Watch batches per copy; "
        f"commit -> applied {report['lag_ms']:.1f} ms on average"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
