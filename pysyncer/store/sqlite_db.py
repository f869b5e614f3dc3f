"""The SQLite file of the embedded store: schema, migrations, connection, lock, errors.

Owns everything the embedded store (:mod:`pysyncer.store.sqlite`) needs to hold one
SQLite file safely: the schema and its version (:data:`SCHEMA_VERSION`, migrations in
``_MIGRATIONS``), opening a connection in WAL mode with the chosen durability, the
``flock`` that keeps a second process out, transactions, and the translation of
``sqlite3`` errors into :class:`~pysyncer.store.base.StoreError` kinds. It runs only in
the store's worker thread and knows nothing of the Store protocol's operations, the
event loop, the record encoding or the etcd backend; must not import them.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path

from pysyncer.store.base import (
    StoreCorruptError,
    StoreError,
    StoreFullError,
    StoreLockedError,
)

log = logging.getLogger(__name__)

__all__ = [
    "SCHEMA_VERSION",
    "WAL_CHECKPOINT_PAGES",
    "close_database",
    "lock_file",
    "open_database",
    "set_synchronous",
    "transaction",
    "translate",
    "unlock_file",
]

SCHEMA_VERSION: int = 3
"""Version of the schema this code writes; :func:`open_database` migrates older ones."""

WAL_CHECKPOINT_PAGES = 40_000
"""Pages (4 KiB) the WAL may grow to before a commit checkpoints it itself (SQLite's
autocheckpoint; its default is 1,000). A backstop: the store's checkpointer thread
(:mod:`pysyncer.store.sqlite_checkpoint`) checkpoints off the commit path well before,
and this fires only if it falls behind. A checkpoint writes each page once however often
it changed since the last one, so a large WAL costs less CPU per small commit (5 random
mappings into a table of 200,000: 104-121 us with 1,000 pages, 79-82 us with 10,000;
measured in the store's thread)."""

_MAPPING_FIELDS = """
    origin_dc TEXT NOT NULL,
    origin_id TEXT NOT NULL,
    service TEXT NOT NULL,
    slot INTEGER NOT NULL,
    digest INTEGER NOT NULL,
    origin_revision INTEGER NOT NULL,
    local_service_id TEXT NOT NULL,
    local_instance_id TEXT NOT NULL,
    registered_at REAL NOT NULL,
    renewed_at REAL NOT NULL"""
"""The mapping table's columns, in every schema version (v3 changed only its keys)."""

_SCHEMA_V1 = f"""
CREATE TABLE mapping ({_MAPPING_FIELDS},
    PRIMARY KEY (origin_dc, origin_id)
) WITHOUT ROWID;
CREATE INDEX mapping_by_slot ON mapping (slot);
CREATE TABLE cursors (
    peer_dc TEXT PRIMARY KEY,
    revision INTEGER NOT NULL,
    epoch TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE changes (
    revision INTEGER PRIMARY KEY,
    origin_dc TEXT NOT NULL,
    service TEXT NOT NULL,
    instance_id TEXT NOT NULL,
    body BLOB NOT NULL
);
CREATE TABLE exported (
    service TEXT NOT NULL,
    instance_id TEXT NOT NULL,
    slot INTEGER NOT NULL,
    revision INTEGER NOT NULL,
    origin_dc TEXT NOT NULL,
    body BLOB NOT NULL,
    PRIMARY KEY (service, instance_id)
) WITHOUT ROWID;
CREATE INDEX exported_by_slot ON exported (slot);
CREATE TABLE log_state (
    id INTEGER PRIMARY KEY CHECK (id = 0),
    epoch TEXT NOT NULL,
    last_revision INTEGER NOT NULL
);
"""

_MAPPING_V3 = f"""
CREATE TABLE mapping_v3 ({_MAPPING_FIELDS}
);
INSERT INTO mapping_v3 SELECT * FROM mapping;
DROP TABLE mapping;
ALTER TABLE mapping_v3 RENAME TO mapping;
CREATE UNIQUE INDEX mapping_by_key ON mapping (origin_dc, origin_id);
CREATE INDEX mapping_by_slot ON mapping (slot)
"""
"""Schema v3's mapping table: rows in a rowid table (appended in the order written), the
key in an index of its own. Keyed by ``(origin_dc, origin_id)`` in a WITHOUT ROWID table
(v1, v2), every row went to a random place among the whole rows, so a full sync wrote
about one full page per row: 1,000,000 rows into such a table in a full sync's order,
2,000 per transaction, cost 5.96 us per row in the store's thread with short instance
ids and 15.7 us with 32-hex ones, against 3.83 and 9.66 us now; checkpointing them 1.61
and 2.05 us against 0.71 and 0.67 us. Reading every row by key costs ~30 % more (1.65 s
against 1.27 s for 1,000,000), reading them by slot half (1.32 s against 2.35 s)."""

# Migrations: _MIGRATIONS[v] turns schema v into v + 1 (inside the open transaction).
_MIGRATIONS: dict[int, str] = {
    1: """
CREATE TABLE trusted_groups (
    peer_dc TEXT PRIMARY KEY,
    ownership_group TEXT NOT NULL
) WITHOUT ROWID
""",
    2: _MAPPING_V3,
}

# SQLite primary result codes (extended code & 0xff).
_SQLITE_BUSY = 5
_SQLITE_LOCKED = 6
_SQLITE_CORRUPT = 11
_SQLITE_FULL = 13
_SQLITE_NOTADB = 26


def translate(path: Path, exc: sqlite3.Error) -> StoreError:
    """A StoreError of the right kind for a sqlite3 exception, naming the file."""
    code = getattr(exc, "sqlite_errorcode", None)
    primary = code & 0xFF if isinstance(code, int) else None
    text = str(exc)
    lowered = text.lower()
    if primary in (_SQLITE_CORRUPT, _SQLITE_NOTADB) or (
        primary is None and ("malformed" in lowered or "not a database" in lowered)
    ):
        return StoreCorruptError(f"store {path} is corrupt or not a pysyncer store: {text}")
    if primary in (_SQLITE_BUSY, _SQLITE_LOCKED) or (primary is None and "locked" in lowered):
        return StoreLockedError(f"store {path} is locked by another connection: {text}")
    if primary == _SQLITE_FULL or (primary is None and "full" in lowered):
        return StoreFullError(f"store {path}: disk or size limit full, write rolled back: {text}")
    return StoreError(f"store {path}: {type(exc).__name__}: {text}")


@contextlib.contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        raise
    try:
        conn.execute("COMMIT")
    except sqlite3.Error:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        raise


def lock_file(path: Path) -> int:
    """Take the exclusive ``flock`` on ``<path>.lock``; StoreLockedError if another holds it.

    The kernel releases it when the process dies, so a killed daemon never leaves it.
    """
    lock_path = path.with_name(path.name + ".lock")
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise StoreError(f"cannot create lock file {lock_path}: {exc}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise StoreLockedError(
            f"store {path} is in use by another pysyncer process or store (lock file {lock_path})"
        ) from None
    return fd


def unlock_file(fd: int) -> None:
    os.close(fd)  # closing drops the flock


def set_synchronous(conn: sqlite3.Connection, *, fsync: bool) -> None:
    """Make the next commits fsync the WAL (``synchronous=FULL``) or not (NORMAL: a
    killed process keeps them, a power loss may roll back the newest, as a whole and in
    commit order: WAL recovery keeps a prefix). Outside a transaction only."""
    conn.execute(f"PRAGMA synchronous = {'FULL' if fsync else 'NORMAL'}")


def open_database(path: Path, *, durable: bool, cache_mib: int) -> sqlite3.Connection:
    """A connection to ``path`` in WAL mode, its schema created or migrated; its commits
    fsync (:func:`set_synchronous`) when ``durable``."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA busy_timeout = 2000")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise StoreError(f"store {path}: cannot enable WAL mode (got {mode!r})")
        set_synchronous(conn, fsync=durable)
        conn.execute(f"PRAGMA cache_size = {-1024 * int(cache_mib)}")
        conn.execute(f"PRAGMA wal_autocheckpoint = {WAL_CHECKPOINT_PAGES}")
        conn.execute("PRAGMA temp_store = MEMORY")
        conn.execute("PRAGMA foreign_keys = OFF")
        _migrate(conn, path)
    except BaseException:
        conn.close()
        raise
    return conn


def _migrate(conn: sqlite3.Connection, path: Path) -> None:
    """Create schema v1 in an empty file or bring an older schema up to date."""
    with transaction(conn):
        tables = {
            row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        }
        created = "schema_version" not in tables
        if created:
            if tables:
                raise StoreCorruptError(
                    f"store {path} holds tables {sorted(tables)} but no "
                    "schema_version: not a pysyncer store"
                )
            conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
            # one statement at a time: executescript() would COMMIT mid-transaction
            for statement in _SCHEMA_V1.split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute("INSERT INTO schema_version (version) VALUES (?)", (1,))
            conn.execute(
                "INSERT INTO log_state (id, epoch, last_revision) VALUES (0, ?, 0)",
                (uuid.uuid4().hex,),
            )
        row = conn.execute("SELECT version FROM schema_version").fetchone()
        if row is None:
            raise StoreCorruptError(f"store {path} has an empty schema_version")
        version = int(row[0])
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"store {path} has schema version {version}, newer than "
                f"{SCHEMA_VERSION} known to this pysyncer: upgrade pysyncer"
            )
        while version < SCHEMA_VERSION:
            if not created:  # (a new file is made at v1 and brought up to date at once)
                log.info("store %s: migrating its schema to v%d", path, version + 1)
            for statement in _MIGRATIONS[version].split(";"):
                if statement.strip():
                    conn.execute(statement)
            version += 1
            conn.execute("UPDATE schema_version SET version = ?", (version,))


def close_database(conn: sqlite3.Connection) -> None:
    """Optimise, checkpoint the WAL into the file (best effort) and close."""
    with contextlib.suppress(sqlite3.Error):
        conn.execute("PRAGMA optimize")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
