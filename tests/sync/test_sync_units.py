"""Exporter, importer and peer links in-process: real embedded registries, SQLite, gRPC."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from pysyncer._core import digest as core_digest
from pysyncer.adapters.base import AdapterError, LocalRef, NotFoundError, SkipsCopies
from pysyncer.adapters.embedded import EmbeddedAdapter
from pysyncer.model import ORIGIN_DC_PROPERTY, ORIGIN_ID_PROPERTY, Instance, Record, ServiceKey
from pysyncer.rpc.client import SyncClient
from pysyncer.rpc.errors import CallRefusedError, UnavailableError
from pysyncer.rpc.server import SyncServer
from pysyncer.servicecenter.core import EmbeddedRegistry
from pysyncer.store.base import Fence
from pysyncer.store.sqlite import SqliteStore
from pysyncer.sync import exporter as exporter_module
from pysyncer.sync import peers as peers_module
from pysyncer.sync.copies import copy_of
from pysyncer.sync.exporter import Exporter
from pysyncer.sync.filters import Filters, filters_from_config
from pysyncer.sync.importer import WRITES_PER_TURN, Importer, copy_instance_id
from pysyncer.sync.peers import PeerLink, RemoteSyncer

ANTI_ENTROPY_INTERVAL = 60.0  # longer than any test here: repairs are driven by hand
CHANGE_LOG_SIZE = 100_000  # more changes than any test makes: no trimming

pytestmark = pytest.mark.timeout(60)


@dataclass
class Side:
    """One data center in-process: registry, adapter, store, importer, exporter."""

    dc: str
    registry: EmbeddedRegistry
    adapter: EmbeddedAdapter
    store: SqliteStore
    importer: Importer
    exporter: Exporter

    async def close(self) -> None:
        await self.exporter.close()
        await self.importer.close()
        await self.adapter.close()
        await self.store.close()
        self.registry.close()

    async def service(self, name: str) -> str:
        return await self.registry.create_service(
            {"appId": "shop", "serviceName": name, "version": "1.0.0"}
        )

    async def register(self, sid: str, host: str, **extra: Any) -> str:
        body = {"hostName": host, "endpoints": [f"rest://{host}:80"], **extra}
        return await self.registry.register_instance(sid, body)

    async def instances(self) -> list[Instance]:
        return list(await self.adapter.list_instances())

    async def copies(self) -> list[Instance]:
        return [i for i in await self.instances() if ORIGIN_DC_PROPERTY in i.properties]


class FeedOfEveryEntry(EmbeddedAdapter):
    """The embedded adapter as an adapter whose change feed cannot leave copies out: every
    entry becomes an event and the exporter tells the copies itself."""

    changes_without = None  # type: ignore[assignment]  # not a SkipsCopies


async def make_side(
    tmp_path: Path, dc: str, *, renew: float | None = 3600, feed_skips_copies: bool = True
) -> Side:
    registry = EmbeddedRegistry()
    adapter = EmbeddedAdapter(registry) if feed_skips_copies else FeedOfEveryEntry(registry)
    await adapter.start()
    (tmp_path / dc).mkdir()
    store = SqliteStore(tmp_path / dc / "store.db")
    await store.open()
    importer = Importer(dc, adapter, store)
    await importer.start(renew)
    exporter = Exporter(
        dc,
        "node-" + dc,
        adapter,
        store,
        copy_ids=importer.copy_ids,
        change_log_size=CHANGE_LOG_SIZE,
    )
    await exporter.start()
    await asyncio.wait_for(exporter.ready.wait(), 5)
    return Side(dc, registry, adapter, store, importer, exporter)


@pytest.fixture
async def side(tmp_path: Path) -> AsyncIterator[Side]:
    made = await make_side(tmp_path, "dc1")
    yield made
    await made.close()


@pytest.fixture(params=[True, False], ids=["feed-skips-copies", "exporter-skips-copies"])
async def either_side(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Side]:
    """A side whose adapter's feed leaves copies out, and one whose feed has them all."""
    made = await make_side(tmp_path, "dc1", feed_skips_copies=request.param)
    assert isinstance(made.adapter, SkipsCopies) is request.param
    yield made
    await made.close()


