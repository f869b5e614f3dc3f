"""Benchmark of the stores: embedded (SQLite, WAL) and etcd, writes, reads, size on disk.

Usage::

    python -m benchmarks.bench_store [--count N] [--batch B] [--repeats R] [--json]
                                     [--no-etcd] [--etcd HOST:PORT]

Each repeat builds fresh stores in a temporary directory and measures, through the
async :class:`~pysyncer.store.Store` API (so the worker-thread hop is included):

* ``append``: N change records appended in batches of B (records/s), with
  ``synchronous=FULL`` (the default) and NORMAL;
* ``apply``: N mapping entries applied with ``apply_batch`` in batches of B, FULL
  (entries/s), and one single ``apply_batch`` of all N;
* ``read_changes``: the whole log read in pages of 1000 (records/s);
* ``exported``: the whole exported state listed (records/s);
* ``iter_mappings``: all N entries paged through (entries/s);
* ``get_mapping``: random point lookups (lookups/s);
* ``slots``: ``mappings_in_slots`` of 64 random slots (entries/s);
* ``bytes_per_entry``: data file size (after a WAL checkpoint) per mapping entry and
  per change record (log + exported state).

The etcd store (``etcd_*`` figures) runs the same writes against a real etcd, started
for the run on loopback from the Debian ``etcd-server`` binary (or the one at
``--etcd``), with a fresh key prefix per repeat:

* ``etcd_append``: N records appended in batches of B;
* ``etcd_apply``: N mapping entries with ``apply_batch`` in batches of B, and
  ``etcd_apply_single``: one ``apply_batch`` of all N (split into transactions of at
  most 128 operations, etcd's default limit);
* ``etcd_open``: a second store opening the prefix (loading its mirror of the N
  entries and N records, entries + records/s);
* ``etcd_read_changes`` and ``etcd_get_mapping``: reads, served from the mirror.

The ratios embedded/etcd of the write figures are printed at the end.

Figures are the median of R repeats, with min and max.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import random
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from pysyncer.model import Instance, Record, ServiceKey
from pysyncer.procs import EtcdServer, find_etcd
from pysyncer.store import EtcdStore, MappingEntry, SqliteStore, iter_mappings


def make_records(count: int) -> list[Record]:
    services = [ServiceKey(f"app-{i % 20}", f"service-{i}", "1.0.0") for i in range(500)]
    records = []
    for i in range(count):
        svc = services[i % len(services)]
        inst = Instance(
            svc,
            f"inst-{i:08d}",
            f"host-{i}.dc.example",
            (f"rest://10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}:8080",),
            properties={"zone": f"zone-{i % 3}", "version": "1.0.0"},
        )
        records.append(Record("dc-home", svc, inst.instance_id, 0, inst))
    return records


def make_entries(count: int) -> list[MappingEntry]:
    rng = random.Random(7)
    services = [ServiceKey(f"app-{i % 20}", f"service-{i}", "1.0.0") for i in range(500)]
    entries = []
    for i in range(count):
        svc = services[i % len(services)]
        entries.append(
            MappingEntry(
                origin_dc="dc-remote",
                origin_instance_id=f"{rng.getrandbits(128):032x}",
                service_text=svc.text(),
                slot=svc.slot,
                digest=rng.getrandbits(64),
                origin_revision=i + 1,
                local_service_id=f"{rng.getrandbits(64):016x}",
                local_instance_id=f"{rng.getrandbits(128):032x}",
                registered_at=1_700_000_000.0 + i,
                renewed_at=1_700_000_000.0 + i,
            )
        )
    return entries


async def _timed(action: Callable[[], Awaitable[object]]) -> float:
    start = time.perf_counter()
    await action()
    return time.perf_counter() - start


async def _file_bytes(db: SqliteStore) -> int:
    def pages(conn: sqlite3.Connection) -> int:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        count = conn.execute("PRAGMA page_count").fetchone()[0]
        size = conn.execute("PRAGMA page_size").fetchone()[0]
        return int(count) * int(size)

    return await db.run_in_worker(pages)


async def one_repeat(
    tmp: Path, records: list[Record], entries: list[MappingEntry], batch: int
) -> dict[str, float]:
    count = len(records)
    out: dict[str, float] = {}

    for durable in (True, False):
        async with SqliteStore(tmp / f"log-{durable}.db", durable=durable) as db:
            empty = await _file_bytes(db)

            async def append(db: SqliteStore = db) -> None:
                for start in range(0, count, batch):
                    await db.append_changes(records[start : start + batch])

            seconds = await _timed(append)
            out["append_full" if durable else "append_normal"] = count / seconds
            if durable:
                out["bytes_per_record"] = (await _file_bytes(db) - empty) / count

                async def read_all(db: SqliteStore = db) -> None:
                    since = 0
                    while page := await db.read_changes(since, 1000):
                        since = page[-1].revision

                out["read_changes"] = count / await _timed(read_all)
                out["exported"] = count / await _timed(db.exported_records)

    async with SqliteStore(tmp / "map.db") as db:
        empty = await _file_bytes(db)

        async def apply_batched() -> None:
            for start in range(0, count, batch):
                chunk = entries[start : start + batch]
                await db.apply_batch("dc-remote", chunk, [], start + len(chunk))

        out["apply_batched"] = count / await _timed(apply_batched)
        out["bytes_per_entry"] = (await _file_bytes(db) - empty) / count

        async def page_all() -> None:
            async for _ in iter_mappings(db, "dc-remote", 1000):
                pass

        out["iter_mappings"] = count / await _timed(page_all)
        rng = random.Random(3)
        keys = [rng.choice(entries).key for _ in range(2000)]

        async def lookups() -> None:
            for dc, origin_id in keys:
                await db.get_mapping(dc, origin_id)

        out["get_mapping"] = len(keys) / await _timed(lookups)
        slots = rng.sample(sorted({e.slot for e in entries}), 64)
        found: list[int] = []

        async def by_slots() -> None:
            found.append(len(await db.mappings_in_slots(slots)))

        seconds = await _timed(by_slots)
        out["slots"] = found[0] / seconds

    async with SqliteStore(tmp / "map-one.db") as db:
        out["apply_single"] = count / await _timed(
            lambda: db.apply_batch("dc-remote", entries, [], count)
        )
    return out


async def etcd_repeat(
    endpoint: str, records: list[Record], entries: list[MappingEntry], batch: int
) -> dict[str, float]:
    count = len(records)
    out: dict[str, float] = {}
    prefix = f"/pysyncer-bench/{uuid.uuid4().hex[:8]}/"
    async with EtcdStore(endpoint, prefix=prefix, member="bench") as db:

        async def append() -> None:
            for start in range(0, count, batch):
                await db.append_changes(records[start : start + batch])

        out["etcd_append"] = count / await _timed(append)

        async def apply_batched() -> None:
            for start in range(0, count, batch):
                chunk = entries[start : start + batch]
                await db.apply_batch("dc-remote", chunk, [], start + len(chunk))

        out["etcd_apply"] = count / await _timed(apply_batched)

        async def read_all() -> None:
            since = 0
            while page := await db.read_changes(since, 1000):
                since = page[-1].revision

        out["etcd_read_changes"] = count / await _timed(read_all)
        rng = random.Random(3)
        keys = [rng.choice(entries).key for _ in range(2000)]

        async def lookups() -> None:
            for dc, origin_id in keys:
                await db.get_mapping(dc, origin_id)

        out["etcd_get_mapping"] = len(keys) / await _timed(lookups)
        second = EtcdStore(endpoint, prefix=prefix, member="bench-2")
        out["etcd_open"] = 2 * count / await _timed(second.open)
        await second.close()
    async with EtcdStore(endpoint, prefix=prefix + "one/", member="bench") as db:
        out["etcd_apply_single"] = count / await _timed(
            lambda: db.apply_batch("dc-remote", entries, [], count)
        )
    return out


UNITS = {
    "append_full": "records/s (FULL)",
    "append_normal": "records/s (NORMAL)",
    "read_changes": "records/s",
    "exported": "records/s",
    "apply_batched": "entries/s",
    "apply_single": "entries/s (one call)",
    "iter_mappings": "entries/s",
    "get_mapping": "lookups/s",
    "slots": "entries/s",
    "bytes_per_entry": "bytes/mapping entry",
    "bytes_per_record": "bytes/change record (log + state)",
    "etcd_append": "records/s",
    "etcd_apply": "entries/s",
    "etcd_apply_single": "entries/s (one call)",
    "etcd_open": "keys/s (mirror load)",
    "etcd_read_changes": "records/s",
    "etcd_get_mapping": "lookups/s",
}
RATIOS = [
    ("append_full", "etcd_append", "append_changes"),
    ("apply_batched", "etcd_apply", "apply_batch, batches"),
    ("apply_single", "etcd_apply_single", "apply_batch, one call"),
]


async def run(count: int, batch: int, repeats: int, etcd: str | None) -> dict[str, Any]:
    records = make_records(count)
    entries = make_entries(count)
    samples: dict[str, list[float]] = {}
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as tmp:
            for name, value in (await one_repeat(Path(tmp), records, entries, batch)).items():
                samples.setdefault(name, []).append(value)
        if etcd is not None:
            for name, value in (await etcd_repeat(etcd, records, entries, batch)).items():
                samples.setdefault(name, []).append(value)
    return {
        "count": count,
        "batch": batch,
        "repeats": repeats,
        "sqlite": sqlite3.sqlite_version,
        "python": platform.python_version(),
        "results": {
            name: {
                "median": statistics.median(values),
                "min": min(values),
                "max": max(values),
                "unit": UNITS[name],
            }
            for name, values in samples.items()
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--no-etcd", action="store_true", help="embedded store only")
    parser.add_argument("--etcd", metavar="HOST:PORT", help="use this etcd (default: start one)")
    args = parser.parse_args(argv)
    server = None
    endpoint: str | None = args.etcd
    if endpoint is None and not args.no_etcd:
        binary = find_etcd()
        if binary is None:
            print("etcd not installed (apt-get install etcd-server): embedded store only")
        else:
            server = EtcdServer(binary)
            server.start()
            endpoint = server.endpoint
    try:
        report = asyncio.run(run(args.count, args.batch, args.repeats, endpoint))
    finally:
        if server is not None:
            server.close()
    if args.json:
        json.dump(report, sys.stdout, indent=2)
        print()
        return 0
    print(
        f"store benchmark: {report['count']} items, batches of {report['batch']}, "
        f"median of {report['repeats']} (SQLite {report['sqlite']}, "
        f"Python {report['python']})"
    )
    for name, figure in report["results"].items():
        print(
            f"  {name:16s} {figure['median']:>14,.1f} {figure['unit']}"
            f"  (min {figure['min']:,.1f}, max {figure['max']:,.1f})"
        )
    full = report["results"]["append_full"]["median"]
    normal = report["results"]["append_normal"]["median"]
    print(f"  FULL/NORMAL append ratio: {full / normal:.2f}")
    results = report["results"]
    for embedded, etcd, label in RATIOS:
        if etcd in results:
            ratio = results[embedded]["median"] / results[etcd]["median"]
            print(f"  embedded/etcd {label}: {ratio:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
