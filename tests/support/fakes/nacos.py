"""A fake Nacos naming server (v1 open API, 3.x client API) and its contract harness.

Written from the Nacos open-API docs and the 2.x/3.x controllers: namespaces
(``namespaceId``, default ``public``), groups (wire name ``GROUP@@service``), clusters,
ephemeral instances kept by beats (unhealthy after 15 s, removed after 30 s, overridden
per instance by ``preserved.heart.beat.timeout`` / ``preserved.ip.delete.timeout`` ms),
v1 text ``ok`` replies, beat codes 10200/20404 (a full ``beat`` body re-creates a missing
instance, a light beat does not), the v3 ``Result`` envelope with 21003, listings that
skip ``enabled=false`` instances, and login tokens with a TTL on an injectable clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from pysyncer.adapters.base import LocalRef
from pysyncer.adapters.nacos import NATIVE_PROJECT
from pysyncer.model import ServiceKey
from pysyncer.testing.harness import AppInstance
from tests.support.fakes.server import Clock, FakeServer

DEFAULT_NAMESPACE = "public"
DEFAULT_GROUP = "DEFAULT_GROUP"
DEFAULT_CLUSTER = "DEFAULT"
BEAT_MS = 5000
UNHEALTHY_MS = 15000
DELETE_MS = 30000
CLUSTER_RE = re.compile(r"^[0-9a-zA-Z-]+$")


@dataclass
class FakeInstance:
    ip: str
    port: int
    cluster: str
    weight: float = 1.0
    healthy: bool = True
    enabled: bool = True
    ephemeral: bool = True
    metadata: dict[str, str] = field(default_factory=dict)
    last_beat: float = 0.0

    def ms(self, key: str, default: int) -> int:
        try:
            return int(self.metadata.get(key, default))
        except ValueError:
            return default

    def to_json(self, grouped: str) -> dict[str, Any]:
        return {
            "instanceId": f"{self.ip}#{self.port}#{self.cluster}#{grouped}",
            "ip": self.ip,
            "port": self.port,
            "weight": self.weight,
            "healthy": self.healthy,
            "enabled": self.enabled,
            "ephemeral": self.ephemeral,
            "clusterName": self.cluster,
            "serviceName": grouped,
            "metadata": dict(self.metadata),
            "instanceHeartBeatInterval": self.ms("preserved.heart.beat.interval", BEAT_MS),
            "instanceHeartBeatTimeOut": self.ms("preserved.heart.beat.timeout", UNHEALTHY_MS),
            "ipDeleteTimeout": self.ms("preserved.ip.delete.timeout", DELETE_MS),
            "marked": False,
        }


class NacosError(Exception):
    def __init__(self, status: int, message: str, code: int = 10000) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


def _bool(raw: str | None, default: bool) -> bool:
    if raw is None or raw == "":
        return default
    return raw.strip().lower() in {"true", "on", "yes", "y", "t", "1"}


class FakeNacos(FakeServer):
    """The naming part of a Nacos server, in memory."""

    def __init__(
        self,
        clock: Clock | None = None,
        *,
        users: Mapping[str, str] | None = None,
        token_ttl: int = 18000,
    ) -> None:
        super().__init__(clock)
        # namespace -> grouped service name -> (ip, port, cluster) -> instance
        self.services: dict[str, dict[str, dict[tuple[str, int, str], FakeInstance]]] = {}
        self.users = dict(users or {})
        self.token_ttl = token_ttl
        self.tokens: dict[str, float] = {}  # token -> expiry on the clock
        self.logins = 0
        self.requests_log: list[tuple[str, str, dict[str, str]]] = []
        self._last_sweep = 0.0
        r = self.app.router
        r.add_post("/nacos/v1/auth/login", self._login)
        r.add_post("/nacos/v1/ns/instance", self._v1(self._register))
        r.add_delete("/nacos/v1/ns/instance", self._v1(self._deregister))
        r.add_put("/nacos/v1/ns/instance/beat", self._v1(self._beat))
        r.add_get("/nacos/v1/ns/instance/list", self._v1(self._list_v1))
        r.add_get("/nacos/v1/ns/service/list", self._v1(self._services_v1))
        r.add_post("/nacos/v3/client/ns/instance", self._v3(self._register_v3))
        r.add_delete("/nacos/v3/client/ns/instance", self._v3(self._remove))
        r.add_get("/nacos/v3/client/ns/instance/list", self._v3(self._list_v3))
        r.add_get("/nacos/v3/admin/ns/service/list", self._v3(self._services_v3))

    # -- state ---------------------------------------------------------------------------

    def sweep(self) -> None:
        """Nacos' beat checker: unhealthy after the timeout, removed after the delete one."""
        now = self.clock()
        for services in self.services.values():
            for instances in services.values():
                for key, inst in list(instances.items()):
                    if not inst.ephemeral:
                        continue
                    idle_ms = (now - inst.last_beat) * 1000
                    if idle_ms > inst.ms("preserved.ip.delete.timeout", DELETE_MS):
                        del instances[key]
                    elif idle_ms > inst.ms("preserved.heart.beat.timeout", UNHEALTHY_MS):
                        inst.healthy = False

    def _maybe_sweep(self) -> None:
        """Sweep before answering, at most every 0.2 s of the clock (Nacos checks every 5 s)."""
        if self.clock() - self._last_sweep >= 0.2:
            self._last_sweep = self.clock()
            self.sweep()

    def instances(self, namespace: str = DEFAULT_NAMESPACE) -> list[tuple[str, FakeInstance]]:
        self.sweep()
        return [
            (grouped, inst)
            for grouped, insts in self.services.get(namespace, {}).items()
            for inst in insts.values()
        ]

    def forget(self, match: Callable[[str, FakeInstance], bool], namespace: str = "") -> int:
        """Drop instances behind every client's back (an operator's delete)."""
        gone = 0
        for ns, services in self.services.items():
            if namespace and ns != namespace:
                continue
            for grouped, insts in services.items():
                for key, inst in list(insts.items()):
                    if match(grouped, inst):
                        del insts[key]
                        gone += 1
        return gone

    # -- request plumbing ----------------------------------------------------------------

    async def _params(self, request: web.Request) -> dict[str, str]:
        params = dict(request.query)
        if request.can_read_body:
            form = await request.post()
            params.update({k: str(v) for k, v in form.items()})
        self.requests_log.append((request.method, request.path, params))
        return params

    def _check_token(self, params: Mapping[str, str]) -> None:
        if not self.users:
            return
        token = params.get("accessToken", "")
        expiry = self.tokens.get(token)
        if expiry is None:
            raise NacosError(403, "user not found!", 403)
        if self.clock() >= expiry:
            raise NacosError(403, "token expired!", 403)

    def _v1(
        self, handler: Callable[[dict[str, str]], web.Response]
    ) -> Callable[[web.Request], Any]:
        async def run(request: web.Request) -> web.Response:
            params = await self._params(request)
            try:
                self._check_token(params)
                self._maybe_sweep()
                return handler(params)
            except NacosError as exc:
                return web.Response(status=exc.status, text=f"caused: {exc};")

        return run

    def _v3(self, handler: Callable[[dict[str, str]], Any]) -> Callable[[web.Request], Any]:
        async def run(request: web.Request) -> web.Response:
            params = await self._params(request)
            try:
                self._check_token(params)
                self._maybe_sweep()
                data = handler(params)
            except NacosError as exc:
                body = {"code": exc.code, "message": str(exc), "data": None}
                return web.json_response(body, status=exc.status)
            if isinstance(data, _Failure):
                return web.json_response({"code": data.code, "message": data.message, "data": None})
            return web.json_response({"code": 0, "message": "success", "data": data})

        return run

    async def _login(self, request: web.Request) -> web.Response:
        params = await self._params(request)
        user, password = params.get("username", ""), params.get("password", "")
        if not user or self.users.get(user) != password:
            return web.Response(status=403, text="unknown user!")
        token = secrets.token_hex(16)
        self.tokens[token] = self.clock() + self.token_ttl
        self.logins += 1
        return web.json_response(
            {"accessToken": token, "tokenTtl": self.token_ttl, "globalAdmin": True}
        )

    # -- identity parameters -------------------------------------------------------------

    def _service(self, params: Mapping[str, str]) -> tuple[str, str]:
        namespace = params.get("namespaceId") or DEFAULT_NAMESPACE
        name = params.get("serviceName", "")
        if not name:
            raise NacosError(400, "Param 'serviceName' is required.")
        group = params.get("groupName") or DEFAULT_GROUP
        return namespace, (name if "@@" in name else f"{group}@@{name}")

    def _key(self, params: Mapping[str, str]) -> tuple[str, int, str]:
        ip = params.get("ip", "")
        if not ip:
            raise NacosError(400, "Param 'ip' is required.")
        try:
            port = int(params.get("port", ""))
        except ValueError:
            raise NacosError(400, "Param 'port' is illegal.") from None
        if not 0 <= port <= 65535:
            raise NacosError(400, "Param 'port' is illegal.")
        cluster = params.get("clusterName") or params.get("cluster") or DEFAULT_CLUSTER
        if not CLUSTER_RE.match(cluster):
            raise NacosError(400, f"Param 'cluster' is illegal, illegal characters: {cluster}")
        return ip, port, cluster

    @staticmethod
    def _metadata(raw: str) -> dict[str, str]:
        if not raw:
            return {}
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            pairs = [p.split("=", 1) for p in raw.split(",") if p]
            if not all(len(p) == 2 for p in pairs):
                raise NacosError(400, "Param 'metadata' is illegal.") from None
            return {k: v for k, v in pairs}
        if not isinstance(value, dict):
            raise NacosError(400, "Param 'metadata' is illegal.")
        return {str(k): str(v) for k, v in value.items()}

    def _build(self, params: Mapping[str, str]) -> tuple[str, str, FakeInstance]:
        namespace, grouped = self._service(params)
        ip, port, cluster = self._key(params)
        enabled_raw = params.get("enabled") or params.get("enable")
        inst = FakeInstance(
            ip=ip,
            port=port,
            cluster=cluster,
            weight=float(params.get("weight") or 1.0),
            healthy=_bool(params.get("healthy"), True),
            enabled=_bool(enabled_raw, True),
            ephemeral=_bool(params.get("ephemeral"), True),
            metadata=self._metadata(params.get("metadata", "")),
            last_beat=self.clock(),
        )
        interval = inst.ms("preserved.heart.beat.interval", BEAT_MS)
        if interval > inst.ms("preserved.heart.beat.timeout", UNHEALTHY_MS) or interval > inst.ms(
            "preserved.ip.delete.timeout", DELETE_MS
        ):
            raise NacosError(
                400,
                "Instance 'heart beat interval' must less than 'heart beat timeout' "
                "and 'ip delete timeout'.",
            )
        return namespace, grouped, inst

    def _put(self, namespace: str, grouped: str, inst: FakeInstance) -> None:
        insts = self.services.setdefault(namespace, {}).setdefault(grouped, {})
        insts[(inst.ip, inst.port, inst.cluster)] = inst

    def _find(self, params: Mapping[str, str]) -> tuple[str, str, FakeInstance | None]:
        namespace, grouped = self._service(params)
        key = self._key(params)
        return namespace, grouped, self.services.get(namespace, {}).get(grouped, {}).get(key)

    # -- v1 ------------------------------------------------------------------------------

    def _register(self, params: dict[str, str]) -> web.Response:
        namespace, grouped, inst = self._build(params)
        self._put(namespace, grouped, inst)
        return web.Response(text="ok")

    def _remove(self, params: dict[str, str]) -> str:
        namespace, grouped = self._service(params)
        key = self._key(params)
        self.services.get(namespace, {}).get(grouped, {}).pop(key, None)
        return "ok"  # also when it was not there

    def _deregister(self, params: dict[str, str]) -> web.Response:
        return web.Response(text=self._remove(params))

    def _beat(self, params: dict[str, str]) -> web.Response:
        beat_raw = params.get("beat", "")
        beat: dict[str, Any] = {}
        if beat_raw:
            try:
                beat = dict(json.loads(beat_raw))
            except (ValueError, TypeError):
                raise NacosError(400, "Param 'beat' is illegal.") from None
            merged = dict(params)
            merged["ip"] = str(beat.get("ip", params.get("ip", "")))
            merged["port"] = str(beat.get("port", params.get("port", "")))
            if beat.get("cluster"):
                merged["clusterName"] = str(beat["cluster"])
            params = merged
        namespace, grouped, inst = self._find(params)
        if inst is None:
            if not beat:
                return web.json_response({"code": 20404})
            rebuilt = dict(params)
            rebuilt["metadata"] = json.dumps(beat.get("metadata") or {})
            rebuilt["weight"] = str(beat.get("weight", 1.0))
            namespace, grouped, inst = self._build(rebuilt)
            self._put(namespace, grouped, inst)
        inst.last_beat = self.clock()
        inst.healthy = True
        return web.json_response(
            {
                "clientBeatInterval": inst.ms("preserved.heart.beat.interval", BEAT_MS),
                "code": 10200,
                "lightBeatEnabled": True,
            }
        )

    def _hosts(self, params: Mapping[str, str]) -> tuple[str, list[dict[str, Any]]]:
        namespace, grouped = self._service(params)
        clusters = {
            c for c in (params.get("clusters") or params.get("clusterName") or "").split(",") if c
        }
        healthy_only = _bool(params.get("healthyOnly"), False)
        hosts = [
            inst.to_json(grouped)
            for inst in self.services.get(namespace, {}).get(grouped, {}).values()
            if inst.enabled
            and (not clusters or inst.cluster in clusters)
            and (inst.healthy or not healthy_only)
        ]
        return grouped, hosts

    def _list_v1(self, params: dict[str, str]) -> web.Response:
        grouped, hosts = self._hosts(params)
        return web.json_response(
            {
                "name": grouped,
                "groupName": grouped.split("@@", 1)[0],
                "clusters": params.get("clusters", ""),
                "cacheMillis": 10000,
                "hosts": hosts,
                "lastRefTime": int(self.clock() * 1000),
                "checksum": "",
                "allIPs": False,
                "reachProtectionThreshold": False,
                "valid": True,
            }
        )

    def _services_v1(self, params: dict[str, str]) -> web.Response:
        try:
            page, size = int(params["pageNo"]), int(params["pageSize"])
        except (KeyError, ValueError):
            raise NacosError(400, "Param 'pageNo' and 'pageSize' are required.") from None
        namespace = params.get("namespaceId") or DEFAULT_NAMESPACE
        group = params.get("groupName") or DEFAULT_GROUP
        names = sorted(
            g.split("@@", 1)[1]
            for g in self.services.get(namespace, {})
            if g.split("@@", 1)[0] == group
        )
        start = (page - 1) * size
        return web.json_response({"count": len(names), "doms": names[start : start + size]})

    # -- v3 ------------------------------------------------------------------------------

    def _register_v3(self, params: dict[str, str]) -> Any:
        if _bool(params.get("heartBeat"), False):
            _, _, inst = self._find(params)
            if inst is None:
                return _Failure(21003, "instance not found")
            inst.last_beat = self.clock()
            inst.healthy = True
            return "ok"
        namespace, grouped, inst = self._build(params)
        self._put(namespace, grouped, inst)
        return "ok"

    def _list_v3(self, params: dict[str, str]) -> Any:
        return self._hosts(params)[1]

    def _services_v3(self, params: dict[str, str]) -> Any:
        try:
            page, size = int(params.get("pageNo", "1")), int(params.get("pageSize", "100"))
        except ValueError:
            raise NacosError(400, "Param 'pageNo' is illegal.") from None
        namespace = params.get("namespaceId") or DEFAULT_NAMESPACE
        group = params.get("groupNameParam", "")
        items = []
        for grouped, insts in sorted(self.services.get(namespace, {}).items()):
            g, name = grouped.split("@@", 1)
            if group and g != group:
                continue
            items.append(
                {
                    "name": name,
                    "groupName": g,
                    "clusterCount": len({i.cluster for i in insts.values()}),
                    "ipCount": len(insts),
                    "healthyInstanceCount": sum(i.healthy for i in insts.values()),
                    "triggerFlag": False,
                }
            )
        start = (page - 1) * size
        return {
            "totalCount": len(items),
            "pageNumber": page,
            "pagesAvailable": (len(items) + size - 1) // size,
            "pageItems": items[start : start + size],
        }


