# mypy: disable-error-code="import-untyped"
"""gRPC channels to the endpoints of one etcd cluster, shared by the etcd store and adapter.

Owns what both etcd users need before any etcd semantics: one lazily connected ``aetcd``
client per endpoint with fast-reconnect channel options, closing them all, the text
form of an endpoint, and which gRPC status codes mean "this endpoint is unavailable,
try the next one". Request logic, error types and failover policy stay with each user:
the store (:mod:`pysyncer.store.etcd_client`) and the registry adapter
(:mod:`pysyncer.adapters.etcd`) must not depend on each other.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any, Final

import aetcd
import grpc

__all__ = ["UNAVAILABLE_CODES", "EtcdChannels"]

UNAVAILABLE_CODES: Final = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.UNKNOWN,
    }
)


def channel_options(max_message: int, keepalive: bool) -> dict[str, Any]:
    """Reconnect quickly after an outage (gRPC's default backoff grows to 120 s); with
    ``keepalive``, ping an idle channel so a dead peer is noticed within 15 s."""
    options: dict[str, Any] = {
        "grpc.initial_reconnect_backoff_ms": 200,
        "grpc.min_reconnect_backoff_ms": 200,
        "grpc.max_reconnect_backoff_ms": 2000,
        "grpc.max_receive_message_length": max_message,
    }
    if keepalive:
        options["grpc.keepalive_time_ms"] = 10_000
        options["grpc.keepalive_timeout_ms"] = 5_000
    return options


class EtcdChannels:
    """One ``aetcd`` client per endpoint, connected on first use."""

    def __init__(
        self, endpoints: Sequence[tuple[str, int]], *, max_message: int, keepalive: bool
    ) -> None:
        self.endpoints = list(endpoints)
        self._options = channel_options(max_message, keepalive)
        self._clients: list[aetcd.Client | None] = [None] * len(self.endpoints)

    def text(self, index: int) -> str:
        host, port = self.endpoints[index]
        return f"{host}:{port}"

    async def client(self, index: int) -> aetcd.Client:
        client = self._clients[index]
        if client is None:
            host, port = self.endpoints[index]
            client = aetcd.Client(host, port, options=self._options)
            await client.connect()
            self._clients[index] = client
        return client

    async def close(self) -> None:
        """Close every connected client; closing never fails."""
        clients, self._clients = self._clients, [None] * len(self.endpoints)
        for client in clients:
            if client is not None:
                with contextlib.suppress(Exception):
                    await client.close()
