"""A fake Consul (one agent + the catalog) and its contract harness.

Written from the Consul HTTP API docs: agent service registration with TTL checks
(``service:<id>``; pass/warn/fail; a check not renewed within its TTL goes critical and
a reaper every 30 s deregisters services critical longer than their
``DeregisterCriticalServiceAfter``), catalog register/deregister, ``/v1/txn`` (at most 64
operations, all or nothing, 409 with ``Errors``), ``/v1/health/service/<name>`` and
``/v1/catalog/services`` with blocking queries (``index``, ``wait``, ``X-Consul-Index``;
the index can be made to go backwards or stick at 0 on demand), Meta validation
(64 pairs, keys ``[A-Za-z0-9_-]`` <= 128, values <= 512 bytes, no ``consul-`` prefix),
``X-Consul-Token`` and ``?dc=``. Time runs on an injectable clock.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from pysyncer.adapters.base import LocalRef
from pysyncer.adapters.consul_codec import NATIVE_PROJECT
from pysyncer.model import ServiceKey
from pysyncer.testing.harness import AppInstance
from tests.support.fakes.server import Clock, FakeServer

META_KEY_RE = re.compile(r"^[a-zA-Z0-9_-]+$")
REAP_INTERVAL = 30.0
DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


_FIELDS = {
    f.lower(): f
    for f in [
        "ID",
        "Name",
        "Tags",
        "Address",
        "Port",
        "Meta",
        "Check",
        "Checks",
        "TTL",
        "DeregisterCriticalServiceAfter",
        "Status",
        "CheckID",
        "ServiceID",
        "Notes",
        "Interval",
        "Timeout",
        "EnableTagOverride",
        "Weights",
    ]
}


def go_fields(value: Any) -> Any:
    """Go's JSON decoding matches field names case-insensitively (``name`` is ``Name``)."""
    if not isinstance(value, dict):
        return value
    out: dict[str, Any] = {}
    for key, item in value.items():
        name = _FIELDS.get(str(key).lower(), str(key))
        if name in ("Check",):
            item = go_fields(item)
        elif name == "Checks" and isinstance(item, list):
            item = [go_fields(c) for c in item]
        out[name] = item
    return out


class ConsulError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def parse_duration(text: str) -> float:
    """A Go duration (``30s``, ``1m30s``, ``500ms``) in seconds."""
    text = text.strip()
    if not text:
        return 0.0
    pos, total = 0, 0.0
    for match in DURATION_RE.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if pos != len(text):
        raise ConsulError(400, f'time: invalid duration "{text}"')
    return total


def validate_meta(meta: Any) -> dict[str, str]:
    if meta is None:
        return {}
    if not isinstance(meta, dict):
        raise ConsulError(400, "Invalid Service Meta: not an object")
    if len(meta) > 64:
        raise ConsulError(
            400, "Invalid Service Meta: Node metadata cannot contain more than 64 key/value pairs"
        )
    for key, value in meta.items():
        if not META_KEY_RE.match(key):
            raise ConsulError(
                400,
                f"Invalid Service Meta: Couldn't load metadata pair ('{key}', '{value}'): "
                "Key contains invalid characters",
            )
        if len(key) > 128:
            raise ConsulError(400, "Invalid Service Meta: Key is too long (limit: 128 characters)")
        if key.startswith("consul-"):
            raise ConsulError(
                400, "Invalid Service Meta: Key prefix 'consul-' is reserved for internal use"
            )
        if not isinstance(value, str) or len(value.encode()) > 512:
            raise ConsulError(
                400, "Invalid Service Meta: Value is too long (limit: 512 characters)"
            )
    return dict(meta)


@dataclass
class Check:
    check_id: str
    name: str
    status: str
    service_id: str = ""
    service_name: str = ""
    ttl: float = 0.0  # agent TTL checks only
    deregister_after: float = 0.0
    expires: float = 0.0
    critical_since: float | None = None
    output: str = ""

    def to_json(self, node: str) -> dict[str, Any]:
        return {
            "Node": node,
            "CheckID": self.check_id,
            "Name": self.name,
            "Status": self.status,
            "Output": self.output,
            "ServiceID": self.service_id,
            "ServiceName": self.service_name,
            "Type": "ttl" if self.ttl else "",
        }


