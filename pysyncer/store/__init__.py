"""Persistent state of a syncer: mapping table, peer cursors, change log, exported state.

Owns the :class:`~pysyncer.store.base.Store` protocol (:mod:`pysyncer.store.base`) and
its backends: the embedded SQLite store (:mod:`pysyncer.store.sqlite`, ``--store
embedded``) and, later, etcd. It must not touch registries, the network or the sync
logic: callers decide what to write, the store makes each call atomic and durable.
"""

from __future__ import annotations

import os
from pathlib import Path

from pysyncer.errors import ConfigError, NotImplementedYetError
from pysyncer.store.base import (
    DIGEST_MAX,
    SLOT_COUNT,
    LogInfo,
    MappingEntry,
    MappingKey,
    PeerCursor,
    Store,
    StoreClosedError,
    StoreCorruptError,
    StoreError,
    StoreFullError,
    StoreLockedError,
    iter_mappings,
)
from pysyncer.store.sqlite import SqliteStore

__all__ = [
    "DIGEST_MAX",
    "EMBEDDED_FILE_NAME",
    "SLOT_COUNT",
    "LogInfo",
    "MappingEntry",
    "MappingKey",
    "PeerCursor",
    "SqliteStore",
    "Store",
    "StoreClosedError",
    "StoreCorruptError",
    "StoreError",
    "StoreFullError",
    "StoreLockedError",
    "create_store",
    "iter_mappings",
]

EMBEDDED_FILE_NAME = "store.db"
"""Name of the embedded store's file inside ``--data-dir``."""


def create_store(spec: str, data_dir: str | os.PathLike[str]) -> Store:
    """The (unopened) store that ``--store SPEC`` names: ``embedded`` or ``etcd://...``."""
    if spec == "embedded":
        return SqliteStore(Path(data_dir) / EMBEDDED_FILE_NAME)
    if spec.startswith("etcd://"):
        raise NotImplementedYetError("the etcd store backend is not built yet; use 'embedded'")
    raise ConfigError(f"store: {spec!r} is neither 'embedded' nor 'etcd://HOST:PORT[,...]'")
