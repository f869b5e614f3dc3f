"""A pool of four data centers of different registry kinds, for end-to-end tests and benchmarks.

One real ``pysyncer daemon`` subprocess per data center, gossiping on 127.0.0.x:

- ``servicecomb``: the daemon's embedded registry (no ``--sc-addr``), driven through the
  Service-Center REST API;
- ``eureka``: :class:`~tests.support.fakes.eureka.EurekaFake` in this process, driven through
  Eureka's REST API (``--plugin eureka``);
- ``consul``: :class:`~tests.support.fakes.consul.FakeConsul` in this process, driven through the
  Consul agent API (``--plugin consul``, agent mode);
- ``zookeeper``: a real ZooKeeper server (Debian package) with Dubbo providers written as
  ephemeral znodes by this process's own session (``--plugin zookeeper``).

Each :class:`Side` registers "native" instances as an ordinary client of its registry
would and reads the registry back as such a client sees it (:class:`Seen`), so a test
can check the mapped fields of every copy. Each daemon gets its adapter settings from
its own ``--config`` file (``[adapter]``). Every process is started here and stopped by
its pid; every wait is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import threading
import urllib.request
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qsl, quote, quote_plus, unquote_plus, urlsplit

from pysyncer.adapters.consul_codec import decode_meta
from pysyncer.adapters.zk import ZkClient
from pysyncer.adapters.zk.errors import NoNodeError
from tests.support.fakes.consul import FakeConsul
from tests.support.fakes.eureka import EurekaFake, app_registration
from tests.support.sync import (
    ORIGIN_DC,
    ORIGIN_ID,
    RegistryClient,
    SyncDaemon,
    eventually,
    stop_daemons,
)
from tests.support.zk import ZkServer

__all__ = [
    "KINDS",
    "ConsulSide",
    "EurekaSide",
    "LoopThread",
    "MixedDaemon",
    "MixedPool",
    "Native",
    "ScSide",
    "Seen",
    "Side",
    "ZkSide",
    "census",
]

T = TypeVar("T")
KINDS = ("servicecomb", "eureka", "consul", "zookeeper")
DUBBO_ROOT = "/dubbo"


def _http(method: str, url: str, body: Any = None, headers: Mapping[str, str] | None = None) -> Any:
    """One JSON request with urllib (an ordinary client); the decoded answer or None."""
    data = None if body is None else json.dumps(body).encode()
    all_headers = {"Content-Type": "application/json", "Accept": "application/json"}
    all_headers.update(headers or {})
    request = urllib.request.Request(url, data=data, method=method, headers=all_headers)
    with urllib.request.urlopen(request, timeout=10) as response:
        raw = response.read()
    return json.loads(raw) if raw.strip() else None


class LoopThread:
    """An asyncio loop in a daemon thread, for the in-process fakes and the ZK session."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        self.loop.close()


@dataclass(frozen=True)
class Seen:
    """One instance as an ordinary client of its registry reads it."""

    kind: str
    native_id: str  # instanceId / Eureka instanceId / Consul Service.ID / the Dubbo URL
    service: str  # serviceName / Eureka app / Consul Service / Dubbo interface
    host: str
    port: int
    scheme: str  # "" when the registry has none (Eureka, Consul)
    status: str | None  # the registry's own status value; None when it has none
    props: Mapping[str, str]  # properties / metadata / Meta (decoded) / URL parameters
    extra: Mapping[str, str] = field(default_factory=dict)  # kind-specific fields

    @property
    def origin_dc(self) -> str | None:
        return self.props.get(ORIGIN_DC)

    @property
    def origin_id(self) -> str | None:
        return self.props.get(ORIGIN_ID)


@dataclass(frozen=True)
class Native:
    """A native registration and the model instance it stands for."""

    dc: str
    kind: str
    native_id: str
    name: str  # model service name
    app: str
    version: str
    host_name: str
    scheme: str
    ip: str
    port: int
    props: Mapping[str, str]  # model properties (what every copy must carry)
    handle: Any = None  # what the side needs to unregister it

    @property
    def endpoint(self) -> str:
        return f"{self.scheme}://{self.ip}:{self.port}"


