"""Persistent state of a syncer: mapping table, peer cursors, change log, exported state.

Owns the :class:`~pysyncer.store.base.Store` protocol (:mod:`pysyncer.store.base`),
the optional :class:`~pysyncer.store.base.Coordinator` protocol (members, slot table,
fencing of a data center with several syncers) and the backends: the embedded SQLite
store (:mod:`pysyncer.store.sqlite`, ``--store embedded``) and the etcd store
(:mod:`pysyncer.store.etcd`, ``--store etcd://HOST:PORT[,HOST:PORT]``). It must not
touch registries or the sync logic: callers decide what to write, the store makes each
call atomic and durable.

Imports: _core, credentials, errors, etcdchannels, hostport, model, supervisor.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

from pysyncer.credentials import read_secret
from pysyncer.errors import ConfigError
from pysyncer.etcdchannels import EtcdSecurity
from pysyncer.store.base import (
    DIGEST_MAX,
    SLOT_COUNT,
    Coordinator,
    CursorBatch,
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
    apply_batches,
    iter_mappings,
)
from pysyncer.store.etcd import EtcdStore
from pysyncer.store.etcd_client import EtcdUnavailableError
from pysyncer.store.etcd_layout import DEFAULT_PREFIX
from pysyncer.store.sqlite import SqliteStore
from pysyncer.store.url import PASSWORD_ENV, StoreURL, parse_store_url

__all__ = [
    "DEFAULT_PREFIX",
    "DIGEST_MAX",
    "EMBEDDED_FILE_NAME",
    "SLOT_COUNT",
    "Coordinator",
    "CursorBatch",
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
    "StoreURL",
    "apply_batches",
    "create_store",
    "iter_mappings",
    "parse_store_url",
]

EMBEDDED_FILE_NAME = "store.db"
"""Name of the embedded store's file inside ``--data-dir``."""


def create_store(
    url: str | StoreURL,
    data_dir: str | os.PathLike[str],
    *,
    dc: str | None = None,
    node: str | None = None,
) -> Store:
    """The (unopened) store that ``--store URL`` names (:mod:`pysyncer.store.url`).

    ``embedded``: the SQLite file ``<data_dir>/store.db``.
    ``etcd://HOST:PORT[,HOST:PORT][?prefix=/p/&open_timeout=30&request_timeout=5&
    max_queue=100000&max_txn_ops=128]``: an :class:`EtcdStore` (failover across the
    endpoints in order) under ``prefix`` (default ``/pysyncer/{dc}/``; ``{dc}`` is
    replaced by ``dc``, which is then required); ``node`` (default: the host name) names
    this member for its peer cursors; writes acknowledged while etcd is unreachable are
    spooled under ``<data_dir>/etcd-spool/``.
    """
    if isinstance(url, str):
        try:
            url = parse_store_url(url)
        except ValueError as exc:
            raise ConfigError(f"store: {exc}") from None
    if url.kind == "embedded":
        return SqliteStore(Path(data_dir) / EMBEDDED_FILE_NAME)
    return _etcd_store(url, dc, node, Path(data_dir))


def _etcd_store(url: StoreURL, dc: str | None, node: str | None, data_dir: Path) -> EtcdStore:
    prefix = DEFAULT_PREFIX if url.prefix is None else url.prefix
    if "{dc}" in prefix:
        if not dc:
            raise ConfigError(
                f"store: the etcd key prefix {prefix!r} needs the data center name (dc)"
            )
        prefix = prefix.replace("{dc}", dc)
    credentials = url.credentials
    security = EtcdSecurity(
        tls_ca=credentials.tls_ca,
        tls_cert=credentials.tls_cert,
        tls_key=credentials.tls_key,
        tls_server_name=credentials.tls_server_name,
        user=credentials.user,
        password=read_secret(credentials.password_file, PASSWORD_ENV, "store: password_file"),
        settings=credentials.settings,
    )
    try:
        return EtcdStore(
            [(endpoint.host, endpoint.port) for endpoint in url.endpoints],
            prefix=prefix,
            member=node or socket.gethostname(),
            security=security,
            spool_dir=data_dir,
            **url.options,  # type: ignore[arg-type]  # names and types: store.url.ETCD_OPTIONS
        )
    except ValueError as exc:
        raise ConfigError(f"store: {url}: {exc}") from None
