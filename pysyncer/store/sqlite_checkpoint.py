"""Checkpoints of the embedded store's WAL, off the commit path.

Owns :class:`Checkpointer`: one thread and a second connection to the store's file that
copies the write-ahead log into the database file (``PRAGMA wal_checkpoint(PASSIVE)``)
when the store's writer has changed :data:`CHECKPOINT_ROWS` rows since the last one.
SQLite's own autocheckpoint runs inside the commit that crosses its threshold: that commit
fsyncs the database file and writes back every page changed since, and every store call
queued behind it waits. After a 100,000-instance fill that held the exporter's first
commit, and so every change of the data center, for 0.3-0.7 s (``bench_host``'s first
phase: register->visible p99 545 ms, 27 ms with the WAL checkpointed beforehand). A
PASSIVE checkpoint neither waits for the writer nor blocks it, and the ``sqlite3``
module releases the GIL while it runs. The writer keeps SQLite's autocheckpoint at
:data:`~pysyncer.store.sqlite_db.WAL_CHECKPOINT_PAGES` as a backstop, should this thread
fall behind.

It runs no SQL but the checkpoint and never touches the schema, the store's operations,
the event loop or the writer's connection.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from pathlib import Path

from pysyncer.store.sqlite_worker import yield_on_wake

__all__ = ["CHECKPOINT_ROWS", "Checkpointer"]

log = logging.getLogger(__name__)

CHECKPOINT_ROWS = 5_000
"""Rows the writer changes (``Connection.total_changes``) between two checkpoints: about
8,000 WAL pages of small streamed commits (5 mappings, their cursor and change-log rows
dirty ~1.6 pages per row), fewer pages in bulk; the WAL stays near 30 MiB."""


class Checkpointer:
    """A thread checkpointing one SQLite file's WAL each time :meth:`nudge` asks."""

    def __init__(self, path: Path) -> None:
        self._conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._wake = threading.Event()
        self._stopping = False
        self.checkpoints = 0  # completed
        self.frames = 0  # WAL frames copied back in all
        self.failures = 0
        self._thread = threading.Thread(
            target=self._run, name="pysyncer-store-checkpoint", daemon=True
        )
        self._thread.start()

    def nudge(self) -> None:
        """Checkpoint soon (at once when the thread is idle); never waits."""
        self._wake.set()

    def stop(self) -> None:
        """End the thread (a checkpoint under way finishes first) and close its connection."""
        self._stopping = True
        self._wake.set()
        self._thread.join()

    def _run(self) -> None:
        yield_on_wake()
        try:
            while True:
                self._wake.wait()
                self._wake.clear()
                if self._stopping:
                    return
                self._checkpoint()
        finally:
            self._conn.close()

    def _checkpoint(self) -> None:
        try:
            _, _, copied = self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        except sqlite3.Error as exc:  # the writer's backstop checkpoints meanwhile
            self.failures += 1
            if self.failures == 1 or self.failures % 100 == 0:
                log.warning("store WAL checkpoint failed (%d in all): %s", self.failures, exc)
            return
        self.checkpoints += 1
        self.frames += max(0, int(copied))
