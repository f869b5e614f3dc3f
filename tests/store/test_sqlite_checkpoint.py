"""The embedded store's WAL is checkpointed by its own thread, not inside a commit."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from pysyncer.store.sqlite import SqliteStore
from pysyncer.store.sqlite_checkpoint import CHECKPOINT_ROWS, Checkpointer
from tests.store.test_store import entry


async def test_rows_written_get_checkpointed_by_the_checkpointer(tmp_path: Path) -> None:
    async with SqliteStore(tmp_path / "store.db", durable=False) as db:
        checkpointer = db._checkpointer
        assert checkpointer is not None
        written = 0
        while written < CHECKPOINT_ROWS + 500:
            await db.put_mappings([entry(n) for n in range(written, written + 500)])
            written += 500
        async with asyncio.timeout(10):
            while checkpointer.checkpoints == 0:
                await asyncio.sleep(0.01)
        assert checkpointer.frames > 0 and checkpointer.failures == 0
        assert await db.count_mappings() == written
    assert db._checkpointer is None  # stopped with the store
    with sqlite3.connect(tmp_path / "store.db") as conn:  # everything reached the file
        assert conn.execute("SELECT count(*) FROM mapping").fetchone()[0] == written


async def test_a_quiet_store_is_not_checkpointed(tmp_path: Path) -> None:
    async with SqliteStore(tmp_path / "store.db", durable=False) as db:
        await db.put_mappings([entry(n) for n in range(10)])
        await asyncio.sleep(0.05)
        assert db._checkpointer is not None and db._checkpointer.checkpoints == 0


def test_stop_ends_the_thread_and_closes_its_connection(tmp_path: Path) -> None:
    path = tmp_path / "plain.db"
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("CREATE TABLE t (x)")
    checkpointer = Checkpointer(path)
    checkpointer.nudge()
    checkpointer.stop()
    assert not checkpointer._thread.is_alive()
    assert checkpointer.failures == 0