@dataclass
class Node:
    name: str
    address: str
    meta: dict[str, str] = field(default_factory=dict)
    services: dict[str, dict[str, Any]] = field(default_factory=dict)
    checks: dict[str, Check] = field(default_factory=dict)

    def to_json(self, dc: str) -> dict[str, Any]:
        return {"Node": self.name, "Address": self.address, "Datacenter": dc, "Meta": self.meta}


class FakeConsul(FakeServer):
    """One Consul agent (node ``agent_node``) and the catalog of its datacenter."""

    def __init__(
        self,
        clock: Clock | None = None,
        *,
        dc: str = "dc1",
        token: str = "",
        legacy_errors: bool = False,
    ) -> None:
        super().__init__(clock)
        self.dc = dc
        self.token = token
        self.legacy_errors = legacy_errors  # old agents answer 500 for an unknown check
        self.agent_node = "consul-agent-1"
        self.nodes: dict[str, Node] = {self.agent_node: Node(self.agent_node, "127.0.0.1")}
        self.raft_index = 10
        self.service_index: dict[str, int] = {}
        self.services_index = 10
        self.index_offset = 0  # subtracted from reported indexes (rewind())
        self.stuck_index: int | None = None  # report this index and never block
        self.next_reap = self.clock() + REAP_INTERVAL
        self.changed = asyncio.Condition()
        self.blocking_waits: list[float] = []
        self.stopping = False
        self._last_sweep = 0.0
        r = self.app.router
        r.add_get("/v1/agent/self", self._h(self._agent_self))
        r.add_get("/v1/agent/services", self._h(self._agent_services))
        r.add_put("/v1/agent/service/register", self._h(self._agent_register))
        r.add_put("/v1/agent/service/deregister/{id}", self._h(self._agent_deregister))
        r.add_put("/v1/agent/check/{verb:pass|warn|fail}/{id}", self._h(self._agent_check))
        r.add_put("/v1/catalog/register", self._h(self._catalog_register))
        r.add_put("/v1/catalog/deregister", self._h(self._catalog_deregister))
        r.add_get("/v1/catalog/services", self._h(self._catalog_services))
        r.add_get("/v1/catalog/node-services/{node}", self._h(self._node_services))
        r.add_get("/v1/health/service/{name}", self._h(self._health_service))
        r.add_put("/v1/txn", self._h(self._txn))

    # -- state ---------------------------------------------------------------------------

    def _bump(self, *names: str) -> None:
        self.raft_index += 1
        for name in names:
            self.service_index[name] = self.raft_index
        self.services_index = self.raft_index
        asyncio.get_running_loop().create_task(self._notify())

    async def _notify(self) -> None:
        async with self.changed:
            self.changed.notify_all()

    def sweep(self) -> None:
        """TTL checks past their deadline go critical; the reaper runs every 30 s."""
        now = self.clock()
        agent = self.nodes[self.agent_node]
        for check in agent.checks.values():
            if check.ttl and check.status != "critical" and now > check.expires:
                check.status, check.output = "critical", "TTL expired"
                check.critical_since = check.expires
                self._bump(check.service_name)
        while now >= self.next_reap:
            self.next_reap += REAP_INTERVAL
            for check in list(agent.checks.values()):
                if (
                    check.deregister_after
                    and check.critical_since is not None
                    and self.next_reap - REAP_INTERVAL - check.critical_since
                    > check.deregister_after
                ):
                    self._remove_service(agent, check.service_id)

    def _remove_service(self, node: Node, service_id: str) -> None:
        service = node.services.pop(service_id, None)
        for cid in [c for c, chk in node.checks.items() if chk.service_id == service_id]:
            del node.checks[cid]
        if service is not None:
            self._bump(service["Service"])

    def rewind(self, by: int = 1_000_000) -> None:
        """Make every reported index go backwards (a restored snapshot, a new cluster)."""
        self.index_offset += by
        self.raft_index += by  # internal indexes keep growing; reports shrink
        asyncio.get_running_loop().create_task(self._notify())

    def _report(self, index: int) -> int:
        if self.stuck_index is not None:
            return self.stuck_index
        return max(1, index - self.index_offset)

    async def stop(self) -> None:
        self.stopping = True  # end blocking queries now, not after their wait
        await self._notify()
        await super().stop()
        self.stopping = False

    def forget(self, service_id: str) -> int:
        gone = 0
        for node in self.nodes.values():
            if service_id in node.services:
                self._remove_service(node, service_id)
                gone += 1
        return gone

    def all_services(self) -> list[tuple[Node, dict[str, Any]]]:
        return [(n, s) for n in self.nodes.values() for s in n.services.values()]

    # -- plumbing ------------------------------------------------------------------------

    def _h(self, handler: Any) -> Any:
        async def run(request: web.Request) -> web.StreamResponse:
            sent = request.headers.get("X-Consul-Token") or request.query.get("token")
            if not sent and request.headers.get("Authorization", "").startswith("Bearer "):
                sent = request.headers["Authorization"][7:]
            if self.token and sent != self.token:
                return web.Response(status=403, text="ACL not found")
            dc = request.query.get("dc")
            if dc and dc != self.dc:
                return web.Response(status=500, text="No path to datacenter")
            if self.clock() - self._last_sweep >= 0.2:  # at most every 0.2 s of the clock
                self._last_sweep = self.clock()
                self.sweep()
            try:
                result = handler(request)
                if asyncio.iscoroutine(result):
                    result = await result
                return result  # type: ignore[no-any-return]
            except ConsulError as exc:
                return web.Response(status=exc.status, text=str(exc))

        return run

    async def _body(self, request: web.Request) -> Any:
        try:
            return json.loads(await request.read() or b"null")
        except json.JSONDecodeError as exc:
            raise ConsulError(400, f"Request decode failed: {exc}") from None

    async def _block(self, request: web.Request, current: Any) -> int:
        """Wait (blocking query) until the watched index passes ``index`` or ``wait``."""
        if self.stuck_index is not None:
            return self.stuck_index
        try:
            index = int(request.query.get("index", "0") or 0)
        except ValueError:
            raise ConsulError(400, "Invalid index") from None
        wait = min(parse_duration(request.query.get("wait", "") or "5m"), 600.0)
        if index <= 0:
            return self._report(current())
        self.blocking_waits.append(wait)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while self._report(current()) <= index and not self.stopping:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            async with self.changed:
                try:
                    await asyncio.wait_for(self.changed.wait(), remaining)
                except TimeoutError:
                    break
            self.sweep()
        return self._report(current())

    # -- agent ---------------------------------------------------------------------------

    def _agent_self(self, request: web.Request) -> web.Response:
        return web.json_response(
            {"Config": {"Datacenter": self.dc, "NodeName": self.agent_node}, "Member": {}}
        )

    def _agent_services(self, request: web.Request) -> web.Response:
        agent = self.nodes[self.agent_node]
        return web.json_response({sid: s for sid, s in agent.services.items()})

    async def _agent_register(self, request: web.Request) -> web.Response:
        body = go_fields(await self._body(request))
        if not isinstance(body, dict) or not body.get("Name"):
            raise ConsulError(400, "Missing service name")
        sid = str(body.get("ID") or body["Name"])
        meta = validate_meta(body.get("Meta"))
        service = {
            "ID": sid,
            "Service": body["Name"],
            "Tags": list(body.get("Tags") or []),
            "Address": str(body.get("Address") or ""),
            "Port": int(body.get("Port") or 0),
            "Meta": meta,
        }
        agent = self.nodes[self.agent_node]
        checks: list[Check] = []
        raw_checks = list(body.get("Checks") or []) + ([body["Check"]] if body.get("Check") else [])
        for n, raw in enumerate(raw_checks):
            ttl = parse_duration(str(raw.get("TTL", "")))
            if not ttl:
                raise ConsulError(
                    400, "Invalid check: TTL must be > 0 (only TTL checks in the fake)"
                )
            cid = raw.get("CheckID") or (
                f"service:{sid}" if len(raw_checks) == 1 else f"service:{sid}:{n + 1}"
            )
            status = raw.get("Status") or "critical"
            checks.append(
                Check(
                    check_id=cid,
                    name=str(raw.get("Name") or f"Service '{body['Name']}' check"),
                    status=status,
                    service_id=sid,
                    service_name=body["Name"],
                    ttl=ttl,
                    deregister_after=parse_duration(
                        str(raw.get("DeregisterCriticalServiceAfter", ""))
                    ),
                    expires=self.clock() + ttl,
                    critical_since=self.clock() if status == "critical" else None,
                )
            )
        agent.services[sid] = service
        replace = request.query.get("replace-existing-checks", "") in {"true", "1"}
        if replace:
            for cid in [c for c, chk in agent.checks.items() if chk.service_id == sid]:
                del agent.checks[cid]
        for check in checks:
            agent.checks[check.check_id] = check
        self._bump(service["Service"])
        return web.Response(text="")

    def _agent_deregister(self, request: web.Request) -> web.Response:
        sid = request.match_info["id"]
        agent = self.nodes[self.agent_node]
        if sid not in agent.services:
            if self.legacy_errors:
                raise ConsulError(500, f'Unknown service "{sid}"')
            raise ConsulError(404, f'Unknown service ID "{sid}"')
        self._remove_service(agent, sid)
        return web.Response(text="")

    def _agent_check(self, request: web.Request) -> web.Response:
        cid, verb = request.match_info["id"], request.match_info["verb"]
        check = self.nodes[self.agent_node].checks.get(cid)
        if check is None:
            if self.legacy_errors:
                raise ConsulError(500, f'CheckID "{cid}" does not have associated TTL')
            raise ConsulError(
                404,
                f'Unknown check ID "{cid}". '
                "Ensure that the check ID is passed, not the check name.",
            )
        status = {"pass": "passing", "warn": "warning", "fail": "critical"}[verb]
        check.expires = self.clock() + check.ttl
        check.output = request.query.get("note", "")
        if status != check.status:
            check.status = status
            check.critical_since = self.clock() if status == "critical" else None
            self._bump(check.service_name)
        return web.Response(text="")

    # -- catalog -------------------------------------------------------------------------

    def _apply_register(self, body: Any) -> None:
        if not isinstance(body, dict) or not body.get("Node") or not body.get("Address"):
            raise ConsulError(400, "Must provide node and address")
        node = self.nodes.setdefault(body["Node"], Node(body["Node"], body["Address"]))
        node.address = body["Address"]
        names: list[str] = []
        service = body.get("Service")
        if service:
            sid = str(service.get("ID") or service.get("Service"))
            node.services[sid] = {
                "ID": sid,
                "Service": service["Service"],
                "Tags": list(service.get("Tags") or []),
                "Address": str(service.get("Address") or ""),
                "Port": int(service.get("Port") or 0),
                "Meta": validate_meta(service.get("Meta")),
            }
            names.append(service["Service"])
        for raw in ([body["Check"]] if body.get("Check") else []) + list(body.get("Checks") or []):
            names.append(self._set_check(node, raw))
        self._bump(*names)

    def _set_check(self, node: Node, raw: Mapping[str, Any]) -> str:
        """Add or replace a check; the name of its service ("" for a node check)."""
        status = str(raw.get("Status") or "critical")
        if status not in {"passing", "warning", "critical", "maintenance"}:
            raise ConsulError(400, f"Invalid check status: {status!r}")
        sid = str(raw.get("ServiceID", ""))
        if sid and sid not in node.services:
            raise ConsulError(400, f'Unknown service ID "{sid}" for check')
        cid = str(raw.get("CheckID") or raw.get("Name"))
        node.checks[cid] = Check(
            check_id=cid,
            name=str(raw.get("Name") or cid),
            status=status,
            service_id=sid,
            service_name=node.services[sid]["Service"] if sid else "",
        )
        return node.checks[cid].service_name

    async def _catalog_register(self, request: web.Request) -> web.Response:
        self._apply_register(await self._body(request))
        return web.json_response(True)

    async def _catalog_deregister(self, request: web.Request) -> web.Response:
        body = await self._body(request)
        node = self.nodes.get(str(body.get("Node", "")))
        if node is None:
            return web.json_response(True)
        if body.get("ServiceID"):
            self._remove_service(node, str(body["ServiceID"]))
        elif body.get("CheckID"):
            node.checks.pop(str(body["CheckID"]), None)
            self._bump()
        else:
            for sid in list(node.services):
                self._remove_service(node, sid)
            del self.nodes[node.name]
        return web.json_response(True)

    async def _catalog_services(self, request: web.Request) -> web.Response:
        index = await self._block(request, lambda: self.services_index)
        names: dict[str, list[str]] = {}
        for _, service in self.all_services():
            names.setdefault(service["Service"], []).extend(service["Tags"])
        return web.json_response(names, headers={"X-Consul-Index": str(index)})

    def _node_services(self, request: web.Request) -> web.Response:
        node = self.nodes.get(request.match_info["node"])
        if node is None:
            return web.json_response(None, status=404)
        return web.json_response(
            {"Node": node.to_json(self.dc), "Services": list(node.services.values())}
        )

    async def _health_service(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        index = await self._block(
            request, lambda: self.service_index.get(name, self.services_index)
        )
        passing = "passing" in request.query
        entries = []
        for node in self.nodes.values():
            mine = [s for s in node.services.values() if s["Service"] == name]
            if not mine:
                continue
            by_service: dict[str, list[dict[str, Any]]] = {}
            for check in node.checks.values():
                by_service.setdefault(check.service_id, []).append(check.to_json(node.name))
            for service in mine:
                checks = by_service.get("", []) + by_service.get(service["ID"], [])
                if passing and any(c["Status"] != "passing" for c in checks):
                    continue
                entries.append(
                    {"Node": node.to_json(self.dc), "Service": service, "Checks": checks}
                )
        return web.json_response(entries, headers={"X-Consul-Index": str(index)})

    # -- txn -----------------------------------------------------------------------------

    async def _txn(self, request: web.Request) -> web.Response:
        ops = await self._body(request)
        if not isinstance(ops, list):
            raise ConsulError(400, "Failed to parse body: not a list")
        if len(ops) > 64:
            raise ConsulError(413, f"Transaction contains too many operations ({len(ops)} > 64)")
        snapshot = {
            name: (Node(n.name, n.address, dict(n.meta), dict(n.services), dict(n.checks)))
            for name, n in self.nodes.items()
        }
        errors = []
        for n, op in enumerate(ops):
            try:
                self._txn_op(op)
            except ConsulError as exc:
                errors.append({"OpIndex": n, "What": str(exc)})
                break
        if errors:
            self.nodes = snapshot  # all or nothing
            return web.json_response({"Results": None, "Errors": errors}, status=409)
        return web.json_response({"Results": [{} for _ in ops], "Errors": None})

    def _txn_op(self, op: Any) -> None:
        if not isinstance(op, dict) or len(op) != 1:
            raise ConsulError(400, "operation must name one of KV, Node, Service, Check")
        kind, body = next(iter(op.items()))
        verb = body.get("Verb")
        if kind == "Node" and verb == "set":
            raw = body.get("Node") or {}
            self._apply_register({"Node": raw.get("Node"), "Address": raw.get("Address")})
        elif kind == "Service" and verb in {"set", "delete"}:
            node = self.nodes.get(str(body.get("Node", "")))
            if node is None:
                raise ConsulError(409, f'node "{body.get("Node")}" doesn\'t exist')
            service = body.get("Service") or {}
            if verb == "delete":
                self._remove_service(node, str(service.get("ID", "")))
            else:
                self._apply_register(
                    {"Node": node.name, "Address": node.address, "Service": service}
                )
        elif kind == "Check" and verb in {"set", "delete"}:
            raw = body.get("Check") or {}
            node = self.nodes.get(str(raw.get("Node", "")))
            if node is None:
                raise ConsulError(409, f'node "{raw.get("Node")}" doesn\'t exist')
            if verb == "delete":
                node.checks.pop(str(raw.get("CheckID", "")), None)
                self._bump(str(raw.get("ServiceName", "")))
            else:
                self._bump(self._set_check(node, raw))
        else:
            raise ConsulError(400, f"unsupported txn operation {kind} {verb}")


class ConsulHarness:
    """:class:`~pysyncer.testing.harness.RegistryHarness` on :class:`FakeConsul`."""

    def __init__(self, *, mode: str = "agent", token: str = "", **fake: Any) -> None:
        self.fake = FakeConsul(token=token, **fake)
        self.mode = mode
        self._session: aiohttp.ClientSession | None = None
        self._ids = itertools.count(1)

    @property
    def kind(self) -> str:
        return "consul"

    @property
    def change_bound(self) -> float:
        return 3.0  # blocking queries answer as soon as the index moves

    @property
    def features(self) -> frozenset[str]:
        return frozenset({"status", "health"})

    def addresses(self) -> list[str]:
        return [self.fake.address]

    def settings(self) -> dict[str, Any]:
        settings: dict[str, Any] = {"mode": self.mode, "wait": "5", "min-query-interval": "0.05"}
        if self.fake.token:
            settings["token"] = self.fake.token
        return settings

    async def start(self) -> None:
        await self.fake.start()
        headers = {"X-Consul-Token": self.fake.token} if self.fake.token else {}
        self._session = aiohttp.ClientSession(headers=headers)

    async def stop(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
        await self.fake.stop()

    def service(self, name: str) -> ServiceKey:
        return ServiceKey("", name, "", "", NATIVE_PROJECT)

    async def _put(self, path: str, body: Any) -> None:
        assert self._session is not None
        async with self._session.put(self.fake.url + path, json=body) as resp:
            assert resp.status == 200, (path, resp.status, await resp.text())

    async def app_register(
        self,
        service: ServiceKey,
        host: str,
        port: int,
        *,
        properties: Mapping[str, str] | None = None,
    ) -> AppInstance:
        sid = f"{service.name}-{next(self._ids)}"
        await self._put(
            "/v1/catalog/register",
            {
                "Node": f"app-node-{sid}",
                "Address": host,
                "Service": {
                    "ID": sid,
                    "Service": service.name,
                    "Address": host,
                    "Port": port,
                    "Meta": dict(properties or {}),
                },
                "Check": {
                    "CheckID": f"app:{sid}",
                    "Name": "app",
                    "Status": "passing",
                    "ServiceID": sid,
                },
            },
        )
        return AppInstance(service, sid, host, port, dict(properties or {}))

    async def app_set_status(self, instance: AppInstance, up: bool) -> None:
        await self._put(
            "/v1/catalog/register",
            {
                "Node": f"app-node-{instance.instance_id}",
                "Address": instance.host,
                "Check": {
                    "CheckID": f"app:{instance.instance_id}",
                    "Name": "app",
                    "Status": "passing" if up else "critical",
                    "ServiceID": instance.instance_id,
                },
            },
        )

    async def app_unregister(self, instance: AppInstance) -> None:
        await self._put(
            "/v1/catalog/deregister",
            {"Node": f"app-node-{instance.instance_id}", "ServiceID": instance.instance_id},
        )

    async def lose(self, ref: LocalRef) -> None:
        assert self.fake.forget(ref.instance_id) >= 1, ref
