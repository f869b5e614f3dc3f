# mypy: disable-error-code="import-untyped"
"""A small typed etcd v3 client for the etcd store, on top of ``aetcd``'s gRPC stubs.

Owns the conversation with the etcd cluster: endpoint failover, per-request
deadlines, range reads with limits and fixed revisions, transactions with compares,
leases, and prefix watches; and the translation of gRPC failures into
:class:`~pysyncer.store.base.StoreError` kinds (:class:`EtcdUnavailableError` when no
endpoint answers, :class:`EtcdAuthError` when etcd refuses the login or a permission).
It knows nothing about the store's keys or values.

The channels (TLS, login and token: :class:`~pysyncer.etcdchannels.EtcdSecurity`) come
from :mod:`pysyncer.etcdchannels`; ``aetcd`` supplies the stubs and the generated etcd
messages. Its high-level client is not used: it opens only plain channels and cannot set
range limits, read at a fixed revision or compare a key's lease, which the store needs.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
from aetcd import rpc

from pysyncer.etcdchannels import EtcdChannels, EtcdEndpoint, EtcdSecurity, is_unavailable
from pysyncer.hostport import format_host_port, parse_host_port
from pysyncer.store.base import StoreError, StoreFullError

__all__ = [
    "KV",
    "MAX_BACKOFF",
    "Compare",
    "EtcdAuthError",
    "EtcdClient",
    "EtcdUnavailableError",
    "Op",
    "RangeResult",
    "TxnResult",
    "WatchBatch",
    "parse_endpoints",
]

log = logging.getLogger(__name__)

MAX_BACKOFF = 2.0
"""Longest wait, in seconds, between the store's retries against an unreachable etcd."""


class EtcdUnavailableError(StoreError):
    """No etcd endpoint answered (refused, timed out, or without a leader)."""


class EtcdAuthError(StoreError, PermissionError):
    """etcd refused the login (user, password) or a permission of the logged-in user."""


_NO_USER = "user name is empty"  # etcd's answer to a call without a token when auth is on
_AUTH_CODES = frozenset({grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED})


def parse_endpoints(text: str) -> list[tuple[str, int]]:
    """``HOST:PORT[,HOST:PORT...]`` as pairs; ValueError names the bad part."""
    endpoints: list[tuple[str, int]] = []
    for part in text.split(","):
        try:
            host, port = parse_host_port(part)
        except ValueError:
            raise ValueError(f"etcd endpoint {part.strip()!r} is not HOST:PORT") from None
        if port == 0:
            raise ValueError(f"etcd endpoint {part.strip()!r} is not HOST:PORT")
        endpoints.append((host, port))
    return endpoints


@dataclass(frozen=True, slots=True)
class KV:
    key: bytes
    value: bytes
    create_revision: int
    mod_revision: int
    lease: int


@dataclass(frozen=True, slots=True)
class RangeResult:
    kvs: list[KV]
    more: bool
    count: int
    revision: int


@dataclass(frozen=True, slots=True)
class Compare:
    """One txn compare: ``target`` of ``key`` ``op`` ``value``.

    target: ``"mod"``, ``"create"``, ``"version"``, ``"value"`` or ``"lease"``;
    op: ``"=="``, ``"!="``, ``"<"`` or ``">"``.
    """

    key: bytes
    target: str
    op: str
    value: int | bytes


@dataclass(frozen=True, slots=True)
class Op:
    """One txn operation: ``put`` (with an optional lease), ``delete`` or ``get``."""

    kind: str
    key: bytes
    value: bytes = b""
    lease: int = 0
    range_end: bytes = b""


@dataclass(frozen=True, slots=True)
class TxnResult:
    succeeded: bool
    revision: int
    gets: list[list[KV]] = field(default_factory=list)
    deleted: list[int] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class WatchBatch:
    """Events of one watch response; ``events`` are ``(key, value | None, mod_revision)``."""

    revision: int
    events: list[tuple[bytes, bytes | None, int]]
    compacted: int = 0


_RESULTS = {
    "==": rpc.Compare.EQUAL,
    "!=": rpc.Compare.NOT_EQUAL,
    "<": rpc.Compare.LESS,
    ">": rpc.Compare.GREATER,
}
_TARGETS = {
    "version": (rpc.Compare.VERSION, "version"),
    "create": (rpc.Compare.CREATE, "create_revision"),
    "mod": (rpc.Compare.MOD, "mod_revision"),
    "value": (rpc.Compare.VALUE, "value"),
    "lease": (rpc.Compare.LEASE, "lease"),
}


def _kv(message: Any) -> KV:
    return KV(
        bytes(message.key),
        bytes(message.value),
        int(message.create_revision),
        int(message.mod_revision),
        int(message.lease),
    )


