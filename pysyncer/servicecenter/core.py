"""The embedded Service-Center's data model, without HTTP: :class:`EmbeddedRegistry`.

Owns microservices and instances per tenant (domain/project) and the operations on them:
create, find, govern, register, heartbeat, update and remove, with Service-Center's
answers and error codes. Records are the Service-Center v4 JSON shapes (``MicroService``,
``MicroServiceInstance``); a stored record is never mutated in place (an update replaces
it), and every record handed out is a copy. It composes the other jobs, each in its own
module: request checks (``validation``), instance leases and their expiry (``leases``),
revisions with the long-poll change feed (``feed``), look-ups by key and version rule
(``lookup``), the governance views (``governance``) and the tenants (``tenants``: created
by writes only, within the tenant quota). Through the Python API only, instances may be
registered under a *holder* that renews all of them in one call (:meth:`renew_holder`;
see ``leases``): the HTTP API and the records stay Service-Center's. Quotas and lease
bounds come from :class:`~pysyncer.servicecenter.settings.ServiceCenterSettings`.

Everything runs on one asyncio event loop: operations are synchronous inside their
coroutine, hence atomic. It must not import ``app`` (HTTP), touch sockets or know the
sync engine.
"""

from __future__ import annotations

import asyncio
import copy
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Final

from pysyncer.servicecenter import lookup
from pysyncer.servicecenter.errors import (
    ERR_DEPLOYED_INSTANCE,
    ERR_INSTANCE_NOT_EXISTS,
    ERR_SCHEMA_NOT_EXISTS,
    ERR_SERVICE_ALREADY_EXISTS,
    ERR_SERVICE_NOT_EXISTS,
    RegistryError,
    invalid,
    no_quota,
)
from pysyncer.servicecenter.feed import (
    DEFAULT_CHANGE_LOG_SIZE,
    MAX_CHANGES_PER_BATCH,
    Action,
    FeedBatch,
    check_feed_request,
)
from pysyncer.servicecenter.governance import service_detail, sibling_versions, statistics
from pysyncer.servicecenter.ids import new_id
from pysyncer.servicecenter.leases import EXPIRY_STEP, Lease, LeaseQueue
from pysyncer.servicecenter.settings import DEFAULT_SETTINGS, ServiceCenterSettings
from pysyncer.servicecenter.tenants import Tenant, Tenants
from pysyncer.servicecenter.validation import (
    INSTANCE_STATUSES,
    JSON,
    check_properties,
    string_map,
    validate_instance,
    validate_service,
)

__all__ = ["DEFAULT_DOMAIN", "DEFAULT_PROJECT", "EmbeddedRegistry"]

DEFAULT_DOMAIN: Final = "default"
DEFAULT_PROJECT: Final = "default"
# Lease-queue entries an operation looks at before it runs (the eviction task does the
# rest, EXPIRY_STEP at a time): a wave of leases coming due together never stalls the
# operations of the moment (issue 17: 217 ms of loop CPU at 1,000,000 copies with 2,000).
API_EXPIRY_STEP: Final = 128


_clock_text: list[tuple[int, str]] = [(0, "0")]


def _now_text() -> str:
    """The wall-clock second as text; one string per second, shared by every record."""
    now = int(time.time())
    if _clock_text[0][0] != now:
        _clock_text[0] = (now, str(now))
    return _clock_text[0][1]


def _holder_error(holder: str | None) -> RegistryError | None:
    """The error refusing ``holder`` (None: a valid holder name, or no holder)."""
    if holder is not None and (not isinstance(holder, str) or not holder):
        return invalid("'holder' must be a non-empty string")
    return None


def _check_holder(holder: str | None) -> None:
    error = _holder_error(holder)
    if error is not None:
        raise error


_EndpointIndex = dict[tuple[str, ...], dict[str, None]]  # endpoints -> ids, in order


def _index_endpoints(leases: Mapping[str, Lease]) -> _EndpointIndex:
    index: _EndpointIndex = {}
    for instance_id, lease in leases.items():
        index.setdefault(tuple(lease.instance["endpoints"]), {})[instance_id] = None
    return index


