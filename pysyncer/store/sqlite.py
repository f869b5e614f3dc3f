"""The embedded store backend: one SQLite file in WAL mode under the daemon's data dir.

Owns :class:`SqliteStore`, the :class:`~pysyncer.store.base.Store` of ``--store
embedded``: the worker thread and the Store protocol's operations as SQL. The file
itself (schema, migrations, durability pragmas, the lock, error translation) is
:mod:`pysyncer.store.sqlite_db`'s; the record body is :mod:`pysyncer.store.codec`'s. It
touches only its data file (plus SQLite's ``-wal``/``-shm`` siblings and a ``.lock``
file); never the registry, the network, the etcd backend or the event loop's thread.

Threading: every database call runs in ONE dedicated worker thread
(:class:`~pysyncer.store.sqlite_worker.StoreWorker`, which owns the only connection that
reads or writes), so the event loop never waits on disk and the connection is never
shared between threads. Calls are serialised in submission order. The WAL is
checkpointed by a second connection in a thread of its own
(:class:`~pysyncer.store.sqlite_checkpoint.Checkpointer`), nudged every
:data:`~pysyncer.store.sqlite_checkpoint.CHECKPOINT_ROWS` rows written, so no commit
waits for a checkpoint.

Durability: ``journal_mode=WAL``; with ``durable`` (the default) the change log, the
exported state and the trust records commit with ``synchronous=FULL``, the mapping table
and the peer cursors with NORMAL. In WAL mode NORMAL already survives a killed process
(``kill -9``) with every committed transaction, but after a power loss or kernel crash
it may roll back the newest commits (as a whole, in order: recovery keeps a prefix of
the log). That is not acceptable for the change log: the exporter announces a revision
to its peers as soon as :meth:`SqliteStore.append_changes` returns, so a rolled-back
revision would later be reissued for different content and peers that applied the
first one would skip the second. FULL fsyncs the WAL at every commit, so a returned
call is durable; batching (one transaction per call, ``executemany`` inside) amortises
that fsync. The mapping and cursor writes (:meth:`~SqliteStore.apply_batch`,
``put_mappings``, ``delete_mappings``, ``set_cursor``) are *replayable*: each commits a
mapping change with the cursor it reflects, so losing the newest ones leaves the store
as a crash just before them would (the registry may hold writes the mapping no longer
records), which the importer already repairs: it resumes from the older cursor and
applies the same records again (idempotently), and removes at start the copies no
mapping records. Those commits skip the fsync (measured here: 3.3-3.6 ms of wall time
and ~0.17 ms of CPU per FULL commit against 0.04 ms and 0.016 ms, in the one worker
thread every call waits behind). A later FULL commit makes them durable too.
``durable=False`` selects NORMAL for everything (tests and throw-away stores).

Exclusivity: one process per data file, enforced by an ``flock`` on ``<file>.lock``
(released by the kernel when the process dies, so a killed daemon never leaves it
behind); a second opener gets :class:`~pysyncer.store.base.StoreLockedError`. Being
the only member, it accepts the writes' ``fence`` keyword and ignores it.

Encoding: digests (unsigned 64-bit) are stored as SQLite's signed 64-bit INTEGER
(two's complement) and converted back; records are stored as the msgpack record body
beside the service's text (used for keys, ordering and lookups), so every field
round-trips exactly, ``/`` in names included.
"""

from __future__ import annotations

import functools
import os
import sqlite3
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from pysyncer.model import Record
from pysyncer.store.base import (
    CursorBatch,
    Fence,
    LogInfo,
    MappingEntry,
    MappingKey,
    PeerCursor,
    StoreClosedError,
    check_cursor,
    check_digest,
    check_limit,
    check_slot,
    check_trim,
)
from pysyncer.store.codec import pack_record_body, unpack_record_body
from pysyncer.store.sqlite_checkpoint import CHECKPOINT_ROWS, Checkpointer
from pysyncer.store.sqlite_db import (
    close_database,
    lock_file,
    open_database,
    set_synchronous,
    transaction,
    translate,
    unlock_file,
)
from pysyncer.store.sqlite_worker import StoreWorker

__all__ = ["SqliteStore"]

_T = TypeVar("_T")

_SIGN_BIT = 1 << 63
_WRAP = 1 << 64
_CHUNK = 500  # bound variables per IN (...) list