def _compare_message(compare: Compare) -> Any:
    target, attribute = _TARGETS[compare.target]
    message = rpc.Compare(result=_RESULTS[compare.op], target=target, key=compare.key)
    setattr(message, attribute, compare.value)
    return message


def _op_message(op: Op) -> Any:
    if op.kind == "put":
        return rpc.RequestOp(request_put=rpc.PutRequest(key=op.key, value=op.value, lease=op.lease))
    if op.kind == "delete":
        return rpc.RequestOp(
            request_delete_range=rpc.DeleteRangeRequest(key=op.key, range_end=op.range_end)
        )
    if op.kind == "get":
        return rpc.RequestOp(request_range=rpc.RangeRequest(key=op.key, range_end=op.range_end))
    raise ValueError(f"unknown txn operation {op.kind!r}")


class EtcdClient:
    """One logical connection to an etcd cluster, failing over between ``endpoints``.

    Every request has a deadline of ``request_timeout`` seconds per endpoint tried. A
    request that no endpoint answers raises :class:`EtcdUnavailableError`; other gRPC
    failures raise :class:`StoreError` (:class:`StoreFullError` for etcd's space quota).
    """

    def __init__(
        self,
        endpoints: Sequence[tuple[str, int]],
        request_timeout: float = 5.0,
        security: EtcdSecurity | None = None,
    ) -> None:
        if not endpoints:
            raise ValueError("no etcd endpoint given")
        self.endpoints = list(endpoints)
        self.request_timeout = request_timeout
        self.security = security or EtcdSecurity()
        self._channels = EtcdChannels(
            self.endpoints,
            max_message=64 * 1024 * 1024,
            keepalive=True,
            security=self.security,
            login_timeout=request_timeout,
        )
        self._current = 0
        self._closed = False

    @property
    def endpoint_text(self) -> str:
        return ",".join(format_host_port(host, port) for host, port in self.endpoints)

    @property
    def current_endpoint(self) -> str:
        return self._channels.text(self._current)

    async def _client(self, index: int) -> EtcdEndpoint:
        return await self._channels.client(index)

    async def close(self) -> None:
        self._closed = True
        await self._channels.close()

    def _translate(self, exc: grpc.aio.AioRpcError) -> StoreError:
        code = exc.code()
        details = exc.details() or code.name
        where = f"etcd {self.current_endpoint}"
        if is_unavailable(exc):
            return EtcdUnavailableError(f"{where} unavailable: {details}")
        if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
            return StoreFullError(f"{where}: {details}")
        if code in _AUTH_CODES:
            return EtcdAuthError(f"{where}: {code.name}: {details}")
        if _NO_USER in details:
            return EtcdAuthError(
                f"{where}: etcd requires a login ({details}); set {self.security.settings}"
            )
        return StoreError(f"{where}: {code.name}: {details}")

    async def _unary(self, stub_name: str, method: str, request: Any) -> Any:
        """Call ``stub.method(request)`` on the current endpoint, failing over on outage."""
        if self._closed:
            raise EtcdUnavailableError("etcd client is closed")
        last: StoreError | None = None
        for attempt in range(len(self.endpoints)):
            index = (self._current + attempt) % len(self.endpoints)
            client = await self._client(index)
            call = getattr(getattr(client, stub_name), method)
            try:
                response = await call(
                    request, timeout=self.request_timeout, metadata=client.metadata
                )
            except grpc.aio.AioRpcError as exc:
                self._current = index
                error = self._translate(exc)
                if not isinstance(error, EtcdUnavailableError):
                    raise error from None
                last = error
                continue
            self._current = index
            return response
        assert last is not None
        if len(self.endpoints) > 1:
            raise EtcdUnavailableError(
                f"no etcd endpoint of {self.endpoint_text} answered: {last}"
            ) from None
        raise last

    # -- KV ------------------------------------------------------------------------------

    async def range(
        self,
        key: bytes,
        range_end: bytes = b"",
        *,
        limit: int = 0,
        revision: int = 0,
        keys_only: bool = False,
        count_only: bool = False,
    ) -> RangeResult:
        request = rpc.RangeRequest(
            key=key,
            range_end=range_end,
            limit=limit,
            revision=revision,
            keys_only=keys_only,
            count_only=count_only,
        )
        response = await self._unary("kvstub", "Range", request)
        return RangeResult(
            [_kv(kv) for kv in response.kvs],
            bool(response.more),
            int(response.count),
            int(response.header.revision),
        )

    async def get(self, key: bytes) -> KV | None:
        result = await self.range(key)
        return result.kvs[0] if result.kvs else None

    async def txn(
        self, compares: Sequence[Compare], success: Sequence[Op], failure: Sequence[Op] = ()
    ) -> TxnResult:
        request = rpc.TxnRequest(
            compare=[_compare_message(c) for c in compares],
            success=[_op_message(op) for op in success],
            failure=[_op_message(op) for op in failure],
        )
        response = await self._unary("kvstub", "Txn", request)
        gets: list[list[KV]] = []
        deleted: list[int] = []
        for item in response.responses:
            kind = item.WhichOneof("response")
            if kind == "response_range":
                gets.append([_kv(kv) for kv in item.response_range.kvs])
            elif kind == "response_delete_range":
                deleted.append(int(item.response_delete_range.deleted))
        return TxnResult(bool(response.succeeded), int(response.header.revision), gets, deleted)

    # -- leases --------------------------------------------------------------------------

    async def grant(self, ttl: int) -> int:
        response = await self._unary("leasestub", "LeaseGrant", rpc.LeaseGrantRequest(TTL=ttl))
        if response.error:
            raise StoreError(f"etcd {self.current_endpoint}: lease grant: {response.error}")
        return int(response.ID)

    async def keepalive(self, lease_id: int) -> int:
        """Renew a lease once; its remaining TTL (<= 0: the lease is gone)."""
        if self._closed:
            raise EtcdUnavailableError("etcd client is closed")
        client = await self._client(self._current)
        try:
            call = client.leasestub.LeaseKeepAlive(
                iter([rpc.LeaseKeepAliveRequest(ID=lease_id)]),
                timeout=self.request_timeout,
                metadata=client.metadata,
            )
            async for reply in call:
                return int(reply.TTL)
        except grpc.aio.AioRpcError as exc:
            self._current = (self._current + 1) % len(self.endpoints)
            raise self._translate(exc) from None
        raise EtcdUnavailableError(f"etcd {self.current_endpoint}: keep-alive got no reply")

    async def revoke(self, lease_id: int) -> None:
        await self._unary("leasestub", "LeaseRevoke", rpc.LeaseRevokeRequest(ID=lease_id))

    # -- watch ---------------------------------------------------------------------------

    async def watch(
        self, key: bytes, range_end: bytes, start_revision: int
    ) -> AsyncIterator[WatchBatch]:
        """Events of ``[key, range_end)`` from ``start_revision`` on, until an error.

        Raises :class:`EtcdUnavailableError` when the stream breaks (the caller
        reconnects from the last revision it saw); a batch with ``compacted`` set means
        the history from ``start_revision`` is gone and the caller must reload.
        """
        if self._closed:
            raise EtcdUnavailableError("etcd client is closed")
        client = await self._client(self._current)
        call = client.watchstub.Watch(metadata=client.metadata)
        try:
            await call.write(
                rpc.WatchRequest(
                    create_request=rpc.WatchCreateRequest(
                        key=key,
                        range_end=range_end,
                        start_revision=start_revision,
                        progress_notify=True,
                    )
                )
            )
            while True:
                response = await call.read()
                if response is grpc.aio.EOF:
                    raise EtcdUnavailableError(f"etcd {self.current_endpoint}: watch ended")
                if response.compact_revision:
                    yield WatchBatch(int(response.header.revision), [], response.compact_revision)
                    return
                if response.canceled:
                    reason = response.cancel_reason or "cancelled by the server"
                    client.refused(reason)
                    raise EtcdUnavailableError(f"etcd {self.current_endpoint}: watch {reason}")
                events = [
                    (
                        bytes(event.kv.key),
                        None if event.type == rpc.Event.DELETE else bytes(event.kv.value),
                        int(event.kv.mod_revision),
                    )
                    for event in response.events
                ]
                yield WatchBatch(int(response.header.revision), events)
        except grpc.aio.AioRpcError as exc:
            client.refused(exc.details() or "")
            self._current = (self._current + 1) % len(self.endpoints)
            raise self._translate(exc) from None
        finally:
            call.cancel()

    async def wait_ready(self, timeout: float) -> None:
        """Wait until some endpoint answers a read; EtcdUnavailableError naming all of them."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        delay = 0.1
        last: StoreError | None = None
        saved = self.request_timeout
        try:
            while True:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                self.request_timeout = max(0.05, min(saved, remaining))
                try:
                    await self.range(b"\0", count_only=True)
                    return
                except EtcdUnavailableError as exc:
                    last = exc
                except EtcdAuthError as exc:
                    if "PERMISSION_DENIED" in str(exc):
                        return  # logged in and answered: the user may not read the probe key
                    raise
                await asyncio.sleep(min(delay, max(0.0, deadline - loop.time())))
                delay = min(delay * 2, 1.0)
        finally:
            self.request_timeout = saved
        raise EtcdUnavailableError(
            f"no etcd endpoint of {self.endpoint_text} answered within "
            f"{timeout:g} s (last error: {last})"
        )