def _same_holder(
    ids: Mapping[str, None] | None, leases: Mapping[str, Lease], holder: str | None
) -> list[str]:
    """The ids among ``ids`` renewed by ``holder`` (None: by their own heartbeats). An
    application's registration never takes over an instance a holder renews: a syncer's
    copy with the same endpoints keeps its id to itself, and the other way round."""
    if not ids:
        return []
    found = []
    for instance_id in ids:
        held = leases[instance_id].holder
        if (None if held is None else held.name) == holder:
            found.append(instance_id)
    return found


def _unindex(index: _EndpointIndex, endpoints: list[str], instance_id: str) -> None:
    key = tuple(endpoints)
    ids = index[key]
    del ids[instance_id]
    if not ids:
        del index[key]


def _without_times(record: Mapping[str, Any]) -> JSON:
    return {k: v for k, v in record.items() if k not in ("timestamp", "modTimestamp")}


class EmbeddedRegistry:
    """Microservices, instances, leases, revisions and the change feed of one registry.

    Every operation takes keyword ``domain`` and ``project`` (both ``"default"`` unless
    given); tenants are fully separate. Failures raise :class:`RegistryError` carrying
    Service-Center's ``errorCode``.

    ``clock`` (monotonic seconds) drives leases; ``initial_revision`` is the revision
    every tenant starts at (default: microseconds since the epoch when the registry
    starts, so a restarted registry never reuses a revision a client has seen); an
    unknown tenant reads as that revision, so a client following it from there gets the
    changes of its creation in order; ``ttl_override`` replaces every lease's TTL
    (Service-Center's ``registry.instance.ttl``); ``settings`` holds the quotas and the
    lease bounds.
    """

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        initial_revision: int | None = None,
        change_log_size: int = DEFAULT_CHANGE_LOG_SIZE,
        ttl_override: float | None = None,
        settings: ServiceCenterSettings = DEFAULT_SETTINGS,
    ) -> None:
        if change_log_size < 1:
            raise ValueError("change_log_size must be at least 1")
        self.settings = settings
        start = initial_revision if initial_revision is not None else time.time_ns() // 1000
        self._tenants = Tenants(start, change_log_size, settings.max_tenants)
        self._leases = LeaseQueue(clock, ttl_override)
        # Instance ids by endpoints, per (domain, project, service id), built for a service
        # by its first registration without an id (the same-endpoints takeover would scan
        # every instance of it), kept while the service has instances; copies carry their
        # ids, so the services only they fill have none and pay nothing for it.
        self._by_endpoints: dict[tuple[str, str, str], _EndpointIndex] = {}
        self._closed = False

    # ------------------------------------------------------------------ internals

    def _service(self, tenant: Tenant, service_id: str) -> JSON:
        service = tenant.services.get(service_id)
        if service is None:
            raise RegistryError(ERR_SERVICE_NOT_EXISTS, f"service {service_id!r} does not exist")
        return service

    def _lease(self, tenant: Tenant, service_id: str, instance_id: str) -> Lease:
        self._service(tenant, service_id)
        lease = tenant.instances.get(service_id, {}).get(instance_id)
        if lease is None:
            raise RegistryError(
                ERR_INSTANCE_NOT_EXISTS,
                f"instance {instance_id!r} of service {service_id!r} does not exist",
            )
        return lease

    def _remove_instance(self, tenant: Tenant, service_id: str, instance_id: str) -> None:
        leases = tenant.instances.get(service_id)
        lease = None if leases is None else leases.pop(instance_id, None)
        if lease is None:
            return
        self._leases.release(lease)
        if self._by_endpoints:
            index = self._by_endpoints.get((tenant.domain, tenant.project, service_id))
            if index is not None:
                _unindex(index, lease.instance["endpoints"], instance_id)
        if not leases:
            del tenant.instances[service_id]
            self._by_endpoints.pop((tenant.domain, tenant.project, service_id), None)
        tenant.feed.record("DELETE", tenant.services[service_id], lease.instance)

    def expire(self, limit: int = EXPIRY_STEP) -> int:
        """Remove the instances whose lease has run out; returns how many (DELETE changes).

        One call looks at most ``limit`` queue entries (a bounded stall); every operation
        first looks at :data:`API_EXPIRY_STEP` of them, and :meth:`run_eviction` takes a
        larger wave in steps."""
        removed = 0
        for lease in self._leases.expired(self._holds, limit):
            tenant = self._tenants[lease.scope]
            self._remove_instance(tenant, lease.service_id, lease.instance["instanceId"])
            removed += 1
        return removed

    def _holds(self, lease: Lease) -> bool:
        """Whether ``lease`` is its instance's current one (not unregistered or replaced)."""
        tenant = self._tenants[lease.scope]
        held = tenant.instances.get(lease.service_id, {}).get(lease.instance["instanceId"])
        return held is lease

    def _get(self, domain: str, project: str) -> Tenant:
        """The tenant to read (an unknown one reads empty and is not kept)."""
        self.expire(API_EXPIRY_STEP)
        return self._tenants.read(domain, project)

    # ------------------------------------------------------------------ microservices

    async def create_service(
        self,
        service: Mapping[str, Any],
        *,
        domain: str = DEFAULT_DOMAIN,
        project: str = DEFAULT_PROJECT,
    ) -> str:
        """Create a microservice; returns its id.

        Like Service-Center: the same (environment, appId, serviceName, version) again
        returns the existing id (200); a requested ``serviceId`` that conflicts with the
        existing one, or that another service already has, is 400010. Beyond
        ``settings.max_services`` services in the project: 400100.
        """
        record = validate_service(service, self.settings)
        self.expire(API_EXPIRY_STEP)
        tenant = self._tenants.write(domain, project)
        key = (record["environment"], record["appId"], record["serviceName"], record["version"])
        requested = record["serviceId"]
        existing = tenant.keys.get(key)
        if existing is not None:
            if requested and requested != existing:
                raise RegistryError(
                    ERR_SERVICE_ALREADY_EXISTS,
                    "ServiceID conflict or found the same service with different id "
                    f"(existing serviceId {existing})",
                )
            return existing
        if requested and requested in tenant.services:
            raise RegistryError(
                ERR_SERVICE_ALREADY_EXISTS, f"serviceId {requested} is used by another service"
            )
        if len(tenant.services) >= self.settings.max_services:
            raise no_quota(
                f"{domain}/{project} holds {len(tenant.services)} services, the most allowed"
            )
        record["serviceId"] = requested or new_id()
        record["timestamp"] = record["modTimestamp"] = _now_text()
        tenant.services[record["serviceId"]] = record
        tenant.keys[key] = record["serviceId"]
        tenant.feed.record("CREATE", record, None)
        return str(record["serviceId"])

    async def list_services(
        self, *, domain: str = DEFAULT_DOMAIN, project: str = DEFAULT_PROJECT
    ) -> list[JSON]:
        tenant = self._get(domain, project)
        return [copy.deepcopy(s) for s in tenant.services.values()]

    async def get_service(
        self, service_id: str, *, domain: str = DEFAULT_DOMAIN, project: str = DEFAULT_PROJECT
    ) -> JSON:
        return copy.deepcopy(self._service(self._get(domain, project), service_id))

    async def delete_service(
        self,
        service_id: str,
        *,
        force: bool = False,
        domain: str = DEFAULT_DOMAIN,
        project: str = DEFAULT_PROJECT,
    ) -> None:
        """Delete a service; with instances only when ``force`` (each one a DELETE change)."""
        tenant = self._get(domain, project)
        service = self._service(tenant, service_id)
        instance_ids = list(tenant.instances.get(service_id, {}))
        if instance_ids and not force:
            raise RegistryError(
                ERR_DEPLOYED_INSTANCE,
                f"service {service_id} has {len(instance_ids)} instance(s); use force=true",
            )
        for instance_id in instance_ids:
            self._remove_instance(tenant, service_id, instance_id)
        del tenant.services[service_id]
        key = (service["environment"], service["appId"], service["serviceName"], service["version"])
        tenant.keys.pop(key, None)
        tenant.feed.record("DELETE", service, None)

    async def delete_services(
        self,
        service_ids: Sequence[str],
        *,
        force: bool = False,
        domain: str = DEFAULT_DOMAIN,
        project: str = DEFAULT_PROJECT,
    ) -> list[JSON]:
        """Delete many services: ``[{"serviceId", "errMessage"}]``, one per distinct id.

        Like Service-Center's batch unregister: each id is deleted on its own (as
        :meth:`delete_service` with ``force``), a repeated id is answered once, and
        ``errMessage`` is empty on success, else the failure with its error code
        (``400012 ...`` unknown, ``400013 ...`` has instances without ``force``).
        """
        if not service_ids:
            raise invalid("'serviceIds' must name at least one service")
        results: list[JSON] = []
        for service_id in dict.fromkeys(service_ids):
            message = ""
            try:
                await self.delete_service(service_id, force=force, domain=domain, project=project)
            except RegistryError as exc:
                message = str(exc)
            results.append({"serviceId": service_id, "errMessage": message})
        return results

    async def exist_service(
        self,
        app_id: str,
        service_name: str,
        version: str,
        environment: str = "",
        *,
        domain: str = DEFAULT_DOMAIN,
        project: str = DEFAULT_PROJECT,
    ) -> str:
        """The id of the service with this key (version may be a rule such as ``latest``)."""
        if not service_name or not version:
            raise invalid("'serviceName' and 'version' are required")
        tenant = self._get(domain, project)
        return lookup.service_id_by_key(tenant, app_id, service_name, version, environment)

    async def exist_schema(
        self,
        service_id: str,
        schema_id: str,
        *,
        domain: str = DEFAULT_DOMAIN,
        project: str = DEFAULT_PROJECT,
    ) -> str:
        """``schema_id`` when the service declares it (schema contents are not stored)."""
        service = self._service(self._get(domain, project), service_id)
        if schema_id not in service.get("schemas", ()):
            raise RegistryError(ERR_SCHEMA_NOT_EXISTS, f"schema {schema_id!r} does not exist")
        return schema_id

    # ------------------------------------------------------------------ instances

    async def register_instance(
        self,
        service_id: str,
        instance: Mapping[str, Any],
        *,
        holder: str | None = None,
        domain: str = DEFAULT_DOMAIN,
        project: str = DEFAULT_PROJECT,
    ) -> str:
        """Register (or re-register) an instance; returns its id and starts its lease.

        A client-given ``instanceId`` is kept: registering it again overwrites the
        instance (UPDATE when anything changed) and renews its lease. Without one, an
        instance of the same service with identical endpoints and the same ``holder``
        keeps its id (an application never takes over a syncer's held copy). A new
        instance beyond ``settings.max_instances`` of the service: 400100. ``holder``
        names the holder that renews it from now on (:meth:`renew_holder`; None: none).
        """
        tenant = self._get(domain, project)  # read, not created: the service must exist
        _check_holder(holder)
        return self._register(tenant, (tenant.domain, tenant.project), service_id, instance, holder)

    async def register_instances(
        self,
        instances: Iterable[tuple[str, Mapping[str, Any]]],
        *,
        holder: str | None = None,
        handed_over: bool = False,
        domain: str = DEFAULT_DOMAIN,
        project: str = DEFAULT_PROJECT,
    ) -> list[str | RegistryError]:
        """:meth:`register_instance` of many ``(service id, instance)`` pairs at once, in
        order: each one's id, or the :class:`RegistryError` its own call would have raised
        (the others are registered all the same). Each has the same checks, change (at its
        own revision), lease and ``holder`` as by itself; leases run out as of the call's
        start. ``handed_over``: the caller gives the instance bodies up, so the records may
        keep their lists and dicts (see :func:`validate_instance`)."""
        tenant = self._get(domain, project)
        scope = (tenant.domain, tenant.project)
        refused = _holder_error(holder) is not None  # then each pair answers that error
        register = self._register
        answers: list[str | RegistryError] = []
        for service_id, instance in instances:
            try:
                if refused:
                    _check_holder(holder)
                answers.append(register(tenant, scope, service_id, instance, holder, handed_over))
            except RegistryError as exc:
                answers.append(exc)
        return answers

    def _register(
        self,
        tenant: Tenant,
        scope: tuple[str, str],
        service_id: str,
        instance: Mapping[str, Any],
        holder: str | None,
        handed_over: bool = False,
    ) -> str:
        """Register one instance in ``tenant`` (whose key is ``scope``) for a caller that
        has checked ``holder``."""
        service = tenant.services.get(service_id)
        if service is None:
            service = self._service(tenant, service_id)  # raises: no such service
        record = validate_instance(instance, self.settings, handed_over=handed_over)
        leases = tenant.instances.get(service_id)
        if leases is None:
            leases = {}  # stored in tenant.instances once the instance is in
        index = None
        if self._by_endpoints:
            index = self._by_endpoints.get((*scope, service_id))
        instance_id = record["instanceId"]
        if not instance_id:  # the first instance with the same endpoints keeps its id
            if index is None:
                index = self._by_endpoints[(*scope, service_id)] = _index_endpoints(leases)
            same = _same_holder(index.get(tuple(record["endpoints"])), leases, holder)
            if not same:
                instance_id = new_id()
            elif len(same) == 1:
                instance_id = next(iter(same))
            else:  # several (registered with their ids): the first registered
                instance_id = next(i for i in leases if i in same)
        previous = leases.get(instance_id)
        if previous is None and len(leases) >= self.settings.max_instances:
            raise no_quota(f"service {service_id} has {len(leases)} instances, the most allowed")
        record["instanceId"] = instance_id
        record["serviceId"] = service_id
        record["version"] = service["version"]
        action: Action | None
        if previous is None:
            record["timestamp"] = record["modTimestamp"] = _now_text()
            action = "CREATE"
            if not leases:
                tenant.instances[service_id] = leases
        elif _without_times(previous.instance) == record:
            action = None
            record = previous.instance
        else:
            record["timestamp"] = previous.instance["timestamp"]
            record["modTimestamp"] = _now_text()
            action = "UPDATE"
        if index is not None:
            if previous is None:
                index.setdefault(tuple(record["endpoints"]), {})[instance_id] = None
            elif previous.instance["endpoints"] != record["endpoints"]:
                _unindex(index, previous.instance["endpoints"], instance_id)
                index.setdefault(tuple(record["endpoints"]), {})[instance_id] = None
        leases[instance_id] = self._leases.grant(record, previous, scope, service_id, holder)
        if action is not None:
            tenant.feed.record(action, service, record)
        return str(instance_id)

    async def list_instances(
        self,
        service_id: str,
        *,
        consumer_id: str = "",
        domain: str = DEFAULT_DOMAIN,
        project: str = DEFAULT_PROJECT,
    ) -> tuple[list[JSON], int]:
        """The instances of a service and the tenant revision they were read at."""
        tenant = self._get(domain, project)
        lookup.consumer(tenant, consumer_id)
        self._service(tenant, service_id)
        leases = tenant.instances.get(service_id, {}).values()
        return [copy.deepcopy(lease.instance) for lease in leases], tenant.feed.revision

    async def get_instance(
        self,
        service_id: str,
        instance_id: str,
        *,
        consumer_id: str = "",
        domain: str = DEFAULT_DOMAIN,
        project: str = DEFAULT_PROJECT,
    ) -> tuple[JSON, int]:
        tenant = self._get(domain, project)
        lookup.consumer(tenant, consumer_id)
        lease = self._lease(tenant, service_id, instance_id)
        return copy.deepcopy(lease.instance), tenant.feed.revision

    async def unregister_instance(
        self,
        service_id: str,
        instance_id: str,
        *,
        domain: str = DEFAULT_DOMAIN,
        project: str = DEFAULT_PROJECT,
    ) -> None:
        tenant = self._get(domain, project)
        leases = tenant.instances.get(service_id)
        if leases is None or instance_id not in leases:
            self._lease(tenant, service_id, instance_id)  # raises: which one is missing
        self._remove_instance(tenant, service_id, instance_id)

    async def heartbeat(
        self,
        service_id: str,
        instance_id: str,
        *,
        domain: str = DEFAULT_DOMAIN,
        project: str = DEFAULT_PROJECT,
    ) -> None:
        """Renew the lease (no change, no revision bump); unknown -> 400012 / 400017."""
        tenant = self._get(domain, project)
        self._leases.renew(self._lease(tenant, service_id, instance_id))

    async def heartbeat_set(
        self,
        pairs: Iterable[tuple[str, str]],
        *,
        holder: str | None = None,
        domain: str = DEFAULT_DOMAIN,
        project: str = DEFAULT_PROJECT,
    ) -> list[JSON]:
        """Renew many leases: ``[{"serviceId", "instanceId", "errMessage"}]`` in order.

        ``errMessage`` is empty on success, else the failure (the instance is unknown).
        With ``holder`` (Python API only), each instance renewed is held by that holder
        from now on, whatever held it before (:meth:`renew_holder`).
        """
        _check_holder(holder)
        tenant = self._get(domain, project)
        leases = self._leases
        results: list[JSON] = []
        # Clients send their instances service by service: one lookup per run of them.
        last_service: str | None = None
        held: dict[str, Lease] | None = None
        for service_id, instance_id in pairs:
            message = ""
            if service_id != last_service:
                last_service, held = service_id, tenant.instances.get(service_id)
            try:
                lease = None if held is None else held.get(instance_id)
                if lease is None:
                    lease = self._lease(tenant, service_id, instance_id)  # raises why
                leases.renew(lease)
                if holder is not None:
                    leases.hold(lease, holder)
            except RegistryError as exc:
                message = exc.detail or exc.message
            results.append(
                {"serviceId": service_id, "instanceId": instance_id, "errMessage": message}
            )
        return results

    def renew_holder(
        self, holder: str, *, domain: str = DEFAULT_DOMAIN, project: str = DEFAULT_PROJECT
    ) -> int:
        """Renew, in O(1), every instance of the tenant registered (or heartbeated) with
        ``holder``: each then runs until at least now plus its own TTL. Returns how many
        instances the holder holds now (0 for a holder that holds none: nothing renewed).

        An instance leaves its holder when it is unregistered, expires, or is registered
        again under another holder or none; per-instance heartbeats still renew it."""
        _check_holder(holder)
        self.expire(API_EXPIRY_STEP)
        return self._leases.renew_holder((domain, project), holder)

    async def update_instance_status(
        self,
        service_id: str,
        instance_id: str,
        status: str,
        *,
        domain: str = DEFAULT_DOMAIN,
        project: str = DEFAULT_PROJECT,
    ) -> None:
        if status not in INSTANCE_STATUSES:
            raise invalid(f"'value' must be one of {', '.join(INSTANCE_STATUSES)}")
        self._update(domain, project, service_id, instance_id, {"status": status})

    async def update_instance_properties(
        self,
        service_id: str,
        instance_id: str,
        properties: Mapping[str, Any],
        *,
        domain: str = DEFAULT_DOMAIN,
        project: str = DEFAULT_PROJECT,
    ) -> None:
        """Replace the instance's properties (the whole map, as Service-Center does)."""
        values = string_map(properties, "properties")
        check_properties(values, self.settings)
        self._update(domain, project, service_id, instance_id, {"properties": values})

    def _update(
        self, domain: str, project: str, service_id: str, instance_id: str, fields: JSON
    ) -> None:
        tenant = self._get(domain, project)
        lease = self._lease(tenant, service_id, instance_id)
        if all(lease.instance.get(k) == v for k, v in fields.items()):
            return
        lease.instance = {**lease.instance, **fields, "modTimestamp": _now_text()}
        tenant.feed.record("UPDATE", tenant.services[service_id], lease.instance)

    async def find_instances(
        self,
        app_id: str,
        service_name: str,
        version: str = "",
        environment: str | None = None,
        *,
        consumer_id: str = "",
        domain: str = DEFAULT_DOMAIN,
        project: str = DEFAULT_PROJECT,
    ) -> tuple[list[JSON], int]:
        """Instances of the services matching the key; version may be a rule.

        ``environment`` None means the consumer's environment (or ``""`` without one).
        No matching service -> 400012, like Service-Center's "provider does not exist".
        """
        if not service_name:
            raise invalid("'serviceName' is required")
        tenant = self._get(domain, project)
        consumer = lookup.consumer(tenant, consumer_id)
        if environment is None:
            environment = "" if consumer is None else str(consumer["environment"])
        found = lookup.instances_by_key(tenant, app_id, service_name, version, environment)
        return found, tenant.feed.revision

    # ------------------------------------------------------------------ governance

    async def govern_services(
        self,
        options: Sequence[str] = (),
        *,
        domain: str = DEFAULT_DOMAIN,
        project: str = DEFAULT_PROJECT,
    ) -> tuple[JSON, int]:
        """``{"allServicesDetail": [ServiceDetail], "statistics"?}`` and the revision.

        ``options``: ``instances`` adds each service's instances, ``statistics`` the
        counts, ``all`` both.
        """
        tenant = self._get(domain, project)
        wanted = set(options)
        with_instances = bool(wanted & {"instances", "all"})
        details = [
            service_detail(service, self._leases_of(tenant, sid) if with_instances else None)
            for sid, service in tenant.services.items()
        ]
        out: JSON = {"allServicesDetail": details}
        if wanted & {"statistics", "all"}:
            out["statistics"] = statistics(tenant.services, tenant.instances)
        return out, tenant.feed.revision

    async def govern_service(
        self, service_id: str, *, domain: str = DEFAULT_DOMAIN, project: str = DEFAULT_PROJECT
    ) -> JSON:
        """``ServiceDetail`` of one service: itself, its instances, its sibling versions."""
        tenant = self._get(domain, project)
        service = self._service(tenant, service_id)
        detail = service_detail(service, self._leases_of(tenant, service_id))
        detail["microServiceVersions"] = sibling_versions(tenant.services.values(), service)
        return detail

    @staticmethod
    def _leases_of(tenant: Tenant, service_id: str) -> Iterable[Lease]:
        return tenant.instances.get(service_id, {}).values()

    # ------------------------------------------------------------------ revisions, feed

    def revision(self, *, domain: str = DEFAULT_DOMAIN, project: str = DEFAULT_PROJECT) -> int:
        """The tenant's current revision (bumped by every change, not by heartbeats)."""
        self.expire(API_EXPIRY_STEP)
        return self._tenants.read(domain, project).feed.revision

    async def changes(
        self,
        since: int,
        timeout: float = 30.0,
        *,
        limit: int = MAX_CHANGES_PER_BATCH,
        domain: str = DEFAULT_DOMAIN,
        project: str = DEFAULT_PROJECT,
    ) -> FeedBatch:
        """The changes after revision ``since``; waits up to ``timeout`` s for the first one.

        See :class:`~pysyncer.servicecenter.feed.FeedBatch` for ``reset`` and the next
        ``since``. A waiter wakes when a lease may expire too, so expiries are answered.
        """
        check_feed_request(timeout, limit)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            tenant = self._get(domain, project)
            batch = tenant.feed.after(since, limit)
            if batch is not None:
                return batch
            remaining = deadline - loop.time()
            if remaining <= 0 or self._closed:
                return tenant.feed.idle()
            if (domain, project) not in self._tenants:  # an unknown tenant: wait for any
                await self._tenants.wait_for_new(remaining)
                continue
            await tenant.feed.wait(min(remaining, self._leases.wake_period()))

    def close(self) -> None:
        """Wake every long-poll waiter so it answers now (used at shutdown)."""
        self._closed = True
        for tenant in self._tenants.values():
            tenant.feed.wake()
        self._tenants.wake()

    async def run_eviction(self, interval: float = 1.0) -> None:
        """Remove expired instances every ``interval`` seconds until cancelled."""
        if interval <= 0:
            raise ValueError("eviction interval must be positive")
        while True:
            self.expire()
            while self._leases.behind():  # a wave came due: the rest in steps, others run
                await asyncio.sleep(0)
                self.expire()
            await asyncio.sleep(interval)

    # ------------------------------------------------------------------ introspection

    def tenants(self) -> list[tuple[str, str]]:
        return list(self._tenants)

    def instance_count(
        self, *, domain: str = DEFAULT_DOMAIN, project: str = DEFAULT_PROJECT
    ) -> int:
        tenant = self._tenants.read(domain, project)
        return sum(len(v) for v in tenant.instances.values())
