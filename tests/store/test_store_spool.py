"""The etcd store's write-behind spool: nothing acknowledged during an outage is lost.

The spool file itself (frames, torn tails, the lock, group fsyncs) and its records
(what a recovery replays, clean or unclean) without a server; then a real etcd frozen
with SIGSTOP while a writer subprocess keeps writing and collecting acknowledgements:
killed with SIGKILL (or closed cleanly), etcd thawed, a new store on the same data dir
replays the spool. Checked: every acknowledged record is in the log and every
acknowledged mapping and cursor in the store; no revision is reused under the epoch
peers saw (an unclean end writes a new epoch; a clean one keeps each acknowledged
revision on its record, unless another member appended meanwhile: then a new epoch);
the spool is empty afterwards. A replayed fenced write compares the lease it was
queued under: written while that lease lives, fenced off and counted once it expired.
Every process is started here and stopped by pid.
"""

from __future__ import annotations

import asyncio
import json
import os
import queue
import subprocess
import sys
import threading
import time
import urllib.request
import zlib
from pathlib import Path
from typing import Any

import pytest

from pysyncer.procs import pause, resume
from pysyncer.store import SLOT_COUNT, EtcdStore, Fence, StoreLockedError
from pysyncer.store.etcd_spool import SpooledWrite, WriteSpool, recover, spool_path
from pysyncer.store.spool import Spool
from tests.store.test_store import entry, instance, upsert
from tests.support.etcd import EtcdServer, etcd_server, unique_prefix

__all__ = ["etcd_server"]

MEMBER = "writer"
BATCHES = 6  # appends (and mapping batches) acknowledged during the outage


# -- the spool file -------------------------------------------------------------------------


async def test_frames_round_trip_and_a_torn_tail_is_cut(tmp_path: Path) -> None:
    path = tmp_path / "s" / "one.spool"
    spool = Spool(path)
    assert spool.open() == []
    payloads = [b"a", b"", os.urandom(70_000), b"last"]
    for payload in payloads:
        spool.append(payload)
    await spool.sync()
    await spool.close()
    assert (path.parent.stat().st_mode & 0o777, path.stat().st_mode & 0o777) == (0o700, 0o600)
    whole = path.read_bytes()
    for cut in (1, 5, 9):  # a crash in the middle of the last frame
        path.write_bytes(whole[:-cut])
        again = Spool(path)
        assert again.open() == payloads[:-1]
        assert path.stat().st_size == len(whole) - 8 - len(b"last")
        await again.close()
    damaged = bytearray(whole)
    damaged[-1] ^= 0xFF  # a bad CRC ends the valid part too
    path.write_bytes(bytes(damaged))
    again = Spool(path)
    assert again.open() == payloads[:-1]
    await again.close()
    assert zlib.crc32(b"") == 0  # the empty payload above had a zero CRC and still counted


async def test_one_opener_at_a_time_and_reset(tmp_path: Path) -> None:
    path = tmp_path / "s.spool"
    first = Spool(path)
    first.open()
    with pytest.raises(StoreLockedError, match="held by another process"):
        Spool(path).open()
    first.append(b"x")
    await first.sync()
    first.reset()
    assert first.empty and path.stat().st_size == 0
    first.append(b"y")
    await first.close()
    second = Spool(path)
    assert second.open() == [b"y"]  # close writes what is buffered
    await second.close()


async def test_concurrent_writers_share_fsyncs(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "g.spool")
    spool.open()

    async def writer(n: int) -> None:
        for i in range(20):
            spool.append(f"{n}-{i}".encode())
            await spool.sync()

    await asyncio.gather(*(writer(n) for n in range(20)))
    assert spool.fsyncs < 400 / 4, spool.fsyncs  # 400 acknowledged appends
    await spool.close()
    again = Spool(tmp_path / "g.spool")
    assert len(again.open()) == 400
    await again.close()


