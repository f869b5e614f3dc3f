"""The Nacos naming adapter: HTTP open API v1 or the 3.x client API, on aiohttp.

Owns HTTP to Nacos (failover over several addresses, bounded bodies, optional login
token refreshed before it expires), one namespace and group, and the translation between
Nacos instances and :mod:`pysyncer.model` values through :mod:`pysyncer.adapters.fieldmap`.

Identity: Nacos names an instance ``ip#port#cluster#GROUP@@service``; a copy keeps its
canonical instance id (and every field Nacos has no place for) in metadata, and its
:class:`LocalRef` is ``(GROUP@@service, canonical id)``, so a copy keeps its ref when its
endpoint moves. Copies sharing an ``ip:port`` in one service get a cluster of their own.

Liveness: ephemeral instances are kept by beats; copies set the ``preserved.*`` metadata
so Nacos expects a beat every ``health_interval`` and keeps the copy for its TTL. Renewal
sends a *light* beat (v1: no ``beat`` body, so Nacos answers 20404 instead of silently
re-creating the instance) or a v3 ``heartBeat=true`` register (21003 when gone).

Change detection: Nacos has no HTTP watch; the service list and every instance list are
polled every ``poll_interval`` and diffed.

The settings, answer codes, ``preserved.*`` keys and field readers live in ``nacos_codec``.
Like every adapter it must not touch gossip, the store, RPC or the sync engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

from pysyncer.adapters._http import HttpAdapter, HttpClient, Response
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
    diff_listings,
)
from pysyncer.adapters.fieldmap import (
    STATUS_FROM_KIND,
    STATUS_TO_KIND,
    Carried,
    carry,
    restore,
    split_endpoint,
)
from pysyncer.adapters.nacos_codec import (
    DEFAULT_BEAT_MS,
    DEFAULT_TIMEOUT_MS,
    NACOS_CODE_INSTANCE_NOT_FOUND,
    NACOS_CODE_OK,
    NACOS_CODE_RESOURCE_NOT_FOUND,
    NATIVE_PROJECT,
    ORIGINALS_KEY,
    PRESERVED_DELETE,
    PRESERVED_INTERVAL,
    PRESERVED_TIMEOUT,
    NacosSettings,
    NacosWhere,
    native_endpoint,
    read_bool,
    read_ms,
)
from pysyncer.model import Instance, ServiceKey

__all__ = [
    "NACOS_CODE_INSTANCE_NOT_FOUND",
    "NACOS_CODE_RESOURCE_NOT_FOUND",
    "NATIVE_PROJECT",
    "NacosAdapter",
    "NacosSettings",
    "create",
    "diff_listings",
    "native_endpoint",
]

log = logging.getLogger(__name__)


class NacosAdapter(HttpAdapter):
    """A Nacos naming client implementing :class:`pysyncer.adapters.base.Adapter`."""

    name = "nacos"

    def __init__(self, addresses: Sequence[str], settings: NacosSettings | None = None) -> None:
        self.settings = s = settings or NacosSettings()
        self.http = HttpClient.for_settings(
            "nacos",
            addresses,
            s,
            headers={"Accept": "application/json", "User-Agent": "pysyncer-nacos"},
        )
        self._closed = asyncio.Event()
        self._token = ""
        self._token_refresh_at = 0.0
        self._login_lock = asyncio.Lock()
        self.logins = 0
        # service id -> canonical id -> (where, instance) as last seen or written
        self._seen: dict[str, dict[str, tuple[NacosWhere, Instance]]] = {}
        self._last_listing: dict[str, tuple[Instance, LocalRef]] | None = None

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        self.http.open()
        self._closed.clear()
        await self._service_names()  # proves an address answers (and the login works)

    # -- HTTP -----------------------------------------------------------------------------

    async def _login(self, *, force: bool = False) -> None:
        s = self.settings
        if not s.username:
            return
        async with self._login_lock:
            if not force and self._token and time.monotonic() < self._token_refresh_at:
                return
            resp = await self.http.request(
                "POST",
                "/nacos/v1/auth/login",
                data={"username": s.username, "password": s.password},
            )
            if resp.status != 200:
                raise AdapterError(
                    f"nacos login as {s.username!r}: HTTP {resp.status} {resp.text()[:200]}",
                    code=str(resp.status),
                )
            value = resp.json()
            token = value.get("accessToken") if isinstance(value, dict) else None
            ttl = value.get("tokenTtl", 18000) if isinstance(value, dict) else None
            if not isinstance(token, str) or not token or not isinstance(ttl, int | float):
                raise BadResponseError("nacos login: no accessToken/tokenTtl in the answer")
            self._token = token
            self._token_refresh_at = time.monotonic() + max(1.0, float(ttl) * s.token_refresh)
            self.logins += 1

    async def _call(
        self,
        method: str,
        path: str,
        params: Mapping[str, str],
        *,
        form: bool = False,
    ) -> Response:
        """One request with the namespace and token added; 403 re-logs in once."""
        for attempt in range(2):
            await self._login(force=attempt > 0)
            query = {"namespaceId": self.settings.namespace, **params}
            if self._token:
                query["accessToken"] = self._token
            if form:
                resp = await self.http.request(method, path, data=query)
            else:
                resp = await self.http.request(method, path, params=query)
            if resp.status == 403 and self.settings.username and attempt == 0:
                continue
            return resp
        return resp

    @staticmethod
    def _fail(what: str, resp: Response) -> AdapterError:
        detail = resp.text()[:300]
        if resp.status == 404:
            return NotFoundError(f"{what}: HTTP 404 {detail}", code="404")
        if resp.status == 400:
            return ConflictError(f"{what}: HTTP 400 {detail}", code="400")
        return AdapterError(f"{what}: HTTP {resp.status} {detail}", code=str(resp.status))

    def _v3_data(self, what: str, resp: Response) -> Any:
        """The ``data`` of a v2/v3 ``Result`` envelope; typed errors from its ``code``."""
        if resp.status not in (200, 400, 404) or not resp.body.lstrip().startswith(b"{"):
            raise self._fail(what, resp)
        value = resp.json()
        if not isinstance(value, dict) or "code" not in value:
            raise BadResponseError(f"{what}: not a Nacos result envelope")
        code = value.get("code")
        if code == 0:
            return value.get("data")
        message = f"{what}: Nacos code {code}: {value.get('message', '')}"
        if code in (NACOS_CODE_INSTANCE_NOT_FOUND, 20004, 21005, 22001):
            raise NotFoundError(message, code=str(code))
        if isinstance(code, int) and 10000 <= code < 30000:
            raise ConflictError(message, code=str(code))
        raise AdapterError(message, code=str(code))

    def _json_obj(self, what: str, resp: Response) -> dict[str, Any]:
        if resp.status != 200:
            raise self._fail(what, resp)
        value = resp.json()
        if not isinstance(value, dict):
            raise BadResponseError(f"{what}: expected a JSON object")
        return value

    # -- reading --------------------------------------------------------------------------

    async def _service_names(self) -> list[str]:
        """Every service name of the group (all pages)."""
        s = self.settings
        names: list[str] = []
        page = 1
        while True:
            if s.api == "v1":
                resp = await self._call(
                    "GET",
                    "/nacos/v1/ns/service/list",
                    {"groupName": s.group, "pageNo": str(page), "pageSize": str(s.page_size)},
                )
                value = self._json_obj("service list", resp)
                doms, count = value.get("doms"), value.get("count")
            else:
                resp = await self._call(
                    "GET",
                    "/nacos/v3/admin/ns/service/list",
                    {
                        "groupNameParam": s.group,
                        "pageNo": str(page),
                        "pageSize": str(s.page_size),
                        "ignoreEmptyService": "false",
                    },
                )
                data = self._v3_data("service list", resp)
                if not isinstance(data, dict):
                    raise BadResponseError("service list: data is not an object")
                items = data.get("pageItems")
                count = data.get("totalCount")
                if not isinstance(items, list):
                    raise BadResponseError("service list: pageItems is not a list")
                doms = [i.get("name") if isinstance(i, dict) else None for i in items]
            if not isinstance(doms, list) or not isinstance(count, int):
                raise BadResponseError("service list: expected doms[] and count")
            for name in doms:
                if not isinstance(name, str) or not name:
                    raise BadResponseError("service list: a service name is not a string")
                names.append(name.split("@@", 1)[-1])
            if not doms or len(names) >= count or page * s.page_size >= count:
                return sorted(set(names))
            page += 1

    async def _hosts(self, name: str) -> list[dict[str, Any]]:
        s = self.settings
        params = {"serviceName": name, "groupName": s.group, "healthyOnly": "false"}
        if s.api == "v1":
            resp = await self._call("GET", "/nacos/v1/ns/instance/list", params)
            hosts = self._json_obj(f"instances of {name}", resp).get("hosts", [])
        else:
            resp = await self._call("GET", "/nacos/v3/client/ns/instance/list", params)
            hosts = self._v3_data(f"instances of {name}", resp) or []
        if not isinstance(hosts, list) or not all(isinstance(h, dict) for h in hosts):
            raise BadResponseError(f"instances of {name}: hosts is not a list of objects")
        return hosts

    def _service_id(self, name: str) -> str:
        return f"{self.settings.group}@@{name}"

    def _from_host(self, name: str, host: Mapping[str, Any]) -> tuple[Instance, NacosWhere]:
        """A listed Nacos instance as a model instance (copies restored exactly)."""
        ip, port = host.get("ip"), host.get("port")
        cluster = host.get("clusterName") or "DEFAULT"
        if not isinstance(ip, str) or not ip or isinstance(port, bool) or not isinstance(port, int):
            raise BadResponseError(f"instance of {name}: bad ip/port {ip!r}/{port!r}")
        if not isinstance(cluster, str):
            raise BadResponseError(f"instance of {name}: bad clusterName")
        meta = host.get("metadata") or {}
        if not isinstance(meta, dict):
            raise BadResponseError(f"instance of {name}: metadata is not an object")
        props = {str(k): str(v) for k, v in meta.items()}
        originals = props.pop(ORIGINALS_KEY, None)
        if originals is not None:
            with contextlib.suppress(ValueError, TypeError, AttributeError):
                for key, value in dict(json.loads(originals)).items():
                    if value is None:
                        props.pop(str(key), None)
                    else:
                        props[str(key)] = str(value)
        sid = self._service_id(name)
        nacos_id = host.get("instanceId") or f"{ip}#{port}#{cluster}#{sid}"
        state = (
            f"{read_bool(host.get('healthy'), True)},{read_bool(host.get('enabled'), True)}".lower()
        )
        interval_ms = read_ms(meta.get(PRESERVED_INTERVAL), DEFAULT_BEAT_MS)
        timeout_ms = read_ms(meta.get(PRESERVED_TIMEOUT), DEFAULT_TIMEOUT_MS)
        interval = max(1, round(interval_ms / 1000))
        times = max(0, round(timeout_ms / max(interval_ms, 1)) - 1)
        native = Carried(
            service=ServiceKey(self.settings.group, name, "", "", NATIVE_PROJECT),
            instance_id=str(nacos_id),
            host_name=ip,
            endpoints=(native_endpoint(ip, port),),
            status=STATUS_FROM_KIND["nacos"].get(state, "DOWN"),
            properties=props,
            health_interval=interval,
            health_times=times,
        )
        return restore(native), NacosWhere(ip, port, cluster)

    async def _load(self, name: str) -> dict[str, tuple[NacosWhere, Instance]]:
        """One service's instances by canonical id (also refreshes the location cache)."""
        found: dict[str, tuple[NacosWhere, Instance]] = {}
        for host in await self._hosts(name):
            instance, where = self._from_host(name, host)
            if instance.instance_id in found:
                log.warning(
                    "nacos: %s appears twice in %s; keeping one", instance.instance_id, name
                )
                continue
            found[instance.instance_id] = (where, instance)
        self._seen[self._service_id(name)] = found
        return found

    async def _listing(self) -> dict[str, tuple[Instance, LocalRef]]:
        names = await self._service_names()
        semaphore = asyncio.Semaphore(self.settings.concurrency)

        async def one(name: str) -> dict[str, tuple[NacosWhere, Instance]]:
            async with semaphore:
                return await self._load(name)

        loaded = await asyncio.gather(*(one(n) for n in names))
        for sid in set(self._seen) - {self._service_id(n) for n in names}:
            del self._seen[sid]
        listing: dict[str, tuple[Instance, LocalRef]] = {}
        for name, found in zip(names, loaded, strict=True):
            sid = self._service_id(name)
            for iid, (_, instance) in found.items():
                if iid in listing:
                    log.warning("nacos: instance id %s in two services; keeping one", iid)
                    continue
                listing[iid] = (instance, LocalRef(sid, iid))
        return listing

    async def list_instances(self) -> Snapshot:
        listing = await self._listing()
        self._last_listing = listing
        return Snapshot(
            tuple(i for i, _ in listing.values()), {k: r for k, (_, r) in listing.items()}
        )

    async def _locate(
        self, ref: LocalRef, *, fresh: bool = False
    ) -> tuple[NacosWhere, Instance] | None:
        name = self._name_of(ref.service_id)
        known = self._seen.get(ref.service_id)
        if fresh or known is None or ref.instance_id not in known:
            known = await self._load(name)
        return known.get(ref.instance_id)

    def _name_of(self, service_id: str) -> str:
        group, sep, name = service_id.partition("@@")
        if not sep or group != self.settings.group or not name:
            raise NotFoundError(f"nacos: {service_id!r} is not a service of {self.settings.group}")
        return name

    async def get_instance(self, ref: LocalRef) -> Instance:
        found = await self._locate(ref, fresh=True)
        if found is None:
            raise NotFoundError(f"nacos: no instance {ref.instance_id} in {ref.service_id}")
        return found[1]

    # -- writing --------------------------------------------------------------------------

    async def ensure_service(self, service: ServiceKey) -> str:
        # Registering an instance creates its Nacos service: nothing to create ahead.
        if not service.name or "@@" in service.name:
            raise ConflictError(f"nacos: service name {service.name!r} is not allowed")
        return self._service_id(service.name)

    def _metadata(self, instance: Instance, endpoint_native: bool) -> dict[str, str]:
        native = {"name", "endpoints"} if endpoint_native else {"name"}
        if instance.service.app == self.settings.group:
            native.add("app")
        meta = carry(instance, frozenset(native))
        interval = max(1, instance.health_interval) * 1000
        ttl = max(instance.ttl, instance.health_interval, 1) * 1000
        preserved = {
            PRESERVED_INTERVAL: str(interval),
            PRESERVED_TIMEOUT: str(ttl),
            PRESERVED_DELETE: str(ttl),
        }
        meta[ORIGINALS_KEY] = json.dumps(
            {k: instance.properties.get(k) for k in preserved}, sort_keys=True
        )
        meta.update(preserved)
        return meta

    def _where_for(self, sid: str, instance: Instance, ip: str, port: int) -> NacosWhere:
        known = self._seen.get(sid, {})
        old = known.get(instance.instance_id)
        if old is not None and (old[0].ip, old[0].port) == (ip, port):
            return old[0]  # keep its place (and its ref's location) when nothing moved
        base = NacosWhere(ip, port, self.settings.cluster)
        taken = any(w == base and iid != instance.instance_id for iid, (w, _) in known.items())
        if not taken:
            return base
        digest = hashlib.blake2b(instance.instance_id.encode(), digest_size=4).hexdigest()
        return NacosWhere(ip, port, f"{self.settings.cluster}-{digest}")

    def _identity(self, sid: str, where: NacosWhere) -> dict[str, str]:
        return {
            "serviceName": self._name_of(sid),
            "groupName": self.settings.group,
            "ip": where.ip,
            "port": str(where.port),
            "clusterName": where.cluster,
            "ephemeral": str(self.settings.ephemeral).lower(),
        }

    async def register(self, instance: Instance) -> LocalRef:
        sid = await self.ensure_service(instance.service)
        if not instance.endpoints:
            raise ConflictError(f"nacos: instance {instance.instance_id} has no endpoint")
        try:
            _, ip, port = split_endpoint(instance.endpoints[0])
        except ValueError as exc:
            raise ConflictError(f"nacos: instance {instance.instance_id}: {exc}") from None
        endpoint_native = instance.endpoints == (native_endpoint(ip, port),)
        if sid not in self._seen:
            await self._load(self._name_of(sid))
        old = self._seen.get(sid, {}).get(instance.instance_id)
        where = self._where_for(sid, instance, ip, port)
        healthy, _enabled = STATUS_TO_KIND["nacos"][instance.status].split(",")
        params = {
            **self._identity(sid, where),
            "weight": "1.0",
            "healthy": healthy,
            # enabled=false would hide the copy from every client listing (v1 and v3),
            # the adapter's own included; the exact status rides in metadata.
            "enabled": "true",
            "metadata": json.dumps(self._metadata(instance, endpoint_native), sort_keys=True),
        }
        what = f"register {instance.instance_id} in {sid}"
        if self.settings.api == "v1":
            resp = await self._call("POST", "/nacos/v1/ns/instance", params, form=True)
            if resp.status != 200 or resp.text().strip() != "ok":
                raise self._fail(what, resp)
        else:
            params["heartBeat"] = "false"
            resp = await self._call("POST", "/nacos/v3/client/ns/instance", params, form=True)
            self._v3_data(what, resp)
        self._seen.setdefault(sid, {})[instance.instance_id] = (where, instance)
        if old is not None and old[0] != where:
            with contextlib.suppress(NotFoundError):
                await self._deregister(sid, old[0])  # the endpoint moved
        return LocalRef(sid, instance.instance_id)

    async def _deregister(self, sid: str, where: NacosWhere) -> None:
        params = self._identity(sid, where)
        what = f"deregister {where.ip}:{where.port} from {sid}"
        if self.settings.api == "v1":
            resp = await self._call("DELETE", "/nacos/v1/ns/instance", params)
            if resp.status != 200:
                raise self._fail(what, resp)
        else:
            resp = await self._call("DELETE", "/nacos/v3/client/ns/instance", params)
            self._v3_data(what, resp)

    async def unregister(self, ref: LocalRef) -> None:
        try:
            found = await self._locate(ref)
        except NotFoundError:
            return
        if found is None:
            return
        with contextlib.suppress(NotFoundError):
            await self._deregister(ref.service_id, found[0])
        self._seen.get(ref.service_id, {}).pop(ref.instance_id, None)

    async def renew(self, refs: Sequence[LocalRef]) -> list[RenewResult]:
        semaphore = asyncio.Semaphore(self.settings.concurrency)
        unknown = {
            r.service_id for r in refs if r.instance_id not in self._seen.get(r.service_id, {})
        }
        failed: dict[str, AdapterError] = {}

        async def load(sid: str) -> None:
            async with semaphore:
                try:
                    await self._load(self._name_of(sid))
                except AdapterError as exc:
                    failed[sid] = exc

        await asyncio.gather(*(load(sid) for sid in sorted(unknown)))

        async def one(ref: LocalRef) -> RenewResult:
            error = failed.get(ref.service_id)
            if error is not None:
                if isinstance(error, NotFoundError):
                    return RenewResult(ref, "not_found", str(error))
                return RenewResult(ref, "error", str(error))
            found = self._seen.get(ref.service_id, {}).get(ref.instance_id)
            if found is None:
                return RenewResult(ref, "not_found", "not among the service's instances")
            async with semaphore:
                try:
                    return await self._beat(ref, found[0])
                except NotFoundError as exc:
                    return RenewResult(ref, "not_found", str(exc))
                except AdapterError as exc:
                    return RenewResult(ref, "error", str(exc))

        return list(await asyncio.gather(*(one(r) for r in refs)))

    async def _beat(self, ref: LocalRef, where: NacosWhere) -> RenewResult:
        params = self._identity(ref.service_id, where)
        if self.settings.api == "v1":
            # A light beat: without a "beat" body Nacos answers 20404 for an unknown
            # instance (with one it would re-create it from the beat, losing fields).
            params["serviceName"] = ref.service_id
            resp = await self._call("PUT", "/nacos/v1/ns/instance/beat", params)
            value = self._json_obj(f"beat {ref.instance_id}", resp)
            code = value.get("code")
            if code == NACOS_CODE_RESOURCE_NOT_FOUND:
                return RenewResult(ref, "not_found", "Nacos code 20404")
            if code not in (NACOS_CODE_OK, None):
                return RenewResult(ref, "error", f"Nacos beat code {code}")
            return RenewResult(ref, "ok")
        params["heartBeat"] = "true"
        resp = await self._call("POST", "/nacos/v3/client/ns/instance", params, form=True)
        self._v3_data(f"heartbeat {ref.instance_id}", resp)
        return RenewResult(ref, "ok")

    # -- change detection -----------------------------------------------------------------

    async def changes(self) -> AsyncIterator[ChangeBatch]:
        backoff = Backoff(self.settings.retry_max)
        if self._last_listing is None:
            while self._last_listing is None and not self._closed.is_set():
                try:
                    self._last_listing = await self._listing()
                except AdapterError as exc:
                    if self._closed.is_set() or not self.http.started:
                        return
                    delay = backoff.failed()
                    log.warning("nacos listing: %s (retrying in %.1fs)", exc, delay)
                    await self._sleep(delay)
            if self._closed.is_set():
                return
            yield ChangeBatch([], resync=True)  # no listing of the caller covers the start
        while not self._closed.is_set():
            await self._sleep(backoff.delay if backoff.backing_off else self.settings.poll_interval)
            if self._closed.is_set() or not self.http.started:
                return
            try:
                current = await self._listing()
            except AdapterError as exc:
                if self._closed.is_set() or not self.http.started:
                    return
                backoff.failed()  # the next poll waits the longer delay
                log.warning("nacos poll: %s (retrying in %.1fs)", exc, backoff.delay)
                continue
            backoff.succeeded()
            events = diff_listings(self._last_listing or {}, current)
            self._last_listing = current
            if events:
                yield ChangeBatch(events)


def create(addresses: Sequence[str], settings: Mapping[str, Any]) -> NacosAdapter:
    """Entry-point factory (group ``pysyncer.adapters``, name ``nacos``)."""
    return NacosAdapter(addresses, NacosSettings.from_mapping(settings))
