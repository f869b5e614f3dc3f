"""The etcd store against a real etcd: sharing, coordination, fencing and outages.

The Store protocol itself runs on both backends in ``tests/test_store.py``. Here:
several EtcdStore instances on one prefix (concurrent appends, watch-fed mirrors),
the Coordinator primitives (members and lease expiry, leader, slot table CAS,
fencing), an etcd stopped and restarted (writes queued, health degraded, then
flushed), a partition of one member through a TCP proxy (its queued fenced write is
dropped), and an etcd that never answers. The outage length is
``PYSYNCER_ETCD_OUTAGE`` seconds (default 3; e.g. 30 for a run by hand).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pysyncer.model import Record
from pysyncer.store import (
    SLOT_COUNT,
    Coordinator,
    EtcdStore,
    Fence,
    FencedError,
    PeerCursor,
    StoreError,
    StoreFullError,
)
from pysyncer.store.codec import record_body
from pysyncer.store.etcd_layout import (
    Layout,
    decode_exported,
    decode_log,
    decode_slot_table,
    encode_exported,
    encode_log,
    encode_slot_table,
)
from tests.store.test_store import _instances, entry, instance, upsert
from tests.support.etcd import EtcdServer, etcd_server, unique_prefix
from tests.support.gossip import free_port
from tests.support.waits import eventually

__all__ = ["etcd_server"]

pytestmark = pytest.mark.needs_server("etcd")

OUTAGE = float(os.environ.get("PYSYNCER_ETCD_OUTAGE", "3"))


@contextlib.asynccontextmanager
async def stores(
    endpoint: str, count: int, prefix: str | None = None, **options: float
) -> AsyncIterator[list[EtcdStore]]:
    prefix = prefix or unique_prefix()
    opened = [
        EtcdStore(endpoint, prefix=prefix, member=f"node-{n}", **options)  # type: ignore[arg-type]
        for n in range(count)
    ]
    try:
        for store in opened:
            await store.open()
        yield opened
    finally:
        for store in opened:
            await store.close()


# -- codec (no server) --------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(_instances, st.booleans(), st.integers(1, 2**40))
def test_record_values_round_trip(inst: object, dead: bool, revision: int) -> None:
    from pysyncer.model import Instance

    assert isinstance(inst, Instance)
    record = Record("dc-x", inst.service, inst.instance_id, revision, None if dead else inst)
    body = record_body(record)
    assert decode_log(revision, encode_log(record, body)) == record
    assert decode_exported(encode_exported(record, body)) == record


def test_slot_table_is_run_length_encoded() -> None:
    owners = ["a"] * 8000 + ["b"] * 8000 + [""] * 384
    value = encode_slot_table(7, owners)
    assert len(value) < 64
    assert decode_slot_table(value) == (7, tuple(owners))
    with pytest.raises(ValueError):
        encode_slot_table(1, ["a"])


def test_keys_escape_names() -> None:
    layout = Layout("/p/")
    key = layout.mapping("dc/1", "id/with%/slash")
    assert layout.parse(key).parts == ("dc/1", "id/with%/slash")
    assert layout.log(42) < layout.log(100) < layout.log(10**12)
    assert layout.parse(layout.log(42)).revision == 42


# -- sharing one prefix -------------------------------------------------------------------


@pytest.mark.timeout(30)
async def test_concurrent_appends_from_two_stores_get_unique_consecutive_revisions(
    etcd_server: EtcdServer,
) -> None:
    async with stores(etcd_server.endpoint, 2) as (a, b):

        async def writer(store: EtcdStore, base: int) -> list[list[Record]]:
            out = []
            for n in range(10):
                batch = [upsert(instance(base + 10 * n + i)) for i in range(7)]
                out.append(await store.append_changes(batch))
            return out

        got = await asyncio.gather(writer(a, 0), writer(b, 1000))
        batches = [batch for per_store in got for batch in per_store]
        revisions = sorted(r.revision for batch in batches for r in batch)
        assert revisions == list(range(1, 141))
        for batch in batches:
            numbers = [r.revision for r in batch]
            assert numbers == list(range(numbers[0], numbers[0] + 7))
        # each mirror catches up with the other's writes through the watch
        for store in (a, b):

            async def caught_up(store: EtcdStore = store) -> bool:
                return await store.count_exported() == 140

            await eventually(caught_up, 5, "mirror sees the other store's appends")
            assert await store.current_revision() == 140
        log = await a.read_changes(0, limit=1000)
        assert [r.revision for r in log] == list(range(1, 141))
        assert (await a.log_info()).epoch == (await b.log_info()).epoch


@pytest.mark.timeout(30)
async def test_big_batches_span_transactions_with_the_cursor_last(
    etcd_server: EtcdServer,
) -> None:
    async with stores(etcd_server.endpoint, 1, max_txn_ops=8) as (store,):
        await store.apply_batch("dc-r", [entry(i) for i in range(100)], [], 100, epoch="e")
        await store.apply_batch("dc-r", [], [("dc-remote", f"o-{i:06d}") for i in range(50)], 101)
        added = await store.append_changes([upsert(instance(i)) for i in range(45)])
        assert [r.revision for r in added] == list(range(1, 46))
        assert await store.trim_changes(keep_last=5) == 40
    async with stores(etcd_server.endpoint, 1, prefix=store.prefix) as (again,):
        assert await again.count_mappings() == 50
        assert await again.get_cursor("dc-r") == PeerCursor("dc-r", 101, "e")
        info = await again.log_info()
        assert (info.first_revision, info.last_revision, info.entries) == (41, 45, 5)
        assert await again.count_exported() == 45


@pytest.mark.timeout(30)
async def test_cursors_are_kept_per_member(etcd_server: EtcdServer) -> None:
    async with stores(etcd_server.endpoint, 2) as (a, b):
        await a.set_cursor("dc-x", 5, "e")
        await b.set_cursor("dc-x", 9, "e")
        await asyncio.sleep(0.2)
        assert await a.get_cursor("dc-x") == PeerCursor("dc-x", 5, "e")
        assert await b.list_cursors() == [PeerCursor("dc-x", 9, "e")]


# -- coordination -------------------------------------------------------------------------


@pytest.mark.timeout(30)
async def test_slot_table_compare_and_swap(etcd_server: EtcdServer) -> None:
    async with stores(etcd_server.endpoint, 2) as (a, b):
        assert isinstance(a, Coordinator)
        empty = await a.read_slot_table()
        assert (empty.epoch, empty.revision, set(empty.owners)) == (0, 0, {""})
        owners = ["node-0"] * (SLOT_COUNT // 2) + ["node-1"] * (SLOT_COUNT // 2)
        first = await a.write_slot_table(owners, empty.revision)
        assert first is not None and first.epoch == 1 and first.owners == tuple(owners)
        assert await b.write_slot_table(["node-1"] * SLOT_COUNT, empty.revision) is None
        read = await b.read_slot_table()
        assert read == first
        second = await b.write_slot_table(["node-1"] * SLOT_COUNT, read.revision)
        assert second is not None and second.epoch == 2
        assert await a.write_slot_table(owners, first.revision) is None
        with pytest.raises(ValueError):
            await a.write_slot_table(["x"], second.revision)


@pytest.mark.timeout(30)
async def test_fenced_writes(etcd_server: EtcdServer) -> None:
    async with stores(etcd_server.endpoint, 2) as (a, b):
        await a.join("node-0", {"rpc": "10.0.0.1:30191"}, ttl=10)
        table = await a.write_slot_table(["node-0"] * SLOT_COUNT, 0)
        assert table is not None
        fence = Fence("node-0", table.epoch)
        await a.apply_batch("dc-r", [entry(1)], [], 1, epoch="e", fence=fence)
        await a.put_mappings([entry(2)], fence=fence)
        assert await a.delete_mappings([("dc-remote", "o-000002")], fence=fence) == 1
        assert [r.revision for r in await a.append_changes([upsert(instance(1))], fence=fence)]
        # another member moves the epoch on: the old fence is refused, nothing written
        moved = await b.write_slot_table(["node-1"] * SLOT_COUNT, table.revision)
        assert moved is not None
        with pytest.raises(FencedError):
            await a.apply_batch("dc-r", [entry(3)], [], 2, fence=fence)
        with pytest.raises(FencedError):
            await a.append_changes([upsert(instance(2))], fence=fence)
        with pytest.raises(FencedError):
            await a.put_mappings([entry(4)], fence=fence)
        assert await a.get_mapping("dc-remote", "o-000003") is None
        assert await a.get_cursor("dc-r") == PeerCursor("dc-r", 1, "e")
        assert await a.current_revision() == 1
        # the current epoch passes; a lost lease (revoked behind its back) does not
        current = Fence("node-0", moved.epoch)
        await a.put_mappings([entry(5)], fence=current)
        await b._client.revoke(a._membership.lease)
        with pytest.raises(FencedError):
            await a.put_mappings([entry(6)], fence=current)
        assert await a.get_mapping("dc-remote", "o-000006") is None
        await a.leave()
        with pytest.raises(FencedError, match="no lease"):
            await a.put_mappings([entry(7)], fence=current)
        assert isinstance(FencedError("x"), StoreError)


@pytest.mark.timeout(60)
async def test_members_leases_leader_and_watch(etcd_server: EtcdServer) -> None:
    # TTLs of 6 s: a loaded machine may stall this process for a second or two, and a
    # member's keep-alives run in it
    async with stores(etcd_server.endpoint, 3) as (a, b, observer):
        changes = observer.watch()
        await asyncio.wait_for(anext(changes), 10)  # the initial yield
        await a.join("node-a", {"zone": "1"}, ttl=6)
        await b.join("node-b", {"zone": "2"}, ttl=6)
        await asyncio.wait_for(anext(changes), 10)
        assert await observer.live_members() == {"node-a": {"zone": "1"}, "node-b": {"zone": "2"}}
        assert await observer.leader() == "node-a"  # joined first
        await asyncio.sleep(7)  # longer than the TTL: keep-alives hold both
        assert set(await observer.live_members()) == {"node-a", "node-b"}
        # node-a dies without leaving: its lease expires and its key goes
        assert a._membership._task is not None
        a._membership._task.cancel()

        async def a_gone() -> bool:
            return set(await observer.live_members()) == {"node-b"}

        await eventually(a_gone, 20, "member key of an expired lease removed")
        assert await observer.leader() == "node-b"
        await asyncio.wait_for(anext(changes), 10)
        await b.leave()
        assert await observer.live_members() == {}
        assert await observer.leader() is None
        await changes.aclose()


# -- outages ------------------------------------------------------------------------------


@pytest.mark.timeout(60 + 2 * OUTAGE)
async def test_outage_queues_writes_then_flushes_them(etcd_server: EtcdServer) -> None:
    with EtcdServer(etcd_server.binary) as server:
        prefix = unique_prefix()
        async with stores(server.endpoint, 1, prefix=prefix, request_timeout=1.0) as (store,):
            await store.apply_batch("dc-r", [entry(i) for i in range(10)], [], 10, epoch="e")
            await store.append_changes([upsert(instance(i)) for i in range(5)])
            assert store.health().status == "ok"
            server.stop()
            started = time.monotonic()
            await store.apply_batch("dc-r", [entry(i) for i in range(10, 300)], [], 11)
            written = await store.append_changes([upsert(instance(i)) for i in range(5, 9)])
            assert [r.revision for r in written] == [6, 7, 8, 9]
            assert await store.delete_mappings([("dc-remote", "o-000000")]) == 1
            await store.set_cursor("dc-q", 3, "eq")
            assert await store.trim_changes(through_revision=2) == 2
            assert time.monotonic() - started < 5  # returned once queued
            health = store.health()
            assert health.status == "degraded" and health.queued > 0
            assert health.last_error and "unavailable" in health.last_error
            # reads see the queued writes
            assert await store.count_mappings() == 299
            assert await store.current_revision() == 9
            assert await store.get_cursor("dc-r") == PeerCursor("dc-r", 11, "e")
            await asyncio.sleep(OUTAGE)
            server.start()

            async def healthy() -> bool:
                return store.health().status == "ok" and store.health().queued == 0

            await eventually(healthy, 20, "queue flushed after etcd came back")
            assert store.health().dropped == 0
            assert [r.revision for r in await store.append_changes([upsert(instance(99))])] == [10]
        async with stores(server.endpoint, 1, prefix=prefix) as (fresh,):
            assert await fresh.count_mappings() == 299
            assert await fresh.get_mapping("dc-remote", "o-000000") is None
            assert await fresh.get_cursor("dc-r") == PeerCursor("dc-r", 11, "e")
            assert await fresh.get_cursor("dc-q") == PeerCursor("dc-q", 3, "eq")
            info = await fresh.log_info()
            assert (info.first_revision, info.last_revision, info.entries) == (3, 10, 8)
            assert await fresh.count_exported() == 10


@pytest.mark.timeout(30)
async def test_queue_full_during_outage(etcd_server: EtcdServer) -> None:
    with EtcdServer(etcd_server.binary) as server:
        async with stores(server.endpoint, 1, request_timeout=1.0, max_queue=100) as (store,):
            server.stop()
            await store.put_mappings([entry(i) for i in range(60)])
            with pytest.raises(StoreFullError, match="queue full"):
                await store.put_mappings([entry(i) for i in range(60, 120)])
            assert await store.count_mappings() == 60
            server.start()

            async def flushed() -> bool:
                return store.health().queued == 0

            await eventually(flushed, 20, "queue flushed")


class Proxy:
    """A TCP relay to etcd that can be cut (a partition of the members behind it)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def cut(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return
        self._writers.update((writer, up_writer))

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, asyncio.CancelledError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.transport.abort()

        await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))