async def until(condition: Callable[[], Any], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("timed out")


def remote_record(origin: str, iid: str, host: str, revision: int, *, name: str = "pay") -> Record:
    service = ServiceKey("shop", name, "1.0.0")
    instance = Instance(service, iid, host, (f"rest://{host}:1",), health_interval=2)
    return Record(origin, service, iid, revision, instance)


def tombstone(origin: str, iid: str, revision: int, *, name: str = "pay") -> Record:
    return Record(origin, ServiceKey("shop", name, "1.0.0"), iid, revision, None)


# -- exporter ---------------------------------------------------------------------------


async def test_listing_and_changes_export_with_consecutive_revisions(side: Side) -> None:
    sid = await side.service("orders")
    first = await side.register(sid, "h1")
    await until(lambda: _at(side.exporter, 1))
    second = await side.register(sid, "h2")
    await until(lambda: _at(side.exporter, 2))
    await side.registry.update_instance_status(sid, first, "DOWN")
    await until(lambda: _at(side.exporter, 3))
    await side.registry.unregister_instance(sid, second)
    await until(lambda: _at(side.exporter, 4))
    records, reset = await side.exporter.changes_since(0, 100)
    assert not reset
    assert [r.revision for r in records] == [1, 2, 3, 4]
    assert [r.instance_id for r in records] == [first, second, first, second]
    assert records[2].instance is not None and records[2].instance.status == "DOWN"
    assert records[3].deleted
    assert side.exporter.exported_count() == 1
    # Resuming mid-log and limits.
    tail, reset = await side.exporter.changes_since(2, 1)
    assert not reset and [r.revision for r in tail] == [3]
    # Ahead of the log, or behind a trimmed log: reset.
    assert (await side.exporter.changes_since(99, 10)) == ([], True)
    await side.store.trim_changes(keep_last=1)
    assert (await side.exporter.changes_since(1, 10))[1] is True
    assert [r.revision for r in (await side.exporter.changes_since(3, 10))[0]] == [4]
    assert (await side.exporter.changes_since(4, 10)) == ([], False)


async def _at(exporter: Exporter, revision: int) -> bool:
    return exporter.revision() >= revision


async def test_an_application_with_a_copy_s_endpoints_is_its_own_instance(side: Side) -> None:
    """An application registering, without an id, the endpoints a copy holds (address
    spaces overlap between data centers) gets an id of its own: it is exported, the copy
    stays as written, and the origin's delete removes the copy only."""
    record = remote_record("dc2", "r1", "10.0.0.1", 1)
    await side.importer.apply("dc2", [record], 1, "e")
    ref = side.importer.index.ref(record.key_hash)
    assert ref is not None
    app = await side.registry.register_instance(
        ref.service_id, {"hostName": "app", "endpoints": ["rest://10.0.0.1:1"]}
    )
    assert app != ref.instance_id
    await until(lambda: _at(side.exporter, 1))
    assert [r.instance_id for r in await side.store.exported_records()] == [app]
    (copy,) = await side.copies()
    assert copy.instance_id == ref.instance_id and copy.host_name == "10.0.0.1"
    await side.importer.apply("dc2", [tombstone("dc2", "r1", 2)], 2, "e")
    assert [(i.instance_id, i.host_name) for i in await side.instances()] == [(app, "app")]


async def test_copies_are_never_exported_by_marker_or_by_mapping(either_side: Side) -> None:
    side = either_side
    sid = await side.service("orders")
    marked = {ORIGIN_DC_PROPERTY: "dc9", ORIGIN_ID_PROPERTY: "x"}
    await side.register(sid, "copy-by-marker", properties=marked)
    # A copy whose marker an operator stripped: known only through the mapping table.
    await side.importer.apply("dc2", [remote_record("dc2", "r1", "remote-1", 1)], 1, "e")
    (copy,) = [c for c in await side.copies() if c.properties[ORIGIN_DC_PROPERTY] == "dc2"]
    ref = (await side.adapter.list_instances()).ref(copy.instance_id)
    await side.registry.update_instance_properties(ref.service_id, ref.instance_id, {})
    original = await side.register(sid, "original")
    await until(lambda: _at(side.exporter, 1))
    await asyncio.sleep(0.2)
    await side.exporter.resync()
    records, _ = await side.exporter.changes_since(0, 100)
    assert {r.instance_id for r in records} == {original}
    assert side.exporter.exported_count() == 1
    assert side.exporter.stats.copies_skipped >= 2


async def test_copy_changes_are_skipped_and_counted_and_originals_exported(
    either_side: Side,
) -> None:
    """Every change of a copy (registered, re-registered changed, unregistered, stripped of
    its marker, expired) is counted as skipped and never exported; originals beside them
    are, deletes included."""
    side = either_side
    sid = await side.service("orders")
    records = [remote_record("dc2", f"r{k}", f"remote-{k}", k + 1) for k in range(3)]
    await side.importer.apply("dc2", records, 3, "e")  # 3 CREATE
    first = await side.register(sid, "original-1")
    moved = remote_record("dc2", "r0", "remote-0-moved", 4)
    await side.importer.apply("dc2", [moved, tombstone("dc2", "r1", 5)], 5, "e")  # UPDATE, DELETE
    ref = side.importer.index.ref(records[2].key_hash)
    assert ref is not None
    await side.registry.update_instance_properties(ref.service_id, ref.instance_id, {})  # UPDATE
    second = await side.register(sid, "original-2")
    await side.registry.unregister_instance(sid, first)
    await side.registry.unregister_instance(ref.service_id, ref.instance_id)  # DELETE, unmarked
    await until(lambda: _at(side.exporter, 3))

    async def read_to_the_end() -> bool:
        return side.adapter.feed_lag() == 0

    await until(read_to_the_end)
    assert side.exporter.stats.copies_skipped == 7  # 3 created, 2 updated, 2 deleted
    exported, _ = await side.exporter.changes_since(0, 100)
    assert [(r.instance_id, r.deleted) for r in exported] == [
        (first, False),
        (second, False),
        (first, True),
    ]
    assert side.exporter.exported_count() == 1


async def test_digest_table_equals_a_rebuild(side: Side) -> None:
    sids = [await side.service(f"svc{k}") for k in range(5)]
    ids = [await side.register(sids[k % 5], f"h{k}") for k in range(20)]
    await until(lambda: _at(side.exporter, 20))
    for iid in ids[:5]:
        await side.registry.unregister_instance(sids[ids.index(iid) % 5], iid)
    await until(lambda: _at(side.exporter, 25))
    rebuilt = core_digest.SlotDigestTable()
    for record in await side.store.exported_records():
        rebuilt.add(record.slot, record.digest)
    revision, table = side.exporter.digest_table()
    assert revision == 25
    assert table == rebuilt.to_bytes()
    assert len(await side.store.exported_records()) == 15


async def test_create_and_delete_in_one_feed_batch_are_both_exported(side: Side) -> None:
    sid = await side.service("orders")
    kept = await side.register(sid, "kept")
    gone = await side.register(sid, "gone")  # created and deleted before the exporter runs
    await side.registry.unregister_instance(sid, gone)

    async def read_to_the_end() -> bool:
        return side.adapter.feed_lag() == 0 and side.exporter.revision() >= 3

    await until(read_to_the_end)  # kept's CREATE, gone's CREATE and DELETE
    exported = {r.instance_id for r in await side.store.exported_records()}
    assert exported == {kept}
    assert side.exporter.exported_count() == 1


# -- importer ---------------------------------------------------------------------------


async def test_apply_is_idempotent_and_tombstones_remove(side: Side) -> None:
    batch = [remote_record("dc2", "r1", "a", 1), remote_record("dc2", "r2", "b", 2)]
    await side.importer.apply("dc2", batch, 2, "e")
    await side.importer.apply("dc2", batch, 2, "e")  # a replay
    copies = await side.copies()
    assert sorted(c.instance_id for c in copies) == sorted(
        copy_instance_id("dc2", i) for i in ("r1", "r2")
    )
    assert {c.properties[ORIGIN_ID_PROPERTY] for c in copies} == {"r1", "r2"}
    assert side.importer.stats.registered == 2
    # A fresh importer over the same store (a restart) replays: still one copy each.
    again = Importer("dc1", side.adapter, side.store)
    await again.start(3600)
    await again.apply("dc2", batch, 2, "e")
    await again.close()
    assert len(await side.copies()) == 2
    cursor = await side.store.get_cursor("dc2")
    assert cursor is not None and cursor.revision == 2
    await side.importer.apply("dc2", [tombstone("dc2", "r1", 3)], 3, "e")
    await side.importer.apply("dc2", [tombstone("dc2", "r1", 3)], 3, "e")
    assert [c.properties[ORIGIN_ID_PROPERTY] for c in await side.copies()] == ["r2"]
    assert side.importer.copies_by_origin() == {"dc2": 1}
    # Records of another origin, or of our own dc, are refused.
    await side.importer.apply("dc2", [remote_record("dc1", "own", "o", 4)], 4, "e")
    assert side.importer.stats.errors.get("foreign_record") == 1
    assert len(await side.copies()) == 1


async def test_a_batch_registers_its_copies_together_and_fails_on_a_refused_one(
    side: Side, monkeypatch: pytest.MonkeyPatch
) -> None:
    """More copies than one turn's writes, one of them refused by the registry: the batch
    fails and commits nothing (its other copies are in the registry, orphans until the
    replay); the replay applies it all, one adapter call per turn's worth of copies."""
    count = WRITES_PER_TURN + 50
    batch = [remote_record("dc2", f"r{k}", f"h{k}", k + 1) for k in range(count)]
    refused = Instance(batch[7].service, "r7", "has space", ("rest://x:1",))
    broken = [*batch[:7], Record("dc2", refused.service, "r7", 8, refused), *batch[8:]]
    with pytest.raises(AdapterError):
        await side.importer.apply("dc2", broken, count, "e")
    assert await side.store.mapping_counts() == {}
    assert await side.store.get_cursor("dc2") is None
    assert side.importer.copies_by_origin() == {}
    calls: list[int] = []
    register_many = side.adapter.register_many

    async def counted(instances: Sequence[Instance]) -> list[LocalRef | AdapterError]:
        calls.append(len(instances))
        return await register_many(instances)

    monkeypatch.setattr(side.adapter, "register_many", counted)
    await side.importer.apply("dc2", batch, count, "e")
    assert calls == [WRITES_PER_TURN - 1, 51]  # the first turn ends at its last record
    assert await side.store.mapping_counts() == {"dc2": count}
    assert len(await side.copies()) == count


async def test_a_copy_whose_service_vanished_gets_it_again(
    side: Side, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An adapter answering NotFoundError for a copy (its service deleted by an operator):
    the importer creates the service again and registers that copy alone."""
    await side.importer.apply("dc2", [remote_record("dc2", "r1", "a", 1)], 1, "e")
    ref = side.importer.index.ref(remote_record("dc2", "r1", "a", 1).key_hash)
    assert ref is not None
    await side.registry.delete_service(ref.service_id, force=True)
    register_many = side.adapter.register_many

    async def service_gone(instances: Sequence[Instance]) -> list[LocalRef | AdapterError]:
        answers = await register_many(instances[1:])
        return [NotFoundError("service gone"), *answers]

    monkeypatch.setattr(side.adapter, "register_many", service_gone)
    batch = [remote_record("dc2", "r2", "b", 2), remote_record("dc2", "r3", "c", 3)]
    await side.importer.apply("dc2", batch, 3, "e")
    copies = {c.properties[ORIGIN_ID_PROPERTY]: c for c in await side.copies()}
    assert sorted(copies) == ["r2", "r3"]
    assert await side.store.mapping_counts() == {"dc2": 3}  # r1's copy left to its renewal
    assert side.importer.stats.registered == 3


async def test_release_drops_the_slots_copies_in_steps_the_loop_runs_between(
    side: Side, monkeypatch: pytest.MonkeyPatch
) -> None:
    kept = remote_record("dc2", "k1", "k1", 1, name="elsewhere")
    batch = [remote_record("dc2", f"r{k}", f"h{k}", k + 2) for k in range(7)]
    assert kept.slot != batch[0].slot
    await side.importer.apply("dc2", [kept, *batch], 8, "e")
    index = side.importer.index
    monkeypatch.setattr(index, "drop_slots_in_steps", partial(index.drop_slots_in_steps, step=2))
    turns = 0

    async def count_turns() -> None:
        nonlocal turns
        while True:
            turns += 1
            await asyncio.sleep(0)

    counting = asyncio.create_task(count_turns())
    await asyncio.sleep(0)
    before = turns
    try:
        assert await side.importer.release({batch[0].slot}) == 7
    finally:
        counting.cancel()
    assert turns - before >= 3  # a step is 2 of the 8 copies held: the loop ran between
    assert side.importer.copies_by_origin() == {"dc2": 1}
    assert kept.key_hash in index


async def test_reconcile_slot_removes_only_absent_copies_of_that_slot(side: Side) -> None:
    a1, a2 = remote_record("dc2", "a1", "a1", 1), remote_record("dc2", "a2", "a2", 2)
    other = remote_record("dc2", "b1", "b1", 3, name="elsewhere")
    assert a1.slot != other.slot
    third = remote_record("dc3", "c1", "c1", 1)  # same slot, other origin
    await side.importer.apply("dc2", [a1, a2, other], 3, "e")
    await side.importer.apply("dc3", [third], 1, "e")
    await side.importer.reconcile_slot("dc2", a1.slot, [a1], 4, "e")
    left = {
        (c.properties[ORIGIN_DC_PROPERTY], c.properties[ORIGIN_ID_PROPERTY])
        for c in await side.copies()
    }
    assert left == {("dc2", "a1"), ("dc2", "b1"), ("dc3", "c1")}


async def test_a_copy_the_registry_lost_is_registered_again_from_its_origin(side: Side) -> None:
    record = remote_record("dc2", "r1", "a", 1)
    await side.importer.apply("dc2", [record], 1, "e")
    (copy,) = await side.copies()
    ref = (await side.adapter.list_instances()).ref(copy.instance_id)
    await side.adapter.unregister(ref)  # behind the importer's back
    assert await side.copies() == []
    assert await side.importer.renew_all() == 1
    # Not held in memory any more, so the slot's digest differs from the origin's and a
    # repair pulls it; the store keeps the mapping until then.
    assert side.importer.stats.lost == 1
    assert side.importer.needs_repair == {"dc2"}
    assert side.importer.copies_by_origin() == {}
    assert side.importer.digest_table("dc2")[record.slot] == 0
    assert await side.store.count_mappings("dc2") == 1
    # The repair: the origin's full view of that slot.
    await side.importer.reconcile_slot("dc2", record.slot, [record], 1, "e")
    (back,) = await side.copies()
    assert back.instance_id == copy.instance_id and back.host_name == "a"
    assert side.importer.stats.reregistered == 1
    assert side.importer.copies_by_origin() == {"dc2": 1}
    assert await side.importer.renew_all() == 1
    assert side.importer.stats.lost == 1 and side.importer.stats.reregistered == 1


async def test_a_lost_copy_its_origin_deleted_meanwhile_leaves_the_store(side: Side) -> None:
    gone, kept = remote_record("dc2", "r1", "a", 1), remote_record("dc2", "r2", "b", 2)
    await side.importer.apply("dc2", [gone, kept], 2, "e")
    lost = next(c for c in await side.copies() if c.properties[ORIGIN_ID_PROPERTY] == "r1")
    await side.adapter.unregister((await side.adapter.list_instances()).ref(lost.instance_id))
    assert await side.importer.renew_all() == 2
    assert side.importer.copies_by_origin() == {"dc2": 1}
    # The origin's view of the slot no longer has r1: its mapping goes, r2 stays.
    await side.importer.reconcile_slot("dc2", gone.slot, [kept], 3, "e")
    assert [e.origin_instance_id for e in await side.store.list_mappings("dc2")] == ["r2"]
    assert {c.properties[ORIGIN_ID_PROPERTY] for c in await side.copies()} == {"r2"}
    assert side.importer.stats.reregistered == 0


async def test_renew_after_restart_marks_lost_copies_for_repair(side: Side) -> None:
    await side.importer.apply("dc2", [remote_record("dc2", "r1", "a", 1)], 1, "e")
    (copy,) = await side.copies()
    await side.adapter.unregister((await side.adapter.list_instances()).ref(copy.instance_id))
    restarted = Importer("dc1", side.adapter, side.store)
    await restarted.start(3600)
    try:
        await restarted.renew_all()
        assert "dc2" in restarted.needs_repair
        assert restarted.copies_by_origin() == {}
    finally:
        await restarted.close()


async def test_copies_written_before_a_crash_but_never_recorded_are_removed_at_start(
    side: Side, monkeypatch: pytest.MonkeyPatch
) -> None:
    """kill -9 between the registry write and the store commit leaves copies no mapping
    records. The replay merges a register and a delete of one of them into the delete,
    which finds nothing held: only the check at start removes that copy before its TTL."""
    kept = remote_record("dc2", "kept", "k", 1)
    await side.importer.apply("dc2", [kept], 1, "e")
    born = [remote_record("dc2", "gone", "g", 2), remote_record("dc2", "live", "l", 3)]

    async def killed(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("killed before the commit")

    monkeypatch.setattr(side.store, "apply_batch", killed)
    monkeypatch.setattr(side.store, "apply_batches", killed, raising=False)
    with pytest.raises(RuntimeError):
        await side.importer.apply("dc2", born, 3, "e")
    monkeypatch.undo()
    await side.importer.close()
    assert {c.properties[ORIGIN_ID_PROPERTY] for c in await side.copies()} == {
        "kept", "gone", "live"
    }  # fmt: skip
    restarted = Importer("dc1", side.adapter, side.store)
    await restarted.start(3600)
    try:
        assert await held(side) == {("dc2", "kept")}
        assert restarted.stats.unregistered == 2  # at start, before any replay
        # The replay from the cursor (1): "gone" was deleted meanwhile, "live" is back.
        gone = Record("dc2", born[0].service, "gone", 4, None)
        await restarted.apply("dc2", [born[1], gone], 4, "e")
        assert await held(side) == {("dc2", "kept"), ("dc2", "live")}
        want = core_digest.SlotDigestTable()
        for record in (kept, born[1]):
            want.add(record.slot, record.digest)
        assert restarted.digest_table("dc2") == want
    finally:
        await restarted.close()


def tagged_record(origin: str, iid: str, revision: int, **properties: str) -> Record:
    service = ServiceKey("shop", "pay", "1.0.0")
    instance = Instance(service, iid, iid, (f"rest://{iid}:1",), properties=properties)
    return Record(origin, service, iid, revision, instance)


def filtered_importer(side: Side, filters: Filters, ownership: Any = None) -> Importer:
    """A restarted importer of ``side`` with these filters (as the engine builds it)."""
    return Importer(
        "dc1",
        side.adapter,
        side.store,
        imports=filters.imports,
        imports_service=filters.imports_service,
        ownership=ownership,
    )


async def held(side: Side) -> set[tuple[str, str]]:
    """(origin dc, origin id) of every copy in the registry; the store must agree."""
    copies = {
        (c.properties[ORIGIN_DC_PROPERTY], c.properties[ORIGIN_ID_PROPERTY])
        for c in await side.copies()
    }
    mapped = set()
    for origin_dc in await side.store.mapping_counts():
        mapped |= {e.key for e in await side.store.list_mappings(origin_dc)}
    assert mapped == copies
    return copies


@pytest.mark.parametrize(
    ("toml", "kept"),
    [
        ({"import_": {"exclude": [{"dc": "dc2", "name": "pay"}]}}, {("dc2", "o1"), ("dc3", "p1")}),
        ({"direction": "send"}, set()),  # sending only: every copy goes
        ({"import_": {"exclude": [{"dc": "dc9"}]}}, {("dc2", "o1"), ("dc2", "p1"), ("dc2", "p2"),
                                                      ("dc3", "p1")}),
    ],
)  # fmt: skip
async def test_restart_with_a_new_import_rule_removes_held_copies_at_once(
    side: Side, toml: dict[str, Any], kept: set[tuple[str, str]]
) -> None:
    pays = [remote_record("dc2", "p1", "a", 1), remote_record("dc2", "p2", "b", 2)]
    await side.importer.apply("dc2", [*pays, remote_record("dc2", "o1", "c", 3, name="o")], 3, "e")
    await side.importer.apply("dc3", [remote_record("dc3", "p1", "d", 1)], 1, "e")
    await side.importer.close()
    before = await held(side)
    restarted = filtered_importer(side, filters_from_config(dc="dc1", **toml))
    await restarted.start(3600)
    try:
        # Removed during start, before any origin is asked: registry and mapping table.
        assert await held(side) == kept
        assert restarted.stats.filtered == len(before - kept)
        assert restarted.stats.unregistered == len(before - kept)
        assert sum(restarted.copies_by_origin().values()) == len(kept)
        assert restarted.needs_repair == set()  # nothing depends on metadata
        for origin in ("dc2", "dc3"):  # what is held is what the digests say
            table = core_digest.SlotDigestTable()
            for entry in await side.store.list_mappings(origin):
                table.add(entry.slot, entry.digest)
            assert restarted.digest_table(origin).to_bytes() == table.to_bytes()
    finally:
        await restarted.close()


async def test_restart_with_a_metadata_import_rule_pulls_copies_again(side: Side) -> None:
    cached, plain = tagged_record("dc2", "c1", 1, tier="cache"), tagged_record("dc2", "p1", 2)
    other = remote_record("dc2", "o1", "o", 3, name="orders")
    origin = [cached, plain, other]
    await side.importer.apply("dc2", origin, 3, "e")
    await side.importer.close()
    filters = filters_from_config(
        import_={"exclude": [{"name": "pay", "metadata": "tier=cache"}]}, dc="dc1"
    )
    restarted = filtered_importer(side, filters)
    await restarted.start(3600)
    try:
        # The mapping table has no metadata: nothing is removed yet, but the copies of
        # "pay" no longer match their origin's digests, so the next repair pulls them.
        assert await held(side) == {("dc2", "c1"), ("dc2", "p1"), ("dc2", "o1")}
        assert restarted.needs_repair == {"dc2"}
        remote = core_digest.SlotDigestTable()
        for record in origin:
            remote.add(record.slot, record.digest)
        local = restarted.digest_table("dc2")
        assert list(core_digest.diff_slots(local, remote)) == [cached.slot]
        assert restarted.copies_by_origin() == {"dc2": 3}  # held (and renewed) meanwhile
        assert copy_instance_id("dc2", "c1") in restarted.copy_ids()
        # The repair: the origin's full view of the differing slot, through the filter.
        await restarted.reconcile_slot("dc2", cached.slot, [cached, plain], 3, "e")
        assert await held(side) == {("dc2", "p1"), ("dc2", "o1")}
        assert restarted.stats.filtered == 1
        # The slot now compares equal to the origin's (the refused record's digest counts):
        # it is not pulled again at every repair.
        assert restarted.digest_table("dc2").to_bytes() == remote.to_bytes()
        assert copy_instance_id("dc2", "p1") in restarted.copy_ids()  # still a copy, renewed
    finally:
        await restarted.close()


async def test_without_a_service_level_filter_every_copy_is_pulled_again(side: Side) -> None:
    await side.importer.apply("dc2", [remote_record("dc2", "p1", "a", 1)], 1, "e")
    await side.importer.close()
    restarted = Importer("dc1", side.adapter, side.store, imports=lambda dc, i: False)
    await restarted.start(3600)
    try:
        assert await held(side) == {("dc2", "p1")}  # removed by the repair, not at start
        assert restarted.needs_repair == {"dc2"}
        assert restarted.digest_table("dc2").to_bytes() == core_digest.SlotDigestTable().to_bytes()
    finally:
        await restarted.close()


class _OwnsEverything:
    """Slot ownership as the importer asks it: every slot owned, writes fenced."""

    def __init__(self) -> None:
        self.fences = 0
        self.checks = 0

    def owns(self, slot: int) -> bool:
        return True

    async def check_fence(self) -> None:
        self.checks += 1

    def pending(self, slot: int) -> bool:
        return False

    def fence(self) -> Fence:
        self.fences += 1
        return Fence("n1", 1)

    def nudge(self) -> None:
        pass


async def test_adopted_copies_are_swept_with_the_fence(side: Side) -> None:
    records = [remote_record("dc2", "p1", "a", 1), remote_record("dc2", "o1", "b", 2, name="o")]
    await side.importer.apply("dc2", records, 2, "e")
    await side.importer.close()
    ownership = _OwnsEverything()
    filters = filters_from_config(import_={"include": [{"name": "o"}]}, dc="dc1")
    adopting = filtered_importer(side, filters, ownership)
    await adopting.start(3600)
    try:
        assert adopting.copies_by_origin() == {}  # with ownership, nothing loaded at start
        assert await adopting.adopt({r.slot for r in records}) == 2
        assert await held(side) == {("dc2", "o1")}
        assert adopting.stats.filtered == 1 and ownership.fences >= 1
        assert ownership.checks >= 1  # checked before the registry was touched
        assert adopting.copies_by_origin() == {"dc2": 1}
    finally:
        await adopting.close()


async def test_a_failed_sweep_leaves_the_copies_to_the_next_repair(
    side: Side, monkeypatch: pytest.MonkeyPatch
) -> None:
    record = remote_record("dc2", "p1", "a", 1)
    await side.importer.apply("dc2", [record], 1, "e")
    await side.importer.close()

    async def unreachable(ref: LocalRef) -> None:
        raise AdapterError("registry unreachable")

    monkeypatch.setattr(side.adapter, "unregister", unreachable)
    restarted = filtered_importer(side, Filters(direction="send"))
    await restarted.start(3600)
    try:
        assert restarted.stats.filtered == 0
        assert restarted.stats.errors == {"AdapterError": 1}
        assert restarted.needs_repair == {"dc2"}  # the repair pulls it: a delete then
        assert restarted.digest_table("dc2")[record.slot] == 0
        monkeypatch.undo()
        await restarted.reconcile_slot("dc2", record.slot, [record], 1, "e")
        assert await held(side) == set()
    finally:
        await restarted.close()


async def test_records_the_import_filter_refuses_count_in_the_slot_digests(side: Side) -> None:
    """lab FINDINGS 3: the slots of refused records must compare equal to the origin's,
    or the link repairs them at every heartbeat, forever."""
    filters = filters_from_config(import_={"exclude": [{"dc": "dc2", "name": "pay"}]}, dc="dc1")
    importer = filtered_importer(side, filters)
    await importer.start(3600)
    at_origin: dict[str, Record] = {}

    def origin_table() -> core_digest.SlotDigestTable:
        table = core_digest.SlotDigestTable()
        for record in at_origin.values():
            table.add(record.slot, record.digest)
        return table

    async def changed(*records: Record) -> None:
        for record in records:
            if record.instance is None:
                at_origin.pop(record.instance_id)
            else:
                at_origin[record.instance_id] = record
        await importer.apply("dc2", records, max(r.revision for r in records), "e")
        assert importer.digest_table("dc2") == origin_table()

    try:
        kept = remote_record("dc2", "o1", "b", 1, name="orders")
        await changed(remote_record("dc2", "p1", "a", 2), kept)
        assert await held(side) == {("dc2", "o1")}
        await changed(remote_record("dc2", "p1", "a-moved", 3))  # a refused record changes
        await changed(remote_record("dc2", "p2", "c", 4))
        await changed(Record("dc2", kept.service, "o1", 5, None))
        await changed(Record("dc2", ServiceKey("shop", "pay", "1.0.0"), "p1", 6, None))
        # A full pull of the slot after the origin dropped p2 unseen (a trimmed change log).
        slot = at_origin.pop("p2").slot
        assert importer.digest_table("dc2") != origin_table()
        await importer.reconcile_slot("dc2", slot, [], 7, "e")
        assert importer.digest_table("dc2") == origin_table()
        assert await held(side) == set() and importer.stats.filtered == 3
        # Slots handed to another syncer take their refused digests with them.
        await changed(remote_record("dc2", "p3", "d", 8))
        await importer.release({slot})
        assert importer.digest_table("dc2") == core_digest.SlotDigestTable()
    finally:
        await importer.close()


# -- peers over real gRPC ------------------------------------------------------------


async def test_peer_link_repairs_and_streams_between_two_engines(tmp_path: Path) -> None:
    origin = await make_side(tmp_path, "dc2")
    local = await make_side(tmp_path, "dc1")
    server = SyncServer(origin.exporter, "127.0.0.1", 0, heartbeat_interval=0.3)
    await server.start()
    target = f"127.0.0.1:{server.port}"
    syncers = [RemoteSyncer("node-dc2", "dc2", target)]
    link = PeerLink(
        "dc2",
        lambda: syncers,
        local.importer,
        local.store,
        lambda s: SyncClient(s.rpc_target, dc="dc2"),
        anti_entropy_interval=ANTI_ENTROPY_INTERVAL,
    )
    try:
        sid = await origin.service("orders")
        ids = [await origin.register(sid, f"h{k}") for k in range(3)]
        # A stale copy in the local registry that the origin no longer has.
        await local.importer.apply(
            "dc2", [remote_record("dc2", "gone", "g", 1, name="orders")], 1, "old"
        )
        await until(lambda: _at(origin.exporter, 3))
        link.start()

        async def copies_are(want: set[str]) -> bool:
            got = {c.properties[ORIGIN_ID_PROPERTY] for c in await local.copies()}
            return got == want

        await until(lambda: copies_are(set(ids)))

        async def repaired() -> bool:  # the copies show before the repair has finished
            return link.status.repairs >= 1

        await until(repaired)
        await origin.registry.unregister_instance(sid, ids[0])
        new = await origin.register(sid, "h-new")
        await until(lambda: copies_are({*ids[1:], new}))

        async def digests_match() -> bool:
            # The registry is written before the mapping and the index (the digests): wait
            # for the batch to be committed, not only for the copies to show.
            local_table = local.importer.digest_table("dc2").to_bytes()
            return local_table == origin.exporter.digest_table()[1]

        await until(digests_match)
        # A copy the registry lost is registered again from the origin.
        (lost,) = [c for c in await local.copies() if c.properties[ORIGIN_ID_PROPERTY] == new]
        await local.adapter.unregister((await local.adapter.list_instances()).ref(lost.instance_id))
        await local.importer.renew_all()  # finds it lost: its slot is pulled again
        assert local.importer.needs_repair == {"dc2"}
        await until(lambda: copies_are({*ids[1:], new}))
        await until(digests_match)  # the re-registered copy is recorded again
        assert local.importer.stats.reregistered == 1

        async def streaming() -> bool:
            return link.status.state == "streaming"

        await until(streaming)
    finally:
        await link.close()
        await server.stop(0)
        await origin.close()
        await local.close()


def test_copy_ids_are_deterministic() -> None:
    assert copy_instance_id("dc2", "x") == copy_instance_id("dc2", "x")
    assert copy_instance_id("dc2", "x") != copy_instance_id("dc3", "x")
    assert LocalRef("s", "i") == LocalRef("s", "i")


def test_a_copy_is_the_origin_instance_under_its_copy_id_with_the_origin_marked() -> None:
    record = remote_record("dc2", "r7", "h7", 3)
    assert record.instance is not None
    copy = copy_of(record, record.instance, record.key_hash)
    assert copy.instance_id == copy_instance_id("dc2", "r7")
    assert copy.properties == {
        **record.instance.properties,
        ORIGIN_DC_PROPERTY: "dc2",
        ORIGIN_ID_PROPERTY: "r7",
    }
    assert copy._replace(instance_id="r7", properties=record.instance.properties) == (
        record.instance
    )


async def test_change_log_is_bounded_and_old_cursors_reset(tmp_path: Path) -> None:
    registry = EmbeddedRegistry()
    adapter = EmbeddedAdapter(registry)
    store = SqliteStore(tmp_path / "bounded.db", durable=False)
    await adapter.start()
    await store.open()
    exporter = Exporter("dc9", "n9", adapter, store, change_log_size=10)
    await exporter.start()
    await asyncio.wait_for(exporter.ready.wait(), 5)
    try:
        sid = await registry.create_service({"appId": "a", "serviceName": "s", "version": "1"})
        for k in range(30):
            await registry.register_instance(
                sid, {"hostName": f"h{k}", "endpoints": [f"rest:x:{k}"]}
            )

            async def exported(count: int = k + 1) -> bool:
                return exporter.exported_count() == count

            await until(exported)

        async def trimmed() -> bool:  # a trim runs after its commit, outside it
            return (await store.log_info()).entries <= 10 + 1

        await until(trimmed)
        assert (await store.log_info()).last_revision == 30
        assert exporter.stats.log_entries_trimmed >= 19
        assert await exporter.changes_since(0, 100) == ([], True)  # fell out: repair by digests
        recent, reset = await exporter.changes_since(25, 100)
        assert not reset and [r.revision for r in recent] == [26, 27, 28, 29, 30]
    finally:
        await exporter.close()
        await store.close()
        await adapter.close()


async def test_watch_reads_recent_changes_from_memory_and_older_from_the_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(exporter_module, "TAIL_SIZE", 4)
    side = await make_side(tmp_path, "dc1")
    try:
        sid = await side.service("orders")
        for k in range(12):
            await side.register(sid, f"h{k}")
        await until(lambda: _at(side.exporter, 12))
        stored = await side.store.read_changes(0, 100)
        reads = 0
        read_changes = side.store.read_changes

        async def counted(since: int, limit: int = 1000) -> list[Record]:
            nonlocal reads
            reads += 1
            return await read_changes(since, limit)

        monkeypatch.setattr(side.store, "read_changes", counted)
        # Inside the tail (at most 4 + 4 // 4 kept): from memory, the same records.
        recent, reset = await side.exporter.changes_since(9, 100)
        assert not reset and recent == stored[9:] and reads == 0
        assert await side.exporter.changes_since(10, 1) == ([stored[10]], False)
        assert await side.exporter.changes_since(12, 10) == ([], False)
        assert reads == 0
        # Older than the tail: from the store, the same answer as before.
        older, reset = await side.exporter.changes_since(1, 100)
        assert not reset and older == stored[1:] and reads == 1
        # The store trimmed under the tail: a cursor it no longer holds resets.
        await side.store.trim_changes(keep_last=2)
        assert await side.exporter.changes_since(9, 100) == ([], True)
        assert await side.exporter.changes_since(10, 100) == (stored[10:], False)
    finally:
        await side.close()


class _Batches:
    """A watch stream of many small batches, all sent at once."""

    def __init__(self, batches: list[Any]) -> None:
        self.batches = batches

    async def health(self) -> Any:
        return type("H", (), {"epoch": "e", "revision": self.batches[-1].revision})()

    async def watch(self, since: int, epoch: str) -> AsyncIterator[Any]:
        for batch in self.batches:
            yield batch
        await asyncio.sleep(3600)

    async def get_digests(self) -> Any:
        raise AssertionError("the cursor is current: no repair expected")

    def pull_slots(self, slots: Sequence[int]) -> Any:
        raise AssertionError("the cursor is current: no repair expected")

    async def close(self) -> None:
        pass


async def test_peer_link_applies_queued_batches_together(side: Side) -> None:
    from pysyncer.rpc.codec import PeerBatch

    await side.store.set_cursor("dc2", 0, "e")
    batches = [
        PeerBatch(
            "dc2",
            "e",
            k + 1,
            (remote_record("dc2", f"r{k}", f"h{k}", k + 1),),
            committed_at=time.time(),
        )
        for k in range(40)
    ]
    batches.append(PeerBatch("dc2", "e", 41, (tombstone("dc2", "r0", 41),)))
    batches.append(PeerBatch("dc2", "e", 42, heartbeat=True))
    calls: list[int] = []
    apply = side.importer.apply

    async def slow_apply(dc: str, records: Any, cursor: int, epoch: str | None = None) -> None:
        calls.append(len(records))
        await asyncio.sleep(0.05)  # batches queue up meanwhile
        await apply(dc, records, cursor, epoch)

    side.importer.apply = slow_apply  # type: ignore[method-assign,assignment]
    syncers = [RemoteSyncer("node-dc2", "dc2", "x")]
    link = PeerLink(
        "dc2",
        lambda: syncers,
        side.importer,
        side.store,
        lambda t: _Batches(batches),
        anti_entropy_interval=ANTI_ENTROPY_INTERVAL,
    )
    link.start()
    try:

        async def caught_up() -> bool:
            return link.status.applied_revision == 42

        await until(caught_up)
        assert sum(calls) == 41 and len(calls) < 10  # merged, in order
        assert side.importer.copies_by_origin() == {"dc2": 39}
        cursor = await side.store.get_cursor("dc2")
        assert cursor is not None and cursor.revision == 42  # the heartbeat queued: merged too
        assert link.status.lag_count == 40  # one propagation lag per batch with a commit time
    finally:
        await link.close()


async def test_a_restarted_importer_renews_at_the_copies_own_pace(side: Side) -> None:
    """The mapping table keeps no TTL: the copies' leases are read back from the registry,
    so short-lived copies are not renewed at the 120 s default pace after a restart."""
    await side.importer.apply("dc2", [remote_record("dc2", "p1", "a", 1)], 1, "e")
    await side.importer.close()
    again = Importer("dc1", side.adapter, side.store)
    await again.start(3600)
    try:
        assert again.copies_by_origin() == {"dc2": 1}
        assert again.renewals.period() == 2.0  # TTL 2 s x (3 + 1) = 8 s, renewed every 2 s
    finally:
        await again.close()


class _Refusing:
    """A client of a peer that refuses every call (``refusal``), counting the attempts."""

    def __init__(self, attempts: list[str], refusal: Exception) -> None:
        attempts.append("dialled")
        self.refusal = refusal

    async def health(self) -> None:
        raise self.refusal

    def watch(self, since: int, epoch: str) -> None:
        raise self.refusal

    async def get_digests(self) -> None:
        raise self.refusal

    def pull_slots(self, slots: Sequence[int]) -> None:
        raise self.refusal

    async def close(self) -> None:
        pass


@pytest.mark.parametrize("refused", [True, False])
async def test_a_peer_at_its_limit_is_asked_again_only_after_the_refusal_backoff(
    side: Side, monkeypatch: pytest.MonkeyPatch, refused: bool
) -> None:
    """A CallRefusedError (RESOURCE_EXHAUSTED: the peer serves all the streams it allows)
    is not retried at the next sign of life from the peer, as a broken link is."""
    monkeypatch.setattr(peers_module, "REFUSED_BACKOFF", 600.0)
    refusal = (
        CallRefusedError("127.0.0.1:1: RESOURCE_EXHAUSTED: Watch refused", "RESOURCE_EXHAUSTED")
        if refused
        else UnavailableError("127.0.0.1:1: UNAVAILABLE: gone", "UNAVAILABLE")
    )
    attempts: list[str] = []
    link = PeerLink(
        "dc2",
        lambda: [RemoteSyncer("node-dc2", "dc2", "x")],
        side.importer,
        side.store,
        lambda _syncer: _Refusing(attempts, refusal),
        anti_entropy_interval=ANTI_ENTROPY_INTERVAL,
    )
    link.start()
    try:

        async def backing_off() -> bool:
            return link.status.state == "backoff"

        await until(backing_off)
        for _ in range(20):  # gossip keeps announcing the peer's revisions
            link.wake()
            await asyncio.sleep(0.02)
        if refused:
            assert attempts == ["dialled"]
            assert link.status.errors == {"CallRefusedError": 1}
        else:
            assert len(attempts) > 1  # a broken link redials at a sign of life
    finally:
        await link.close()
