# mypy: disable-error-code="import-untyped"
"""The etcd adapter's gRPC conversation: requests with endpoint failover, typed errors.

Owns the aetcd channels of the adapter (through :mod:`pysyncer.etcdchannels`), the
per-request deadline, failover to the next endpoint when one is unavailable, gRPC status
-> :mod:`pysyncer.adapters.base` errors, and the key-value reads and writes, lease grants
and keep-alives the adapter makes. It knows nothing of layouts, copies or the change
feed: it must not import the other etcd adapter modules.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import aetcd
import grpc
from aetcd import rpc

from pysyncer.adapters.base import AdapterError, NotFoundError, UnavailableError
from pysyncer.etcdchannels import EtcdChannels, EtcdSecurity, is_unavailable, prefix_range_end

__all__ = ["EtcdConnection", "KeyValue", "key_value"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class KeyValue:
    key: str
    value: bytes
    lease: int
    mod_revision: int


def key_value(message: Any) -> KeyValue:
    return KeyValue(
        bytes(message.key).decode("utf-8", "replace"),
        bytes(message.value),
        int(message.lease),
        int(message.mod_revision),
    )


class EtcdConnection:
    """aetcd channels to each endpoint; requests fail over on outage."""

    def __init__(
        self,
        endpoints: Sequence[tuple[str, int]],
        timeout: float,
        security: EtcdSecurity | None = None,
    ) -> None:
        self.endpoints = list(endpoints)
        self.timeout = timeout
        self._channels = EtcdChannels(
            self.endpoints,
            max_message=256 * 1024 * 1024,
            keepalive=False,
            security=security,
            login_timeout=timeout,
        )
        self.current = 0
        self.closed = False

    def text(self, index: int | None = None) -> str:
        return self._channels.text(self.current if index is None else index)

    async def client(self, index: int) -> aetcd.Client:
        return await self._channels.client(index)

    async def close(self) -> None:
        self.closed = True
        await self._channels.close()

    def error(self, exc: grpc.aio.AioRpcError, index: int) -> AdapterError:
        code = exc.code()
        details = exc.details() or code.name
        where = f"etcd {self.text(index)}"
        if is_unavailable(exc):
            return UnavailableError(f"{where} unavailable: {details}", code=code.name)
        if "lease not found" in details:
            return NotFoundError(f"{where}: {details}", code=code.name)
        return AdapterError(f"{where}: {code.name}: {details}", code=code.name)

    async def call(self, stub: str, method: str, request: Any) -> Any:
        if self.closed:
            raise UnavailableError("etcd adapter is closed")

        async def unary(client: aetcd.Client) -> Any:
            return await getattr(getattr(client, stub), method)(
                request, timeout=self.timeout, metadata=client.metadata
            )

        return await self._failover(unary)

    async def _failover(self, attempt: Callable[[aetcd.Client], Awaitable[T]]) -> T:
        """``attempt`` on the current endpoint, then on the next ones while each is
        unavailable (or, for a stream, gives no reply); the one that answered is current."""
        failures: list[str] = []
        start = self.current
        for step in range(len(self.endpoints)):
            index = (start + step) % len(self.endpoints)
            client = await self.client(index)
            try:
                answer = await attempt(client)
            except grpc.aio.AioRpcError as exc:
                error = self.error(exc, index)
                if not isinstance(error, UnavailableError):
                    self.current = index
                    raise error from None
                failures.append(str(error))
                continue
            except UnavailableError as exc:  # a stream that ended before its first reply
                failures.append(f"etcd {self.text(index)}: {exc}")
                continue
            self.current = index
            return answer
        raise UnavailableError("no etcd endpoint answered: " + "; ".join(failures))

    async def range(self, prefix: str, *, keys_only: bool = False) -> tuple[list[KeyValue], int]:
        key = prefix.encode()
        request = rpc.RangeRequest(key=key, range_end=prefix_range_end(key), keys_only=keys_only)
        response = await self.call("kvstub", "Range", request)
        return [key_value(kv) for kv in response.kvs], int(response.header.revision)

    async def get(self, key: str) -> KeyValue | None:
        response = await self.call("kvstub", "Range", rpc.RangeRequest(key=key.encode()))
        return key_value(response.kvs[0]) if response.kvs else None

    async def put(self, key: str, value: bytes, lease: int) -> None:
        request = rpc.PutRequest(key=key.encode(), value=value, lease=lease)
        await self.call("kvstub", "Put", request)

    async def delete(self, key: str) -> None:
        await self.call("kvstub", "DeleteRange", rpc.DeleteRangeRequest(key=key.encode()))

    async def grant(self, ttl: int) -> int:
        response = await self.call("leasestub", "LeaseGrant", rpc.LeaseGrantRequest(TTL=ttl))
        if response.error:
            raise AdapterError(f"etcd lease grant: {response.error}")
        return int(response.ID)

    async def keepalive(self, lease_id: int) -> int:
        """Renew a lease once; its TTL after renewal (<= 0: the lease is gone)."""

        async def renew(client: aetcd.Client) -> int:
            call = client.leasestub.LeaseKeepAlive(
                iter([rpc.LeaseKeepAliveRequest(ID=lease_id)]),
                timeout=self.timeout,
                metadata=client.metadata,
            )
            async for reply in call:
                return int(reply.TTL)
            raise UnavailableError("keep-alive got no reply")

        return await self._failover(renew)