async def test_recovery_of_spooled_writes(tmp_path: Path) -> None:
    path = tmp_path / "w.spool"
    spool = WriteSpool(path)
    assert spool.open().records == 0
    spool.degraded()
    writes = [
        SpooledWrite(spool.next_seq(), Fence("n1", 3), 77, 2,
                     mutations=[(b"k", b"v"), (b"d", None)]),
        SpooledWrite(spool.next_seq(), None, 0, 2, entries=[("dc", "i-1", [["a"], None])],
                     first_revision=12),
        SpooledWrite(spool.next_seq(), None, 0, 1, delete_range=(b"a", b"b"), counts_deletes=True),
    ]  # fmt: skip
    for write in writes:
        spool.record(write)
    await spool.sync()
    spool.done(writes[0].seq)
    await spool.file.close()  # a crash: no clean-shutdown record
    reopened = WriteSpool(path)
    recovery = reopened.open()
    assert recovery.writes == writes[1:] and recovery.unclean
    assert reopened.next_seq() == writes[-1].seq + 1
    await reopened.close()  # clean: ends with the clean-shutdown record
    clean = recover(Spool(path).open(), "test")
    assert clean.writes == writes[1:] and clean.clean and not clean.unclean
    assert spool_path(tmp_path, "/p/") != spool_path(tmp_path, "/q/")


# -- kill -9 during an etcd outage ------------------------------------------------------------


def writer_main() -> None:
    """The writer subprocess: ``MODE ENDPOINT PREFIX DATA_DIR`` (see :func:`run_writer`)."""
    mode, endpoint, prefix, data_dir = sys.argv[1:5]
    asyncio.run(_writer(mode, endpoint, prefix, Path(data_dir)))


def _say(**line: Any) -> None:
    print(json.dumps(line), flush=True)


async def _writer(mode: str, endpoint: str, prefix: str, data_dir: Path) -> None:
    store = EtcdStore(
        endpoint, prefix=prefix, member=MEMBER, request_timeout=0.5, open_timeout=20,
        close_timeout=1.0, spool_dir=data_dir,
    )  # fmt: skip
    await store.open()
    if mode == "replay":
        info = await store.log_info()
        log = await store.read_changes(0, limit=100_000)
        cursor = await store.get_cursor("dc-r")
        mappings = await store.list_mappings("dc-remote", limit=10_000)
        _say(
            kind="state", epoch=info.epoch, replayed=store.replayed,
            log=[[r.revision, r.instance_id] for r in log],
            mappings=[e.origin_instance_id for e in mappings],
            cursor=None if cursor is None else cursor.revision,
            spool_bytes=store._spool.file.size if store._spool else -1,
            dropped=store.health().dropped,
        )  # fmt: skip
        await store.close()
        return
    if mode.startswith("fenced-"):
        await _fenced_writer(store, ttl=float(mode.removeprefix("fenced-")))
        return
    written = await store.append_changes([upsert(instance(n)) for n in range(3)])
    _say(kind="append", epoch=(await store.log_info()).epoch,
         records=[[r.revision, r.instance_id] for r in written])  # fmt: skip
    _say(kind="healthy")
    await asyncio.to_thread(sys.stdin.readline)  # etcd is frozen now
    for batch in range(BATCHES):
        base = 100 + 10 * batch
        written = await store.append_changes([upsert(instance(base + n)) for n in range(5)])
        _say(kind="append", epoch=(await store.log_info()).epoch,
             records=[[r.revision, r.instance_id] for r in written])  # fmt: skip
        entries = [entry(base + n) for n in range(4)]
        await store.apply_batch("dc-r", entries, [], base)
        _say(kind="apply", ids=[e.origin_instance_id for e in entries], cursor=base)
    _say(kind="outage", health=store.health().status)
    if mode == "close":
        await store.close()
        _say(kind="closed")
        return
    await asyncio.sleep(3600)  # until killed


async def _fenced_writer(store: EtcdStore, ttl: float) -> None:
    """Join with a lease of ``ttl`` s, own every slot, then apply a fenced batch while etcd
    is frozen; wait to be killed."""
    await store.join(MEMBER, {}, ttl=ttl)
    table = await store.read_slot_table()
    owned = await store.write_slot_table([MEMBER] * SLOT_COUNT, table.revision)
    assert owned is not None
    _say(kind="healthy")
    await asyncio.to_thread(sys.stdin.readline)  # etcd is frozen now
    entries = [entry(500 + n) for n in range(4)]
    await store.apply_batch("dc-f", entries, [], 5, fence=Fence(MEMBER, owned.epoch))
    _say(kind="apply", ids=[e.origin_instance_id for e in entries], cursor=5)
    _say(kind="outage", health=store.health().status)
    await asyncio.sleep(3600)  # until killed


