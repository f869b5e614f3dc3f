"""An asyncio ZooKeeper client written from the jute protocol (no third-party client).

Owns the wire format (:mod:`.proto`), the typed errors (:mod:`.errors`), the
session/connection machinery (:mod:`.session`) and the request API on it (:mod:`.client`).
It knows nothing of Dubbo or of the sync engine; :mod:`pysyncer.adapters.zookeeper`
builds the adapter on it.
"""

from __future__ import annotations

from pysyncer.adapters.zk.client import SessionEvent, WatchEvent, ZkClient, parse_hosts
from pysyncer.adapters.zk.errors import (
    AuthFailedError,
    BadVersionError,
    ConnectionLossError,
    NoAuthError,
    NodeExistsError,
    NoNodeError,
    NotEmptyError,
    SessionExpiredError,
    ZkError,
    error_for,
)
from pysyncer.adapters.zk.proto import EventType, MultiOp, Op, Stat

__all__ = [
    "AuthFailedError",
    "BadVersionError",
    "ConnectionLossError",
    "EventType",
    "MultiOp",
    "NoAuthError",
    "NoNodeError",
    "NodeExistsError",
    "NotEmptyError",
    "Op",
    "SessionEvent",
    "SessionExpiredError",
    "Stat",
    "WatchEvent",
    "ZkClient",
    "ZkError",
    "error_for",
    "parse_hosts",
]
