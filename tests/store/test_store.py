"""The Store protocol: round trips, ordering, trimming, paging, atomicity, errors.

Protocol tests take the ``store`` fixture, which yields an open backend: ``embedded``
(SQLite) and ``etcd`` (a real etcd server, a fresh key prefix per test). Tests of SQLite
specifics (files, locks, schema versions, disk full) take ``tmp_path`` and build a
:class:`SqliteStore`; etcd specifics are in ``tests/test_store_etcd.py``.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pysyncer.errors import ConfigError, PysyncerError
from pysyncer.model import Instance, Record, ServiceKey
from pysyncer.store import (
    SLOT_COUNT,
    CursorBatch,
    EtcdStore,
    MappingEntry,
    PeerCursor,
    SqliteStore,
    Store,
    StoreClosedError,
    StoreCorruptError,
    StoreError,
    StoreFullError,
    StoreLockedError,
    apply_batches,
    create_store,
    iter_mappings,
)
from pysyncer.store.sqlite_db import SCHEMA_VERSION, WAL_CHECKPOINT_PAGES
from tests.support.etcd import EtcdServer, etcd_server, unique_prefix

__all__ = ["etcd_server"]  # the fixture, used through request.getfixturevalue

DC = "dc-a"


@pytest.fixture(params=["embedded", "etcd"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    backend: Store
    if request.param == "embedded":
        backend = SqliteStore(tmp_path / "store.db", durable=False)
    else:
        server: EtcdServer = request.getfixturevalue("etcd_server")
        backend = EtcdStore(server.endpoint, prefix=unique_prefix(), member="node-1")
    async with backend:
        yield backend


def service(n: int = 0) -> ServiceKey:
    return ServiceKey(f"app-{n % 3}", f"svc-{n}", "1.0.0")


def instance(n: int, svc: ServiceKey | None = None, host: str = "h") -> Instance:
    svc = svc or service(n % 7)
    return Instance(
        service=svc,
        instance_id=f"i-{n}",
        host_name=f"{host}-{n}",
        endpoints=(f"rest://10.0.0.{n % 250}:8080",),
        properties={"zone": f"z{n % 2}"},
    )


def upsert(inst: Instance, revision: int = 0, origin_dc: str = DC) -> Record:
    return Record(origin_dc, inst.service, inst.instance_id, revision, inst)


def tombstone(inst: Instance, origin_dc: str = DC) -> Record:
    return Record(origin_dc, inst.service, inst.instance_id, 0, None)


def entry(n: int, origin_dc: str = "dc-remote", digest: int = 0, revision: int = 1) -> MappingEntry:
    svc = service(n % 11)
    return MappingEntry(
        origin_dc=origin_dc,
        origin_instance_id=f"o-{n:06d}",
        service_text=svc.text(),
        slot=svc.slot,
        digest=digest,
        origin_revision=revision,
        local_service_id=f"ls-{n}",
        local_instance_id=f"li-{n}",
        registered_at=1_700_000_000.123456 + n,
        renewed_at=1_700_000_100.5 + n,
    )


# -- mapping table ----------------------------------------------------------------------


@pytest.mark.parametrize("digest", [0, 1, 2**63 - 1, 2**63, 2**63 + 1, 2**64 - 1])
async def test_mapping_round_trips_uint64_digests(store: Store, digest: int) -> None:
    original = entry(1, digest=digest)
    await store.put_mappings([original])
    assert await store.get_mapping(original.origin_dc, original.origin_instance_id) == original


@pytest.mark.parametrize("digest", [-1, 2**64])
async def test_out_of_range_digest_is_refused_before_writing(store: Store, digest: int) -> None:
    with pytest.raises(ValueError, match="unsigned 64-bit"):
        await store.apply_batch("dc-remote", [entry(1), entry(2, digest=digest)], [], 5)
    assert await store.count_mappings() == 0
    assert await store.get_cursor("dc-remote") is None


async def test_bad_slot_is_refused(store: Store) -> None:
    bad = MappingEntry("d", "o", "s", 16384, 0, 1, "ls", "li", 0.0, 0.0)
    with pytest.raises(ValueError, match="slot"):
        await store.put_mappings([bad])
    with pytest.raises(ValueError, match="slot"):
        await store.mappings_in_slots([-1])


async def test_get_missing_mapping(store: Store) -> None:
    assert await store.get_mapping("nowhere", "nothing") is None


async def test_apply_batch_writes_mapping_and_cursor(store: Store) -> None:
    await store.apply_batch("dc-remote", [entry(i) for i in range(10)], [], 10, epoch="e1")
    assert await store.get_cursor("dc-remote") == PeerCursor("dc-remote", 10, "e1")
    assert await store.count_mappings("dc-remote") == 10
    await store.apply_batch("dc-remote", [entry(3, revision=11)], [("dc-remote", "o-000004")], 11)
    cursor = await store.get_cursor("dc-remote")
    assert cursor == PeerCursor("dc-remote", 11, "e1")  # epoch kept when not given
    assert await store.count_mappings("dc-remote") == 9
    assert await store.get_mapping("dc-remote", "o-000004") is None
    got = await store.get_mapping("dc-remote", "o-000003")
    assert got is not None and got.origin_revision == 11


async def test_apply_batch_is_idempotent(store: Store) -> None:
    batch = [entry(i) for i in range(5)]
    for _ in range(3):
        await store.apply_batch("dc-remote", batch, [("dc-remote", "o-000009")], 7, epoch="e")
    assert await store.count_mappings() == 5
    assert await store.get_cursor("dc-remote") == PeerCursor("dc-remote", 7, "e")


async def test_apply_batch_last_upsert_wins_then_deletes(store: Store) -> None:
    await store.apply_batch(
        "p", [entry(1, revision=1), entry(1, revision=2)], [("dc-remote", "o-000001")], 2
    )
    assert await store.get_mapping("dc-remote", "o-000001") is None
    await store.apply_batch("p", [entry(1, revision=1), entry(1, revision=2)], [], 3)
    got = await store.get_mapping("dc-remote", "o-000001")
    assert got is not None and got.origin_revision == 2


async def test_apply_batches_of_several_data_centers(store: Store) -> None:
    await apply_batches(
        store,
        [
            CursorBatch("dc-x", [entry(1, "dc-x"), entry(2, "dc-x")], [], 10, "ex"),
            CursorBatch("dc-y", [entry(3, "dc-y")], [], 20, "ey"),
            CursorBatch("dc-x", [], [("dc-x", "o-000001")], 11),  # after its first batch
        ],
    )
    assert [e.key for e in await store.list_mappings("dc-x")] == [("dc-x", "o-000002")]
    assert [e.key for e in await store.list_mappings("dc-y")] == [("dc-y", "o-000003")]
    assert await store.list_cursors() == [
        PeerCursor("dc-x", 11, "ex"),
        PeerCursor("dc-y", 20, "ey"),
    ]


async def test_sqlite_apply_batches_is_one_transaction(tmp_path: Path) -> None:
    statements: list[str] = []
    async with SqliteStore(tmp_path / "store.db", durable=False) as db:
        await db.run_in_worker(lambda c: c.set_trace_callback(statements.append))
        await apply_batches(
            db, [CursorBatch(f"dc-{n}", [entry(n, f"dc-{n}")], [], n) for n in range(5)]
        )
        assert statements.count("COMMIT") == 1
        with pytest.raises(ValueError, match="slot"):  # the last is invalid: none is written
            await apply_batches(
                db,
                [
                    CursorBatch("dc-a", [entry(7, "dc-a")], [], 7),
                    CursorBatch("dc-b", [entry(8, "dc-b")._replace(slot=SLOT_COUNT)], [], 8),
                ],
            )
        await db.run_in_worker(lambda c: c.set_trace_callback(None))
        assert await db.count_mappings() == 5 and await db.get_cursor("dc-a") is None


async def test_cursors(store: Store) -> None:
    assert await store.list_cursors() == []
    await store.set_cursor("dc-b", 5, "eb")
    await store.set_cursor("dc-a", 9, "ea")
    await store.apply_batch("dc-c", [], [], 0)
    assert await store.list_cursors() == [
        PeerCursor("dc-a", 9, "ea"),
        PeerCursor("dc-b", 5, "eb"),
        PeerCursor("dc-c", 0, ""),
    ]
    await store.set_cursor("dc-a", 0, "ea-2")  # an origin reset: new epoch, from scratch
    assert await store.get_cursor("dc-a") == PeerCursor("dc-a", 0, "ea-2")
    await store.delete_cursor("dc-b")
    assert await store.get_cursor("dc-b") is None
    with pytest.raises(ValueError):
        await store.apply_batch("dc-a", [], [], -1)


async def test_trusted_groups(store: Store) -> None:
    assert await store.trusted_groups() == {}
    await store.set_trusted_group("dc-b", "node:b1")
    await store.set_trusted_group("dc-c", "etcd:0123456789abcdef")
    await store.set_trusted_group("dc-b", "node:b2")  # a data center that moved
    await store.set_trusted_group("dc-c", None)
    await store.set_trusted_group("dc-d", None)  # nothing to forget: no error
    assert await store.trusted_groups() == {"dc-b": "node:b2"}


@pytest.mark.parametrize("backend", ["embedded", "etcd"])
async def test_trusted_groups_survive_a_restart(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    def opened(member: str) -> Store:
        if backend == "embedded":
            return SqliteStore(tmp_path / "store.db", durable=False)
        server: EtcdServer = request.getfixturevalue("etcd_server")
        return EtcdStore(server.endpoint, prefix=prefix, member=member)

    prefix = unique_prefix()
    async with opened("node-1") as first:
        await first.set_trusted_group("dc-b", "node:b1")
    async with opened("node-2") as second:  # (etcd: shared by the data center's members)
        assert await second.trusted_groups() == {"dc-b": "node:b1"}


async def test_list_count_delete_by_origin(store: Store) -> None:
    await store.put_mappings([entry(i, "dc-x") for i in range(30)])
    await store.put_mappings([entry(i, "dc-y") for i in range(12)])
    assert await store.count_mappings() == 42
    assert await store.count_mappings("dc-x") == 30
    assert await store.count_mappings("dc-z") == 0
    assert await store.mapping_counts() == {"dc-x": 30, "dc-y": 12}
    removed = await store.delete_mappings([("dc-x", f"o-{i:06d}") for i in range(10)])
    assert removed == 10
    assert await store.delete_mappings([("dc-x", "o-000000")]) == 0
    assert await store.count_mappings("dc-x") == 20


async def test_paging_visits_every_entry_once_in_order(store: Store) -> None:
    await store.put_mappings([entry(i, "dc-x") for i in range(1050)])
    await store.put_mappings([entry(i, "dc-y") for i in range(5)])
    first = await store.list_mappings("dc-x", limit=100)
    assert [e.origin_instance_id for e in first] == [f"o-{i:06d}" for i in range(100)]
    second = await store.list_mappings("dc-x", after=first[-1].origin_instance_id, limit=100)
    assert second[0].origin_instance_id == "o-000100"
    seen = [e.origin_instance_id async for e in iter_mappings(store, "dc-x", page_size=100)]
    assert seen == [f"o-{i:06d}" for i in range(1050)]
    exact = [e async for e in iter_mappings(store, "dc-y", page_size=5)]
    assert len(exact) == 5
    with pytest.raises(ValueError):
        await store.list_mappings("dc-x", limit=0)


async def test_mappings_in_slots(store: Store) -> None:
    entries = [entry(i, "dc-x") for i in range(40)] + [entry(i, "dc-y") for i in range(40)]
    await store.put_mappings(entries)
    slots = {entries[0].slot, entries[5].slot}
    got = await store.mappings_in_slots(slots)
    assert got == sorted((e for e in entries if e.slot in slots), key=lambda e: e.key)
    only_x = await store.mappings_in_slots(slots, origin_dc="dc-x")
    assert only_x == [e for e in got if e.origin_dc == "dc-x"]
    assert await store.mappings_in_slots([]) == []
    every = await store.mappings_in_slots(range(16384))  # > one IN-list chunk
    assert len(every) == 80


# -- change log and exported state -------------------------------------------------------


async def test_append_assigns_consecutive_revisions(store: Store) -> None:
    assert await store.current_revision() == 0
    first = await store.append_changes([upsert(instance(i), revision=99) for i in range(3)])
    assert [r.revision for r in first] == [1, 2, 3]
    second = await store.append_changes([upsert(instance(3)), tombstone(instance(0))])
    assert [r.revision for r in second] == [4, 5]
    assert await store.append_changes([]) == []
    assert await store.current_revision() == 5
    log = await store.read_changes(0)
    assert log == first + second
    assert await store.read_changes(3, limit=1) == [second[0]]
    assert await store.read_changes(5) == []


async def test_exported_state_follows_the_log(store: Store) -> None:
    a, b, c = instance(1), instance(2), instance(3)
    await store.append_changes([upsert(a), upsert(b), upsert(c)])
    a2 = Instance(a.service, a.instance_id, "moved", status="DOWN")
    await store.append_changes([upsert(a2), tombstone(b), upsert(b), tombstone(c)])
    exported = await store.exported_records()
    by_id = {r.instance_id: r for r in exported}
    assert set(by_id) == {"i-1", "i-2"}
    assert by_id["i-1"].instance == a2 and by_id["i-1"].revision == 4
    assert by_id["i-2"].instance == b and by_id["i-2"].revision == 6
    assert await store.count_exported() == 2
    assert exported == sorted(exported, key=lambda r: (r.service.text(), r.instance_id))
    in_slot = await store.exported_records([a.service.slot])
    assert all(r.slot == a.service.slot for r in in_slot) and by_id["i-1"] in in_slot
    assert await store.exported_records([]) == []


async def test_mismatched_record_is_refused(store: Store) -> None:
    inst = instance(1)
    bad = Record(DC, service(99), inst.instance_id, 0, inst)
    with pytest.raises(ValueError):
        await store.append_changes([upsert(instance(2)), bad])
    assert await store.current_revision() == 0
    assert await store.read_changes(0) == []


async def test_trim_keep_last_and_through_revision(store: Store) -> None:
    await store.append_changes([upsert(instance(i)) for i in range(20)])
    info = await store.log_info()
    assert (info.first_revision, info.last_revision, info.entries) == (1, 20, 20)
    assert await store.trim_changes(keep_last=15) == 5
    assert (await store.log_info()).first_revision == 6
    assert await store.trim_changes(through_revision=10) == 5
    assert await store.trim_changes(through_revision=10) == 0
    assert [r.revision for r in await store.read_changes(0)] == list(range(11, 21))
    assert await store.trim_changes(keep_last=0) == 10
    info = await store.log_info()
    assert (info.first_revision, info.last_revision, info.entries) == (21, 20, 0)
    assert await store.count_exported() == 20  # trimming the log keeps the state
    added = await store.append_changes([upsert(instance(99))])
    assert added[0].revision == 21  # revisions are never reused
    with pytest.raises(ValueError):
        await store.trim_changes()
    with pytest.raises(ValueError):
        await store.trim_changes(keep_last=1, through_revision=1)


async def test_sqlite_log_floor_follows_trims_and_reopen(tmp_path: Path) -> None:
    """``log_floor`` (read without the worker thread) is always ``first_revision``."""
    path = tmp_path / "floor.db"
    async with SqliteStore(path, durable=False) as db:
        assert db.log_floor == (await db.log_info()).first_revision == 1
        await db.append_changes([upsert(instance(i)) for i in range(20)])
        assert db.log_floor == 1
        await db.trim_changes(keep_last=15)
        assert db.log_floor == (await db.log_info()).first_revision == 6
        await db.trim_changes(through_revision=3)  # below the floor: no change
        assert db.log_floor == 6
        await db.trim_changes(through_revision=99)  # past the end: empty log
        assert db.log_floor == (await db.log_info()).first_revision == 21
        await db.append_changes([upsert(instance(1))])
        await db.trim_changes(through_revision=10)
        assert db.log_floor == (await db.log_info()).first_revision == 21
    async with SqliteStore(path, durable=False) as db:
        assert db.log_floor == (await db.log_info()).first_revision == 21


async def test_log_epoch_is_stable(store: Store) -> None:
    epoch = (await store.log_info()).epoch
    assert epoch
    await store.append_changes([upsert(instance(1))])
    assert (await store.log_info()).epoch == epoch


async def test_concurrent_appends_stay_gapless(store: Store) -> None:
    batches = await asyncio.gather(
        *(store.append_changes([upsert(instance(10 * b + i)) for i in range(10)]) for b in range(8))
    )
    revisions = sorted(r.revision for batch in batches for r in batch)
    assert revisions == list(range(1, 81))
    for batch in batches:
        numbers = [r.revision for r in batch]
        assert numbers == list(range(numbers[0], numbers[0] + 10))


# -- exact round trips of arbitrary records -----------------------------------------------

_text = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=12)
_services = st.builds(ServiceKey, _text, _text, _text, _text, _text)
_instances = st.builds(
    Instance,
    service=_services,
    instance_id=_text,
    host_name=_text,
    endpoints=st.lists(_text, max_size=3).map(tuple),
    status=st.sampled_from(["UP", "DOWN", "STARTING"]),
    properties=st.dictionaries(_text, _text, max_size=4),
    health_interval=st.integers(0, 2**31),
    health_times=st.integers(0, 2**31),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(_instances, st.booleans()), min_size=1, max_size=8))
def test_records_round_trip_exactly(items: list[tuple[Instance, bool]]) -> None:
    records = [
        Record(DC, inst.service, inst.instance_id, 0, None if dead else inst)
        for inst, dead in items
    ]

    async def scenario(path: Path) -> None:
        async with SqliteStore(path, durable=False) as db:
            written = await db.append_changes(records)
        async with SqliteStore(path, durable=False) as db:  # reopened from disk
            assert await db.read_changes(0) == written
            latest: dict[tuple[str, str], Record] = {}
            for record in written:
                latest[(record.service.text(), record.instance_id)] = record
            live = sorted(
                (r for r in latest.values() if r.instance is not None),
                key=lambda r: (r.service.text(), r.instance_id),
            )
            assert await db.exported_records() == live

    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(scenario(Path(tmp) / "s.db"))


# -- SQLite specifics ---------------------------------------------------------------------


async def test_data_survives_reopen(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    async with SqliteStore(path) as db:
        await db.append_changes([upsert(instance(i)) for i in range(5)])
        await db.apply_batch("dc-remote", [entry(1, digest=2**64 - 1)], [], 42, epoch="ep")
        epoch = (await db.log_info()).epoch
    async with SqliteStore(path) as db:
        assert await db.current_revision() == 5
        assert (await db.log_info()).epoch == epoch
        assert await db.get_cursor("dc-remote") == PeerCursor("dc-remote", 42, "ep")
        assert await db.get_mapping("dc-remote", "o-000001") == entry(1, digest=2**64 - 1)
        mode = await db.run_in_worker(lambda c: c.execute("PRAGMA journal_mode").fetchone()[0])
        assert mode == "wal"
        sync = await db.run_in_worker(lambda c: c.execute("PRAGMA synchronous").fetchone()[0])
        assert sync == 2  # FULL
        pages = await db.run_in_worker(
            lambda c: c.execute("PRAGMA wal_autocheckpoint").fetchone()[0]
        )
        assert pages == WAL_CHECKPOINT_PAGES


def _commit_levels(statements: list[str]) -> list[str]:
    """The synchronous level each COMMIT of a statement trace ran at, in order."""
    level, levels = "", []
    for statement in statements:
        if statement.startswith("PRAGMA synchronous"):
            level = statement.rsplit("=", 1)[1].strip()
        elif statement == "COMMIT":
            levels.append(level)
    return levels


@pytest.mark.parametrize("durable", [True, False])
async def test_only_replayable_writes_skip_the_fsync(tmp_path: Path, durable: bool) -> None:
    """Durable: the change log (announced to peers once returned) and trust commit with
    synchronous=FULL, the mapping/cursor writes (replayed by the importer) with NORMAL;
    not durable: nothing fsyncs."""
    statements: list[str] = []
    async with SqliteStore(tmp_path / "store.db", durable=durable) as db:
        await db.run_in_worker(lambda c: c.set_trace_callback(statements.append))
        await db.append_changes([upsert(instance(0))])
        await db.apply_batch("dc-remote", [entry(1)], [], 1, epoch="ep")
        await db.apply_batch("dc-remote", [entry(2)], [("dc-remote", "o-000001")], 2)
        await db.set_cursor("dc-remote", 3, "ep")
        await db.delete_mappings([("dc-remote", "o-000002")])
        await db.append_changes([tombstone(instance(0))])
        await db.set_trusted_group("dc-remote", "g")
        await db.run_in_worker(lambda c: c.set_trace_callback(None))
        assert await db.get_cursor("dc-remote") == PeerCursor("dc-remote", 3, "ep")
        assert await db.count_mappings() == 0
        assert await db.current_revision() == 2
    # "": the level the connection was opened with (FULL when durable), not switched
    expected = ["", *["NORMAL"] * 4, *["FULL"] * 2] if durable else [""] * 7
    assert _commit_levels(statements) == expected


async def test_new_file_gets_a_new_epoch(tmp_path: Path) -> None:
    async with SqliteStore(tmp_path / "a.db") as a, SqliteStore(tmp_path / "b.db") as b:
        assert (await a.log_info()).epoch != (await b.log_info()).epoch


async def test_second_opener_is_locked_out(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    async with SqliteStore(path):
        other = SqliteStore(path)
        with pytest.raises(StoreLockedError, match="in use") as info:
            await other.open()
        assert isinstance(info.value, PysyncerError) and isinstance(info.value, OSError)
    async with SqliteStore(path):  # released on close
        pass


async def test_closed_store_raises(tmp_path: Path) -> None:
    db = SqliteStore(tmp_path / "store.db")
    with pytest.raises(StoreClosedError):
        await db.current_revision()
    await db.open()
    await db.open()  # idempotent
    await db.close()
    await db.close()
    with pytest.raises(StoreClosedError):
        await db.get_cursor("x")


async def test_garbage_file_is_reported_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    path.write_bytes(b"this is not a database at all" * 200)
    with pytest.raises(StoreCorruptError, match=str(path)):
        await SqliteStore(path).open()


async def test_foreign_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE other (x)")
    conn.close()
    with pytest.raises(StoreCorruptError, match="not a pysyncer store"):
        await SqliteStore(path).open()


async def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    async with SqliteStore(path):
        pass
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION + 1,))
    conn.close()
    with pytest.raises(StoreError, match="newer"):
        await SqliteStore(path).open()


async def test_a_version_1_schema_is_migrated_and_keeps_its_data(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    async with SqliteStore(path) as db:
        await db.set_cursor("dc-b", 7, "eb")
    with sqlite3.connect(path) as conn:  # as a pysyncer before trusted groups left it
        conn.execute("DROP TABLE trusted_groups")
        conn.execute("UPDATE schema_version SET version = 1")
    conn.close()
    async with SqliteStore(path) as db:
        assert await db.get_cursor("dc-b") == PeerCursor("dc-b", 7, "eb")
        await db.set_trusted_group("dc-b", "node:b1")
        assert await db.trusted_groups() == {"dc-b": "node:b1"}
        version = await db.run_in_worker(
            lambda c: c.execute("SELECT version FROM schema_version").fetchone()[0]
        )
        assert version == SCHEMA_VERSION == 3


_MAPPING_V2 = """CREATE TABLE mapping (
    origin_dc TEXT NOT NULL, origin_id TEXT NOT NULL, service TEXT NOT NULL,
    slot INTEGER NOT NULL, digest INTEGER NOT NULL, origin_revision INTEGER NOT NULL,
    local_service_id TEXT NOT NULL, local_instance_id TEXT NOT NULL,
    registered_at REAL NOT NULL, renewed_at REAL NOT NULL,
    PRIMARY KEY (origin_dc, origin_id)
) WITHOUT ROWID"""


async def test_a_version_2_mapping_table_is_rebuilt_and_keeps_its_rows(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """v3 keeps the mappings in a rowid table, keyed by a unique index of their own."""
    path = tmp_path / "store.db"
    entries = [entry(n, digest=(1 << 63) + n) for n in range(300)]
    async with SqliteStore(path) as db:
        await db.put_mappings(entries)
    with sqlite3.connect(path) as conn:  # as a pysyncer before schema v3 left it
        rows = conn.execute("SELECT * FROM mapping").fetchall()
        conn.execute("DROP TABLE mapping")
        conn.execute(_MAPPING_V2)
        conn.execute("CREATE INDEX mapping_by_slot ON mapping (slot)")
        conn.executemany(f"INSERT INTO mapping VALUES ({', '.join('?' * 10)})", rows)
        conn.execute("UPDATE schema_version SET version = 2")
    conn.close()
    with caplog.at_level(logging.INFO, logger="pysyncer.store.sqlite_db"):
        async with SqliteStore(path):
            pass
    assert "migrating its schema to v3" in caplog.text  # a long one on a big table: said
    async with SqliteStore(path) as db:
        assert await db.list_mappings("dc-remote", limit=1000) == sorted(
            entries, key=lambda e: e.origin_instance_id
        )
        slot = entries[0].slot
        assert sorted(await db.mappings_in_slots([slot])) == sorted(
            e for e in entries if e.slot == slot
        )
        moved = entries[0]._replace(digest=5, local_instance_id="li-again")
        await db.put_mappings([moved])  # the key is still unique: replaced, not added
        assert await db.get_mapping("dc-remote", moved.origin_instance_id) == moved
        assert await db.count_mappings() == len(entries)

        def layout(conn: sqlite3.Connection) -> tuple[Any, ...]:
            sql = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'mapping'").fetchone()
            indexes = conn.execute("PRAGMA index_list(mapping)").fetchall()
            version = conn.execute("SELECT version FROM schema_version").fetchone()[0]
            return sql[0], {row[1]: row[2] for row in indexes}, version

        sql, indexes, version = await db.run_in_worker(layout)
        assert "WITHOUT ROWID" not in sql
        assert indexes == {"mapping_by_key": 1, "mapping_by_slot": 0}  # name: unique
        assert version == SCHEMA_VERSION


async def test_undecodable_row_is_reported_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    async with SqliteStore(path) as db:
        await db.append_changes([upsert(instance(1))])
        await db.run_in_worker(lambda c: c.execute("UPDATE changes SET body = x'c1'"))
        with pytest.raises(StoreCorruptError, match="revision 1"):
            await db.read_changes(0)


async def test_disk_full_rolls_back_whole_batch(tmp_path: Path) -> None:
    async with SqliteStore(tmp_path / "store.db") as db:
        await db.append_changes([upsert(instance(1))])
        pages = await db.run_in_worker(lambda c: c.execute("PRAGMA page_count").fetchone()[0])
        await db.run_in_worker(lambda c: c.execute(f"PRAGMA max_page_count = {pages + 2}"))
        big = [upsert(instance(i, host="x" * 2000)) for i in range(100)]
        with pytest.raises(StoreFullError, match="full"):
            await db.append_changes(big)
        with pytest.raises(StoreFullError):
            await db.apply_batch("p", [entry(i) for i in range(5000)], [], 9)
        assert await db.current_revision() == 1
        assert await db.count_exported() == 1
        assert await db.get_cursor("p") is None and await db.count_mappings() == 0
        await db.append_changes([upsert(instance(2))])  # still usable
        assert await db.current_revision() == 2


def test_create_store(tmp_path: Path) -> None:
    made = create_store("embedded", tmp_path)
    assert isinstance(made, SqliteStore) and made.path == tmp_path / "store.db"
    assert isinstance(made, Store)
    etcd = create_store("etcd://127.0.0.1:2379,10.0.0.2:2379", tmp_path, dc="dc1", node="n1")
    assert isinstance(etcd, EtcdStore) and isinstance(etcd, Store)
    assert (etcd.prefix, etcd.member) == ("/pysyncer/dc1/", "n1")
    assert etcd.endpoints == "127.0.0.1:2379,10.0.0.2:2379"
    custom = create_store("etcd://h:1?prefix=/x/{dc}/&open_timeout=2&max_queue=5", "", dc="d")
    assert isinstance(custom, EtcdStore) and custom.prefix == "/x/d/"
    fixed = create_store("etcd://h:1?prefix=/fixed/", tmp_path)
    assert isinstance(fixed, EtcdStore) and fixed.prefix == "/fixed/"
    for bad in (
        "etcd://127.0.0.1:2379",
        "etcd://h:1?colour=red",
        "etcd://h",
        "etcd://h:1?prefix=x",
    ):
        with pytest.raises(ConfigError):
            create_store(bad, tmp_path)  # no dc / unknown option / no port / bad prefix
    with pytest.raises(ValueError):
        create_store("redis://x", tmp_path)