class Writer:
    """A writer subprocess and the lines it printed (read by a thread: a pipe's text
    buffer would hide lines from a select)."""

    def __init__(self, mode: str, server: EtcdServer, prefix: str, data_dir: Path) -> None:
        script = "from tests.store.test_store_spool import writer_main; writer_main()"
        self.process = subprocess.Popen(
            [sys.executable, "-c", script, mode, server.endpoint, prefix, str(data_dir)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            cwd=Path(__file__).resolve().parents[2],
        )  # fmt: skip
        self.lines: list[dict[str, Any]] = []
        self._queue: queue.Queue[str] = queue.Queue()
        self._reader = threading.Thread(target=self._pump, daemon=True)
        self._reader.start()

    def _pump(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._queue.put(line)
        self._queue.put("")

    def read_until(self, kind: str, timeout: float = 60) -> dict[str, Any]:
        while True:
            try:
                line = self._queue.get(timeout=timeout)
            except queue.Empty:
                self.process.kill()
                raise AssertionError(f"writer silent for {timeout} s before {kind!r}") from None
            if not line:
                assert self.process.stderr is not None
                raise AssertionError(f"writer ended before {kind!r}: {self.process.stderr.read()}")
            item: dict[str, Any] = json.loads(line)
            self.lines.append(item)
            if item["kind"] == kind:
                return item

    def tell(self, text: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(text + "\n")
        self.process.stdin.flush()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()  # kill -9, by pid
        self.process.wait(timeout=10)
        self._reader.join(timeout=10)  # the pipe ends with the process
        for stream in (self.process.stdin, self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()


def run_writer(mode: str, server: EtcdServer, prefix: str, data_dir: Path) -> Writer:
    """Start a writer: it appends while healthy, then (after ``go``) during the outage."""
    writer = Writer(mode, server, prefix, data_dir)
    writer.read_until("healthy")
    return writer


def replay(server: EtcdServer, prefix: str, data_dir: Path) -> dict[str, Any]:
    reader = Writer("replay", server, prefix, data_dir)
    try:
        return reader.read_until("state")
    finally:
        reader.process.wait(timeout=30)
        reader.kill()


def acknowledged(lines: list[dict[str, Any]]) -> tuple[dict[int, str], list[str], int, str]:
    """Acknowledged appends (revision -> instance id), mapping ids, last cursor, first epoch."""
    revisions = {
        rev: iid for line in lines if line["kind"] == "append" for rev, iid in line["records"]
    }
    ids = [i for line in lines if line["kind"] == "apply" for i in line["ids"]]
    cursors = [line["cursor"] for line in lines if line["kind"] == "apply"]
    epoch = next(line["epoch"] for line in lines if line["kind"] == "append")
    return revisions, ids, cursors[-1], epoch


def freeze(server: EtcdServer) -> None:
    assert server.process is not None
    pause(server.process.pid)  # every thread stopped: none answers a write after this


def thaw(server: EtcdServer) -> None:
    assert server.process is not None
    resume(server.process.pid)


async def _append_elsewhere(server: EtcdServer, prefix: str) -> None:
    """Another member appends (etcd back, the writer gone): it takes the next revisions."""
    async with EtcdStore(server.endpoint, prefix=prefix, member="other") as other:
        await other.append_changes([upsert(instance(900 + n)) for n in range(4)])


@pytest.mark.needs_server("etcd")
@pytest.mark.timeout(120)
@pytest.mark.parametrize("end", ["kill-9", "clean-close", "clean-close-then-another-appends"])
def test_acknowledged_writes_survive_the_writer_during_an_outage(
    etcd_server: EtcdServer, tmp_path: Path, end: str
) -> None:
    with EtcdServer(etcd_server.binary) as server:
        prefix = unique_prefix()
        writer = run_writer("kill" if end == "kill-9" else "close", server, prefix, tmp_path)
        try:
            freeze(server)
            writer.tell("go")
            outage = writer.read_until("outage")
            assert outage["health"] == "degraded"
            if end == "kill-9":
                writer.kill()
            else:
                writer.read_until("closed")
        finally:
            thaw(server)
            writer.kill()
        spooled = spool_path(tmp_path, prefix)
        assert spooled.stat().st_size > 0
        if end == "clean-close-then-another-appends":
            asyncio.run(_append_elsewhere(server, prefix))
        revisions, ids, cursor, epoch = acknowledged(writer.lines)
        assert len(revisions) == 3 + 5 * BATCHES and len(ids) == 4 * BATCHES

        state = replay(server, prefix, tmp_path)
        log = dict(state["log"])
        assert len(log) == len(state["log"])  # one record per revision
        assert set(revisions.values()) <= set(log.values()), "an acknowledged record was lost"
        assert set(ids) <= set(state["mappings"]) and state["cursor"] == cursor
        assert state["replayed"] == 2 * BATCHES and state["spool_bytes"] == 0
        assert spooled.stat().st_size == 0
        reused = {rev for rev, iid in revisions.items() if log.get(rev) != iid}
        if end == "kill-9":
            # revisions shown ahead of etcd may have been seen: a new epoch tells peers
            assert state["epoch"] != epoch
        elif end == "clean-close-then-another-appends":
            # the replayed appends were renumbered after the other member's: a new epoch
            assert reused and state["epoch"] != epoch
        else:
            # a clean end spooled every one of them: the same epoch, each on its record
            assert state["epoch"] == epoch and not reused, sorted(reused)
        again = replay(server, prefix, tmp_path)  # nothing left to replay: a quiet open
        assert again["replayed"] == 0 and again["epoch"] == state["epoch"]
        assert again["log"] == state["log"]


def wait_for_no_leases(server: EtcdServer, timeout: float = 60.0) -> None:
    """Until etcd holds no lease (its JSON gateway's LeaseLeases): a loaded etcd revokes an
    expired lease some time after its TTL, and the replay must see it gone."""
    url = f"http://{server.endpoint}/v3/lease/leases"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        request = urllib.request.Request(url, data=b"{}", method="POST")
        with urllib.request.urlopen(request, timeout=5) as answer:
            if not json.loads(answer.read() or b"{}").get("leases"):
                return
        time.sleep(0.2)
    raise AssertionError(f"etcd still holds leases after {timeout} s")


@pytest.mark.needs_server("etcd")
@pytest.mark.timeout(120)
@pytest.mark.parametrize("lease", ["alive", "expired"])
def test_a_replayed_fenced_write_compares_the_lease_it_was_queued_under(
    etcd_server: EtcdServer, tmp_path: Path, lease: str
) -> None:
    """The restarted store holds no lease yet: the spooled write's own lease decides. Still
    alive (nobody took the slots over): written. Expired: fenced off and counted."""
    ttl = 60 if lease == "alive" else 2
    with EtcdServer(etcd_server.binary) as server:
        prefix = unique_prefix()
        writer = run_writer(f"fenced-{ttl}", server, prefix, tmp_path)
        try:
            freeze(server)
            writer.tell("go")
            assert writer.read_until("outage")["health"] == "degraded"
            writer.kill()
        finally:
            thaw(server)
            writer.kill()
        (ids,) = [line["ids"] for line in writer.lines if line["kind"] == "apply"]
        if lease == "expired":
            time.sleep(ttl)
            wait_for_no_leases(server)  # etcd expires the dead writer's lease
        state = replay(server, prefix, tmp_path)
        assert state["replayed"] == 1 and state["spool_bytes"] == 0
        if lease == "alive":
            assert set(ids) <= set(state["mappings"]) and state["dropped"] == 0
        else:
            # the spooled write is fenced off: the lease it was queued under is gone. Its one
            # in-flight try may still have sat in the frozen etcd's socket buffer and landed
            # when etcd was thawed, while that lease lived: then it is there whole, once.
            assert state["dropped"] == 1
            landed = set(ids) & set(state["mappings"])
            assert not landed or landed == set(ids)