class Side:
    """One data center's registry, seen by an ordinary client."""

    kind = ""

    def __init__(self, dc: str) -> None:
        self.dc = dc

    def records(self) -> list[Seen]:
        raise NotImplementedError

    def register(self, tag: str, ip: str, port: int, props: Mapping[str, str]) -> Native:
        raise NotImplementedError

    def unregister(self, native: Native) -> None:
        raise NotImplementedError

    def set_down(self, native: Native) -> str:
        """Take the instance out of service as its own client would; the model status."""
        raise NotImplementedError


class ScSide(Side):
    """The embedded registry of a daemon, over the Service-Center v4 REST API."""

    kind = "servicecomb"

    def __init__(self, dc: str, client: RegistryClient) -> None:
        super().__init__(dc)
        self.client = client

    def records(self) -> list[Seen]:
        answer = self.client.call("GET", "/govern/microservices?options=instances")
        found = []
        for detail in answer.get("allServicesDetail") or []:
            service = detail["microService"]
            for instance in detail.get("instances") or []:
                endpoint = (instance.get("endpoints") or [""])[0]
                parts = urlsplit(endpoint)
                found.append(
                    Seen(
                        kind=self.kind,
                        native_id=instance["instanceId"],
                        service=service["serviceName"],
                        host=parts.hostname or "",
                        port=parts.port or 0,
                        scheme=parts.scheme,
                        status=instance.get("status"),
                        props=dict(instance.get("properties") or {}),
                        extra={
                            "app": service.get("appId", ""),
                            "version": service.get("version", ""),
                            "hostName": instance.get("hostName", ""),
                            "endpoints": ",".join(instance.get("endpoints") or []),
                        },
                    )
                )
        return found

    def register(self, tag: str, ip: str, port: int, props: Mapping[str, str]) -> Native:
        name, host = f"orders-{tag}", f"sc-host-{tag}"
        sid = self.client.create_service("shop", name, "1.0.0")
        endpoint = f"rest://{ip}:{port}"
        iid = self.client.register(sid, host, [endpoint], properties=dict(props))
        return Native(
            self.dc, self.kind, iid, name, "shop", "1.0.0", host, "rest", ip, port, props, sid
        )

    def unregister(self, native: Native) -> None:
        self.client.unregister(native.handle, native.native_id)

    def set_down(self, native: Native) -> str:
        self.client.set_status(native.handle, native.native_id, "DOWN")
        return "DOWN"


class EurekaSide(Side):
    """:class:`EurekaFake` in this process; a Spring-Cloud-like client (JSON REST)."""

    kind = "eureka"

    def __init__(self, dc: str, loop: LoopThread) -> None:
        super().__init__(dc)
        self.loop = loop
        self.fake = loop.run(self._make())
        self.base = self.fake.url + "/eureka"

    @staticmethod
    async def _make() -> EurekaFake:
        return await EurekaFake(paths=("/eureka",)).start()

    def close(self) -> None:
        self.loop.run(self.fake.stop())

    def records(self) -> list[Seen]:
        answer = _http("GET", f"{self.base}/apps")
        found = []
        for app in answer["applications"].get("application") or []:
            for raw in app.get("instance") or []:
                metadata = {k: str(v) for k, v in (raw.get("metadata") or {}).items()}
                metadata.pop("@class", None)
                found.append(
                    Seen(
                        kind=self.kind,
                        native_id=raw["instanceId"],
                        service=raw["app"],
                        host=raw["ipAddr"],
                        port=int(raw["port"]["$"]),
                        scheme="",
                        status=raw["status"],
                        props=metadata,
                        extra={
                            "hostName": raw["hostName"],
                            "vipAddress": str(raw.get("vipAddress", "")),
                            "portEnabled": str(raw["port"].get("@enabled", "")),
                        },
                    )
                )
        return found

    def register(self, tag: str, ip: str, port: int, props: Mapping[str, str]) -> Native:
        app, host = f"PAYMENTS-{tag.upper()}", f"eureka-host-{tag}"
        iid = f"{host}:{app.lower()}:{port}"
        body = app_registration(iid, app, host, ip, port, vip=app.lower(), metadata=props)
        _http("POST", f"{self.base}/apps/{app}", body)
        # the model: app lower-cased, app/version from the adapter's defaults, http endpoint
        return Native(
            self.dc, self.kind, iid, app.lower(), "default", "0.0.1", host, "http", ip, port, props
        )

    def unregister(self, native: Native) -> None:
        _http("DELETE", f"{self.base}/apps/{native.name.upper()}/{quote(native.native_id)}")

    def set_down(self, native: Native) -> str:
        path = f"/apps/{native.name.upper()}/{quote(native.native_id)}/status"
        _http("PUT", f"{self.base}{path}?value=OUT_OF_SERVICE")
        return "OUTOFSERVICE"