@pytest.mark.timeout(45)
async def test_partitioned_owner_loses_its_queued_fenced_write(etcd_server: EtcdServer) -> None:
    proxy = Proxy(etcd_server.client_port)
    await proxy.start()
    prefix = unique_prefix()
    try:
        async with (
            stores(f"127.0.0.1:{proxy.port}", 1, prefix=prefix, request_timeout=1.0) as (owner,),
            stores(etcd_server.endpoint, 1, prefix=prefix) as (other,),
        ):
            await owner.join("node-0", {}, ttl=4)
            table = await owner.write_slot_table(["node-0"] * SLOT_COUNT, 0)
            assert table is not None
            fence = Fence("node-0", table.epoch)
            await owner.put_mappings([entry(1)], fence=fence)
            await proxy.cut()
            await owner.put_mappings([entry(2)], fence=fence)  # queued
            assert owner.health().status == "degraded"
            assert await owner.get_mapping("dc-remote", "o-000002") is not None

            async def owner_gone() -> bool:
                return await other.live_members() == {}

            await eventually(owner_gone, 15, "the partitioned owner's lease expired")
            moved = await other.write_slot_table(["node-1"] * SLOT_COUNT, table.revision)
            assert moved is not None
            await proxy.start()

            async def settled() -> bool:
                health = owner.health()
                return health.queued == 0 and health.dropped == 1 and health.status == "ok"

            await eventually(settled, 20, "queued fenced write dropped after the partition")
            await eventually(
                lambda: _missing(owner, "o-000002"), 5, "the mirror was reloaded without it"
            )
            assert await other.get_mapping("dc-remote", "o-000002") is None
            assert await other.get_mapping("dc-remote", "o-000001") is not None
    finally:
        await proxy.cut()


async def _missing(store: EtcdStore, origin_id: str) -> bool:
    return await store.get_mapping("dc-remote", origin_id) is None


@pytest.mark.timeout(15)
async def test_store_that_never_comes_is_a_clear_error() -> None:
    port = free_port()
    store = EtcdStore(f"127.0.0.1:{port}", prefix="/p/", member="n", open_timeout=1.5)
    started = time.monotonic()
    with pytest.raises(StoreError, match=f"127.0.0.1:{port}") as info:
        await store.open()
    assert time.monotonic() - started < 5
    assert "1.5 s" in str(info.value)
    with pytest.raises(StoreError):
        await store.current_revision()


@pytest.mark.timeout(20)
async def test_fails_over_to_the_next_endpoint(etcd_server: EtcdServer) -> None:
    dead = f"127.0.0.1:{free_port()}"
    prefix = unique_prefix()
    async with EtcdStore(f"{dead},{etcd_server.endpoint}", prefix=prefix, member="n") as store:
        await store.put_mappings([entry(1)])
        assert store.health().endpoint == etcd_server.endpoint
    async with stores(etcd_server.endpoint, 1, prefix=prefix) as (check,):
        assert await check.get_mapping("dc-remote", "o-000001") == entry(1)
