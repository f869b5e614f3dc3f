"""Syncer-to-syncer RPC: the ``pysyncer.sync.v1.Sync`` gRPC service, server and client.

Owns the wire: ``sync.proto`` and its generated stubs (``sync_pb2*``, regenerate with
``python -m pysyncer.rpc._generate``), the record payload codec, TLS credentials, the
server (over a :class:`~pysyncer.rpc.server.SyncSource` the exporter provides) and the
client the peers module uses. It must not touch the store, registries or gossip, and it
holds no sync state: revisions, cursors and apply belong to :mod:`pysyncer.sync`.
See docs/rpc.md.

Imports: _core, errors, hostport, model.
"""

from __future__ import annotations

from pysyncer.rpc.client import Health, SyncClient
from pysyncer.rpc.codec import Digests, PeerBatch, SlotRecords
from pysyncer.rpc.errors import (
    CallRefusedError,
    DeadlineExceededError,
    OversizedPayloadError,
    PayloadError,
    PermissionDeniedError,
    RemoteError,
    RequestRejectedError,
    RpcError,
    UnavailableError,
)
from pysyncer.rpc.server import ServerStats, SyncServer, SyncSource
from pysyncer.rpc.tls import TlsConfig

__all__ = [
    "CallRefusedError",
    "DeadlineExceededError",
    "Digests",
    "Health",
    "OversizedPayloadError",
    "PayloadError",
    "PeerBatch",
    "PermissionDeniedError",
    "RemoteError",
    "RequestRejectedError",
    "RpcError",
    "ServerStats",
    "SlotRecords",
    "SyncClient",
    "SyncServer",
    "SyncSource",
    "TlsConfig",
    "UnavailableError",
]