_MAPPING_COLUMNS = (
    "origin_dc, origin_id, service, slot, digest, origin_revision, "
    "local_service_id, local_instance_id, registered_at, renewed_at"
)
_UPSERT_MAPPING = (
    f"INSERT OR REPLACE INTO mapping ({_MAPPING_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_DELETE_MAPPING = "DELETE FROM mapping WHERE origin_dc = ? AND origin_id = ?"
_UPSERT_CURSOR = (
    "INSERT INTO cursors (peer_dc, revision, epoch) VALUES (?, ?, ?) "
    "ON CONFLICT (peer_dc) DO UPDATE SET revision = excluded.revision, "
    "epoch = coalesce(?, cursors.epoch)"
)


def _to_signed(digest: int) -> int:
    check_digest(digest)
    return digest - _WRAP if digest & _SIGN_BIT else digest


def _to_unsigned(value: int) -> int:
    return value + _WRAP if value < 0 else value


def _mapping_row(entry: MappingEntry) -> tuple[Any, ...]:
    return (
        entry.origin_dc,
        entry.origin_instance_id,
        entry.service_text,
        check_slot(entry.slot),
        _to_signed(entry.digest),
        entry.origin_revision,
        entry.local_service_id,
        entry.local_instance_id,
        float(entry.registered_at),
        float(entry.renewed_at),
    )


def _mapping_entry(row: tuple[Any, ...]) -> MappingEntry:
    return MappingEntry(
        origin_dc=row[0],
        origin_instance_id=row[1],
        service_text=row[2],
        slot=row[3],
        digest=_to_unsigned(row[4]),
        origin_revision=row[5],
        local_service_id=row[6],
        local_instance_id=row[7],
        registered_at=row[8],
        renewed_at=row[9],
    )


def _record(origin_dc: str, instance_id: str, revision: int, body: bytes) -> Record:
    return unpack_record_body(
        origin_dc, instance_id, revision, body, f"record at revision {revision}"
    )


def _chunks(values: Sequence[_T], size: int = _CHUNK) -> Iterator[Sequence[_T]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


CACHE_MIB = 64
"""SQLite's page cache, MiB: it fills only as pages are read. Mapping rows written in a
full sync's order (ten ids of a service together, services in slot order) into a table of
1,000,000: 8.3-8.6 us per row in the store's thread with 64 MiB, 9.9-10.4 us with 16
(the mapping table and its slot index outgrow a small cache; measured in pairs)."""


class SqliteStore:
    """The embedded :class:`~pysyncer.store.base.Store`: one SQLite file in WAL mode.

    ``path`` is the data file (e.g. ``<data-dir>/store.db``); its directory must exist.
    ``durable`` (default) fsyncs every commit but the replayable ones (see the module
    docstring); False fsyncs none. ``cache_mib`` sizes SQLite's page cache
    (:data:`CACHE_MIB` by default).
    """

    def __init__(
        self, path: str | os.PathLike[str], *, durable: bool = True, cache_mib: int = CACHE_MIB
    ) -> None:
        self._path = Path(path)
        self._durable = durable
        self._fsyncing = durable  # the connection's synchronous level: FULL (True) or NORMAL
        self._cache_mib = cache_mib
        self._conn: sqlite3.Connection | None = None
        self._lock_fd: int | None = None
        self._checkpointer: Checkpointer | None = None
        self._changes_checkpointed = 0  # the writer's total_changes at the last nudge
        self._worker: StoreWorker | None = None
        # The oldest revision the change log still holds (last_revision + 1 when empty),
        # kept current by this object's own writes: this process is the file's only user.
        self._log_floor = 1

    def __repr__(self) -> str:
        state = "open" if self._conn is not None else "closed"
        return f"<SqliteStore {self._path} {state}>"

    @property
    def path(self) -> Path:
        return self._path

    @property
    def log_floor(self) -> int:
        """``log_info().first_revision`` without a call to the worker thread: a cursor
        ``c >= log_floor - 1`` can still resume from the change log (the exporter's
        memory tail of recent changes checks it on every watch read)."""
        return self._log_floor

    # -- lifecycle ---------------------------------------------------------------------

    async def open(self) -> None:
        if self._worker is not None:
            return
        worker = StoreWorker("pysyncer-store")
        self._worker = worker
        try:
            await self._call(self._open_sync, opening=True)
        except BaseException:
            self._worker = None
            worker.stop()
            raise

    async def close(self) -> None:
        worker = self._worker
        if worker is None:
            return
        try:
            await self._call(self._close_sync)
        finally:
            self._worker = None
            worker.stop()

    async def __aenter__(self) -> SqliteStore:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def _open_sync(self) -> None:
        lock_fd = lock_file(self._path)
        try:
            conn = open_database(self._path, durable=self._durable, cache_mib=self._cache_mib)
        except BaseException:
            unlock_file(lock_fd)
            raise
        try:
            first, last = conn.execute(
                "SELECT (SELECT min(revision) FROM changes), last_revision FROM log_state"
            ).fetchone()
        except BaseException:
            conn.close()
            unlock_file(lock_fd)
            raise
        self._log_floor = int(last) + 1 if first is None else int(first)
        self._conn, self._lock_fd, self._fsyncing = conn, lock_fd, self._durable
        self._checkpointer = Checkpointer(self._path)
        self._changes_checkpointed = conn.total_changes

    def _close_sync(self) -> None:
        conn, self._conn = self._conn, None
        lock_fd, self._lock_fd = self._lock_fd, None
        checkpointer, self._checkpointer = self._checkpointer, None
        try:
            if checkpointer is not None:
                checkpointer.stop()
            if conn is not None:
                close_database(conn)
        finally:
            if lock_fd is not None:
                unlock_file(lock_fd)

    # -- worker plumbing ---------------------------------------------------------------

    async def _call(
        self, fn: Callable[..., _T], *args: Any, opening: bool = False, **kwargs: Any
    ) -> _T:
        worker = self._worker
        if worker is None:
            raise StoreClosedError(f"store {self._path} is not open")
        return await worker.call(functools.partial(self._guarded, fn, args, kwargs, opening))

    def _guarded(
        self,
        fn: Callable[..., _T],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        opening: bool,
    ) -> _T:
        if not opening and self._conn is None:
            raise StoreClosedError(f"store {self._path} is not open")
        try:
            return fn(*args, **kwargs)
        except sqlite3.Error as exc:
            raise translate(self._path, exc) from None
        finally:
            self._nudge_checkpointer()

    def _nudge_checkpointer(self) -> None:
        """Ask for a checkpoint once :data:`CHECKPOINT_ROWS` rows were written since the
        last ask (in the worker thread, after each call)."""
        conn, checkpointer = self._conn, self._checkpointer
        if conn is None or checkpointer is None:
            return
        changed = conn.total_changes
        if changed - self._changes_checkpointed >= CHECKPOINT_ROWS:
            self._changes_checkpointed = changed
            checkpointer.nudge()

    @property
    def _db(self) -> sqlite3.Connection:
        conn = self._conn
        if conn is None:
            raise StoreClosedError(f"store {self._path} is not open")
        return conn

    def _transaction(
        self, *, replayable: bool = False
    ) -> AbstractContextManager[sqlite3.Connection]:
        """A write transaction; its commit fsyncs when the store is durable, unless it is
        ``replayable`` (mapping and cursor writes: see the module docstring)."""
        conn = self._db
        fsync = self._durable and not replayable
        if fsync != self._fsyncing:
            set_synchronous(conn, fsync=fsync)
            self._fsyncing = fsync
        return transaction(conn)

    async def run_in_worker(self, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run ``fn(connection)`` in the worker thread (maintenance, benchmarks, tests)."""
        return await self._call(lambda: fn(self._db))

    # -- mapping table -----------------------------------------------------------------

    async def get_mapping(self, origin_dc: str, origin_instance_id: str) -> MappingEntry | None:
        return await self._call(self._get_mapping, origin_dc, origin_instance_id)

    def _get_mapping(self, origin_dc: str, origin_id: str) -> MappingEntry | None:
        row = self._db.execute(
            f"SELECT {_MAPPING_COLUMNS} FROM mapping WHERE origin_dc = ? AND origin_id = ?",
            (origin_dc, origin_id),
        ).fetchone()
        return None if row is None else _mapping_entry(row)

    async def list_mappings(
        self, origin_dc: str, after: str | None = None, limit: int = 1000
    ) -> list[MappingEntry]:
        check_limit(limit)
        return await self._call(self._list_mappings, origin_dc, after, limit)

    def _list_mappings(self, origin_dc: str, after: str | None, limit: int) -> list[MappingEntry]:
        if after is None:
            rows = self._db.execute(
                f"SELECT {_MAPPING_COLUMNS} FROM mapping WHERE origin_dc = ? "
                "ORDER BY origin_id LIMIT ?",
                (origin_dc, limit),
            )
        else:
            rows = self._db.execute(
                f"SELECT {_MAPPING_COLUMNS} FROM mapping WHERE origin_dc = ? AND origin_id > ? "
                "ORDER BY origin_id LIMIT ?",
                (origin_dc, after, limit),
            )
        return [_mapping_entry(row) for row in rows]

    async def mappings_in_slots(
        self, slots: Collection[int], origin_dc: str | None = None
    ) -> list[MappingEntry]:
        wanted = sorted({check_slot(slot) for slot in slots})
        return await self._call(self._mappings_in_slots, wanted, origin_dc)

    def _mappings_in_slots(self, slots: list[int], origin_dc: str | None) -> list[MappingEntry]:
        result: list[MappingEntry] = []
        for chunk in _chunks(slots):
            marks = ",".join("?" * len(chunk))
            sql = f"SELECT {_MAPPING_COLUMNS} FROM mapping WHERE slot IN ({marks})"
            params: list[Any] = list(chunk)
            if origin_dc is not None:
                sql += " AND origin_dc = ?"
                params.append(origin_dc)
            result.extend(_mapping_entry(row) for row in self._db.execute(sql, params))
        result.sort(key=lambda entry: entry.key)
        return result

    async def count_mappings(self, origin_dc: str | None = None) -> int:
        return await self._call(self._count_mappings, origin_dc)

    def _count_mappings(self, origin_dc: str | None) -> int:
        if origin_dc is None:
            row = self._db.execute("SELECT count(*) FROM mapping").fetchone()
        else:
            row = self._db.execute(
                "SELECT count(*) FROM mapping WHERE origin_dc = ?", (origin_dc,)
            ).fetchone()
        return int(row[0])

    async def mapping_counts(self) -> dict[str, int]:
        return await self._call(self._mapping_counts)

    def _mapping_counts(self) -> dict[str, int]:
        rows = self._db.execute(
            "SELECT origin_dc, count(*) FROM mapping GROUP BY origin_dc ORDER BY origin_dc"
        )
        return {str(dc): int(count) for dc, count in rows}

    async def put_mappings(
        self, entries: Sequence[MappingEntry], *, fence: Fence | None = None
    ) -> None:
        await self._call(self._apply, None, entries, (), 0, None)

    async def delete_mappings(
        self, keys: Sequence[MappingKey], *, fence: Fence | None = None
    ) -> int:
        return await self._call(self._delete_mappings, list(keys))

    def _delete_mappings(self, keys: list[MappingKey]) -> int:
        with self._transaction(replayable=True) as conn:
            before = conn.total_changes
            conn.executemany(_DELETE_MAPPING, keys)
            return conn.total_changes - before

    # -- cursors and atomic apply ------------------------------------------------------

    async def get_cursor(self, peer_dc: str) -> PeerCursor | None:
        return await self._call(self._get_cursor, peer_dc)

    def _get_cursor(self, peer_dc: str) -> PeerCursor | None:
        row = self._db.execute(
            "SELECT peer_dc, revision, epoch FROM cursors WHERE peer_dc = ?", (peer_dc,)
        ).fetchone()
        return None if row is None else PeerCursor(row[0], row[1], row[2])

    async def list_cursors(self) -> list[PeerCursor]:
        return await self._call(self._list_cursors)

    def _list_cursors(self) -> list[PeerCursor]:
        rows = self._db.execute("SELECT peer_dc, revision, epoch FROM cursors ORDER BY peer_dc")
        return [PeerCursor(*row) for row in rows]

    async def set_cursor(self, peer_dc: str, revision: int, epoch: str) -> None:
        await self._call(self._apply, peer_dc, (), (), revision, epoch)

    async def delete_cursor(self, peer_dc: str) -> None:
        await self._call(self._delete_cursor, peer_dc)

    def _delete_cursor(self, peer_dc: str) -> None:
        with self._transaction() as conn:
            conn.execute("DELETE FROM cursors WHERE peer_dc = ?", (peer_dc,))

    # -- trust of remote data centers ----------------------------------------------------

    async def trusted_groups(self) -> dict[str, str]:
        return await self._call(self._trusted_groups)

    def _trusted_groups(self) -> dict[str, str]:
        rows = self._db.execute("SELECT peer_dc, ownership_group FROM trusted_groups")
        return {str(dc): str(group) for dc, group in rows}

    async def set_trusted_group(self, peer_dc: str, group: str | None) -> None:
        await self._call(self._set_trusted_group, peer_dc, group)

    def _set_trusted_group(self, peer_dc: str, group: str | None) -> None:
        with self._transaction() as conn:
            if group is None:
                conn.execute("DELETE FROM trusted_groups WHERE peer_dc = ?", (peer_dc,))
            else:
                conn.execute(
                    "INSERT OR REPLACE INTO trusted_groups (peer_dc, ownership_group) "
                    "VALUES (?, ?)",
                    (peer_dc, group),
                )

    async def apply_batch(
        self,
        peer_dc: str,
        upserts: Sequence[MappingEntry],
        deletes: Sequence[MappingKey],
        cursor: int,
        epoch: str | None = None,
        *,
        fence: Fence | None = None,
    ) -> None:
        await self._call(self._apply, peer_dc, upserts, deletes, cursor, epoch)

    async def apply_batches(
        self, batches: Sequence[CursorBatch], *, fence: Fence | None = None
    ) -> None:
        """:meth:`apply_batch` of each of ``batches``, in order, in ONE transaction (see
        :func:`~pysyncer.store.base.apply_batches`); all or none of them is written."""
        await self._call(self._apply_all, list(batches))

    def _apply(
        self,
        peer_dc: str | None,
        upserts: Sequence[MappingEntry],
        deletes: Sequence[MappingKey],
        cursor: int,
        epoch: str | None,
    ) -> None:
        batch = CursorBatch(peer_dc or "", upserts, deletes, cursor, epoch)
        self._apply_all([batch], cursors=peer_dc is not None)  # None: put_mappings

    def _apply_all(self, batches: list[CursorBatch], *, cursors: bool = True) -> None:
        """The batches' writes in one transaction (without ``cursors``: mappings only)."""
        writes: list[tuple[list[tuple[Any, ...]], list[tuple[str, str]], tuple[Any, ...] | None]]
        writes = []
        for batch in batches:  # every batch validated before anything is written
            cursor_row = None
            if cursors:
                check_cursor(batch.cursor)
                cursor_row = (batch.peer_dc, batch.cursor, batch.epoch or "", batch.epoch)
            rows = [_mapping_row(entry) for entry in batch.upserts]
            keys = [(str(dc), str(origin_id)) for dc, origin_id in batch.deletes]
            writes.append((rows, keys, cursor_row))
        with self._transaction(replayable=True) as conn:
            for rows, keys, cursor_row in writes:
                if rows:
                    conn.executemany(_UPSERT_MAPPING, rows)
                if keys:
                    conn.executemany(_DELETE_MAPPING, keys)
                if cursor_row is not None:
                    conn.execute(_UPSERT_CURSOR, cursor_row)

    # -- change log and exported state -------------------------------------------------

    async def append_changes(
        self, records: Sequence[Record], *, fence: Fence | None = None
    ) -> list[Record]:
        return await self._call(self._append_changes, list(records))

    def _append_changes(self, records: list[Record]) -> list[Record]:
        bodies = [pack_record_body(record) for record in records]  # validates before writing
        if not records:
            return []
        with self._transaction() as conn:
            last = int(conn.execute("SELECT last_revision FROM log_state").fetchone()[0])
            assigned: list[Record] = []
            log_rows: list[tuple[Any, ...]] = []
            final: dict[tuple[str, str], tuple[Any, ...]] = {}
            for offset, (record, body) in enumerate(zip(records, bodies, strict=True)):
                revision = last + 1 + offset
                text = record.service.text()
                log_rows.append((revision, record.origin_dc, text, record.instance_id, body))
                final[(text, record.instance_id)] = (
                    text,
                    record.instance_id,
                    record.slot,
                    revision,
                    record.origin_dc,
                    None if record.instance is None else body,
                )
                assigned.append(
                    Record(
                        record.origin_dc,
                        record.service,
                        record.instance_id,
                        revision,
                        record.instance,
                    )
                )
            conn.executemany(
                "INSERT INTO changes (revision, origin_dc, service, instance_id, body) "
                "VALUES (?, ?, ?, ?, ?)",
                log_rows,
            )
            live = [row for row in final.values() if row[5] is not None]
            gone = [(row[0], row[1]) for row in final.values() if row[5] is None]
            if live:
                conn.executemany(
                    "INSERT OR REPLACE INTO exported "
                    "(service, instance_id, slot, revision, origin_dc, body) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    live,
                )
            if gone:
                conn.executemany("DELETE FROM exported WHERE service = ? AND instance_id = ?", gone)
            conn.execute("UPDATE log_state SET last_revision = ?", (last + len(records),))
        return assigned

    async def read_changes(self, since_revision: int, limit: int = 1000) -> list[Record]:
        check_limit(limit)
        return await self._call(self._read_changes, since_revision, limit)

    def _read_changes(self, since: int, limit: int) -> list[Record]:
        rows = self._db.execute(
            "SELECT revision, origin_dc, instance_id, body FROM changes "
            "WHERE revision > ? ORDER BY revision LIMIT ?",
            (since, limit),
        )
        return [_record(dc, iid, rev, body) for rev, dc, iid, body in rows]

    async def current_revision(self) -> int:
        return await self._call(self._current_revision)

    def _current_revision(self) -> int:
        return int(self._db.execute("SELECT last_revision FROM log_state").fetchone()[0])

    async def log_info(self) -> LogInfo:
        return await self._call(self._log_info)

    def _log_info(self) -> LogInfo:
        conn = self._db
        conn.execute("BEGIN")  # one consistent snapshot for the three reads
        try:
            epoch, last = conn.execute("SELECT epoch, last_revision FROM log_state").fetchone()
            first, count = conn.execute("SELECT min(revision), count(*) FROM changes").fetchone()
        finally:
            conn.execute("COMMIT")
        return LogInfo(
            epoch=str(epoch),
            first_revision=int(last) + 1 if first is None else int(first),
            last_revision=int(last),
            entries=int(count),
        )

    async def trim_changes(
        self, *, keep_last: int | None = None, through_revision: int | None = None
    ) -> int:
        check_trim(keep_last, through_revision)
        return await self._call(self._trim, keep_last, through_revision)

    def _trim(self, keep_last: int | None, through: int | None) -> int:
        with self._transaction() as conn:
            if through is None:
                assert keep_last is not None
                # Revisions in the log are gapless, so the newest keep_last entries are
                # exactly those above last_revision - keep_last.
                last = int(conn.execute("SELECT last_revision FROM log_state").fetchone()[0])
                through = last - keep_last
            cursor = conn.execute("DELETE FROM changes WHERE revision <= ?", (through,))
            last = int(conn.execute("SELECT last_revision FROM log_state").fetchone()[0])
            floor = max(self._log_floor, min(through, last) + 1)
        self._log_floor = floor  # once committed
        return int(cursor.rowcount)

    async def exported_records(self, slots: Collection[int] | None = None) -> list[Record]:
        wanted = None if slots is None else sorted({check_slot(slot) for slot in slots})
        return await self._call(self._exported_records, wanted)

    def _exported_records(self, slots: list[int] | None) -> list[Record]:
        select = "SELECT origin_dc, instance_id, revision, body, service FROM exported"
        rows: list[tuple[Any, ...]] = []
        if slots is None:
            rows.extend(self._db.execute(select + " ORDER BY service, instance_id"))
        else:
            for chunk in _chunks(slots):
                marks = ",".join("?" * len(chunk))
                rows.extend(self._db.execute(f"{select} WHERE slot IN ({marks})", list(chunk)))
            rows.sort(key=lambda row: (row[4], row[1]))
        return [_record(dc, iid, rev, body) for dc, iid, rev, body, _ in rows]

    async def count_exported(self) -> int:
        return await self._call(self._count_exported)

    def _count_exported(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM exported").fetchone()[0])
