"""The Consul adapter: catalog and health over the HTTP API, on aiohttp.

Owns HTTP to Consul (``X-Consul-Token``, ``?dc=``, failover over several addresses,
bounded bodies), reading services and their health, the two ways copies are written and
renewed, and the listing the change feed starts from.

Copies, ``mode = agent`` (default): ``PUT /v1/agent/service/register`` with a TTL check
(``service:<id>``) that the importer's renewals pass; ``DeregisterCriticalServiceAfter``
makes Consul reap a copy whose syncer is gone. ``mode = catalog``: the copies sit on a
synthetic node (``node``, default ``pysyncer-<dc>``) written through ``PUT /v1/txn``,
concurrent writes coalesced up to 64 operations per transaction; such entries have no
TTL (Consul never expires catalog entries): renewal only checks they are still there.

The other jobs live beside it: settings and the ``Meta`` encoding in ``consul_codec``,
the blocking-query watchers of the change feed in ``consul_watch`` (which reads through
this adapter). Like every adapter it must not touch gossip, the store, RPC or the sync
engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import quote

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
)
from pysyncer.adapters.consul_codec import (
    MARK_KEY,
    ConsulSettings,
    consul_index,
    decode_meta,
    encode_meta,
    go_duration,
    native_endpoint,
    read_health_entry,
)
from pysyncer.adapters.consul_watch import ConsulWatch
from pysyncer.adapters.fieldmap import STATUS_TO_KIND, carry, split_endpoint
from pysyncer.model import Instance, ServiceKey
from pysyncer.supervisor import tolerate

__all__ = ["MAX_TXN_OPS", "ConsulAdapter", "create"]

log = logging.getLogger(__name__)

MAX_TXN_OPS: Final = 64


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
            try:
                await self._flush
            except asyncio.CancelledError:
                pass
            except Exception as exc:  # closing anyway: its callers got their errors
                tolerate("consul-close-flush", exc)
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

    async def _get_blocking(self, path: str, index: int) -> Response:
        """GET ``path``; with ``index`` > 0, a blocking query that answers once the data
        passes ``index`` or ``adapter.wait`` ends (Consul adds up to wait/16 of jitter)."""
        if index <= 0:
            return await self._get(path)
        wait = self.settings.wait
        params = {"index": str(index), "wait": f"{wait:g}s"}
        return await self._get(path, params, wait + wait / 16 + self.settings.timeout)

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

    def _read_entry(self, entry: Any) -> tuple[Instance, LocalRef]:
        instance, ref, is_copy = read_health_entry(entry)
        if is_copy:
            self._status[ref.instance_id] = instance.status
        return instance, ref

    async def service_entries(
        self, name: str, index: int = 0
    ) -> tuple[list[tuple[Instance, LocalRef]], int]:
        resp = await self._get_blocking(f"/v1/health/service/{quote(name, safe='')}", index)
        entries = self._json(resp, f"health of {name}")
        if not isinstance(entries, list):
            raise BadResponseError(f"consul health of {name}: expected a list")
        return [self._read_entry(e) for e in entries], consul_index(resp.headers)

    async def service_names(self, index: int = 0) -> tuple[list[str], int]:
        resp = await self._get_blocking("/v1/catalog/services", index)
        value = self._json(resp, "catalog services")
        if not isinstance(value, dict):
            raise BadResponseError("consul catalog services: expected an object")
        names = sorted(str(n) for n in value if self.settings.include_consul or str(n) != "consul")
        return names, consul_index(resp.headers)

    async def _listing(self) -> dict[str, tuple[Instance, LocalRef]]:
        names, self._services_index = await self.service_names()
        semaphore = asyncio.Semaphore(self.settings.concurrency)

        async def one(name: str) -> tuple[list[tuple[Instance, LocalRef]], int]:
            async with semaphore:
                return await self.service_entries(name)

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
        entries, _ = await self.service_entries(ref.service_id)
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
                    "TTL": go_duration(instance.ttl),
                    "DeregisterCriticalServiceAfter": go_duration(self.settings.deregister_after),
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

    # -- change detection (the watchers live in consul_watch) -----------------------------

    @property
    def closing(self) -> asyncio.Event:
        return self._closed

    def halted(self) -> bool:
        return self._closed.is_set() or not self.http.started

    async def pause(self, seconds: float) -> None:
        await self._sleep(seconds)

    def saw_service(
        self,
        previous: Mapping[str, tuple[Instance, LocalRef]],
        current: Mapping[str, tuple[Instance, LocalRef]],
    ) -> None:
        if self._last_listing is not None:
            for iid in previous.keys() - current.keys():
                self._last_listing.pop(iid, None)
            self._last_listing.update(current)

    async def changes(self) -> AsyncIterator[ChangeBatch]:
        backoff = Backoff(self.settings.retry_max)
        while self._last_listing is None and not self._closed.is_set():
            try:
                self._last_listing = await self._listing()
            except AdapterError as exc:
                if self.halted():
                    return
                delay = backoff.failed()
                log.warning("consul listing: %s (retrying in %.1fs)", exc, delay)
                await self._sleep(delay)
                continue
            yield ChangeBatch([], resync=True)  # no listing of the caller covers the start
        if self._closed.is_set():
            return
        watch = ConsulWatch(self, self._last_listing or {}, self._indexes, self._services_index)
        try:
            async for batch in watch.run():
                yield batch
        finally:
            await watch.stop()


def _unknown(resp: Response) -> bool:
    """Consul's "no such check/service" answers (404 today, a 500 on older agents)."""
    text = resp.text().lower()
    return resp.status in (404, 500) and ("unknown" in text or "does not have associated" in text)


def create(addresses: Sequence[str], settings: Mapping[str, Any]) -> ConsulAdapter:
    """Entry-point factory (group ``pysyncer.adapters``, name ``consul``)."""
    return ConsulAdapter(addresses, ConsulSettings.from_mapping(settings))