class ConsulSide(Side):
    """:class:`FakeConsul` in this process; services registered with the agent API."""

    kind = "consul"

    def __init__(self, dc: str, loop: LoopThread) -> None:
        super().__init__(dc)
        self.loop = loop
        self.fake = loop.run(self._make())
        self.base = self.fake.url
        self._ids = itertools.count(1)

    @staticmethod
    async def _make() -> FakeConsul:
        fake = FakeConsul()
        await fake.start()
        return fake

    def close(self) -> None:
        self.loop.run(self.fake.stop())

    def records(self) -> list[Seen]:
        found = []
        for name in _http("GET", f"{self.base}/v1/catalog/services"):
            if name == "consul":
                continue
            for entry in _http("GET", f"{self.base}/v1/health/service/{quote(name, safe='')}"):
                service, node = entry["Service"], entry["Node"]
                statuses = sorted({c["Status"] for c in entry.get("Checks") or []})
                meta = dict(service.get("Meta") or {})
                found.append(
                    Seen(
                        kind=self.kind,
                        native_id=service["ID"],
                        service=service["Service"],
                        host=service.get("Address") or node["Address"],
                        port=int(service["Port"]),
                        scheme="",
                        status=",".join(statuses),
                        props=decode_meta(meta),
                        extra={"node": node["Node"], "rawMetaKeys": ",".join(sorted(meta))},
                    )
                )
        return found

    def register(self, tag: str, ip: str, port: int, props: Mapping[str, str]) -> Native:
        name = f"billing-{tag}"
        sid = f"{name}-{next(self._ids)}"
        body = {
            "ID": sid,
            "Name": name,
            "Address": ip,
            "Port": port,
            "Meta": dict(props),
            "Check": {"TTL": "600s", "Status": "passing"},
        }
        _http("PUT", f"{self.base}/v1/agent/service/register", body)
        # the model: no app/version; the host name is the agent's node
        return Native(
            self.dc, self.kind, sid, name, "", "", self.fake.agent_node, "rest", ip, port, props
        )

    def unregister(self, native: Native) -> None:
        _http("PUT", f"{self.base}/v1/agent/service/deregister/{quote(native.native_id)}")

    def set_down(self, native: Native) -> str:
        check = quote(f"service:{native.native_id}", safe="")
        _http("PUT", f"{self.base}/v1/agent/check/fail/{check}")
        return "DOWN"


def java_url_encode(text: str) -> str:
    """``java.net.URLEncoder.encode(text, "UTF-8")``, as Dubbo names provider nodes."""
    return quote_plus(text, safe="*").replace("~", "%7E")


