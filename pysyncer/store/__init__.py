"""Persistent state of a syncer: mapping table, peer cursors, change log, exported state.

Owns the :class:`~pysyncer.store.base.Store` protocol (:mod:`pysyncer.store.base`),
the optional :class:`~pysyncer.store.base.Coordinator` protocol (members, slot table,
fencing of a data center with several syncers) and the backends: the embedded SQLite
store (:mod:`pysyncer.store.sqlite`, ``--store embedded``) and the etcd store
(:mod:`pysyncer.store.etcd`, ``--store etcd://HOST:PORT[,HOST:PORT]``). It must not
touch registries or the sync logic: callers decide what to write, the store makes each
call atomic and durable.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

from pysyncer.errors import ConfigError
from pysyncer.store.base import (
    DIGEST_MAX,
    SLOT_COUNT,
    Coordinator,
    Fence,
    FencedError,
    LogInfo,
    MappingEntry,
    MappingKey,
    PeerCursor,
    SlotTable,
    Store,
    StoreClosedError,
    StoreCorruptError,
    StoreError,
    StoreFullError,
    StoreHealth,
    StoreLockedError,
    iter_mappings,
)
from pysyncer.store.etcd import DEFAULT_PREFIX, EtcdStore
from pysyncer.store.etcd_client import EtcdUnavailableError
from pysyncer.store.sqlite import SqliteStore

__all__ = [
    "DEFAULT_PREFIX",
    "DIGEST_MAX",
    "EMBEDDED_FILE_NAME",
    "SLOT_COUNT",
    "Coordinator",
    "EtcdStore",
    "EtcdUnavailableError",
    "Fence",
    "FencedError",
    "LogInfo",
    "MappingEntry",
    "MappingKey",
    "PeerCursor",
    "SlotTable",
    "SqliteStore",
    "Store",
    "StoreClosedError",
    "StoreCorruptError",
    "StoreError",
    "StoreFullError",
    "StoreHealth",
    "StoreLockedError",
    "create_store",
    "iter_mappings",
]

EMBEDDED_FILE_NAME = "store.db"
"""Name of the embedded store's file inside ``--data-dir``."""


_ETCD_OPTIONS = {
    "open_timeout": float,
    "request_timeout": float,
    "max_queue": int,
    "max_txn_ops": int,
}


def create_store(
    spec: str,
    data_dir: str | os.PathLike[str],
    *,
    dc: str | None = None,
    node: str | None = None,
) -> Store:
    """The (unopened) store that ``--store SPEC`` names.

    ``embedded``: the SQLite file ``<data_dir>/store.db``.
    ``etcd://HOST:PORT[,HOST:PORT][?prefix=/p/&open_timeout=30&request_timeout=5&
    max_queue=100000&max_txn_ops=128]``: an :class:`EtcdStore` (failover across the
    endpoints in order) under ``prefix`` (default ``/pysyncer/{dc}/``; ``{dc}`` is
    replaced by ``dc``, which is then required); ``node`` (default: the host name) names
    this member for its peer cursors.
    """
    if spec == "embedded":
        return SqliteStore(Path(data_dir) / EMBEDDED_FILE_NAME)
    if spec.startswith("etcd://"):
        return _etcd_store(spec, dc, node)
    raise ConfigError(f"store: {spec!r} is neither 'embedded' nor 'etcd://HOST:PORT[,...]'")


def _etcd_store(spec: str, dc: str | None, node: str | None) -> EtcdStore:
    parts = urlsplit(spec)
    if parts.path not in ("", "/") or not parts.netloc:
        raise ConfigError(f"store: {spec!r} is not etcd://HOST:PORT[,HOST:PORT][?options]")
    options: dict[str, float | int] = {}
    prefix = DEFAULT_PREFIX
    for name, value in parse_qsl(parts.query, keep_blank_values=True, strict_parsing=False):
        if name == "prefix":
            prefix = value
            continue
        kind = _ETCD_OPTIONS.get(name)
        if kind is None:
            known = ", ".join(["prefix", *_ETCD_OPTIONS])
            raise ConfigError(f"store: unknown etcd option {name!r} (known: {known})")
        try:
            options[name] = kind(value)
        except ValueError:
            raise ConfigError(f"store: etcd option {name}={value!r} is not a number") from None
    if "{dc}" in prefix:
        if not dc:
            raise ConfigError(
                f"store: the etcd key prefix {prefix!r} needs the data center name (dc)"
            )
        prefix = prefix.replace("{dc}", dc)
    try:
        return EtcdStore(
            parts.netloc,
            prefix=prefix,
            member=node or socket.gethostname(),
            open_timeout=float(options.get("open_timeout", 30.0)),
            request_timeout=float(options.get("request_timeout", 5.0)),
            max_queue=int(options.get("max_queue", 100_000)),
            max_txn_ops=int(options.get("max_txn_ops", 128)),
        )
    except ValueError as exc:
        raise ConfigError(f"store: {spec!r}: {exc}") from None
