"""The Netflix Eureka REST adapter (stock ``/eureka/v2`` and Spring Cloud ``/eureka``).

Owns HTTP to Eureka servers: one keep-alive aiohttp session, several addresses with
failover (rotate on connection errors, timeouts and 5xx; stay on the one that
answered), optional basic auth and TLS, JSON with ``Accept: application/json``, bounded
response bodies, and Eureka's shapes <-> the model through :mod:`.fieldmap` (what
Eureka has no field for travels as ``pysyncer.*`` metadata). It never sets the peer
replication header (``x-netflix-discovery-replication``): its writes are ordinary
client writes that the server replicates to its peers.

Change detection is Eureka's own client protocol: a full ``GET /apps``, then
``GET /apps/delta`` every ``poll-interval``; each delta is applied to the adapter's
view and the view's status-count hashcode (``DOWN_1_UP_3_``) is compared with the
server's ``apps__hashcode``; on a mismatch (changes older than the delta queue's 3
minutes, a restarted server) the adapter fetches everything again and yields the diff
with ``resync=True``. The settings, address parsing, field readers, hashcode and view diff
live in ``eureka_codec``. It must not touch gossip, the store or the sync engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, Final
from urllib.parse import quote

import aiohttp

from pysyncer.adapters._http import HttpAdapter, HttpClient, Response, TlsOptions
from pysyncer.adapters._retry import Backoff
from pysyncer.adapters.base import (
    AdapterError,
    BadResponseError,
    ChangeBatch,
    ConflictError,
    LocalRef,
    NotFoundError,
    RenewResult,
    Snapshot,
    UnavailableError,
)
from pysyncer.adapters.eureka_codec import (
    EurekaAddress,
    EurekaSettings,
    ViewEntry,
    address_of,
    basic_auth,
    diff_views,
    endpoints_of,
    parse_address,
    read_list,
    read_number,
    read_text,
    reconcile_hashcode,
)
from pysyncer.adapters.fieldmap import (
    STATUS_FROM_KIND,
    STATUS_TO_KIND,
    Carried,
    carry,
    restore,
)
from pysyncer.errors import ConfigError
from pysyncer.model import Instance, ServiceKey

__all__ = ["EurekaAdapter", "EurekaSettings", "create", "reconcile_hashcode"]

log = logging.getLogger(__name__)

PATH_CANDIDATES: Final = ("/eureka", "/eureka/v2")
DEFAULT_PROJECT: Final = ServiceKey("", "", "").project
DATA_CENTER_CLASS: Final = "com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo"
_TO_EUREKA: Final = STATUS_TO_KIND["eureka"]
_FROM_EUREKA: Final = STATUS_FROM_KIND["eureka"]
# statuses that survive the Eureka round trip (the others are carried as metadata)
_NATIVE_STATUSES: Final = frozenset(s for s, e in _TO_EUREKA.items() if _FROM_EUREKA.get(e) == s)


# -- JSON shapes ---------------------------------------------------------------------------


class _EurekaHttp(HttpClient):
    """The shared client, each address with its own base path and credentials."""

    def __init__(self, adapter: EurekaAdapter, addresses: Sequence[EurekaAddress]) -> None:
        s = adapter.settings
        super().__init__(
            "eureka",
            [a.origin for a in addresses],
            timeout=s.timeout,
            connect_timeout=s.connect_timeout,
            max_body=s.max_body,
            tls=TlsOptions.of(s),
            headers={"Accept": "application/json"},
            label="Eureka",
            pool_limit=32,
            tls_error_prefix="adapter.tls-*: eureka adapter ",
            defer_tls=True,
        )
        self._adapter = adapter
        self._parsed = list(addresses)
        self._default_auth = basic_auth(s.username, s.password) if s.username else ""

    def target(self, index: int, path: str) -> tuple[str, Mapping[str, str]]:
        address = self._parsed[index]
        auth = address.auth or self._default_auth
        url = address.origin + (address.path or self._adapter.base_path) + path
        return url, ({"Authorization": auth} if auth else {})


class EurekaAdapter(HttpAdapter):
    """A Eureka REST client implementing :class:`pysyncer.adapters.base.Adapter`."""

    name = "eureka"

    def __init__(self, addresses: Sequence[str], settings: EurekaSettings | None = None) -> None:
        if not addresses:
            raise ConfigError("eureka adapter: at least one address is required")
        self.settings = settings or EurekaSettings()
        self._addresses = [parse_address(a) for a in addresses]
        self._path = self.settings.path.rstrip("/")
        self.http = _EurekaHttp(self, self._addresses)
        self._closed = asyncio.Event()
        self._view: dict[str, ViewEntry] | None = None  # key "APP/ID"
        self._dirty: dict[LocalRef, str] = {}  # lastDirtyTimestamp of our registrations
        self._seq = 0
        self.stats = {"full_fetches": 0, "delta_fetches": 0, "hash_mismatches": 0}

    # -- lifecycle --------------------------------------------------------------------

    @property
    def addresses(self) -> list[str]:
        return [a.origin + (a.path or self._path) for a in self._addresses]

    @property
    def current_address(self) -> str:
        """The base URL requests go to first (the last one that answered)."""
        return self.addresses[self.http.current]

    @property
    def base_path(self) -> str:
        """The API base path in use (``/eureka`` or ``/eureka/v2``; probed at start)."""
        return self._path

    async def start(self) -> None:
        self.http.open()
        self._closed.clear()
        if not self._path and any(not a.path for a in self._addresses):
            await self._probe_path()
        else:
            await self._request("GET", "/apps/delta")

    async def _probe_path(self) -> None:
        """Find the API base path: ``/eureka`` (Spring Cloud) or ``/eureka/v2`` (Netflix)."""
        answers: list[str] = []
        for candidate in PATH_CANDIDATES:
            self._path = candidate
            try:
                await self._request("GET", "/apps/delta")
            except NotFoundError:
                answers.append(f"{candidate}/apps: 404")
                continue
            except (BadResponseError, UnavailableError):
                self._path = ""
                raise
            except AdapterError as exc:
                self._path = ""
                raise AdapterError(f"probing {candidate}/apps: {exc}", code=exc.code) from exc
            log.info("eureka API at %s", self.current_address)
            return
        self._path = ""
        raise AdapterError(
            "no Eureka API found (set adapter.path): " + "; ".join(answers), code="404"
        )

    # -- HTTP with failover -----------------------------------------------------------

    async def _request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        body: Any = None,
    ) -> Response:
        """Send to the current address, rotating on connection errors, timeouts and 5xx.

        Returns 2xx answers; raises the typed error for other answers.
        """
        resp = await self.http.request(method, path, params=params, json_body=body)
        if resp.status < 300:
            return resp
        message = f"{method} {path}: HTTP {resp.status}"
        detail = resp.body[:200].decode("utf-8", "replace").strip()
        if detail:
            message += f": {detail}"
        if resp.status == 404:
            raise NotFoundError(message, code="404")
        if resp.status == 409:
            raise ConflictError(message, code="409")
        raise AdapterError(message, code=str(resp.status))

    async def _get_json(self, path: str) -> dict[str, Any]:
        resp = await self._request("GET", path)
        try:
            value = resp.json()
        except BadResponseError as exc:
            raise BadResponseError(f"GET {path}: {exc}") from None
        if not isinstance(value, dict):
            raise BadResponseError(f"GET {path}: expected a JSON object")
        return value

    # -- mapping --------------------------------------------------------------------

    def _read_name(self, app: str) -> str:
        return app.lower() if self.settings.lowercase else app

    def _native_service(self, name: str) -> ServiceKey:
        s = self.settings
        return ServiceKey(s.app, name, s.version, s.environment)

    def _entry(self, raw: Any, app_hint: str = "") -> ViewEntry:
        """A Eureka instance object -> view entry (model instance, ref, Eureka status)."""
        if not isinstance(raw, dict):
            raise BadResponseError("instance: expected an object")
        app = read_text(raw.get("app"), "instance.app", app_hint).upper()
        host_name = read_text(raw.get("hostName"), "instance.hostName", "")
        instance_id = read_text(raw.get("instanceId"), "instance.instanceId", "") or host_name
        if not app or not instance_id:
            raise BadResponseError("instance: no app or instanceId/hostName")
        ip = read_text(raw.get("ipAddr"), "instance.ipAddr", "")
        status = read_text(raw.get("status"), "instance.status", "UNKNOWN")
        metadata = raw.get("metadata") or {}
        if not isinstance(metadata, dict):
            raise BadResponseError("instance.metadata: expected an object")
        properties = {
            str(k): read_text(v, f"instance.metadata.{k}", "")
            for k, v in metadata.items()
            if k != "@class"
        }
        lease = raw.get("leaseInfo") or {}
        if not isinstance(lease, dict):
            raise BadResponseError("instance.leaseInfo: expected an object")
        interval = read_number(lease.get("renewalIntervalInSecs"), "leaseInfo.renewal", 30)
        duration = read_number(lease.get("durationInSecs"), "leaseInfo.duration", 90)
        interval = max(interval, 1)
        times = max(0, -(-duration // interval) - 1)
        carried = Carried(
            service=self._native_service(self._read_name(app)),
            instance_id=instance_id,
            host_name=host_name,
            endpoints=endpoints_of(raw, ip),
            status=_FROM_EUREKA.get(status, "DOWN"),
            properties=properties,
            health_interval=interval,
            health_times=times,
        )
        instance = restore(carried)
        return ViewEntry(instance, LocalRef(app, instance_id), status)

    def _to_eureka(self, instance: Instance, dirty: str) -> tuple[str, dict[str, Any]]:
        """The app name and the ``instance`` object registering a copy."""
        s = self.settings
        service = instance.service
        app = service.name.upper()
        native = {"instance_id"}
        if self._read_name(app) == service.name:
            native.add("name")
        if service.app == s.app:
            native.add("app")
        if service.version == s.version:
            native.add("version")
        if service.environment == s.environment:
            native.add("environment")
        if service.project == DEFAULT_PROJECT:
            native.add("project")
        if instance.host_name:
            native.add("host_name")
        if instance.status in _NATIVE_STATUSES:
            native.add("status")
        if instance.health_interval >= 1 and instance.health_times >= 0:
            native.add("health")
        ip, port, secure = address_of(instance.endpoints)
        ports = {
            "port": {"$": port, "@enabled": port > 0},
            "securePort": {"$": secure, "@enabled": secure > 0},
        }
        if endpoints_of(ports, ip) == tuple(instance.endpoints):
            native.add("endpoints")
        ip = ip or "0.0.0.0"
        host_name = instance.host_name or ip
        interval = max(1, instance.health_interval)
        body = {
            "instanceId": instance.instance_id,
            "hostName": host_name,
            "app": app,
            "ipAddr": ip,
            "vipAddress": service.name.lower(),
            "secureVipAddress": service.name.lower(),
            "status": _TO_EUREKA.get(instance.status, "UNKNOWN"),
            "overriddenstatus": "UNKNOWN",
            "port": {"$": port or 8080, "@enabled": "true" if port else "false"},
            "securePort": {"$": secure or 443, "@enabled": "true" if secure else "false"},
            "countryId": 1,
            "dataCenterInfo": {"@class": DATA_CENTER_CLASS, "name": s.data_center},
            "leaseInfo": {
                "renewalIntervalInSecs": interval,
                "durationInSecs": interval * (max(0, instance.health_times) + 1),
            },
            "metadata": carry(instance, frozenset(native)),
            "lastDirtyTimestamp": dirty,
            "isCoordinatingDiscoveryServer": "false",
        }
        return app, body

    def _applications(self, value: Mapping[str, Any], path: str) -> tuple[list[ViewEntry], str]:
        """Entries of an ``applications`` document and its ``apps__hashcode``."""
        apps = value.get("applications", value)
        if not isinstance(apps, dict):
            raise BadResponseError(f"GET {path}: 'applications' is not an object")
        entries: list[ViewEntry] = []
        for app in read_list(apps.get("application"), "applications.application"):
            if not isinstance(app, dict):
                raise BadResponseError("applications.application[]: expected an object")
            name = read_text(app.get("name"), "application.name", "")
            for raw in read_list(app.get("instance"), "application.instance"):
                entry = self._entry(raw, name)
                action = raw.get("actionType") if isinstance(raw, dict) else None
                if action == "DELETED":
                    entry = ViewEntry(entry.instance, entry.ref, "")
                entries.append(entry)
        hashcode = read_text(apps.get("apps__hashcode"), "apps__hashcode", "")
        return entries, hashcode

    # -- services and copies -----------------------------------------------------------

    async def ensure_service(self, service: ServiceKey) -> str:
        """Eureka applications exist while they have instances: the id is the app name."""
        return service.name.upper()

    def _dirty_timestamp(self) -> str:
        # strictly increasing, so a re-register always wins Eureka's dirty-timestamp check
        self._seq = max(self._seq + 1, int(time.time() * 1000))
        return str(self._seq)

    async def register(self, instance: Instance) -> LocalRef:
        dirty = self._dirty_timestamp()
        app, body = self._to_eureka(instance, dirty)
        await self._request("POST", f"/apps/{quote(app, safe='')}", body={"instance": body})
        ref = LocalRef(app, instance.instance_id)
        self._dirty[ref] = dirty
        return ref

    def _instance_path(self, ref: LocalRef) -> str:
        return f"/apps/{quote(ref.service_id, safe='')}/{quote(ref.instance_id, safe='')}"

    async def get_instance(self, ref: LocalRef) -> Instance:
        value = await self._get_json(self._instance_path(ref))
        return self._entry(value.get("instance", value), ref.service_id).instance

    async def unregister(self, ref: LocalRef) -> None:
        self._dirty.pop(ref, None)
        with contextlib.suppress(NotFoundError):
            await self._request("DELETE", self._instance_path(ref))

    async def renew(self, refs: Sequence[LocalRef]) -> list[RenewResult]:
        semaphore = asyncio.Semaphore(self.settings.renew_concurrency)

        async def one(ref: LocalRef) -> RenewResult:
            params = {"status": "UP"}
            dirty = self._dirty.get(ref)
            if dirty is not None:
                params["lastDirtyTimestamp"] = dirty
            async with semaphore:
                try:
                    await self._request("PUT", self._instance_path(ref), params=params)
                except NotFoundError as exc:
                    return RenewResult(ref, "not_found", str(exc))
                except AdapterError as exc:
                    return RenewResult(ref, "error", str(exc))
            return RenewResult(ref, "ok")

        return list(await asyncio.gather(*(one(r) for r in refs)))

    # -- listing and change detection ----------------------------------------------------

    async def _full_fetch(self) -> dict[str, ViewEntry]:
        self.stats["full_fetches"] += 1
        value = await self._get_json("/apps")
        entries, _ = self._applications(value, "/apps")
        return {f"{e.ref.service_id}/{e.ref.instance_id}": e for e in entries}

    async def list_instances(self) -> Snapshot:
        view = await self._full_fetch()
        self._view = view
        instances = tuple(e.instance for e in view.values())
        refs = {e.instance.instance_id: e.ref for e in view.values()}
        return Snapshot(instances, refs, reconcile_hashcode(e.status for e in view.values()))

    async def changes(self) -> AsyncIterator[ChangeBatch]:
        backoff = Backoff(self.settings.retry_max)
        while not self._closed.is_set():
            try:
                if self._view is None:
                    self._view = await self._full_fetch()
                    yield ChangeBatch([], resync=True)  # no listing covers the start point
                while not self._closed.is_set():
                    await self._sleep(self.settings.poll_interval)
                    if self._closed.is_set():
                        return
                    batch = await self._poll_delta()
                    backoff.succeeded()
                    if batch is not None:
                        yield batch
            except (AdapterError, aiohttp.ClientError) as exc:
                if self._closed.is_set() or not self.http.started:
                    return
                delay = backoff.failed()
                log.warning("eureka change detection: %s (retrying in %.1fs)", exc, delay)
                await self._sleep(delay)

    async def _poll_delta(self) -> ChangeBatch | None:
        """One delta fetch applied to the view; a full fetch when the hashcode differs."""
        self.stats["delta_fetches"] += 1
        value = await self._get_json("/apps/delta")
        entries, server_hash = self._applications(value, "/apps/delta")
        old = self._view if self._view is not None else {}
        view = dict(old)
        for entry in entries:
            key = f"{entry.ref.service_id}/{entry.ref.instance_id}"
            if entry.status:
                view[key] = entry
            else:
                view.pop(key, None)
        resync = False
        if reconcile_hashcode(e.status for e in view.values()) != server_hash:
            self.stats["hash_mismatches"] += 1
            log.info("eureka delta hashcode differs from %r: fetching everything", server_hash)
            view = await self._full_fetch()
            resync = True
        self._view = view
        events = diff_views(old, view)
        if events or resync:
            return ChangeBatch(events, resync=resync)
        return None


def create(addresses: Sequence[str], settings: Mapping[str, Any]) -> EurekaAdapter:
    """Entry-point factory (group ``pysyncer.adapters``, name ``eureka``)."""
    return EurekaAdapter(addresses, EurekaSettings.from_mapping(settings))