class ZkSide(Side):
    """A real ZooKeeper; Dubbo providers are ephemeral znodes of this process's session."""

    kind = "zookeeper"

    def __init__(self, dc: str, loop: LoopThread) -> None:
        super().__init__(dc)
        self.loop = loop
        self.server = ZkServer()
        self.server.start()
        self.app = ZkClient([self.server.address], session_timeout=10.0)
        loop.run(self.app.start())

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.loop.run(self.app.close(), timeout=10)
        self.server.cleanup()

    async def _records(self) -> list[Seen]:
        found = []
        try:
            interfaces = await self.app.get_children(DUBBO_ROOT)
        except NoNodeError:
            return []
        for interface in interfaces:
            try:
                nodes = await self.app.get_children(f"{DUBBO_ROOT}/{interface}/providers")
            except NoNodeError:
                continue
            for node in nodes:
                url = unquote_plus(node)
                parts = urlsplit(url)
                params = dict(parse_qsl(parts.query, keep_blank_values=True))
                found.append(
                    Seen(
                        kind=self.kind,
                        native_id=url,
                        service=params.get("interface") or parts.path.lstrip("/"),
                        host=parts.hostname or "",
                        port=parts.port or 0,
                        scheme=parts.scheme,
                        status=None,
                        props=params,
                        extra={"znode": interface},
                    )
                )
        return found

    def records(self) -> list[Seen]:
        return self.loop.run(self._records())

    def register(self, tag: str, ip: str, port: int, props: Mapping[str, str]) -> Native:
        interface = f"com.example.Stock{tag.capitalize()}"
        params = {
            "anyhost": "true",
            "application": "stock-app",
            "dubbo": "2.0.2",
            "interface": interface,
            "methods": "get,put",
            "pid": "4242",
            "side": "provider",
            "timestamp": "1700000000000",
            "version": "1.0.0",
            **props,
        }
        query = "&".join(f"{k}={v}" for k, v in sorted(params.items()))
        url = f"dubbo://{ip}:{port}/{interface}?{query}"
        path = f"{DUBBO_ROOT}/{interface}/providers/{java_url_encode(url)}"
        self.loop.run(self.app.create(path, ip.encode(), ephemeral=True, make_parents=True))
        model_props = {
            k: v for k, v in params.items() if k not in {"application", "interface", "side"}
        }
        model_props.pop("version")
        return Native(
            self.dc,
            self.kind,
            url,
            interface,
            "stock-app",
            "1.0.0",
            ip,
            "dubbo",
            ip,
            port,
            model_props,
            path,
        )

    def unregister(self, native: Native) -> None:
        self.loop.run(self.app.delete(native.handle))

    def set_down(self, native: Native) -> str:
        raise NotImplementedError("a Dubbo provider has no status: presence is UP")


class MixedDaemon(SyncDaemon):
    """A daemon whose registry may be of any kind: ready once its admin API answers."""

    def ready(self) -> bool:
        try:
            self.status()
        except (OSError, ValueError):
            return False
        return self.process.poll() is None


@dataclass
class Census:
    """One registry: its native instances and its copies by origin dc and origin id."""

    natives: dict[str, Seen]
    copies: dict[str, dict[str, Seen]]


def census(side: Side) -> Census:
    """Natives and copies of ``side``; a duplicate copy fails."""
    natives: dict[str, Seen] = {}
    copies: dict[str, dict[str, Seen]] = {}
    for seen in side.records():
        origin_dc, origin_id = seen.origin_dc, seen.origin_id
        if origin_dc is None:
            assert seen.native_id not in natives, f"duplicate native {seen}"
            natives[seen.native_id] = seen
            continue
        assert origin_id is not None, f"copy without an origin id: {seen}"
        per_dc = copies.setdefault(origin_dc, {})
        assert origin_id not in per_dc, f"two copies of {origin_dc}/{origin_id} in {side.dc}"
        per_dc[origin_id] = seen
    return Census(natives, copies)