@dataclass(frozen=True)
class _Failure:
    code: int
    message: str


class NacosHarness:
    """:class:`~pysyncer.testing.harness.RegistryHarness` on :class:`FakeNacos`."""

    def __init__(
        self,
        *,
        api: str = "v1",
        users: Mapping[str, str] | None = None,
        settings: Mapping[str, Any] | None = None,
    ) -> None:
        self.fake = FakeNacos(users=users)
        self.api = api
        self._settings = dict(settings or {})
        self._session: aiohttp.ClientSession | None = None
        self._beats: dict[str, asyncio.Task[None]] = {}
        self._ids = itertools.count(1)

    @property
    def kind(self) -> str:
        return "nacos"

    @property
    def change_bound(self) -> float:
        return 3.0  # poll-interval 0.2 s plus one listing

    @property
    def features(self) -> frozenset[str]:
        return frozenset({"health"})

    def addresses(self) -> list[str]:
        return [self.fake.address]

    def settings(self) -> dict[str, Any]:
        base: dict[str, Any] = {"api": self.api, "poll-interval": "0.2", "timeout": "5"}
        if self.fake.users:
            user, password = next(iter(self.fake.users.items()))
            base.update(username=user, password=password)
        return {**base, **self._settings}

    async def start(self) -> None:
        await self.fake.start()
        self._session = aiohttp.ClientSession()

    async def stop(self) -> None:
        for task in self._beats.values():
            task.cancel()
        for task in self._beats.values():
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._beats.clear()
        if self._session is not None:
            await self._session.close()
            self._session = None
        await self.fake.stop()

    def service(self, name: str) -> ServiceKey:
        return ServiceKey(DEFAULT_GROUP, name, "", "", NATIVE_PROJECT)

    async def _app_call(self, method: str, path: str, params: dict[str, str]) -> str:
        assert self._session is not None
        if self.fake.users:
            user, password = next(iter(self.fake.users.items()))
            async with self._session.post(
                self.fake.url + "/nacos/v1/auth/login",
                data={"username": user, "password": password},
            ) as resp:
                params["accessToken"] = (await resp.json())["accessToken"]
        async with self._session.request(method, self.fake.url + path, params=params) as resp:
            text = await resp.text()
            assert resp.status == 200, (path, resp.status, text)
            return text

    async def app_register(
        self,
        service: ServiceKey,
        host: str,
        port: int,
        *,
        properties: Mapping[str, str] | None = None,
    ) -> AppInstance:
        params = {
            "serviceName": service.name,
            "groupName": service.app,
            "ip": host,
            "port": str(port),
            "clusterName": DEFAULT_CLUSTER,
            "metadata": json.dumps(dict(properties or {})),
        }
        assert await self._app_call("POST", "/nacos/v1/ns/instance", dict(params)) == "ok"
        iid = f"{host}#{port}#{DEFAULT_CLUSTER}#{service.app}@@{service.name}"
        self._beats[iid] = asyncio.create_task(self._beat_loop(params))
        return AppInstance(service, iid, host, port, dict(properties or {}))

    async def _beat_loop(self, params: dict[str, str]) -> None:
        beat = {
            "serviceName": f"{params['groupName']}@@{params['serviceName']}",
            "groupName": params["groupName"],
            "beat": json.dumps(
                {"ip": params["ip"], "port": int(params["port"]), "cluster": DEFAULT_CLUSTER}
            ),
        }
        while True:
            await asyncio.sleep(BEAT_MS / 1000)
            with contextlib.suppress(aiohttp.ClientError, AssertionError):
                await self._app_call("PUT", "/nacos/v1/ns/instance/beat", dict(beat))

    async def app_set_status(self, instance: AppInstance, up: bool) -> None:
        raise NotImplementedError("ephemeral Nacos instances have no settable status")

    async def app_unregister(self, instance: AppInstance) -> None:
        task = self._beats.pop(instance.instance_id, None)
        if task is not None:
            task.cancel()
        params = {
            "serviceName": instance.service.name,
            "groupName": instance.service.app,
            "ip": instance.host,
            "port": str(instance.port),
            "clusterName": DEFAULT_CLUSTER,
        }
        assert await self._app_call("DELETE", "/nacos/v1/ns/instance", params) == "ok"

    async def lose(self, ref: LocalRef) -> None:
        def match(grouped: str, inst: FakeInstance) -> bool:
            if grouped != ref.service_id:
                return False
            own = f"{inst.ip}#{inst.port}#{inst.cluster}#{grouped}"
            return inst.metadata.get("pysyncer.id", own) == ref.instance_id

        assert self.fake.forget(match) == 1, ref
