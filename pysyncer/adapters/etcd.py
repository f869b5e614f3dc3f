# mypy: disable-error-code="import-untyped"
"""The etcd adapter: lease-based registries (Kratos, grpc-go naming, go-micro) on aetcd.

Owns the adapter: listing by prefix range, the change feed built on the prefix watch
(from the listing's revision; a compacted revision yields ``ChangeBatch(resync=True)``
and a re-listing), and copies written with a lease per TTL value (one shared lease per
TTL; renewing is one keep-alive per lease plus a keys-only range per service to see
deleted keys; a lost lease makes every copy on it ``not_found``, so the importer
registers it again under a new lease).

The other jobs live beside it: settings and the three key layouts in ``etcd_codec``, the
gRPC conversation (endpoint failover, per-request deadlines, gRPC status -> typed errors)
in ``etcd_conn``, the watch stream in ``etcd_watch``. Like every adapter it must not
touch gossip, the store, RPC or the sync engine.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aetcd import rpc

from pysyncer.adapters._retry import Backoff
from pysyncer.adapters.base import (
    AdapterError,
    BadResponseError,
    ChangeBatch,
    ChangeEvent,
    LocalRef,
    NotFoundError,
    RenewResult,
    Snapshot,
)
from pysyncer.adapters.etcd_codec import EtcdRegistrySettings, Layout, parse_endpoints
from pysyncer.adapters.etcd_conn import EtcdConnection, KeyValue
from pysyncer.adapters.etcd_watch import WatchResponse, watch_prefix
from pysyncer.aiowait import wait_event
from pysyncer.credentials import read_secret
from pysyncer.errors import ConfigError
from pysyncer.etcdchannels import EtcdSecurity
from pysyncer.model import Instance, ServiceKey

__all__ = ["EtcdAdapter", "create"]

log = logging.getLogger(__name__)


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
        self.conn = EtcdConnection(
            parse_endpoints(addresses), self.settings.request_timeout, _security(self.settings)
        )
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
        probe = self.layout.prefix.encode() or b"\x00"  # a key the user may read
        await self.conn.call("kvstub", "Range", rpc.RangeRequest(key=probe, count_only=True))

    async def close(self) -> None:
        self._closed.set()
        await self.conn.close()

    async def _sleep(self, seconds: float) -> None:
        await wait_event(self._closed, seconds)

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

    def _decode(self, kv: KeyValue) -> tuple[Instance, LocalRef] | None:
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
        backoff = Backoff(self.settings.retry_max)
        while not self._closed.is_set():
            try:
                if self._revision is None:
                    await self._list()
                    yield ChangeBatch([], resync=True)  # no listing covers the start point
                    continue
                async for response in watch_prefix(
                    self.conn, self.layout.prefix, self._revision + 1, self._closed
                ):
                    backoff.succeeded()
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
                delay = backoff.failed()
                log.warning("etcd change detection: %s (retrying in %.1fs)", exc, delay)
                await self._sleep(delay)

    def _apply(self, response: WatchResponse) -> list[ChangeEvent]:
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


def _security(settings: EtcdRegistrySettings) -> EtcdSecurity:
    """TLS files and login from the settings; the password file is read here."""
    s = settings
    password = read_secret(s.password_file, "", "etcd adapter: adapter.password-file")
    return EtcdSecurity(
        tls_ca=s.tls_ca,
        tls_cert=s.tls_cert,
        tls_key=s.tls_key,
        tls_server_name=s.tls_server_name,
        user=s.user,
        password=password or s.password,
        settings="adapter.user and adapter.password-file (or PYSYNCER_ADAPTER_PASSWORD)",
    )


def create(addresses: Sequence[str], settings: Mapping[str, Any]) -> EtcdAdapter:
    """Entry-point factory (group ``pysyncer.adapters``, name ``etcd``)."""
    return EtcdAdapter(addresses, EtcdRegistrySettings.from_mapping(settings))
