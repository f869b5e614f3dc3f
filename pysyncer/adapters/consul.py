"""The Consul adapter: catalog and health over the HTTP API, on aiohttp.

Owns HTTP to Consul (``X-Consul-Token``, ``?dc=``, failover over several addresses,
bounded bodies), the two ways copies are written, the change feed built from blocking
queries, and the encoding of model fields into Consul's limited service ``Meta``.

Copies, ``mode = agent`` (default): ``PUT /v1/agent/service/register`` with a TTL check
(``service:<id>``) that the importer's renewals pass; ``DeregisterCriticalServiceAfter``
makes Consul reap a copy whose syncer is gone. ``mode = catalog``: the copies sit on a
synthetic node (``node``, default ``pysyncer-<dc>``) written through ``PUT /v1/txn``,
concurrent writes coalesced up to 64 operations per transaction; such entries have no
TTL (Consul never expires catalog entries): renewal only checks they are still there.

Meta: keys outside ``[A-Za-z0-9-]`` are escaped (``_`` + hex of each UTF-8 byte), and
pairs that still do not fit (64 pairs, keys <= 128, values <= 512 bytes) travel as one
JSON document split over ``_pysyncer<n>`` keys; what cannot fit at all is a
ConflictError. Native services' Meta is read as is.

Change detection: blocking queries on ``/v1/catalog/services`` and on
``/v1/health/service/<name>`` for each service, with ``X-Consul-Index`` rules: an index
that goes backwards is reset to 0 (one non-blocking re-read), an index below 1 is never
sent as 0 twice, and every watcher waits ``min_query_interval`` between its requests
(except right after a plain read at index 0: the first blocking query follows at once).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import quote

from pysyncer.adapters._http import HttpAdapter, HttpClient, Response
from pysyncer.adapters._settings import settings_from_mapping
from pysyncer.adapters.base import (
    AdapterError,
    BadResponseError,
    ChangeBatch,
    ChangeEvent,
    ConflictError,
    LocalRef,
    NotFoundError,
    RenewResult,
    Snapshot,
)
from pysyncer.adapters.fieldmap import (
    STATUS_FROM_KIND,
    STATUS_TO_KIND,
    Carried,
    carry,
    restore,
    split_endpoint,
)
from pysyncer.errors import ConfigError
from pysyncer.model import Instance, ServiceKey

__all__ = [
    "MAX_META_PAIRS",
    "MAX_TXN_OPS",
    "NATIVE_PROJECT",
    "ConsulAdapter",
    "ConsulSettings",
    "create",
    "decode_meta",
    "encode_meta",
    "native_endpoint",
]

log = logging.getLogger(__name__)

MAX_META_PAIRS: Final = 64
MAX_META_KEY: Final = 128
MAX_META_VALUE: Final = 512
MAX_TXN_OPS: Final = 64
NATIVE_PROJECT: Final = "default/default"
NATIVE_SCHEME: Final = "rest"
MARK_KEY: Final = "_pysyncer"  # "1" on every copy; '_p' is never an escape, so no clash
PACK_KEY: Final = "_pysyncer"  # + chunk number
_SAFE: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-")
_ESCAPE_RE: Final = re.compile(r"_([0-9A-F]{2})")
_SEVERITY: Final = {"passing": 0, "warning": 1, "critical": 2, "maintenance": 3}


@dataclass(frozen=True, slots=True)
class ConsulSettings:
    """Settings of the Consul adapter (``[adapter]`` table; all have defaults)."""

    mode: str = "agent"
    node: str = ""  # catalog mode: the synthetic node of the copies ("" = pysyncer-<dc>)
    node_address: str = "127.0.0.1"
    datacenter: str = ""
    token: str = ""
    wait: float = 300.0  # blocking-query wait, seconds (Consul caps it at 600)
    min_query_interval: float = 0.1  # per watcher, between two blocking queries
    deregister_after: int = 60  # agent mode: DeregisterCriticalServiceAfter, seconds
    include_consul: bool = False  # list Consul's own "consul" service too
    concurrency: int = 16
    timeout: float = 10.0
    connect_timeout: float = 3.0
    max_body: int = 16 * 1024 * 1024
    retry_max: float = 5.0
    tls_ca: str = ""
    tls_cert: str = ""
    tls_key: str = ""
    tls_verify: bool = True

    @classmethod
    def from_mapping(cls, settings: Mapping[str, Any]) -> ConsulSettings:
        result = settings_from_mapping(cls, "consul", settings)
        if result.mode not in {"agent", "catalog"}:
            raise ConfigError(f"consul adapter: adapter.mode is agent or catalog: {result.mode!r}")
        if not 0 < result.wait <= 600:
            raise ConfigError("consul adapter: adapter.wait must be in (0, 600] seconds")
        if result.min_query_interval < 0.01:
            raise ConfigError("consul adapter: adapter.min-query-interval must be >= 0.01")
        if result.deregister_after < 60:
            raise ConfigError("consul adapter: adapter.deregister-after: Consul's minimum is 60 s")
        if result.concurrency < 1:
            raise ConfigError("consul adapter: adapter.concurrency must be >= 1")
        return result


# -- Meta encoding -----------------------------------------------------------------------


def _escape(key: str) -> str:
    out = []
    for char in key:
        if char in _SAFE:
            out.append(char)
        else:
            out.extend(f"_{b:02X}" for b in char.encode())
    text = "".join(out)
    if text.lower().startswith("consul-"):
        text = f"_{ord(text[0]):02X}{text[1:]}"
    return text


def _unescape(key: str) -> str:
    if "_" not in key:
        return key
    raw = bytearray()
    pos = 0
    for match in _ESCAPE_RE.finditer(key):
        raw += key[pos : match.start()].encode()
        raw.append(int(match.group(1), 16))
        pos = match.end()
    raw += key[pos:].encode()
    if "_" in key[pos:]:
        raise ValueError(f"meta key {key!r} is not an escaped key")
    return raw.decode()


def _chunks(packed: Mapping[str, str]) -> list[str]:
    if not packed:
        return []
    text = json.dumps(dict(packed), sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return [text[i : i + MAX_META_VALUE] for i in range(0, len(text), MAX_META_VALUE)]


def encode_meta(values: Mapping[str, str]) -> dict[str, str]:
    """Consul ``Meta`` holding ``values`` exactly; ConflictError when it cannot fit."""
    direct: list[tuple[str, str, str]] = []
    packed: dict[str, str] = {}
    for key, value in sorted(values.items()):
        escaped = _escape(key)
        if 0 < len(escaped) <= MAX_META_KEY and len(value.encode()) <= MAX_META_VALUE:
            direct.append((escaped, key, value))
        else:
            packed[key] = value
    chunks = _chunks(packed)
    while 1 + len(direct) + len(chunks) > MAX_META_PAIRS and direct:
        _, key, value = direct.pop()
        packed[key] = value
        chunks = _chunks(packed)
    if 1 + len(direct) + len(chunks) > MAX_META_PAIRS:
        size = sum(len(k) + len(v) for k, v in values.items())
        raise ConflictError(
            f"consul: {len(values)} metadata pairs ({size} characters) do not fit in "
            f"service Meta ({MAX_META_PAIRS} pairs, values <= {MAX_META_VALUE} bytes)",
            code="meta-too-large",
        )
    meta = {escaped: value for escaped, _, value in direct}
    meta[MARK_KEY] = "1"
    for n, chunk in enumerate(chunks):
        meta[f"{PACK_KEY}{n}"] = chunk
    return meta


def decode_meta(meta: Mapping[str, str]) -> dict[str, str]:
    """The values :func:`encode_meta` stored; a Meta without the mark is returned as is."""
    if MARK_KEY not in meta:
        return dict(meta)
    values: dict[str, str] = {}
    chunks: dict[int, str] = {}
    for key, value in meta.items():
        if key == MARK_KEY:
            continue
        if key.startswith(PACK_KEY) and key[len(PACK_KEY) :].isdigit():
            chunks[int(key[len(PACK_KEY) :])] = value
            continue
        values[_unescape(key)] = value
    if chunks:
        if sorted(chunks) != list(range(len(chunks))):
            raise ValueError("meta: packed chunks are missing")
        packed = json.loads("".join(chunks[n] for n in range(len(chunks))))
        if not isinstance(packed, dict):
            raise ValueError("meta: packed value is not an object")
        values.update({str(k): str(v) for k, v in packed.items()})
    return values


def native_endpoint(address: str, port: int) -> str:
    """The one endpoint a native Consul service instance reads as."""
    host = f"[{address}]" if ":" in address else address
    return f"{NATIVE_SCHEME}://{host}:{port}"


def _go_duration(seconds: int) -> str:
    return f"{max(1, seconds)}s"


# -- the adapter -------------------------------------------------------------------------


@dataclass(slots=True)
class _Pending:
    ops: list[dict[str, Any]]
    future: asyncio.Future[None]
    what: str


class ConsulAdapter(HttpAdapter):
    """A Consul HTTP client implementing :class:`pysyncer.adapters.base.Adapter`."""

    name = "consul"

    def __init__(self, addresses: Sequence[str], settings: ConsulSettings | None = None) -> None:
        self.settings = s = settings or ConsulSettings()
        headers = {"Accept": "application/json", "User-Agent": "pysyncer-consul"}
        if s.token:
            headers["X-Consul-Token"] = s.token
        self.http = HttpClient.for_settings("consul", addresses, s, headers=headers)
        self.node = s.node
        self.datacenter = s.datacenter
        self._closed = asyncio.Event()
        self._status: dict[str, str] = {}  # copy id -> status (agent-mode renewals)
        self._pending: list[_Pending] = []
        self._flush: asyncio.Task[None] | None = None
        self.txns = 0
        self._last_listing: dict[str, tuple[Instance, LocalRef]] | None = None
        self._indexes: dict[str, int] = {}  # service -> X-Consul-Index of the last read
        self._services_index = 0

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        self.http.open()
        self._closed.clear()
        resp = await self._get("/v1/agent/self")
        value = self._json(resp, "agent self")
        config = value.get("Config") if isinstance(value, dict) else None
        if not isinstance(config, dict):
            raise BadResponseError("consul: /v1/agent/self has no Config")
        if not self.datacenter:
            self.datacenter = str(config.get("Datacenter") or "dc1")
        if not self.node:
            self.node = f"pysyncer-{self.datacenter}"

    async def close(self) -> None:
        self._closed.set()
        if self._flush is not None:
            self._flush.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._flush
            self._flush = None
        await super().close()

    # -- HTTP -----------------------------------------------------------------------------

    def _params(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        params = {"dc": self.settings.datacenter} if self.settings.datacenter else {}
        params.update(extra or {})
        return params

    async def _get(
        self, path: str, params: Mapping[str, str] | None = None, timeout: float | None = None
    ) -> Response:
        return await self.http.request("GET", path, params=self._params(params), timeout=timeout)

    @staticmethod
    def _error(what: str, resp: Response) -> AdapterError:
        detail = resp.text()[:300].strip()
        message = f"consul {what}: HTTP {resp.status} {detail}"
        if resp.status == 404:
            return NotFoundError(message, code="404")
        if resp.status in (400, 409, 413):
            return ConflictError(message, code=str(resp.status))
        return AdapterError(message, code=str(resp.status))

    def _json(self, resp: Response, what: str) -> Any:
        if resp.status != 200:
            raise self._error(what, resp)
        return resp.json()

    # -- reading --------------------------------------------------------------------------

    def _instance(self, entry: Any) -> tuple[Instance, LocalRef]:
        if not isinstance(entry, dict):
            raise BadResponseError("consul health entry: expected an object")
        node, service, checks = entry.get("Node"), entry.get("Service"), entry.get("Checks")
        if not isinstance(node, dict) or not isinstance(service, dict):
            raise BadResponseError("consul health entry: Node/Service missing")
        sid, name, port = service.get("ID"), service.get("Service"), service.get("Port", 0)
        if not isinstance(sid, str) or not isinstance(name, str) or not sid or not name:
            raise BadResponseError("consul health entry: Service.ID/Service missing")
        if isinstance(port, bool) or not isinstance(port, int):
            raise BadResponseError(f"consul service {sid}: Port is not an integer")
        address = service.get("Address") or node.get("Address") or ""
        meta_raw = service.get("Meta") or {}
        if not isinstance(meta_raw, dict) or not isinstance(address, str):
            raise BadResponseError(f"consul service {sid}: bad Meta/Address")
        meta = {str(k): str(v) for k, v in meta_raw.items()}
        try:
            props = decode_meta(meta)
        except (ValueError, UnicodeDecodeError) as exc:
            log.warning("consul service %s: undecodable pysyncer Meta (%s): read as is", sid, exc)
            props = meta
        worst = "passing"
        for check in checks or []:
            status = check.get("Status") if isinstance(check, dict) else None
            if isinstance(status, str) and _SEVERITY.get(status, 0) > _SEVERITY[worst]:
                worst = status
        native = Carried(
            service=ServiceKey("", name, "", "", NATIVE_PROJECT),
            instance_id=sid,
            host_name=str(node.get("Node") or ""),
            endpoints=(native_endpoint(address, port),),
            status=STATUS_FROM_KIND["consul"].get(worst, "DOWN"),
            properties=props,
        )
        instance = restore(native)
        if MARK_KEY in meta:
            self._status[sid] = instance.status
        return instance, LocalRef(name, sid)

    async def _service_entries(
        self, name: str, index: int = 0
    ) -> tuple[list[tuple[Instance, LocalRef]], int]:
        params: dict[str, str] = {}
        timeout = None
        if index > 0:
            wait = self.settings.wait
            params = {"index": str(index), "wait": f"{wait:g}s"}
            timeout = wait + wait / 16 + self.settings.timeout
        resp = await self._get(f"/v1/health/service/{quote(name, safe='')}", params, timeout)
        entries = self._json(resp, f"health of {name}")
        if not isinstance(entries, list):
            raise BadResponseError(f"consul health of {name}: expected a list")
        return [self._instance(e) for e in entries], _index(resp)

    async def _service_names(self, index: int = 0) -> tuple[list[str], int]:
        params: dict[str, str] = {}
        timeout = None
        if index > 0:
            wait = self.settings.wait
            params = {"index": str(index), "wait": f"{wait:g}s"}
            timeout = wait + wait / 16 + self.settings.timeout
        resp = await self._get("/v1/catalog/services", params, timeout)
        value = self._json(resp, "catalog services")
        if not isinstance(value, dict):
            raise BadResponseError("consul catalog services: expected an object")
        names = sorted(str(n) for n in value if self.settings.include_consul or str(n) != "consul")
        return names, _index(resp)

    async def _listing(self) -> dict[str, tuple[Instance, LocalRef]]:
        names, self._services_index = await self._service_names()
        semaphore = asyncio.Semaphore(self.settings.concurrency)

        async def one(name: str) -> tuple[list[tuple[Instance, LocalRef]], int]:
            async with semaphore:
                return await self._service_entries(name)

        results = await asyncio.gather(*(one(n) for n in names))
        listing: dict[str, tuple[Instance, LocalRef]] = {}
        self._indexes = {}
        for name, (entries, index) in zip(names, results, strict=True):
            self._indexes[name] = index
            for instance, ref in entries:
                if instance.instance_id in listing:
                    log.warning("consul: service id %s on two nodes; keeping one", ref.instance_id)
                    continue
                listing[instance.instance_id] = (instance, ref)
        return listing

    async def list_instances(self) -> Snapshot:
        listing = await self._listing()
        self._last_listing = listing
        return Snapshot(
            tuple(i for i, _ in listing.values()), {k: r for k, (_, r) in listing.items()}
        )

    async def get_instance(self, ref: LocalRef) -> Instance:
        entries, _ = await self._service_entries(ref.service_id)
        found = [(i, r) for i, r in entries if r.instance_id == ref.instance_id]
        if not found:
            raise NotFoundError(f"consul: no instance {ref.instance_id} of {ref.service_id}")
        mine = [i for i, _ in found if i.host_name == self.node]
        return mine[0] if mine else found[0][0]

    # -- writing --------------------------------------------------------------------------

    async def ensure_service(self, service: ServiceKey) -> str:
        # A Consul service exists as long as one instance is registered: nothing to create.
        if not service.name:
            raise ConflictError("consul: empty service name")
        return service.name

    def _service_body(self, instance: Instance) -> dict[str, Any]:
        if not instance.endpoints:
            raise ConflictError(f"consul: instance {instance.instance_id} has no endpoint")
        try:
            _, host, port = split_endpoint(instance.endpoints[0])
        except ValueError as exc:
            raise ConflictError(f"consul: instance {instance.instance_id}: {exc}") from None
        native = {"name", "instance_id"}
        if instance.endpoints == (native_endpoint(host, port),):
            native.add("endpoints")
        meta = encode_meta(carry(instance, frozenset(native)))
        return {
            "ID": instance.instance_id,
            "Service": instance.service.name,
            "Address": host,
            "Port": port,
            "Meta": meta,
            "Tags": [],
        }

    async def register(self, instance: Instance) -> LocalRef:
        name = await self.ensure_service(instance.service)
        body = self._service_body(instance)
        if self.settings.mode == "agent":
            ok = instance.status == "UP"
            agent_body = {
                "ID": body["ID"],
                "Name": name,
                "Address": body["Address"],
                "Port": body["Port"],
                "Meta": body["Meta"],
                "Tags": [],
                "Check": {
                    "Name": "pysyncer copy TTL",
                    "TTL": _go_duration(instance.ttl),
                    "DeregisterCriticalServiceAfter": _go_duration(self.settings.deregister_after),
                    # critical would let the reaper remove a live copy: the exact
                    # status rides in Meta, the check only says "alive, routable or not"
                    "Status": "passing" if ok else "warning",
                },
            }
            resp = await self.http.request(
                "PUT",
                "/v1/agent/service/register",
                params=self._params({"replace-existing-checks": "true"}),
                json_body=agent_body,
            )
            if resp.status != 200:
                raise self._error(f"register {instance.instance_id}", resp)
            self._status[instance.instance_id] = instance.status
        else:
            check = {
                "Node": self.node,
                "CheckID": f"service:{instance.instance_id}",
                "Name": "pysyncer copy status",
                "Status": STATUS_TO_KIND["consul"][instance.status],
                "ServiceID": instance.instance_id,
                "ServiceName": name,
            }
            await self._txn(
                [
                    {"Service": {"Verb": "set", "Node": self.node, "Service": body}},
                    {"Check": {"Verb": "set", "Check": check}},
                ],
                f"register {instance.instance_id}",
            )
        return LocalRef(name, instance.instance_id)

    async def unregister(self, ref: LocalRef) -> None:
        if self.settings.mode == "agent":
            resp = await self.http.request(
                "PUT",
                f"/v1/agent/service/deregister/{quote(ref.instance_id, safe='')}",
                params=self._params(),
                pass_statuses=(500,),
            )
            if resp.status not in (200, 404) and not _unknown(resp):
                raise self._error(f"deregister {ref.instance_id}", resp)
        else:
            await self._txn(
                [
                    {
                        "Service": {
                            "Verb": "delete",
                            "Node": self.node,
                            "Service": {"ID": ref.instance_id},
                        }
                    }
                ],
                f"deregister {ref.instance_id}",
            )
        self._status.pop(ref.instance_id, None)

    # -- catalog transactions -----------------------------------------------------------

    async def _txn(self, ops: list[dict[str, Any]], what: str) -> None:
        """Queue ``ops`` (applied atomically); concurrent callers share transactions."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append(_Pending(ops, future, what))
        if self._flush is None or self._flush.done():
            self._flush = asyncio.create_task(self._flush_pending())
        await future

    async def _flush_pending(self) -> None:
        await asyncio.sleep(0)  # let concurrent registrations join this round
        while self._pending:
            node_op = {
                "Node": {
                    "Verb": "set",
                    "Node": {
                        "Node": self.node,
                        "Address": self.settings.node_address,
                        "Datacenter": self.datacenter,
                        "Meta": {"external-source": "pysyncer"},
                    },
                }
            }
            batch: list[_Pending] = []
            size = 1
            while self._pending and size + len(self._pending[0].ops) <= MAX_TXN_OPS:
                item = self._pending.pop(0)
                batch.append(item)
                size += len(item.ops)
            if not batch:  # one item larger than a transaction: cannot happen here
                item = self._pending.pop(0)
                item.future.set_exception(ConflictError(f"consul {item.what}: too many ops"))
                continue
            await self._send_batch(node_op, batch)

    async def _send_batch(self, node_op: dict[str, Any], batch: list[_Pending]) -> None:
        ops = [node_op] + [op for item in batch for op in item.ops]
        try:
            self.txns += 1
            resp = await self.http.request("PUT", "/v1/txn", params=self._params(), json_body=ops)
        except AdapterError as exc:
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(exc)
            return
        if resp.status == 200:
            for item in batch:
                if not item.future.done():
                    item.future.set_result(None)
            return
        if resp.status == 409 and len(batch) > 1:
            for item in batch:  # rolled back: find the culprit by applying one by one
                await self._send_batch(node_op, [item])
            return
        error = self._txn_error(batch[0].what, resp)
        for item in batch:
            if not item.future.done():
                item.future.set_exception(error)

    def _txn_error(self, what: str, resp: Response) -> AdapterError:
        if resp.status == 409:
            with contextlib.suppress(BadResponseError, TypeError, AttributeError):
                errors = resp.json().get("Errors") or []
                text = "; ".join(str(e.get("What", "")) for e in errors if isinstance(e, dict))
                if text:
                    return ConflictError(f"consul {what}: {text}", code="409")
        return self._error(what, resp)

    # -- renewals -------------------------------------------------------------------------

    async def renew(self, refs: Sequence[LocalRef]) -> list[RenewResult]:
        if not refs:
            return []
        if self.settings.mode == "catalog":
            return await self._renew_catalog(refs)
        if any(r.instance_id not in self._status for r in refs):
            await self._learn_statuses()
        semaphore = asyncio.Semaphore(self.settings.concurrency)

        async def one(ref: LocalRef) -> RenewResult:
            verb = "pass" if self._status.get(ref.instance_id, "UP") == "UP" else "warn"
            check = quote(f"service:{ref.instance_id}", safe="")
            async with semaphore:
                try:
                    resp = await self.http.request(
                        "PUT",
                        f"/v1/agent/check/{verb}/{check}",
                        params=self._params(),
                        pass_statuses=(500,),
                    )
                except AdapterError as exc:
                    return RenewResult(ref, "error", str(exc))
            if resp.status == 200:
                return RenewResult(ref, "ok")
            if resp.status == 404 or _unknown(resp):
                return RenewResult(ref, "not_found", resp.text()[:200])
            return RenewResult(ref, "error", f"HTTP {resp.status} {resp.text()[:200]}")

        return list(await asyncio.gather(*(one(r) for r in refs)))

    async def _learn_statuses(self) -> None:
        """The statuses of this agent's copies (after a restart the cache is empty)."""
        with contextlib.suppress(AdapterError):
            resp = await self._get("/v1/agent/services")
            value = self._json(resp, "agent services")
            if not isinstance(value, dict):
                return
            for sid, service in value.items():
                meta = service.get("Meta") if isinstance(service, dict) else None
                if isinstance(meta, dict) and MARK_KEY in meta:
                    with contextlib.suppress(ValueError, UnicodeDecodeError):
                        status = decode_meta(meta).get("pysyncer.status", "UP")
                        self._status[str(sid)] = status

    async def _renew_catalog(self, refs: Sequence[LocalRef]) -> list[RenewResult]:
        resp = await self._get(f"/v1/catalog/node-services/{quote(self.node, safe='')}")
        if resp.status == 404:
            return [RenewResult(r, "not_found", f"node {self.node} is gone") for r in refs]
        value = self._json(resp, "node services")
        services = value.get("Services") if isinstance(value, dict) else None
        if isinstance(services, dict):  # older Consul: {id: service}
            services = list(services.values())
        if services is None:
            services = []
        if not isinstance(services, list):
            raise BadResponseError("consul node services: Services is not a list")
        present = {str(s.get("ID")) for s in services if isinstance(s, dict)}
        return [
            RenewResult(r, "ok")
            if r.instance_id in present
            else RenewResult(r, "not_found", "not on the copies' node")
            for r in refs
        ]

    # -- change detection -----------------------------------------------------------------

    async def changes(self) -> AsyncIterator[ChangeBatch]:
        backoff = 0.2
        while self._last_listing is None and not self._closed.is_set():
            try:
                self._last_listing = await self._listing()
            except AdapterError as exc:
                if self._closed.is_set() or not self.http.started:
                    return
                log.warning("consul listing: %s (retrying in %.1fs)", exc, backoff)
                await self._sleep(backoff)
                backoff = min(backoff * 2, self.settings.retry_max)
                continue
            yield ChangeBatch([], resync=True)  # no listing of the caller covers the start
        if self._closed.is_set():
            return
        watch = _Watch(self, self._last_listing or {})
        try:
            async for batch in watch.run():
                yield batch
        finally:
            await watch.stop()


