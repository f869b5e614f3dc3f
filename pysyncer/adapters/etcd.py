# mypy: disable-error-code="import-untyped"
"""The etcd adapter: lease-based registries (Kratos, grpc-go naming, go-micro) on aetcd.

Owns the gRPC conversation with etcd (endpoint failover, per-request deadlines, gRPC
status -> typed errors), the three key layouts (setting ``layout``), listing by prefix
range, the change feed (a prefix watch with ``prev_kv`` from the listing's revision;
a compacted revision yields ``ChangeBatch(resync=True)``), and copies written with a
lease per TTL value (one shared lease per TTL; renewing is one keep-alive per lease plus
a keys-only range per service to see deleted keys; a lost lease makes every copy on it
``not_found``, so the importer registers it again under a new lease).

Layouts (values are JSON):

- ``kratos``: ``/microservices/{name}/{id}`` -> ``{id, name, version, metadata, endpoints}``
- ``grpc``: ``{prefix}{target}/{id}`` -> ``{"Op": 0, "Addr": "host:port", "Metadata": {...}}``
- ``gomicro``: ``/micro/registry/{service}/{node id}`` -> ``{name, version, metadata,
  endpoints, nodes: [{id, address, metadata}]}``
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import quote, unquote

import aetcd
import grpc
from aetcd import rpc

from pysyncer.adapters._settings import settings_from_mapping
from pysyncer.adapters.base import (
    AdapterError,
    BadResponseError,
    ChangeBatch,
    ChangeEvent,
    LocalRef,
    NotFoundError,
    RenewResult,
    Snapshot,
    UnavailableError,
)
from pysyncer.adapters.fieldmap import Carried, carry, restore, split_endpoint
from pysyncer.errors import ConfigError
from pysyncer.etcdchannels import UNAVAILABLE_CODES, EtcdChannels
from pysyncer.model import Instance, ServiceKey

__all__ = ["LAYOUTS", "EtcdAdapter", "EtcdRegistrySettings", "create", "parse_endpoints"]

log = logging.getLogger(__name__)

DEFAULT_PREFIX: Final = {"kratos": "/microservices/", "grpc": "", "gomicro": "/micro/registry/"}
LAYOUTS: Final = tuple(DEFAULT_PREFIX)
_DEFAULT_SERVICE: Final = ServiceKey("", "", "")


@dataclass(frozen=True, slots=True)
class EtcdRegistrySettings:
    """Settings of the etcd adapter (``[adapter]`` keys with dashes)."""

    layout: str = "kratos"  # kratos | grpc | gomicro
    prefix: str = ""  # key prefix; empty: the layout's default (grpc: the whole keyspace)
    scheme: str = "grpc"  # endpoint scheme of grpc/gomicro addresses (they have none)
    request_timeout: float = 5.0  # per request and endpoint, seconds
    retry_max: float = 5.0  # largest backoff of the change feed's retries

    @classmethod
    def from_mapping(cls, settings: Mapping[str, Any]) -> EtcdRegistrySettings:
        result = settings_from_mapping(cls, "etcd", settings)
        if result.layout not in LAYOUTS:
            raise ConfigError(
                f"etcd adapter: adapter.layout must be one of {', '.join(LAYOUTS)}, "
                f"got {result.layout!r}"
            )
        if result.request_timeout <= 0 or result.retry_max <= 0:
            raise ConfigError("etcd adapter: adapter.request-timeout and retry-max must be > 0")
        if not result.scheme or "://" in result.scheme:
            raise ConfigError(f"etcd adapter: adapter.scheme is not a scheme: {result.scheme!r}")
        return result

    @property
    def key_prefix(self) -> str:
        return self.prefix or DEFAULT_PREFIX[self.layout]


def parse_endpoints(addresses: Sequence[str]) -> list[tuple[str, int]]:
    """``host:port`` (also ``http://``, ``etcd://``, comma-separated) -> (host, port)."""
    endpoints: list[tuple[str, int]] = []
    for address in addresses:
        for part in str(address).split(","):
            text = part.strip().split("://", 1)[-1].split("/", 1)[0]
            if not text:
                continue
            host, sep, port = text.rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ConfigError(f"etcd adapter: address {part!r} is not host:port")
            endpoints.append((host.strip("[]"), int(port)))
    if not endpoints:
        raise ConfigError("etcd adapter: at least one address host:port is required")
    return endpoints


# -- layouts ---------------------------------------------------------------------------


def _string_map(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError("metadata is not an object")
    return {
        str(k): v if isinstance(v, str) else json.dumps(v, separators=(",", ":"))
        for k, v in value.items()
    }


def _hostport(endpoint: str) -> tuple[str, str] | None:
    """(scheme, ``host:port``) of ``scheme://host:port`` when exactly that, else None."""
    try:
        scheme, host, port = split_endpoint(endpoint)
    except ValueError:
        return None
    text = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return (scheme, text) if endpoint == f"{scheme}://{text}" else None


class Layout:
    """One registry's key and value shapes (see the module docstring)."""

    def __init__(self, name: str, prefix: str, scheme: str) -> None:
        self.name = name
        self.prefix = prefix
        self.scheme = scheme

    def key(self, service_name: str, instance_id: str) -> str:
        if self.name == "gomicro":
            return f"{self.prefix}{service_name.replace('/', '-')}/{instance_id.replace('/', '-')}"
        if self.name == "grpc":
            return f"{self.prefix}{service_name}/{quote(instance_id, safe='')}"
        return f"{self.prefix}{service_name}/{instance_id}"

    def service_prefix(self, service_name: str) -> str:
        return self.key(service_name, "x")[:-1]

    def encode(self, instance: Instance) -> bytes:
        service = instance.service
        native = {"name", "instance_id"}
        if service.environment == _DEFAULT_SERVICE.environment:
            native.add("environment")
        if service.project == _DEFAULT_SERVICE.project:
            native.add("project")
        if service.app == "":
            native.add("app")
        if instance.status == "UP":
            native.add("status")
        if (instance.health_interval, instance.health_times) == (30, 3):
            native.add("health")
        first = _hostport(instance.endpoints[0]) if instance.endpoints else None
        host = first[1].rpartition(":")[0].strip("[]") if first else ""
        if self.name == "kratos":
            native |= {"version", "endpoints"}
            if instance.host_name == host:
                native.add("host_name")
            meta = carry(instance, frozenset(native))
            value: dict[str, Any] = {
                "id": instance.instance_id,
                "name": service.name,
                "version": service.version,
                "metadata": meta,
                "endpoints": list(instance.endpoints),
            }
        else:
            addr = first[1] if first else ""
            if len(instance.endpoints) == 1 and first is not None and first[0] == self.scheme:
                native.add("endpoints")
            if instance.host_name == host:
                native.add("host_name")
            if self.name == "grpc":
                if "/" in instance.instance_id or not instance.instance_id:
                    native.discard("instance_id")
                if service.version == "":
                    native.add("version")
                meta = carry(instance, frozenset(native))
                value = {"Op": 0, "Addr": addr, "Metadata": meta}
            else:
                native.add("version")
                if "/" in instance.instance_id:
                    native.discard("instance_id")
                meta = carry(instance, frozenset(native))
                value = {
                    "name": service.name,
                    "version": service.version,
                    "metadata": {},
                    "endpoints": [],
                    "nodes": [{"id": instance.instance_id, "address": addr, "metadata": meta}],
                }
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()

    def decode(self, key: str, raw: bytes) -> Instance:
        """The instance a key holds; ValueError when it is not one of this layout."""
        try:
            value = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"not JSON: {exc}") from None
        if not isinstance(value, dict):
            raise ValueError("not a JSON object")
        if self.name == "kratos":
            name, iid, version = value.get("name"), value.get("id"), value.get("version", "")
            endpoints = value.get("endpoints") or []
            if not isinstance(endpoints, list) or not all(isinstance(e, str) for e in endpoints):
                raise ValueError("endpoints is not a list of strings")
            props = _string_map(value.get("metadata"))
            first = _hostport(endpoints[0]) if endpoints else None
            native_endpoints = tuple(endpoints)
        elif self.name == "grpc":
            rest = key[len(self.prefix) :]
            name, _, id_text = rest.rpartition("/")
            iid, version = unquote(id_text), ""
            addr = value.get("Addr")
            if value.get("Op", 0) != 0 or not isinstance(addr, str):
                raise ValueError("not a grpc naming endpoint")
            metadata = value.get("Metadata")
            if metadata is None or isinstance(metadata, dict):
                props = _string_map(metadata)
            else:
                props = {"grpc.metadata": json.dumps(metadata, separators=(",", ":"))}
            native_endpoints = (f"{self.scheme}://{addr}",) if addr else ()
            first = (self.scheme, addr) if addr else None
        else:
            name, version = value.get("name"), value.get("version", "")
            nodes = value.get("nodes")
            if not isinstance(nodes, list) or not nodes or not isinstance(nodes[0], dict):
                raise ValueError("no nodes")
            node = nodes[0]
            iid, addr = node.get("id"), node.get("address", "")
            if not isinstance(addr, str):
                raise ValueError("node address is not a string")
            props = {**_string_map(value.get("metadata")), **_string_map(node.get("metadata"))}
            native_endpoints = (f"{self.scheme}://{addr}",) if addr else ()
            first = (self.scheme, addr) if addr else None
        if not isinstance(name, str) or not name or not isinstance(iid, str) or not iid:
            raise ValueError("no service name or instance id")
        if not isinstance(version, str):
            raise ValueError("version is not a string")
        host = first[1].rpartition(":")[0].strip("[]") if first else ""
        return restore(
            Carried(
                service=ServiceKey("", name, version),
                instance_id=iid,
                host_name=host,
                endpoints=native_endpoints,
                status="UP",
                properties=props,
            )
        )


# -- the gRPC connection ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _KV:
    key: str
    value: bytes
    lease: int
    mod_revision: int


def _kv(message: Any) -> _KV:
    return _KV(
        bytes(message.key).decode("utf-8", "replace"),
        bytes(message.value),
        int(message.lease),
        int(message.mod_revision),
    )


def _range_end(prefix: bytes) -> bytes:
    end = bytearray(prefix)
    for i in reversed(range(len(end))):
        if end[i] < 0xFF:
            end[i] += 1
            return bytes(end[: i + 1])
    return b"\x00"  # the whole keyspace


class _Conn:
    """aetcd channels to each endpoint; requests fail over on outage."""

    def __init__(self, endpoints: Sequence[tuple[str, int]], timeout: float) -> None:
        self.endpoints = list(endpoints)
        self.timeout = timeout
        self._channels = EtcdChannels(
            self.endpoints, max_message=256 * 1024 * 1024, keepalive=False
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
        if code in UNAVAILABLE_CODES:
            return UnavailableError(f"{where} unavailable: {details}", code=code.name)
        if "lease not found" in details:
            return NotFoundError(f"{where}: {details}", code=code.name)
        return AdapterError(f"{where}: {code.name}: {details}", code=code.name)

    async def call(self, stub: str, method: str, request: Any) -> Any:
        if self.closed:
            raise UnavailableError("etcd adapter is closed")
        failures: list[str] = []
        start = self.current
        for step in range(len(self.endpoints)):
            index = (start + step) % len(self.endpoints)
            client = await self.client(index)
            try:
                response = await getattr(getattr(client, stub), method)(
                    request, timeout=self.timeout, metadata=client.metadata
                )
            except grpc.aio.AioRpcError as exc:
                error = self.error(exc, index)
                if not isinstance(error, UnavailableError):
                    self.current = index
                    raise error from None
                failures.append(str(error))
                continue
            self.current = index
            return response
        raise UnavailableError("no etcd endpoint answered: " + "; ".join(failures))

    async def range(self, prefix: str, *, keys_only: bool = False) -> tuple[list[_KV], int]:
        key = prefix.encode()
        request = rpc.RangeRequest(key=key, range_end=_range_end(key), keys_only=keys_only)
        response = await self.call("kvstub", "Range", request)
        return [_kv(kv) for kv in response.kvs], int(response.header.revision)

    async def get(self, key: str) -> _KV | None:
        response = await self.call("kvstub", "Range", rpc.RangeRequest(key=key.encode()))
        return _kv(response.kvs[0]) if response.kvs else None

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
        failures: list[str] = []
        start = self.current
        for step in range(len(self.endpoints)):
            index = (start + step) % len(self.endpoints)
            client = await self.client(index)
            try:
                call = client.leasestub.LeaseKeepAlive(
                    iter([rpc.LeaseKeepAliveRequest(ID=lease_id)]),
                    timeout=self.timeout,
                    metadata=client.metadata,
                )
                async for reply in call:
                    self.current = index
                    return int(reply.TTL)
                failures.append(f"etcd {self.text(index)}: keep-alive got no reply")
            except grpc.aio.AioRpcError as exc:
                error = self.error(exc, index)
                if not isinstance(error, UnavailableError):
                    raise error from None
                failures.append(str(error))
        raise UnavailableError("no etcd endpoint answered: " + "; ".join(failures))


@dataclass(frozen=True, slots=True)
class _WatchResponse:
    revision: int  # the feed may resume after this revision (0: no progress)
    events: list[tuple[bool, _KV, _KV | None]]  # (is_delete, kv, prev_kv)
    compacted: int = 0


# -- the adapter ----------------------------------------------------------------------------


@dataclass(slots=True)
class _Copy:
    instance: Instance
    key: str
    ttl: int


class EtcdAdapter:
    """An etcd-based registry as an :class:`~pysyncer.adapters.base.Adapter`."""

    name = "etcd"

    def __init__(
        self, addresses: Sequence[str], settings: EtcdRegistrySettings | None = None
    ) -> None:
        self.settings = settings or EtcdRegistrySettings()
        self.layout = Layout(self.settings.layout, self.settings.key_prefix, self.settings.scheme)
        self.conn = _Conn(parse_endpoints(addresses), self.settings.request_timeout)
        self._closed = asyncio.Event()
        self._copies: dict[str, _Copy] = {}
        self._leases: dict[int, int] = {}  # TTL -> lease id
        self._lease_lock = asyncio.Lock()
        self._known: dict[str, tuple[Instance, LocalRef]] = {}  # key -> last state
        self._keys: dict[LocalRef, str] = {}
        self._revision: int | None = None  # the feed continues after this revision
        self.skipped_keys = 0  # keys under the prefix that are not instances
        self.compactions = 0

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        self._closed.clear()
        self.conn.closed = False
        await self.conn.call("kvstub", "Range", rpc.RangeRequest(key=b"\x00", count_only=True))

    async def close(self) -> None:
        self._closed.set()
        await self.conn.close()

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._closed.wait(), seconds)

    # -- services and copies -----------------------------------------------------------

    async def ensure_service(self, service: ServiceKey) -> str:
        if not service.name:
            raise ConfigError("etcd adapter: an instance needs a service name")
        return service.name  # services exist implicitly as key prefixes

    async def _lease(self, ttl: int) -> int:
        async with self._lease_lock:
            lease = self._leases.get(ttl)
            if lease is None:
                lease = await self.conn.grant(ttl)
                self._leases[ttl] = lease
            return lease

    async def register(self, instance: Instance) -> LocalRef:
        await self.ensure_service(instance.service)
        key = self.layout.key(instance.service.name, instance.instance_id)
        value = self.layout.encode(instance)
        ttl = max(1, instance.ttl)
        old = self._copies.get(instance.instance_id)
        if old is not None and old.key != key:
            await self.conn.delete(old.key)
        for attempt in range(2):
            lease = await self._lease(ttl)
            try:
                await self.conn.put(key, value, lease)
                break
            except NotFoundError:  # the lease expired: grant a new one
                if self._leases.get(ttl) == lease:
                    del self._leases[ttl]
                if attempt:
                    raise
        ref = LocalRef(instance.service.name, instance.instance_id)
        self._copies[instance.instance_id] = _Copy(instance, key, ttl)
        self._keys[ref] = key
        return ref

    def _key_of(self, ref: LocalRef) -> str:
        copy = self._copies.get(ref.instance_id)
        if copy is not None and copy.instance.service.name == ref.service_id:
            return copy.key
        return self._keys.get(ref) or self.layout.key(ref.service_id, ref.instance_id)

    async def get_instance(self, ref: LocalRef) -> Instance:
        key = self._key_of(ref)
        kv = await self.conn.get(key)
        if kv is None:
            raise NotFoundError(f"etcd: no key {key}")
        try:
            instance = self.layout.decode(key, kv.value)
        except ValueError as exc:
            raise BadResponseError(f"etcd key {key}: {exc}") from None
        if instance.instance_id != ref.instance_id:
            raise NotFoundError(f"etcd: key {key} holds {instance.instance_id!r}")
        return instance

    async def unregister(self, ref: LocalRef) -> None:
        key = self._key_of(ref)
        self._copies.pop(ref.instance_id, None)
        self._keys.pop(ref, None)
        await self.conn.delete(key)

    async def renew(self, refs: Sequence[LocalRef]) -> list[RenewResult]:
        """One keep-alive per lease in use, one keys-only range per service."""
        copies = {ref: self._copies.get(ref.instance_id) for ref in refs}
        ttls = {c.ttl for c in copies.values() if c is not None}
        lease_state: dict[int, str] = {}  # ttl -> "ok" | "not_found" | error text

        async def keep(ttl: int) -> None:
            lease = self._leases.get(ttl)
            if lease is None:
                lease_state[ttl] = "not_found"
                return
            try:
                remaining = await self.conn.keepalive(lease)
            except AdapterError as exc:
                lease_state[ttl] = str(exc)
                return
            if remaining > 0:
                lease_state[ttl] = "ok"
            else:
                lease_state[ttl] = "not_found"
                if self._leases.get(ttl) == lease:
                    del self._leases[ttl]

        await asyncio.gather(*(keep(t) for t in ttls))
        services = {ref.service_id for ref, c in copies.items() if c is not None and c.ttl in ttls}
        present: dict[str, dict[str, int] | str] = {}

        async def scan(service: str) -> None:
            try:
                kvs, _ = await self.conn.range(self.layout.service_prefix(service), keys_only=True)
            except AdapterError as exc:
                present[service] = str(exc)
                return
            present[service] = {kv.key: kv.lease for kv in kvs}

        await asyncio.gather(*(scan(s) for s in services))
        results: list[RenewResult] = []
        for ref in refs:
            copy = copies[ref]
            if copy is None or copy.instance.service.name != ref.service_id:
                results.append(RenewResult(ref, "not_found", "not registered by this syncer"))
                continue
            state = lease_state.get(copy.ttl, "not_found")
            keys = present.get(ref.service_id, {})
            if state == "not_found":
                results.append(RenewResult(ref, "not_found", "lease expired"))
            elif state != "ok":
                results.append(RenewResult(ref, "error", state))
            elif isinstance(keys, str):
                results.append(RenewResult(ref, "error", keys))
            elif keys.get(copy.key) != self._leases.get(copy.ttl):
                results.append(RenewResult(ref, "not_found", "key is gone"))
            else:
                results.append(RenewResult(ref, "ok"))
        return results

    # -- listing -----------------------------------------------------------------------

    def _decode(self, kv: _KV) -> tuple[Instance, LocalRef] | None:
        try:
            instance = self.layout.decode(kv.key, kv.value)
        except ValueError:
            self.skipped_keys += 1
            return None
        ref = LocalRef(instance.service.name, instance.instance_id)
        return instance, ref

    async def _list(self) -> dict[str, tuple[Instance, LocalRef]]:
        kvs, revision = await self.conn.range(self.layout.prefix)
        known: dict[str, tuple[Instance, LocalRef]] = {}
        for kv in kvs:
            decoded = self._decode(kv)
            if decoded is not None:
                known[kv.key] = decoded
                self._keys[decoded[1]] = kv.key
        self._known = known
        self._revision = revision
        return known

    async def list_instances(self) -> Snapshot:
        known = await self._list()
        instances = tuple(instance for instance, _ in known.values())
        refs = {ref.instance_id: ref for _, ref in known.values()}
        return Snapshot(instances, refs, str(self._revision))

    # -- change detection --------------------------------------------------------------

    async def changes(self) -> AsyncIterator[ChangeBatch]:
        backoff = 0.2
        while not self._closed.is_set():
            try:
                if self._revision is None:
                    await self._list()
                    yield ChangeBatch([], resync=True)  # no listing covers the start point
                    continue
                async for response in self._watch(self._revision + 1):
                    backoff = 0.2
                    if response.compacted:
                        self.compactions += 1
                        log.warning(
                            "etcd watch: revision %d compacted (now %d): re-listing",
                            self._revision + 1,
                            response.compacted,
                        )
                        self._revision = None
                        await self._list()
                        yield ChangeBatch([], resync=True)
                        break
                    events = self._apply(response)
                    if events:
                        yield ChangeBatch(events)
            except AdapterError as exc:
                if self._closed.is_set():
                    return
                log.warning("etcd change detection: %s (retrying in %.1fs)", exc, backoff)
                await self._sleep(backoff)
                backoff = min(backoff * 2, self.settings.retry_max)

    def _apply(self, response: _WatchResponse) -> list[ChangeEvent]:
        events: list[ChangeEvent] = []
        for is_delete, kv, prev in response.events:
            if is_delete:
                old = self._known.pop(kv.key, None)
                if old is None and prev is not None:
                    old = self._decode(prev)
                if old is not None:
                    events.append(ChangeEvent("delete", old[0], old[1]))
            else:
                decoded = self._decode(kv)
                if decoded is None:
                    old = self._known.pop(kv.key, None)  # overwritten by a non-instance
                    if old is not None:
                        events.append(ChangeEvent("delete", old[0], old[1]))
                    continue
                old = self._known.get(kv.key)
                if old is not None and old[1] != decoded[1]:
                    events.append(ChangeEvent("delete", old[0], old[1]))
                self._known[kv.key] = decoded
                self._keys[decoded[1]] = kv.key
                events.append(ChangeEvent("upsert", decoded[0], decoded[1]))
        self._revision = max(self._revision or 0, response.revision)
        return events

    async def _watch(self, start_revision: int) -> AsyncIterator[_WatchResponse]:
        """Watch responses of the prefix from ``start_revision``; ends at close()."""
        conn = self.conn
        # A cheap read first: it fails over to an endpoint that answers.
        await conn.call("kvstub", "Range", rpc.RangeRequest(key=b"\x00", count_only=True))
        index = conn.current
        client = await conn.client(index)
        call = rpc.WatchStub(client.channel).Watch(metadata=client.metadata)
        key = self.layout.prefix.encode()
        closing = asyncio.ensure_future(self._closed.wait())
        try:
            await call.write(
                rpc.WatchRequest(
                    create_request=rpc.WatchCreateRequest(
                        key=key or b"\x00",
                        range_end=_range_end(key),
                        start_revision=start_revision,
                        prev_kv=True,
                        progress_notify=True,
                    )
                )
            )
            while True:
                read = asyncio.ensure_future(call.read())
                await asyncio.wait({read, closing}, return_when=asyncio.FIRST_COMPLETED)
                if self._closed.is_set() or not read.done():
                    read.cancel()
                    with contextlib.suppress(BaseException):
                        await read
                    return
                if read.cancelled():  # the channel went away under us
                    raise UnavailableError(f"etcd {conn.text(index)}: watch cancelled")
                response = read.result()
                if response is grpc.aio.EOF:
                    raise UnavailableError(f"etcd {conn.text(index)}: watch ended")
                if response.compact_revision:
                    yield _WatchResponse(
                        int(response.header.revision), [], int(response.compact_revision)
                    )
                    return
                if response.canceled:
                    reason = response.cancel_reason or "cancelled by the server"
                    raise UnavailableError(f"etcd {conn.text(index)}: watch {reason}")
                events = [
                    (
                        event.type == rpc.Event.DELETE,
                        _kv(event.kv),
                        _kv(event.prev_kv) if event.HasField("prev_kv") else None,
                    )
                    for event in response.events
                ]
                if events:  # resume after the newest event (catch-up comes in chunks)
                    revision = max(kv.mod_revision for _, kv, _ in events)
                elif response.created:
                    revision = 0
                else:  # a progress notice: nothing up to this revision is missing
                    revision = int(response.header.revision)
                yield _WatchResponse(revision, events)
        except grpc.aio.AioRpcError as exc:
            raise conn.error(exc, index) from None
        finally:
            closing.cancel()
            call.cancel()


def create(addresses: Sequence[str], settings: Mapping[str, Any]) -> EtcdAdapter:
    """Entry-point factory (group ``pysyncer.adapters``, name ``etcd``)."""
    return EtcdAdapter(addresses, EtcdRegistrySettings.from_mapping(settings))