class MixedPool:
    """Four data centers (``dc-{prefix}a`` .. ``dc-{prefix}d``), one kind each."""

    def __init__(
        self,
        workdir: Path,
        *,
        prefix: str = "",
        hosts: tuple[str, str, str, str] = (
            "127.0.0.111",
            "127.0.0.112",
            "127.0.0.113",
            "127.0.0.114",
        ),
        eureka_poll: float = 0.5,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.workdir = workdir
        self.loop = LoopThread()
        self.daemons: list[MixedDaemon] = []
        self.sides: dict[str, Side] = {}
        self._closers: list[Any] = []
        self._tags = itertools.count(1)
        try:
            self._start(prefix, hosts, eureka_poll, extra_args)
        except BaseException:
            self.close()
            raise

    def _config(self, name: str, text: str) -> str:
        path = self.workdir / f"{name}.toml"
        path.write_text(text)
        return str(path)

    def _start(
        self,
        prefix: str,
        hosts: tuple[str, str, str, str],
        eureka_poll: float,
        extra: tuple[str, ...],
    ) -> None:
        names = [f"{prefix}{x}" for x in "abcd"]
        eureka = EurekaSide(f"dc-{names[1]}", self.loop)
        self._closers.append(eureka.close)
        consul = ConsulSide(f"dc-{names[2]}", self.loop)
        self._closers.append(consul.close)
        zk = ZkSide(f"dc-{names[3]}", self.loop)
        self._closers.append(zk.close)
        a = self._daemon(names[0], hosts[0], *extra)
        join = ("--join", a.bind)
        b_conf = self._config(names[1], f"[adapter]\npoll-interval = {eureka_poll}\n")
        self._daemon(
            names[1], hosts[1], "--plugin", "eureka", "--sc-addr", eureka.base,
            "--config", b_conf, *join, *extra,
        )  # fmt: skip
        c_conf = self._config(
            names[2], '[adapter]\nmode = "agent"\nwait = 5\nmin-query-interval = 0.05\n'
        )
        self._daemon(
            names[2], hosts[2], "--plugin", "consul", "--sc-addr", consul.fake.address,
            "--config", c_conf, *join, *extra,
        )  # fmt: skip
        d_conf = self._config(
            names[3],
            f'[adapter]\nroot = "{DUBBO_ROOT}"\nsession-timeout = 4\nrequest-timeout = 5\n'
            "connect-timeout = 2\nclose-session = true\n",
        )
        self._daemon(
            names[3], hosts[3], "--plugin", "zookeeper", "--sc-addr", zk.server.address,
            "--config", d_conf, *join, *extra,
        )  # fmt: skip
        self.sides = {
            a.dc: ScSide(a.dc, a.client),
            eureka.dc: eureka,
            consul.dc: consul,
            zk.dc: zk,
        }
        assert [d.dc for d in self.daemons] == list(self.sides)
        eventually(lambda: all(d.ready() for d in self.daemons), 40, "daemons up", *self.daemons)
        eventually(
            lambda: all(len(d.members()) == 4 for d in self.daemons),
            30,
            "a pool of 4",
            *self.daemons,
        )
        eventually(self._linked, 30, "every link streaming", *self.daemons)

    def _linked(self) -> bool:
        for daemon in self.daemons:
            remote = daemon.status()["remote"]
            others = {d.dc for d in self.daemons} - {daemon.dc}
            if any(remote.get(dc, {}).get("state") != "streaming" for dc in others):
                return False
        return True

    def _daemon(self, name: str, host: str, *args: str) -> MixedDaemon:
        daemon = MixedDaemon(name, host, self.workdir, *args)
        self.daemons.append(daemon)
        return daemon

    def by_kind(self, kind: str) -> Side:
        return next(s for s in self.sides.values() if s.kind == kind)

    def tag(self) -> str:
        return f"t{next(self._tags)}"

    def close(self) -> None:
        stop_daemons(self.daemons)
        for closer in reversed(self._closers):
            with contextlib.suppress(Exception):
                closer()
        self.loop.close()
