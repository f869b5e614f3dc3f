"""The importing side of an initial full sync, in one process, in CPU time per copy.

What a syncer does with a remote data center's slots on its first sync, without the
network and without the origin: ``N`` records (10 per service, as ``bench_sync`` registers
them) are encoded by the origin's codec into one serialized ``SlotBatch`` per slot
(not measured); then, measured, a stand-in client parses each message as the gRPC client
does (``SlotBatch.FromString`` and ``codec.read_slot_batch``) and the real
:meth:`PeerLink.repair` reconciles them into an :class:`Importer` over the embedded
adapter, the :class:`EmbeddedRegistry` and the embedded SQLite store: registry writes,
mapping transactions (in the store's thread: counted in the process's CPU), the index.
Then one renewal pass of every copy, measured on its own.

Reported per size: process CPU per copy (and the loop thread's share), the renewal pass
per copy, the longest CPU run of the loop thread between two ticks of a 2 ms sampler
(the stall an idle core would see), the garbage collector's pauses by generation, peak
RSS and the load average. CPU time does not depend on how often a loaded machine ran
the process; wall time does, so it is only printed.

``--renew-during`` lets the importer's renew loop run during the sync at its real pace
(every TTL/4): its rounds then count in the sync's CPU, by how long the sync took on the
wall clock. Without it the registry's leases last a day and the rounds wait (the sync's
own cost). ``--exporter`` runs this data center's :class:`Exporter` beside the importer,
as the daemon does: it follows the embedded registry's change feed, where every copy
written shows up and is skipped (its CPU counts in the sync's). ``--profile`` prints
cProfile's top functions of the sync (which slows it).

``--streams K`` measures streaming instead (what a daemon of a full mesh imports between
full syncs): K origins each hand the importer a batch of ``--batch`` changes every
``--period`` seconds, all at the same moments (a busy loop reads several links' Watch
messages in one turn), ``--rounds`` batches of registrations and as many of deletions;
reported: process CPU per copy (the store's thread included) and the store
transactions per batch applied (below 1 when batches waiting together share one).

    python -m benchmarks.bench_import [--sizes 100000,300000] [--renew-during] [--exporter]
    python -m benchmarks.bench_import --sizes 100000 --profile 25
    python -m benchmarks.bench_import --streams 7 [--batch 5] [--period 0.01] [--rounds 200]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import io
import json
import os
import pstats
import resource
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

from pysyncer._core import digest as core_digest
from pysyncer.adapters.embedded import EmbeddedAdapter
from pysyncer.config import setting
from pysyncer.model import Instance, Record, ServiceKey
from pysyncer.rpc import codec
from pysyncer.rpc import sync_pb2 as pb
from pysyncer.servicecenter.core import EmbeddedRegistry
from pysyncer.servicecenter.settings import ServiceCenterSettings
from pysyncer.store import create_store
from pysyncer.sync.engine import GC_THRESHOLD0
from pysyncer.sync.exporter import Exporter
from pysyncer.sync.importer import Importer
from pysyncer.sync.peers import PeerLink

ORIGIN = "dc-a"
EPOCH = "bench-epoch"
TICK = 0.002  # the loop sampler's sleep
A_DAY = 86_400.0


def origin_messages(count: int) -> tuple[bytes, list[bytes]]:
    """The origin's digest table and one serialized SlotBatch per slot of ``count`` records."""
    services = [ServiceKey("bench", f"svc-{s}", "1.0.0") for s in range(max(1, count // 10))]
    by_slot: dict[int, list[Record]] = {}
    table = core_digest.SlotDigestTable()
    for n in range(count):
        service = services[n // 10]
        endpoint = f"rest://10.0.{n // 250 % 256}.{n % 250}:8080"
        instance = Instance(service, f"a-{n}", f"host-{n}", (endpoint,))
        record = Record(ORIGIN, service, f"a-{n}", n + 1, instance)
        by_slot.setdefault(record.slot, []).append(record)
        table.add(record.slot, record.digest)
    messages = [
        codec.slot_batch(ORIGIN, slot, by_slot[slot], last=True).SerializeToString()
        for slot in sorted(by_slot)
    ]
    return table.to_bytes(), messages


class OriginStandIn:
    """What :meth:`PeerLink.repair` asks of a sync client, answered from memory; each slot
    message is parsed here as the gRPC client parses it, with a loop turn per message."""

    def __init__(self, table: bytes, messages: list[bytes]) -> None:
        self._table = table
        self._messages = messages

    async def health(self) -> Any:
        raise NotImplementedError("only a repair is measured")

    def watch(self, since: int, epoch: str) -> Any:
        raise NotImplementedError("only a repair is measured")

    async def get_digests(self) -> Any:
        return len(self._messages), EPOCH, self._table

    async def pull_slots(self, slots: Sequence[int]) -> AsyncIterator[codec.SlotRecords]:
        wanted = frozenset(slots)
        for raw in self._messages:
            yield codec.read_slot_batch(pb.SlotBatch.FromString(raw), wanted)
            await asyncio.sleep(0)

    async def close(self) -> None:
        return None


class LoopSampler:
    """The longest CPU run of the loop's thread between two of its ticks, and the
    garbage collector's pauses (CPU of this thread) by generation."""

    def __init__(self) -> None:
        self.longest = 0.0
        self.pauses: dict[int, list[float]] = {0: [], 1: [], 2: []}
        self._gc_started = 0.0
        self._task: asyncio.Task[None] | None = None
        self._running = False

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._gc_started = time.thread_time()
        else:
            self.pauses[info["generation"]].append(time.thread_time() - self._gc_started)

    async def _ticks(self) -> None:
        last = time.thread_time()
        while self._running:
            await asyncio.sleep(TICK)
            now = time.thread_time()
            self.longest = max(self.longest, now - last)
            last = now

    def start(self) -> None:
        gc.callbacks.append(self._on_gc)
        self._running = True
        self._task = asyncio.get_running_loop().create_task(self._ticks())

    async def stop(self) -> None:
        gc.callbacks.remove(self._on_gc)
        self._running = False
        if self._task is not None:
            await self._task

    def gc_summary(self) -> dict[str, list[float]]:
        """Per generation: [collections, longest ms, total ms]."""
        return {
            str(gen): [len(p), round(1e3 * max(p, default=0.0), 1), round(1e3 * sum(p), 1)]
            for gen, p in self.pauses.items()
        }


async def measure(
    count: int, renew_during: bool, profile: int, with_exporter: bool
) -> dict[str, Any]:
    """One full sync of ``count`` copies, in CPU time."""
    table, messages = origin_messages(count)
    gc.collect()
    result: dict[str, Any] = {"copies": count, "slots": len(messages)}
    with tempfile.TemporaryDirectory() as tmp:
        quota = ServiceCenterSettings(max_services=max(count // 10, 10_000))
        registry = EmbeddedRegistry(settings=quota, ttl_override=None if renew_during else A_DAY)
        store = create_store("embedded", tmp)
        await store.open()
        adapter = EmbeddedAdapter(registry)
        importer = Importer("dc-b", adapter, store)
        await importer.start(None if renew_during else A_DAY)
        exporter = None
        if with_exporter:
            exporter = Exporter(
                "dc-b",
                "bench",
                adapter,
                store,
                copy_ids=importer.copy_ids,
                change_log_size=int(setting("change-log-size").default),
            )
            await exporter.start()
            await exporter.ready.wait()
        client = OriginStandIn(table, messages)
        del messages
        link = PeerLink(
            ORIGIN, list, importer, store, lambda _: client, anti_entropy_interval=A_DAY
        )
        sampler = LoopSampler()
        sampler.start()
        profiler = cProfile.Profile() if profile else None
        cpu, loop_cpu, wall = time.process_time(), time.thread_time(), time.perf_counter()
        if profiler is not None:
            profiler.enable()
        await link.repair(client, EPOCH)
        if exporter is not None:  # it has read the whole feed: every copy skipped
            while adapter.feed_lag() > 0:
                await asyncio.sleep(0.01)
        if profiler is not None:
            profiler.disable()
        cpu, loop_cpu = time.process_time() - cpu, time.thread_time() - loop_cpu
        wall = time.perf_counter() - wall
        renewed_during = importer.stats.renewals
        renew_cpu = time.process_time()
        renewed = await importer.renew_all()
        renew_cpu = time.process_time() - renew_cpu
        await sampler.stop()
        held = importer.copies_by_origin()
        mapped = await store.mapping_counts()
        exported = None if exporter is None else exporter.stats.changes_exported
        if exporter is not None:
            await exporter.close()
        await importer.close()
        await store.close()
    if held != {ORIGIN: count} or mapped != {ORIGIN: count} or renewed != count:
        raise RuntimeError(f"{count} records gave {held} held, {mapped} mapped, {renewed} renewed")
    if exported:
        raise RuntimeError(f"the exporter exported {exported} copies")
    result.update(
        cpu_s=round(cpu, 2),
        us_per_copy=round(1e6 * cpu / count, 1),
        loop_thread_us_per_copy=round(1e6 * loop_cpu / count, 1),
        wall_s=round(wall, 1),
        renewals_during_sync=renewed_during,
        renewal_pass_us_per_copy=round(1e6 * renew_cpu / count, 2),
        longest_loop_run_ms=round(1e3 * sampler.longest, 1),
        gc=sampler.gc_summary(),
        peak_rss_mib=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        load_average=round(os.getloadavg()[0], 1),
    )
    if profiler is not None:
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(profile)
        result["profile"] = out.getvalue()
    return result


async def measure_streams(streams: int, batch: int, period: float, rounds: int) -> dict[str, Any]:
    """``streams`` origins applying small batches into one importer, in CPU time."""
    services = [ServiceKey("bench", f"svc-{s}", "1.0.0") for s in range(20)]

    def records(origin: str, first: int, live: bool) -> list[Record]:
        made = []
        for n in range(first, first + batch):
            service = services[n % len(services)]
            endpoint = f"rest://10.0.{n // 250 % 256}.{n % 250}:8080"
            instance = Instance(service, f"a-{n}", f"host-{n}", (endpoint,)) if live else None
            made.append(Record(origin, service, f"a-{n}", 0, instance))
        return made

    with tempfile.TemporaryDirectory() as tmp:
        store = create_store("embedded", tmp)
        await store.open()
        importer = Importer("dc-b", EmbeddedAdapter(EmbeddedRegistry()), store)
        await importer.start(A_DAY)
        transactions = 0
        apply_batches = store.apply_batches  # type: ignore[attr-defined]

        async def counted(*args: Any, **kwargs: Any) -> None:
            nonlocal transactions
            transactions += 1
            await apply_batches(*args, **kwargs)

        store.apply_batches = counted  # type: ignore[attr-defined]
        loop = asyncio.get_running_loop()
        start = loop.time()

        async def origin(number: int) -> None:
            origin_dc = f"dc-o{number}"
            for step in range(2 * rounds):
                delay = start + step * period - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                first = (step % rounds) * batch
                made = records(origin_dc, first, live=step < rounds)
                await importer.apply(origin_dc, made, step + 1, EPOCH)

        cpu, wall = time.process_time(), time.perf_counter()
        await asyncio.gather(*(origin(n) for n in range(streams)))
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        held = importer.copies_by_origin()
        await importer.close()
        await store.close()
    if any(held.values()):
        raise RuntimeError(f"copies left after the deletions: {held}")
    copies = 2 * streams * rounds * batch
    return {
        "streams": streams,
        "batch": batch,
        "period_s": period,
        "us_per_copy": round(1e6 * cpu / copies, 1),
        "transactions_per_batch": round(transactions / (2 * streams * rounds), 2),
        "wall_s": round(wall, 1),
        "paced_s": round(2 * rounds * period, 1),
        "load_average": round(os.getloadavg()[0], 1),
    }


def run(count: int, renew_during: bool, profile: int, with_exporter: bool) -> dict[str, Any]:
    """:func:`measure` on uvloop when it is installed (as the daemon runs), with the
    engine's garbage-collector threshold."""
    threshold0, *older = gc.get_threshold()
    gc.set_threshold(max(threshold0, GC_THRESHOLD0), *older)
    try:
        import uvloop
    except ImportError:
        return asyncio.run(measure(count, renew_during, profile, with_exporter))
    return uvloop.run(measure(count, renew_during, profile, with_exporter))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100000,300000", help="copies per run, comma-separated")
    parser.add_argument("--renew-during", action="store_true", help="renew loop at its pace")
    parser.add_argument("--exporter", action="store_true", help="an exporter follows the feed")
    parser.add_argument("--profile", type=int, default=0, help="print cProfile's top N")
    parser.add_argument("--json", action="store_true", help="one JSON object per size")
    parser.add_argument("--streams", type=int, default=0, help="origins streaming (0: a sync)")
    parser.add_argument("--batch", type=int, default=5, help="changes per streamed batch")
    parser.add_argument("--period", type=float, default=0.01, help="seconds between batches")
    parser.add_argument("--rounds", type=int, default=200, help="batches of each kind")
    args = parser.parse_args(argv)
    if args.streams:
        try:
            import uvloop
        except ImportError:
            uvloop = None  # type: ignore[assignment]
        runner = asyncio.run if uvloop is None else uvloop.run
        result = runner(measure_streams(args.streams, args.batch, args.period, args.rounds))
        if args.json:
            print(json.dumps(result))
            return 0
        print(
            f"{args.streams} origins x batches of {args.batch} every {args.period * 1e3:.0f} ms "
            f"into one importer: {result['us_per_copy']:.1f} us CPU per copy, "
            f"{result['transactions_per_batch']:.2f} store transactions per batch; wall "
            f"{result['wall_s']} s for {result['paced_s']} s paced, load {result['load_average']}"
        )
        return 0
    for size in (int(s) for s in args.sizes.split(",")):
        result = run(size, args.renew_during, args.profile, args.exporter)
        if args.json:
            print(json.dumps(result), flush=True)
            continue
        print(
            f"{size:>9,} copies: {result['us_per_copy']:5.1f} us CPU per copy "
            f"(loop thread {result['loop_thread_us_per_copy']:.1f}); renewal pass "
            f"{result['renewal_pass_us_per_copy']:.2f} us per copy; longest loop run "
            f"{result['longest_loop_run_ms']:.0f} ms; GC [n, max ms, total ms] {result['gc']}; "
            f"peak RSS {result['peak_rss_mib']} MiB; wall {result['wall_s']} s at load "
            f"{result['load_average']}",
            flush=True,
        )
        if "profile" in result:
            print(result["profile"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
