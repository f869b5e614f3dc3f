"""The adapter over the in-process embedded registry (:class:`EmbeddedRegistry`), no HTTP.

Used when pysyncer runs its own service center (``--sc-addr`` omitted): the same
protocol as the ServiceComb adapter, calling the registry's Python API directly and
following its native change feed (long-poll on an asyncio event: latency is one loop
turn). Registry errors (Service-Center error codes) become the adapters' typed errors.
Beyond the protocol it registers many copies in one registry call (``register_many``),
can follow the feed without the copies, tested on the stored records before any value is
built of them (``changes_without``), and renews the copies of one origin data center in
one call (``renew_origin``): every copy it registers is held by a registry holder of its
origin, named once per adapter object (a restarted syncer starts fresh holders; the
copies it had renewed one by one are held again by its first round).
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from types import MappingProxyType
from typing import Any, Literal

from pysyncer.adapters.base import (
    AdapterError,
    ChangeBatch,
    ChangeEvent,
    CopyTest,
    LocalRef,
    NotFoundError,
    RenewResult,
    Snapshot,
    UnavailableError,
)
from pysyncer.adapters.scshape import (
    ERR_SERVICE_NOT_EXISTS,
    error_from_code,
    event_from_change,
    instance_from_sc,
    instance_to_sc,
    service_from_sc,
    service_to_sc,
)
from pysyncer.errors import ConfigError
from pysyncer.model import ORIGIN_DC_PROPERTY, Instance, ServiceKey
from pysyncer.servicecenter.core import EmbeddedRegistry
from pysyncer.servicecenter.errors import RegistryError
from pysyncer.servicecenter.feed import Change

__all__ = ["EmbeddedAdapter", "create"]

FEED_WAIT = 30.0  # seconds one native long-poll may wait


def _typed(exc: RegistryError) -> AdapterError:
    return error_from_code(str(exc.code), str(exc), exc.http_status)


class EmbeddedAdapter:
    """:class:`pysyncer.adapters.base.Adapter` over an :class:`EmbeddedRegistry` object, with
    :class:`~pysyncer.adapters.base.RegistersMany`,
    :class:`~pysyncer.adapters.base.SkipsCopies` and
    :class:`~pysyncer.adapters.base.RenewsByHolder`."""

    name = "embedded"

    def __init__(
        self, registry: EmbeddedRegistry, *, domain: str = "default", project: str = "default"
    ) -> None:
        self.registry = registry
        self.domain = domain
        self.project = project
        self.domain_project = f"{domain}/{project}"
        self._closed = asyncio.Event()
        self._cursor: int | None = None  # revision of the last listing
        self._services_by_id: dict[str, ServiceKey] = {}
        self._service_ids: dict[ServiceKey, str] = {}  # what register() needs, cached
        self._tenants: dict[str, dict[str, str]] = {}  # keyword arguments by project text
        # Holders: this object's token, each origin's current holder name, and the
        # tenants (keyword arguments) where the origin's copies were held.
        self._token = uuid.uuid4().hex[:12]
        self._anew = itertools.count(1)
        self._holders: dict[str, str] = {}
        self._held_in: dict[str, dict[tuple[str, str], dict[str, str]]] = {}

    async def start(self) -> None:
        self._closed.clear()

    async def close(self) -> None:
        self._closed.set()

    def _tenant(self, service: ServiceKey) -> dict[str, str]:
        tenant = self._tenants.get(service.project)
        if tenant is None:
            domain, _, project = service.project.partition("/")
            tenant = {"domain": domain or self.domain, "project": project or self.project}
            self._tenants[service.project] = tenant
        return tenant

    def _holder(self, origin_dc: str | None, tenant: dict[str, str]) -> str | None:
        """The holder of the copies of ``origin_dc`` (None: not a copy), noting the tenant."""
        if origin_dc is None:
            return None
        holder = self._holders.get(origin_dc)
        if holder is None:
            holder = self._holders[origin_dc] = f"copies of {origin_dc} ({self._token}.0)"
        held_in = self._held_in.setdefault(origin_dc, {})
        held_in.setdefault((tenant["domain"], tenant["project"]), tenant)
        return holder

    def _check_open(self) -> None:
        if self._closed.is_set():
            raise UnavailableError("embedded adapter is closed")

    async def ensure_service(self, service: ServiceKey) -> str:
        self._check_open()
        try:
            # create_service returns the existing id for the same key (idempotent), and
            # finds it by exact key in O(1) (exist_service would match version rules).
            service_id = await self.registry.create_service(
                service_to_sc(service), **self._tenant(service)
            )
        except RegistryError as exc:
            raise _typed(exc) from exc
        self._services_by_id[service_id] = service
        self._service_ids[service] = service_id
        return service_id

    async def register(self, instance: Instance) -> LocalRef:
        self._check_open()
        service = instance.service
        service_id = self._service_ids.get(service) or await self.ensure_service(service)
        body = instance_to_sc(instance)
        tenant = self._tenant(service)
        holder = self._holder(instance.properties.get(ORIGIN_DC_PROPERTY), tenant)
        try:
            try:
                instance_id = await self.registry.register_instance(
                    service_id, body, holder=holder, **tenant
                )
            except RegistryError as exc:
                if exc.code != int(ERR_SERVICE_NOT_EXISTS):
                    raise
                # The cached service was deleted meanwhile: create it again, once.
                self._service_ids.pop(service, None)
                service_id = await self.ensure_service(service)
                instance_id = await self.registry.register_instance(
                    service_id, body, holder=holder, **tenant
                )
        except RegistryError as exc:
            raise _typed(exc) from exc
        return LocalRef(service_id, instance_id)

    async def register_many(self, instances: Sequence[Instance]) -> list[LocalRef | AdapterError]:
        """:meth:`register` of each instance, in one registry call per run of one tenant
        and origin."""
        self._check_open()
        answers: list[LocalRef | AdapterError] = []
        start = 0
        while start < len(instances):  # a run of one tenant and origin (usually all)
            project = instances[start].service.project
            origin = instances[start].properties.get(ORIGIN_DC_PROPERTY)
            end = start + 1
            while (
                end < len(instances)
                and instances[end].service.project == project
                and instances[end].properties.get(ORIGIN_DC_PROPERTY) == origin
            ):
                end += 1
            answers += await self._register_run(instances[start:end])
            start = end
        return answers

    async def _register_run(self, instances: Sequence[Instance]) -> list[LocalRef | AdapterError]:
        refused: dict[int, AdapterError] = {}  # positions whose service could not be made
        pairs: list[tuple[str, dict[str, Any]]] = []
        service_ids = self._service_ids
        last: ServiceKey | None = None
        service_id = ""
        for at, instance in enumerate(instances):
            service = instance.service
            # Copies of one service come together and share its key: looked up once.
            if service is not last:
                found = service_ids.get(service)
                if found is None:
                    try:
                        found = await self.ensure_service(service)
                    except AdapterError as exc:
                        refused[at] = exc
                        last = None
                        continue
                last, service_id = service, found
            pairs.append((service_id, instance_to_sc(instance)))
        tenant = self._tenant(instances[0].service)
        holder = self._holder(instances[0].properties.get(ORIGIN_DC_PROPERTY), tenant)
        # the bodies are new (instance_to_sc): the registry keeps their lists and dicts
        written = await self.registry.register_instances(
            pairs, holder=holder, handed_over=True, **tenant
        )
        assert len(written) == len(pairs), "the registry answers every registration"
        answers: list[LocalRef | AdapterError] = []
        sent = 0  # registrations answered so far
        for at in range(len(instances)):
            if at in refused:
                answers.append(refused[at])
                continue
            sid, answer = pairs[sent][0], written[sent]
            sent += 1
            if isinstance(answer, str):
                answers.append(LocalRef(sid, answer))
            elif answer.code == int(ERR_SERVICE_NOT_EXISTS):  # deleted meanwhile: as register()
                try:
                    answers.append(await self.register(instances[at]))
                except AdapterError as exc:
                    answers.append(exc)
            else:
                answers.append(_typed(answer))
        return answers

    async def get_instance(self, ref: LocalRef) -> Instance:
        self._check_open()
        try:
            raw, _ = await self.registry.get_instance(
                ref.service_id, ref.instance_id, domain=self.domain, project=self.project
            )
            svc = await self.registry.get_service(
                ref.service_id, domain=self.domain, project=self.project
            )
        except RegistryError as exc:
            raise _typed(exc) from exc
        return instance_from_sc(raw, service_from_sc(svc, self.domain_project))

    async def renew(self, refs: Sequence[LocalRef]) -> list[RenewResult]:
        return await self._heartbeat(refs, None)

    async def renew_origin(self, origin_dc: str) -> int:
        """Renew the holder of ``origin_dc``'s copies in each tenant it holds copies in."""
        self._check_open()
        holder = self._holders.get(origin_dc)
        if holder is None:
            return 0
        held_in = self._held_in.get(origin_dc, {})
        try:
            return sum(self.registry.renew_holder(holder, **t) for t in held_in.values())
        except RegistryError as exc:
            raise _typed(exc) from exc

    async def renew_held(
        self, origin_dc: str, refs: Sequence[LocalRef], *, anew: bool = False
    ) -> list[RenewResult]:
        """:meth:`renew` of copies of ``origin_dc``, held by its holder from now on (a new
        holder name when ``anew``: the old one is renewed no more)."""
        self._check_open()
        if anew:
            self._holders[origin_dc] = f"copies of {origin_dc} ({self._token}.{next(self._anew)})"
            self._held_in.pop(origin_dc, None)
        holder = self._holder(origin_dc, {"domain": self.domain, "project": self.project})
        return await self._heartbeat(refs, holder)

    async def _heartbeat(self, refs: Sequence[LocalRef], holder: str | None) -> list[RenewResult]:
        self._check_open()
        if not refs:
            return []
        answers = await self.registry.heartbeat_set(
            [(r.service_id, r.instance_id) for r in refs],
            holder=holder,
            domain=self.domain,
            project=self.project,
        )
        results: list[RenewResult] = []
        for ref, answer in zip(refs, answers, strict=True):
            message = str(answer.get("errMessage") or "")
            results.append(
                RenewResult(ref, "not_found", message) if message else RenewResult(ref, "ok")
            )
        return results

    async def unregister(self, ref: LocalRef) -> None:
        self._check_open()
        try:
            await self.registry.unregister_instance(
                ref.service_id, ref.instance_id, domain=self.domain, project=self.project
            )
        except RegistryError as exc:
            error = _typed(exc)
            if not isinstance(error, NotFoundError):
                raise error from exc

    async def list_instances(self) -> Snapshot:
        self._check_open()
        try:
            value, revision = await self.registry.govern_services(
                ["instances"], domain=self.domain, project=self.project
            )
        except RegistryError as exc:
            raise _typed(exc) from exc
        instances: list[Instance] = []
        refs: dict[str, LocalRef] = {}
        for detail in value.get("allServicesDetail", []):
            svc = detail["microService"]
            key = service_from_sc(svc, self.domain_project)
            service_id = str(svc["serviceId"])
            self._services_by_id[service_id] = key
            for raw in detail.get("instances", []):
                inst = instance_from_sc(raw, key)
                instances.append(inst)
                refs[inst.instance_id] = LocalRef(service_id, inst.instance_id)
        self._cursor = revision
        return Snapshot(tuple(instances), refs, str(revision))

    def _event(self, change: Change) -> ChangeEvent | None:
        """One feed entry as an event, read in place: the registry validated its shape
        and never mutates a stored record (an update replaces it), so no copy is made."""
        service = change.service
        service_id = str(service.get("serviceId", ""))
        key = self._services_by_id.get(service_id)
        if key is None or change.instance is None:
            shared = {"action": change.action, "service": service, "instance": change.instance}
            event, service_id, key = event_from_change(
                shared, self.domain_project, self._services_by_id
            )
            if key is not None and service_id:
                self._services_by_id[service_id] = key
            return event
        raw = change.instance
        health = raw["healthCheck"]
        instance = Instance(
            service=key,
            instance_id=raw["instanceId"],
            host_name=raw["hostName"],
            endpoints=tuple(raw["endpoints"]),
            status=raw["status"],
            properties=MappingProxyType(raw["properties"]),
            health_interval=health["interval"],
            health_times=health["times"],
        )
        kind: Literal["upsert", "delete"] = "delete" if change.action == "DELETE" else "upsert"
        return ChangeEvent(kind, instance, LocalRef(service_id, instance.instance_id))

    def feed_lag(self) -> int:
        """Revisions of the registry past what :meth:`changes` has read (its lag)."""
        if self._cursor is None:
            return 0
        return self.registry.revision(domain=self.domain, project=self.project) - self._cursor

    def changes(self) -> AsyncIterator[ChangeBatch]:
        return self._follow(None)

    def changes_without(self, is_copy: CopyTest) -> AsyncIterator[ChangeBatch]:
        """:meth:`changes` less the copies, tested on each feed entry's stored record."""
        return self._follow(is_copy)

    async def _follow(self, is_copy: CopyTest | None) -> AsyncIterator[ChangeBatch]:
        if self._cursor is None:
            self._cursor = self.registry.revision(domain=self.domain, project=self.project)
            yield ChangeBatch([], resync=True)  # no listing covers the start point
        while not self._closed.is_set():
            cursor = self._cursor
            assert cursor is not None
            poll = asyncio.ensure_future(
                self.registry.changes(cursor, FEED_WAIT, domain=self.domain, project=self.project)
            )
            closing = asyncio.ensure_future(self._closed.wait())
            try:
                await asyncio.wait({poll, closing}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                closing.cancel()
            if not poll.done():
                poll.cancel()
                return
            try:
                batch = poll.result()
            except RegistryError as exc:
                raise _typed(exc) from exc
            if batch.reset:
                self._cursor = batch.revision
                yield ChangeBatch([], resync=True)
                continue
            changes: Sequence[Change] = batch.changes
            if is_copy is not None:
                changes = [c for c in changes if not _is_copy_entry(c, is_copy)]
            skipped = len(batch.changes) - len(changes)
            events = [e for e in map(self._event, changes) if e is not None]
            # A re-list during the wait may have moved the cursor forward: keep the later.
            self._cursor = max(self._cursor or 0, batch.revision)
            if events or skipped:
                yield ChangeBatch(events, skipped=skipped)
            elif not batch.changes:
                await asyncio.sleep(0.05)  # an empty answer came early (registry closing)


def _is_copy_entry(change: Change, is_copy: CopyTest) -> bool:
    """Whether a feed entry is an instance ``is_copy`` calls a copy (the registry validated
    the record: it has its properties and id)."""
    raw = change.instance
    return raw is not None and is_copy(raw["properties"], raw["instanceId"])


def create(addresses: Sequence[str], settings: Mapping[str, Any]) -> EmbeddedAdapter:
    """Entry-point factory (name ``embedded``): ``settings["registry"]`` is the registry."""
    registry = settings.get("registry")
    if not isinstance(registry, EmbeddedRegistry):
        raise ConfigError("embedded adapter: settings['registry'] must be an EmbeddedRegistry")
    unknown = sorted(set(settings) - {"registry", "domain", "project"})
    if unknown:
        raise ConfigError(f"embedded adapter: unknown setting(s) {', '.join(unknown)}")
    return EmbeddedAdapter(
        registry,
        domain=str(settings.get("domain", "default")),
        project=str(settings.get("project", "default")),
    )
