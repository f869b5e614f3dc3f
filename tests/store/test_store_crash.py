"""Crash safety of the embedded store: a writer killed with SIGKILL at random moments.

A subprocess (this file run as a script) opens the store and loops: ``append_changes``
of one batch to the change log, then ``apply_batch`` of one batch to the mapping table
with the peer cursor. It prints each batch number once the call has returned. The
test kills it at random moments (during start-up, open, or writes), reopens the store
and checks the invariants, then lets the next writer continue from where the store is:

* every batch is wholly present or wholly absent, revisions are gapless from 1;
* the exported state equals the replay of the log;
* the mapping is exactly what the batches up to the cursor produce (never ahead of
  or behind the cursor);
* nothing acknowledged is lost: every printed batch is in the store.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import random
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path

from pysyncer.model import Instance, Record, ServiceKey
from pysyncer.store import MappingEntry, SqliteStore

ROOT = Path(__file__).resolve().parents[2]
LOG_BATCH = 40  # upserts per log batch, plus one tombstone of the previous batch
MAP_BATCH = 40
PEER = "dc-peer"
DC = "dc-home"
ITERATIONS = 14
SERVICE = ServiceKey("crash-app", "crash-svc", "1.0")


def log_batch(n: int) -> list[Record]:
    """Batch ``n`` (from 1): LOG_BATCH upserts and a tombstone of ``b{n-1}-0``."""
    records = [
        Record(DC, SERVICE, f"b{n}-{j}", 0, Instance(SERVICE, f"b{n}-{j}", f"host-{n}-{j}"))
        for j in range(LOG_BATCH)
    ]
    records.append(Record(DC, SERVICE, f"b{n - 1}-0", 0, None))
    return records


def map_batch(k: int) -> tuple[list[MappingEntry], list[tuple[str, str]]]:
    """Batch ``k`` (from 1): MAP_BATCH upserts; deletes what batch ``k - 2`` added."""
    upserts = [
        MappingEntry(
            PEER, f"m{k}-{j}", SERVICE.text(), SERVICE.slot, (k << 40) + j, k, "s", "i", k, k
        )
        for j in range(MAP_BATCH)
    ]
    deletes = [(PEER, f"m{k - 2}-{j}") for j in range(MAP_BATCH)]
    return upserts, deletes


async def write_forever(path: Path) -> None:
    async with SqliteStore(path) as db:
        log_n = await db.current_revision() // (LOG_BATCH + 1)
        cursor = await db.get_cursor(PEER)
        map_k = 0 if cursor is None else cursor.revision
        print("ready", flush=True)
        while True:
            log_n += 1
            await db.append_changes(log_batch(log_n))
            print(f"A {log_n}", flush=True)
            map_k += 1
            upserts, deletes = map_batch(map_k)
            await db.apply_batch(PEER, upserts, deletes, map_k, epoch="E")
            print(f"M {map_k}", flush=True)


async def check_invariants(path: Path, acked_log: int, acked_map: int) -> tuple[int, int]:
    """Assert every invariant; return (log batches, mapping cursor) found."""
    async with SqliteStore(path) as db:
        last = await db.current_revision()
        assert last % (LOG_BATCH + 1) == 0, f"partial log batch: last revision {last}"
        batches = last // (LOG_BATCH + 1)
        assert batches >= acked_log, f"acknowledged log batch {acked_log} lost ({batches})"
        log = await db.read_changes(0, limit=last + 1)
        assert [r.revision for r in log] == list(range(1, last + 1)), "gap in revisions"
        expected_log = [r for n in range(1, batches + 1) for r in log_batch(n)]
        assert [(r.instance_id, r.instance) for r in log] == [
            (r.instance_id, r.instance) for r in expected_log
        ]
        exported = {r.instance_id for r in await db.exported_records()}
        live = {f"b{n}-{j}" for n in range(1, batches + 1) for j in range(LOG_BATCH)}
        live -= {f"b{n}-0" for n in range(1, batches)}
        assert exported == live, "exported state differs from the log"

        cursor = await db.get_cursor(PEER)
        k = 0 if cursor is None else cursor.revision
        assert k >= acked_map, f"acknowledged mapping batch {acked_map} lost (cursor {k})"
        assert cursor is None or cursor.epoch == "E"
        entries = await db.mappings_in_slots([SERVICE.slot])
        got = {e.origin_instance_id: e for e in entries}
        want = {f"m{b}-{j}" for b in (k - 1, k) if b >= 1 for j in range(MAP_BATCH)}
        assert set(got) == want, f"mapping inconsistent with cursor {k}"
        for key, e in got.items():
            batch, j = (int(part) for part in key[1:].split("-"))
            assert (e.origin_revision, e.digest) == (batch, (batch << 40) + j)
        return batches, k


def _run_writer_once(path: Path, rng: random.Random) -> tuple[int, int]:
    """Start a writer, SIGKILL it at a random moment; return the last acked batches."""
    proc = subprocess.Popen(
        [sys.executable, __file__, str(path)],
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        cwd=ROOT,
    )
    assert proc.stdout is not None
    lines: list[str] = []
    wait_ready = rng.random() < 0.75
    delay = rng.uniform(0.0, 0.25) if wait_ready else rng.uniform(0.0, 0.6)
    if wait_ready:  # kill during writes; otherwise anywhere from start-up on
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and sel.select(deadline - time.monotonic()):
                line = proc.stdout.readline().decode()
                assert line, f"writer exited early with {proc.poll()}"
                lines.append(line.strip())
                if line.strip() == "ready":
                    break
            assert lines and lines[-1] == "ready", "writer did not start"
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    rest, _ = proc.communicate(timeout=20)
    assert proc.returncode == -signal.SIGKILL, f"writer died by itself: {proc.returncode}"
    lines.extend(rest.decode().split())
    acked = {"A": 0, "M": 0}
    words = " ".join(lines).split()
    for kind, number in itertools.pairwise(words):
        if kind in acked and number.isdigit():
            acked[kind] = max(acked[kind], int(number))
    return acked["A"], acked["M"]


def test_sigkill_at_random_moments_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    rng = random.Random(int.from_bytes(os.urandom(4), "big"))
    progress: list[tuple[int, int]] = []
    started = time.monotonic()
    for _ in range(ITERATIONS):
        acked_log, acked_map = _run_writer_once(path, rng)
        found = asyncio.run(check_invariants(path, acked_log, acked_map))
        if progress:
            assert found[0] >= progress[-1][0] and found[1] >= progress[-1][1]
        progress.append(found)
        if time.monotonic() - started > 40:
            break
    assert progress[-1][0] > 0, f"the writers never wrote a batch: {progress}"


if __name__ == "__main__":
    asyncio.run(write_forever(Path(sys.argv[1])))
