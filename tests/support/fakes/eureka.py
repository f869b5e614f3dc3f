"""An in-process Eureka server fake (aiohttp), written from Eureka's documented REST API.

What it serves, under both ``/eureka`` (Spring Cloud) and ``/eureka/v2`` (Netflix):
register ``POST /apps/{APP}`` (204; the app upper-cased; a registration with an older
``lastDirtyTimestamp`` than the stored one keeps the stored data), renew
``PUT /apps/{APP}/{ID}?status=&lastDirtyTimestamp=`` (404 when unknown or when the
client's dirty timestamp is newer than the server's copy), cancel ``DELETE`` (404 when
unknown), status override ``PUT|DELETE .../{ID}/status?value=``, metadata merge
``PUT .../{ID}/metadata?k=v``, reads ``GET /apps``, ``/apps/delta``, ``/apps/{APP}``,
``/apps/{APP}/{ID}``, ``/instances/{ID}``, in XML by default and JSON when ``Accept``
names ``json``. The delta is the recently-changed queue (3 minutes retention) with
``actionType`` per instance (the last change of an instance wins), ``versions__delta``
counts changes and ``apps__hashcode`` is the status count string (``DOWN_1_UP_3_``).
Leases expire as Eureka's ``Lease.isExpired`` says (``durationInSecs`` after
registration; a renewal sets ``lastUpdate = now + duration``, so an expiry after a
renewal takes twice the duration) when :meth:`EurekaFake.evict` runs (an eviction task
every ``eviction_interval`` s, or called by a test); the clock is injectable.

Not modelled: peer replication, self-preservation, the 30 s read-only response cache
(answers are always current), regions and vips. ``quirks=True`` renders lists of one
element as a bare object and ports as ``{"$": "8080"}`` strings, like old XStream JSON.
:func:`app_registration` is the body an application's own Eureka client registers with.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from xml.etree import ElementTree

import aiohttp
from aiohttp import web

from pysyncer.adapters.base import LocalRef
from pysyncer.adapters.eureka import reconcile_hashcode
from pysyncer.model import ServiceKey
from pysyncer.testing.harness import AppInstance

__all__ = ["EurekaFake", "EurekaHarness", "app_registration"]

JSON = dict[str, Any]
STATUSES = ("UP", "DOWN", "STARTING", "OUT_OF_SERVICE", "UNKNOWN")
RETENTION = 180.0  # retentionTimeInMSInDeltaQueue
DELTA_CLEANUP = 30.0  # deltaRetentionTimerIntervalInMs
DEFAULT_DURATION = 90


@dataclass(slots=True)
class _Lease:
    instance: JSON
    duration: float
    registered: float
    last_update: float

    def expired(self, now: float) -> bool:
        return now > self.last_update + self.duration


@dataclass(slots=True)
class _Change:
    at: float
    action: str
    instance: JSON


@dataclass(slots=True)
class _Counters:
    requests: dict[str, int] = field(default_factory=dict)

    def hit(self, name: str) -> None:
        self.requests[name] = self.requests.get(name, 0) + 1


def app_registration(
    instance_id: str,
    app: str,
    host_name: str,
    ip: str,
    port: int,
    *,
    vip: str,
    metadata: Mapping[str, str],
) -> JSON:
    """The body an application's Eureka client (Spring-Cloud-like, JSON) POSTs to
    ``/apps/{app}`` to register itself: UP, plain port only, the default lease."""
    return {
        "instance": {
            "instanceId": instance_id,
            "hostName": host_name,
            "app": app,
            "ipAddr": ip,
            "vipAddress": vip,
            "status": "UP",
            "port": {"$": port, "@enabled": "true"},
            "securePort": {"$": 443, "@enabled": "false"},
            "dataCenterInfo": {
                "@class": "com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo",
                "name": "MyOwn",
            },
            "leaseInfo": {"renewalIntervalInSecs": 30, "durationInSecs": DEFAULT_DURATION},
            "metadata": dict(metadata),
            "lastDirtyTimestamp": str(int(time.time() * 1000)),
        }
    }


class EurekaFake:
    """A Eureka server on 127.0.0.1 (``port=0``: a free port); ``url`` once started."""

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.time,
        paths: tuple[str, ...] = ("/eureka", "/eureka/v2"),
        eviction_interval: float | None = 60.0,
        quirks: bool = False,
        credentials: tuple[str, str] | None = None,
        port: int = 0,
    ) -> None:
        self.clock = clock
        self.paths = paths
        self.eviction_interval = eviction_interval
        self.quirks = quirks
        self.credentials = credentials
        self.port = port
        self.apps: dict[str, dict[str, _Lease]] = {}
        self.overrides: dict[str, str] = {}  # instance id -> overridden status
        self.queue: list[_Change] = []
        self.version = 0
        self.counters = _Counters()
        self.replication_requests = 0  # writes carrying the peer replication header
        self.delta_hash_override: str | None = None  # a test's "wrong" apps__hashcode
        self._runner: web.AppRunner | None = None
        self._tasks: list[asyncio.Task[None]] = []

    # -- lifecycle -----------------------------------------------------------------

    @property
    def url(self) -> str:
        """The server root (``http://127.0.0.1:PORT``): append a base path."""
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> EurekaFake:
        app = web.Application(middlewares=[self._auth])
        for base in self.paths:
            r = app.router
            r.add_get(base + "/apps", self._get_apps)
            r.add_get(base + "/apps/", self._get_apps)
            r.add_get(base + "/apps/delta", self._get_delta)
            r.add_post(base + "/apps/{app}", self._register)
            r.add_get(base + "/apps/{app}", self._get_app)
            r.add_get(base + "/apps/{app}/{id}", self._get_instance)
            r.add_put(base + "/apps/{app}/{id}", self._renew)
            r.add_delete(base + "/apps/{app}/{id}", self._cancel)
            r.add_put(base + "/apps/{app}/{id}/status", self._put_status)
            r.add_delete(base + "/apps/{app}/{id}/status", self._delete_status)
            r.add_put(base + "/apps/{app}/{id}/metadata", self._put_metadata)
            r.add_get(base + "/instances/{id}", self._get_by_id)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", self.port)
        await site.start()
        self._runner = runner
        self.port = int(runner.addresses[0][1])
        if self.eviction_interval is not None:
            self._tasks.append(asyncio.create_task(self._every(self.eviction_interval, self.evict)))
        self._tasks.append(asyncio.create_task(self._every(DELTA_CLEANUP, self.clean_queue)))
        return self

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def __aenter__(self) -> EurekaFake:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @staticmethod
    async def _every(interval: float, action: Callable[[], object]) -> None:
        while True:
            await asyncio.sleep(interval)
            action()

    # -- registry rules ------------------------------------------------------------

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

    def _record(self, action: str, instance: JSON) -> None:
        self.version += 1
        snapshot = copy.deepcopy(instance)
        snapshot["actionType"] = action
        snapshot["lastUpdatedTimestamp"] = str(self._now_ms())
        self.queue.append(_Change(self.clock(), action, snapshot))

    def clean_queue(self) -> None:
        """Drop delta entries older than the retention time (Eureka's 30 s timer task)."""
        horizon = self.clock() - RETENTION
        self.queue = [c for c in self.queue if c.at >= horizon]

    def evict(self) -> int:
        """Remove every expired lease (Eureka's EvictionTask); returns how many."""
        now = self.clock()
        gone = [
            (app, iid)
            for app, leases in self.apps.items()
            for iid, lease in leases.items()
            if lease.expired(now)
        ]
        for app, iid in gone:
            self._remove(app, iid)
        return len(gone)

    def _remove(self, app: str, iid: str) -> _Lease | None:
        leases = self.apps.get(app, {})
        lease = leases.pop(iid, None)
        if lease is None:
            return None
        if not leases:
            self.apps.pop(app, None)
        self.overrides.pop(iid, None)
        self._record("DELETED", lease.instance)
        return lease

    def lease(self, app: str, iid: str) -> _Lease | None:
        return self.apps.get(app.upper(), {}).get(iid)

    def instances(self) -> list[JSON]:
        return [lease.instance for leases in self.apps.values() for lease in leases.values()]

    def hashcode(self) -> str:
        return reconcile_hashcode(str(i.get("status", "UNKNOWN")) for i in self.instances())

    def register(self, app: str, body: JSON) -> None:
        """``POST /apps/{APP}``: validate, store (dirty-timestamp rule), queue ADDED."""
        app = app.upper()
        for key in ("hostName", "ipAddr", "dataCenterInfo"):
            if not body.get(key):
                raise web.HTTPBadRequest(text=f"Missing {key}")
        instance = copy.deepcopy(body)
        instance["app"] = app
        iid = str(instance.get("instanceId") or instance["hostName"])
        instance["instanceId"] = iid
        status = str(instance.get("status") or "UP")
        if status not in STATUSES:
            status = "UNKNOWN"
        instance["status"] = self.overrides.get(iid, status)
        instance["overriddenstatus"] = self.overrides.get(iid, "UNKNOWN")
        dirty = int(str(instance.get("lastDirtyTimestamp") or self._now_ms()))
        instance["lastDirtyTimestamp"] = str(dirty)
        existing = self.apps.get(app, {}).get(iid)
        if existing is not None and int(existing.instance["lastDirtyTimestamp"]) > dirty:
            instance = existing.instance  # Eureka keeps the newer data
        lease_info = instance.get("leaseInfo") or {}
        duration = int(lease_info.get("durationInSecs") or DEFAULT_DURATION)
        if duration <= 0:
            duration = DEFAULT_DURATION
        now = self.clock()
        registered = existing.registered if existing is not None else now
        instance["leaseInfo"] = {
            "renewalIntervalInSecs": int(lease_info.get("renewalIntervalInSecs") or 30),
            "durationInSecs": duration,
            "registrationTimestamp": int(registered * 1000),
            "lastRenewalTimestamp": int(now * 1000),
            "evictionTimestamp": 0,
            "serviceUpTimestamp": int(registered * 1000),
        }
        self.apps.setdefault(app, {})[iid] = _Lease(instance, duration, registered, now)
        self._record("ADDED", instance)

    # -- HTTP ------------------------------------------------------------------------

    @web.middleware
    async def _auth(
        self, request: web.Request, handler: Callable[[web.Request], Any]
    ) -> web.StreamResponse:
        self.counters.hit(f"{request.method} {request.match_info.route.resource}")
        if "x-netflix-discovery-replication" in request.headers:
            self.replication_requests += 1
        if self.credentials is not None:
            expected = "Basic " + _b64(f"{self.credentials[0]}:{self.credentials[1]}")
            if request.headers.get("Authorization") != expected:
                raise web.HTTPUnauthorized(text="unauthorized")
        response: web.StreamResponse = await handler(request)
        return response

    def _render(self, request: web.Request, root: str, value: JSON) -> web.Response:
        if "json" in request.headers.get("Accept", ""):
            body = {root: self._json_shape(value)}
            return web.json_response(body)
        return web.Response(body=_xml(root, value), content_type="application/xml", charset="utf-8")

    def _json_shape(self, value: Any) -> Any:
        """Jackson-style JSON (``quirks``: one-element lists as objects, ports as text)."""
        if isinstance(value, list):
            items = [self._json_shape(v) for v in value]
            return items[0] if self.quirks and len(items) == 1 else items
        if isinstance(value, dict):
            out = {k: self._json_shape(v) for k, v in value.items()}
            if self.quirks and "$" in out:
                out["$"] = str(out["$"])
            if "metadata" in out and out["metadata"] == {}:
                out["metadata"] = {"@class": "java.util.Collections$EmptyMap"}
            return out
        return value

    def _applications(self, instances: list[JSON]) -> JSON:
        by_app: dict[str, list[JSON]] = {}
        for instance in instances:
            by_app.setdefault(str(instance["app"]), []).append(instance)
        return {
            "versions__delta": str(self.version),
            "apps__hashcode": self.hashcode(),
            "application": [{"name": app, "instance": items} for app, items in by_app.items()],
        }

    async def _get_apps(self, request: web.Request) -> web.Response:
        return self._render(request, "applications", self._applications(self.instances()))

    async def _get_delta(self, request: web.Request) -> web.Response:
        self.clean_queue()
        latest: dict[tuple[str, str], JSON] = {}
        for change in self.queue:  # the last change of an instance wins
            latest[(change.instance["app"], change.instance["instanceId"])] = change.instance
        value = self._applications(list(latest.values()))
        if self.delta_hash_override is not None:
            value["apps__hashcode"] = self.delta_hash_override
        return self._render(request, "applications", value)

    async def _get_app(self, request: web.Request) -> web.Response:
        app = request.match_info["app"].upper()
        leases = self.apps.get(app)
        if not leases:
            raise web.HTTPNotFound()
        value = {"name": app, "instance": [lease.instance for lease in leases.values()]}
        return self._render(request, "application", value)

    def _lease_or_404(self, request: web.Request) -> _Lease:
        lease = self.lease(request.match_info["app"], request.match_info["id"])
        if lease is None:
            raise web.HTTPNotFound()
        return lease

    async def _get_instance(self, request: web.Request) -> web.Response:
        return self._render(request, "instance", self._lease_or_404(request).instance)

    async def _get_by_id(self, request: web.Request) -> web.Response:
        for instance in self.instances():
            if instance["instanceId"] == request.match_info["id"]:
                return self._render(request, "instance", instance)
        raise web.HTTPNotFound()

    async def _register(self, request: web.Request) -> web.Response:
        try:
            body = json.loads(await request.read())
        except ValueError:
            raise web.HTTPBadRequest(text="not JSON") from None
        instance = body.get("instance") if isinstance(body, dict) else None
        if not isinstance(instance, dict):
            raise web.HTTPBadRequest(text="no instance")
        self.register(request.match_info["app"], instance)
        return web.Response(status=204)

    async def _renew(self, request: web.Request) -> web.Response:
        lease = self._lease_or_404(request)
        now = self.clock()
        lease.last_update = now + lease.duration  # Eureka's Lease.renew()
        lease.instance["leaseInfo"]["lastRenewalTimestamp"] = int(now * 1000)
        dirty = request.query.get("lastDirtyTimestamp")
        if dirty is not None:
            try:
                client_dirty = int(dirty)
            except ValueError:
                raise web.HTTPBadRequest() from None
            if client_dirty > int(lease.instance["lastDirtyTimestamp"]):
                raise web.HTTPNotFound()  # the client has newer data: re-register
        return web.Response(status=200)

    async def _cancel(self, request: web.Request) -> web.Response:
        app, iid = request.match_info["app"].upper(), request.match_info["id"]
        if self._remove(app, iid) is None:
            raise web.HTTPNotFound()
        return web.Response(status=200)

    async def _put_status(self, request: web.Request) -> web.Response:
        lease = self._lease_or_404(request)
        value = request.query.get("value", "")
        if value not in STATUSES:
            raise web.HTTPBadRequest(text=f"bad status {value!r}")
        iid = lease.instance["instanceId"]
        self.overrides[iid] = value
        lease.instance["status"] = value
        lease.instance["overriddenstatus"] = value
        client_dirty = request.query.get("lastDirtyTimestamp", "")
        if client_dirty.isdigit() and int(client_dirty) > int(lease.instance["lastDirtyTimestamp"]):
            lease.instance["lastDirtyTimestamp"] = client_dirty
        self._record("MODIFIED", lease.instance)
        return web.Response(status=200)

    async def _delete_status(self, request: web.Request) -> web.Response:
        lease = self._lease_or_404(request)
        value = request.query.get("value", "UNKNOWN")
        iid = lease.instance["instanceId"]
        self.overrides.pop(iid, None)
        lease.instance["status"] = value if value in STATUSES else "UNKNOWN"
        lease.instance["overriddenstatus"] = "UNKNOWN"
        self._record("MODIFIED", lease.instance)
        return web.Response(status=200)

    async def _put_metadata(self, request: web.Request) -> web.Response:
        lease = self._lease_or_404(request)
        metadata = dict(lease.instance.get("metadata") or {})
        metadata.update(request.query)
        lease.instance["metadata"] = metadata
        self._record("MODIFIED", lease.instance)
        return web.Response(status=200)


class EurekaHarness:
    """:class:`~pysyncer.testing.harness.RegistryHarness` on :class:`EurekaFake`.

    The application side is a plain aiohttp Eureka client (JSON, like Spring Cloud's).
    ``address_path``: put the base path in the address (else the adapter probes it).
    """

    kind = "eureka"
    features = frozenset({"status", "health"})

    def __init__(
        self,
        *,
        paths: tuple[str, ...] = ("/eureka", "/eureka/v2"),
        address_path: str = "",
        poll_interval: float = 0.2,
        settings: Mapping[str, Any] | None = None,
        **fake_options: Any,
    ) -> None:
        self.fake = EurekaFake(paths=paths, **fake_options)
        self.base = address_path or paths[0]
        self.address_path = address_path
        self.poll_interval = poll_interval
        self._settings = dict(settings or {})
        self._session: aiohttp.ClientSession | None = None

    @property
    def change_bound(self) -> float:
        return self.poll_interval + 2.0

    def addresses(self) -> list[str]:
        return [self.fake.url + self.address_path]

    def settings(self) -> dict[str, Any]:
        return {"poll-interval": str(self.poll_interval), **self._settings}

    async def start(self) -> None:
        await self.fake.start()
        auth = None
        if self.fake.credentials is not None:
            auth = aiohttp.BasicAuth(*self.fake.credentials)
        self._session = aiohttp.ClientSession(auth=auth, headers={"Accept": "application/json"})

    async def stop(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()
        await self.fake.stop()

    def service(self, name: str) -> ServiceKey:
        return ServiceKey("default", name.lower(), "0.0.1", "")

    async def _call(self, method: str, path: str, **kwargs: Any) -> int:
        assert self._session is not None, "the harness is not started"
        url = self.fake.url + self.base + path
        async with self._session.request(method, url, **kwargs) as resp:
            await resp.read()
            assert resp.status in (200, 204), (method, path, resp.status)
            return int(resp.status)

    async def app_register(
        self,
        service: ServiceKey,
        host: str,
        port: int,
        *,
        properties: Mapping[str, str] | None = None,
    ) -> AppInstance:
        app = service.name.upper()
        instance_id = f"{host}:{service.name}:{port}"
        body = app_registration(
            instance_id, app, host, host, port, vip=service.name, metadata=properties or {}
        )
        await self._call("POST", f"/apps/{app}", json=body)
        return AppInstance(service, instance_id, host, port, dict(properties or {}))

    async def app_set_status(self, instance: AppInstance, up: bool) -> None:
        path = f"/apps/{instance.service.name.upper()}/{instance.instance_id}/status"
        if up:
            await self._call("DELETE", path, params={"value": "UP"})
        else:
            await self._call("PUT", path, params={"value": "OUT_OF_SERVICE"})

    async def app_unregister(self, instance: AppInstance) -> None:
        await self._call("DELETE", f"/apps/{instance.service.name.upper()}/{instance.instance_id}")

    async def lose(self, ref: LocalRef) -> None:
        """The lease runs out (no renewal for longer than its duration), then eviction."""
        lease = self.fake.lease(ref.service_id, ref.instance_id)
        if lease is not None:
            lease.last_update = self.fake.clock() - lease.duration - 1
            self.fake.evict()


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _xml(root: str, value: Any) -> bytes:
    """XStream-style XML: lists repeat their element, ``@x`` keys become attributes."""
    element = ElementTree.Element(root)
    _fill(element, value)
    text: bytes = ElementTree.tostring(element, encoding="utf-8", xml_declaration=True)
    return text


def _fill(element: ElementTree.Element, value: Any) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            if key.startswith("@"):
                element.set(key[1:], str(item).lower() if isinstance(item, bool) else str(item))
            elif key == "$":
                element.text = str(item)
            elif isinstance(item, list):
                for part in item:
                    _fill(ElementTree.SubElement(element, key), part)
            else:
                _fill(ElementTree.SubElement(element, key), item)
    elif isinstance(value, bool):
        element.text = str(value).lower()
    elif value is not None:
        element.text = str(value)