class _Watch:
    """The blocking-query watchers of one :meth:`ConsulAdapter.changes` iterator."""

    def __init__(self, adapter: ConsulAdapter, listing: Mapping[str, tuple[Instance, LocalRef]]):
        self.adapter = adapter
        self.state: dict[str, dict[str, tuple[Instance, LocalRef]]] = {}
        for iid, (instance, ref) in listing.items():
            self.state.setdefault(ref.service_id, {})[iid] = (instance, ref)
        self.queue: asyncio.Queue[list[ChangeEvent]] = asyncio.Queue()
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.services_task: asyncio.Task[None] | None = None

    async def run(self) -> AsyncIterator[ChangeBatch]:
        adapter = self.adapter
        for name in set(adapter._indexes) | set(self.state):
            self._watch(name, adapter._indexes.get(name, 0))
        self.services_task = asyncio.create_task(self._services(adapter._services_index))
        closed = asyncio.create_task(adapter._closed.wait())
        try:
            while not adapter._closed.is_set():
                getter = asyncio.create_task(self.queue.get())
                done, _ = await asyncio.wait({getter, closed}, return_when=asyncio.FIRST_COMPLETED)
                if getter not in done:
                    getter.cancel()
                    return
                events = getter.result()
                while not self.queue.empty():
                    events.extend(self.queue.get_nowait())
                if events:
                    yield ChangeBatch(events)
        finally:
            closed.cancel()

    async def stop(self) -> None:
        tasks = list(self.tasks.values())
        if self.services_task is not None:
            tasks.append(self.services_task)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def _watch(self, name: str, index: int) -> None:
        if name not in self.tasks:
            self.tasks[name] = asyncio.create_task(self._service(name, index))

    async def _paced(self, last: float) -> float:
        """Sleep so that requests of one watcher are ``min_query_interval`` apart.

        ``last`` is when the previous request was sent, or ``_UNPACED`` after a plain
        read (index 0): the blocking query after it starts at once. That query's index is
        at least 1 (:func:`next_index`) and it is paced in turn, so a watcher never sends
        more than two requests per interval, even against a server stuck at index 0.
        """
        loop = asyncio.get_running_loop()
        gap = self.adapter.settings.min_query_interval - (loop.time() - last)
        if gap > 0:
            await self.adapter._sleep(gap)
        return loop.time()

    async def _services(self, index: int) -> None:
        adapter, backoff, last = self.adapter, 0.2, 0.0
        while not adapter._closed.is_set():
            last = await self._paced(last)
            try:
                names, new_index = await adapter._service_names(index)
            except AdapterError as exc:
                if adapter._closed.is_set() or not adapter.http.started:
                    return
                log.warning("consul services watch: %s (retrying in %.1fs)", exc, backoff)
                await adapter._sleep(backoff)
                backoff = min(backoff * 2, adapter.settings.retry_max)
                continue
            backoff = 0.2
            if index == 0:
                last = _UNPACED  # a plain read: its blocking query follows at once
            index = next_index(index, new_index)
            for name in names:
                self._watch(name, 0)
            for name in set(self.tasks) - set(names):
                task = self.tasks.pop(name)
                task.cancel()
                gone = self.state.pop(name, {})
                if gone:
                    self.queue.put_nowait([ChangeEvent("delete", i, r) for i, r in gone.values()])

    async def _service(self, name: str, index: int) -> None:
        adapter, backoff, last = self.adapter, 0.2, 0.0
        while not adapter._closed.is_set():
            last = await self._paced(last)
            try:
                entries, new_index = await adapter._service_entries(name, index)
            except AdapterError as exc:
                if adapter._closed.is_set() or not adapter.http.started:
                    return
                log.warning("consul watch of %s: %s (retrying in %.1fs)", name, exc, backoff)
                await adapter._sleep(backoff)
                backoff = min(backoff * 2, adapter.settings.retry_max)
                continue
            backoff = 0.2
            if index == 0:
                last = _UNPACED  # a plain read: its blocking query follows at once
            index = next_index(index, new_index)
            current = {i.instance_id: (i, r) for i, r in entries}
            previous = self.state.get(name, {})
            events = [
                ChangeEvent("upsert", i, r)
                for iid, (i, r) in current.items()
                if previous.get(iid, (None,))[0] != i
            ]
            events += [
                ChangeEvent("delete", i, r)
                for iid, (i, r) in previous.items()
                if iid not in current
            ]
            self.state[name] = current
            if adapter._last_listing is not None:
                for iid in previous.keys() - current.keys():
                    adapter._last_listing.pop(iid, None)
                adapter._last_listing.update(current)
            if events:
                self.queue.put_nowait(events)


_UNPACED: Final = float("-inf")  # `last` that makes _Watch._paced not wait


def next_index(sent: int, answered: int) -> int:
    """The index of the next blocking query after sending ``sent`` and reading ``answered``.

    Backwards (a restored or replaced server): 0, i.e. one plain read to start over.
    Below 1: 1, never 0 again (a query with index 0 does not block: the loop would spin).
    """
    if answered < 1:
        return 1
    if answered < sent:
        return 0
    return answered


def _index(resp: Response) -> int:
    raw = resp.headers.get("X-Consul-Index", "")
    try:
        return max(0, int(raw))
    except ValueError:
        return 0


def _unknown(resp: Response) -> bool:
    """Consul's "no such check/service" answers (404 today, a 500 on older agents)."""
    text = resp.text().lower()
    return resp.status in (404, 500) and ("unknown" in text or "does not have associated" in text)


def create(addresses: Sequence[str], settings: Mapping[str, Any]) -> ConsulAdapter:
    """Entry-point factory (group ``pysyncer.adapters``, name ``consul``)."""
    return ConsulAdapter(addresses, ConsulSettings.from_mapping(settings))
