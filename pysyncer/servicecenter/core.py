"""The embedded service center's data and rules, without HTTP: :class:`EmbeddedRegistry`.

Owns microservices and instances per tenant (domain/project), instance leases (TTL =
``healthCheck.interval x (times + 1)``) and their eviction, the per-tenant revision and
the bounded change log behind the long-poll change feed. Records are the Service-Center
v4 JSON shapes (``MicroService``, ``MicroServiceInstance``); a stored record is never
mutated in place (an update replaces it), and every record handed out is a copy.

Everything runs on one asyncio event loop: operations are synchronous inside their
coroutine, hence atomic. It must not touch sockets or the sync engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import heapq
import re
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from pysyncer.servicecenter.errors import (
    ERR_DEPLOYED_INSTANCE,
    ERR_INSTANCE_NOT_EXISTS,
    ERR_SCHEMA_NOT_EXISTS,
    ERR_SERVICE_ALREADY_EXISTS,
    ERR_SERVICE_NOT_EXISTS,
    RegistryError,
    invalid,
)

__all__ = [
    "DEFAULT_CHANGE_LOG_SIZE",
    "INSTANCE_STATUSES",
    "MAX_CHANGES_PER_BATCH",
    "MAX_FEED_TIMEOUT",
    "Change",
    "ChangeBatch",
    "EmbeddedRegistry",
]

JSON = dict[str, Any]
Action = Literal["CREATE", "UPDATE", "DELETE"]

DEFAULT_DOMAIN: Final = "default"
DEFAULT_PROJECT: Final = "default"
DEFAULT_APP: Final = "default"
DEFAULT_VERSION: Final = "0.0.1"
DEFAULT_INTERVAL: Final = 30
DEFAULT_TIMES: Final = 3
DEFAULT_CHANGE_LOG_SIZE: Final = 100_000
MAX_CHANGES_PER_BATCH: Final = 10_000
MAX_FEED_TIMEOUT: Final = 60.0
MAX_INT32: Final = 2**31 - 1

ENVIRONMENTS: Final = frozenset({"", "development", "testing", "acceptance", "production"})
INSTANCE_STATUSES: Final = ("UP", "DOWN", "STARTING", "OUTOFSERVICE", "TESTING")
SERVICE_STATUSES: Final = ("UP", "DOWN")
LEVELS: Final = ("", "FRONT", "MIDDLE", "BACK")
HEALTH_MODES: Final = ("push", "pull")

# Service-Center's validation patterns (server/service/validate*.go, simplified).
_NAME_RE: Final = re.compile(r"^[a-zA-Z0-9]*$|^[a-zA-Z0-9][a-zA-Z0-9_\-.]*[a-zA-Z0-9]$")
_ID_RE: Final = re.compile(r"^[a-zA-Z0-9_\-.:]{1,64}$")
_VERSION_RE: Final = re.compile(r"^[0-9]{1,5}(\.[0-9]{1,5}){0,3}$")
_HOST_RE: Final = re.compile(r"^\S{1,64}$")
_TENANT_RE: Final = re.compile(r"^[a-zA-Z0-9_\-.]{1,64}$")

_SERVICE_TEXT_FIELDS: Final = ("description", "registerBy", "alias")


@dataclass(frozen=True, slots=True)
class Change:
    """One entry of the change log: what happened at ``revision``.

    ``instance`` is None for a service-level change (a service created, updated or
    deleted on its own); ``service`` is the service as it was at that revision.
    """

    revision: int
    action: Action
    service: Mapping[str, Any]
    instance: Mapping[str, Any] | None

    def to_json(self, *, deep: bool = True) -> JSON:
        """The JSON shape; ``deep=False`` shares the stored records (read-only use, e.g.
        serialising at once: the feed answers thousands of changes a second)."""
        if not deep:
            return {
                "revision": self.revision,
                "action": self.action,
                "service": self.service,
                "instance": self.instance,
            }
        return {
            "revision": self.revision,
            "action": self.action,
            "service": copy.deepcopy(dict(self.service)),
            "instance": None if self.instance is None else copy.deepcopy(dict(self.instance)),
        }


@dataclass(frozen=True, slots=True)
class ChangeBatch:
    """Answer of :meth:`EmbeddedRegistry.changes`; the next ``since`` is ``revision``.

    ``reset`` means the requested position is unknown (older than the log, or from a
    previous life of the registry): the client must re-list and follow from the revision
    of that listing. ``revision`` is the current revision unless the batch was cut at
    ``limit`` changes, then it is the revision of the last change returned.
    """

    revision: int
    reset: bool
    changes: tuple[Change, ...]

    def to_json(self, *, deep: bool = True) -> JSON:
        return {
            "revision": self.revision,
            "reset": self.reset,
            "changes": [c.to_json(deep=deep) for c in self.changes],
        }


@dataclass(slots=True, eq=False)
class _Lease:
    """An instance's lease. It sits in the expiry heap once, keyed by ``due``.

    A heartbeat only moves ``expires_at``; when the heap reaches ``due`` the lease is
    either expired or put back at its new ``expires_at`` (lazy rescheduling), so the
    heap holds one reference per lease however often it is renewed.
    """

    instance: JSON
    ttl: float
    expires_at: float
    due: float
    tenant: _Tenant
    service_id: str

    def __lt__(self, other: _Lease) -> bool:
        return self.due < other.due


@dataclass(slots=True)
class _Tenant:
    domain: str
    project: str
    revision: int
    dropped_upto: int  # every revision <= this one may be missing from the log
    log: deque[Change]
    services: dict[str, JSON] = field(default_factory=dict)
    keys: dict[tuple[str, str, str, str], str] = field(default_factory=dict)
    instances: dict[str, dict[str, _Lease]] = field(default_factory=dict)
    changed: asyncio.Event | None = None  # created by the first waiter after a change


_clock_text: list[tuple[int, str]] = [(0, "0")]


def _now_text() -> str:
    """The wall-clock second as text; one string per second, shared by every record."""
    now = int(time.time())
    if _clock_text[0][0] != now:
        _clock_text[0] = (now, str(now))
    return _clock_text[0][1]


# Identical healthCheck objects are shared between records (a stored record is never
# mutated in place, and callers get deep copies): most instances use the same few.
_health_checks: dict[tuple[Any, ...], JSON] = {}


def _shared_health(health: JSON) -> JSON:
    key = tuple(health.items())
    shared = _health_checks.get(key)
    if shared is None:
        if len(_health_checks) >= 1024:  # bounded: odd values are simply not shared
            return health
        shared = _health_checks[key] = health
    return shared


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split("."))


def _version_matcher(rule: str) -> Callable[[str, Sequence[str]], bool]:
    """Service-Center version rules: exact, ``latest``, ``1.0.0+`` and ``1.0.0-2.0.0``."""
    rule = rule.strip()
    if rule in ("", "0+"):
        return lambda v, _all: True
    if rule == "latest":
        return lambda v, all_versions: v == max(all_versions, key=_version_key)
    if rule.endswith("+"):
        low = _parse_version(rule[:-1], "version")
        return lambda v, _all: _version_key(v) >= _version_key(low)
    if "-" in rule:
        low_text, high_text = rule.split("-", 1)
        bottom = _version_key(_parse_version(low_text, "version"))
        top = _version_key(_parse_version(high_text, "version"))
        return lambda v, _all: bottom <= _version_key(v) < top
    exact = _parse_version(rule, "version")
    return lambda v, _all: _version_key(v) == _version_key(exact)


def _parse_version(text: str, name: str) -> str:
    if not _VERSION_RE.match(text) or any(int(p) > 32767 for p in text.split(".")):
        raise invalid(f"'{name}' must look like 1.0.0 (up to 4 numbers of at most 32767)")
    return text


def _text(body: Mapping[str, Any], key: str, default: str = "", *, limit: int = 256) -> str:
    value = body.get(key, default)
    if value is None:
        return default
    if not isinstance(value, str):
        raise invalid(f"'{key}' must be a string")
    if len(value) > limit:
        raise invalid(f"'{key}' is longer than {limit} characters")
    return value


def _string_map(value: Any, name: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise invalid(f"'{name}' must be an object of strings")
    out: dict[str, str] = {}
    for k, v in value.items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise invalid(f"'{name}' must map strings to strings")
        out[k] = v
    return out


def _int_field(body: Mapping[str, Any], key: str, default: int, low: int) -> int:
    value = body.get(key, default)
    if value is None:
        return default
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= MAX_INT32:
        raise invalid(f"'{key}' must be an integer in {low}..{MAX_INT32}")
    return value


def _validate_tenant(domain: str, project: str) -> None:
    if not _TENANT_RE.match(domain):
        raise invalid("the domain (x-domain-name) must be 1-64 of [a-zA-Z0-9_-.]")
    if not _TENANT_RE.match(project):
        raise invalid("the project must be 1-64 of [a-zA-Z0-9_-.]")


def _validate_service(body: Any) -> JSON:
    """A stored ``MicroService`` from a request's ``service`` object (unknown keys dropped)."""
    if not isinstance(body, Mapping):
        raise invalid("'service' must be an object")
    name = _text(body, "serviceName", limit=128)
    if not name or not _NAME_RE.match(name):
        raise invalid("'serviceName' must be 1-128 of [a-zA-Z0-9_-.], alphanumeric at both ends")
    app = _text(body, "appId", limit=160) or DEFAULT_APP
    if not _NAME_RE.match(app):
        raise invalid("'appId' must be 1-160 of [a-zA-Z0-9_-.], alphanumeric at both ends")
    version = _parse_version(_text(body, "version", limit=64) or DEFAULT_VERSION, "version")
    environment = _text(body, "environment")
    if environment not in ENVIRONMENTS:
        raise invalid("'environment' must be development, testing, acceptance or production")
    service_id = _text(body, "serviceId", limit=64)
    if service_id and not _ID_RE.match(service_id):
        raise invalid("'serviceId' must be 1-64 of [a-zA-Z0-9_-.:]")
    status = _text(body, "status") or "UP"
    if status not in SERVICE_STATUSES:
        raise invalid("'status' must be UP or DOWN")
    level = _text(body, "level")
    if level not in LEVELS:
        raise invalid("'level' must be FRONT, MIDDLE or BACK")
    out: JSON = {
        "serviceId": service_id,
        "environment": environment,
        "appId": app,
        "serviceName": name,
        "version": version,
        "status": status,
        "properties": _string_map(body.get("properties"), "properties"),
    }
    if level:
        out["level"] = level
    for key in _SERVICE_TEXT_FIELDS:
        if body.get(key) is not None:
            out[key] = _text(body, key, limit=1024)
    schemas = body.get("schemas")
    if schemas is not None:
        if not isinstance(schemas, list) or not all(isinstance(s, str) for s in schemas):
            raise invalid("'schemas' must be a list of strings")
        out["schemas"] = list(schemas)
    framework = body.get("framework")
    if framework is not None:
        if not isinstance(framework, Mapping):
            raise invalid("'framework' must be an object")
        out["framework"] = {
            "name": _text(framework, "name", "UNKNOWN") or "UNKNOWN",
            "version": _text(framework, "version"),
        }
    paths = body.get("paths")
    if paths is not None:
        if not isinstance(paths, list) or not all(isinstance(p, Mapping) for p in paths):
            raise invalid("'paths' must be a list of objects")
        out["paths"] = [
            {
                "Path": _text(p, "Path", limit=1024),
                "Property": _string_map(p.get("Property"), "Property"),
            }
            for p in paths
        ]
    return out


def _validate_instance(body: Any) -> JSON:
    """A ``MicroServiceInstance`` from a request's ``instance`` object (server fields unset)."""
    if not isinstance(body, Mapping):
        raise invalid("'instance' must be an object")
    host = _text(body, "hostName", limit=64)
    if not _HOST_RE.match(host):
        raise invalid("'hostName' must be 1-64 characters without spaces")
    endpoints = body.get("endpoints")
    if not isinstance(endpoints, list) or not all(
        isinstance(e, str) and 0 < len(e) <= 1024 for e in endpoints
    ):
        raise invalid("'endpoints' must be a list of non-empty strings")
    instance_id = _text(body, "instanceId", limit=64)
    if instance_id and not _ID_RE.match(instance_id):
        raise invalid("'instanceId' must be 1-64 of [a-zA-Z0-9_-.:]")
    status = _text(body, "status") or "UP"
    if status not in INSTANCE_STATUSES:
        raise invalid(f"'status' must be one of {', '.join(INSTANCE_STATUSES)}")
    check = body.get("healthCheck")
    if check is None:
        check = {}
    if not isinstance(check, Mapping):
        raise invalid("'healthCheck' must be an object")
    mode = _text(check, "mode") or "push"
    if mode not in HEALTH_MODES:
        raise invalid("'healthCheck.mode' must be push or pull")
    health: JSON = {
        "mode": mode,
        "interval": _int_field(check, "interval", DEFAULT_INTERVAL, 1),
        "times": _int_field(check, "times", DEFAULT_TIMES, 0),
    }
    if check.get("port") is not None:
        health["port"] = _int_field(check, "port", 0, 0)
    out: JSON = {
        "instanceId": instance_id,
        "hostName": host,
        "endpoints": list(endpoints),
        "status": status,
        "properties": _string_map(body.get("properties"), "properties"),
        "healthCheck": _shared_health(health),
    }
    dc = body.get("dataCenterInfo")
    if dc is not None:
        if not isinstance(dc, Mapping):
            raise invalid("'dataCenterInfo' must be an object")
        out["dataCenterInfo"] = {
            "name": _text(dc, "name"),
            "region": _text(dc, "region"),
            "availableZone": _text(dc, "availableZone"),
        }
    return out


def _without_times(record: Mapping[str, Any]) -> JSON:
    return {k: v for k, v in record.items() if k not in ("timestamp", "modTimestamp")}


class EmbeddedRegistry:
    """Microservices, instances, leases, revisions and the change feed of one registry.

    Every operation takes keyword ``domain`` and ``project`` (both ``"default"`` unless
    given); tenants are fully separate. Failures raise :class:`RegistryError` carrying
    Service-Center's ``errorCode``.

    ``clock`` (monotonic seconds) drives leases; ``initial_revision`` is the revision a
    new tenant starts at (default: microseconds since the epoch, so a restarted registry
    never reuses a revision a client has seen); ``ttl_override`` replaces every lease's
    TTL (Service-Center's ``registry.instance.ttl``).
    """

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        initial_revision: int | None = None,
        change_log_size: int = DEFAULT_CHANGE_LOG_SIZE,
        ttl_override: float | None = None,
    ) -> None:
        if change_log_size < 1:
            raise ValueError("change_log_size must be at least 1")
        self._clock = clock
        self._initial_revision = initial_revision
        self._log_size = change_log_size
        self._ttl_override = ttl_override
        self._tenants: dict[tuple[str, str], _Tenant] = {}
        # Leases by ``due`` (a heap of references: one per lease, not one per heartbeat).
        self._expiry: list[_Lease] = []
        self._closed = False

    # ------------------------------------------------------------------ internals

    def _tenant(self, domain: str, project: str) -> _Tenant:
        tenant = self._tenants.get((domain, project))
        if tenant is None:
            _validate_tenant(domain, project)
            start = (
                self._initial_revision
                if self._initial_revision is not None
                else time.time_ns() // 1000
            )
            tenant = _Tenant(domain, project, start, start, deque(maxlen=self._log_size))
            self._tenants[(domain, project)] = tenant
        return tenant

    def _record(
        self, tenant: _Tenant, action: Action, service: JSON, instance: JSON | None
    ) -> None:
        tenant.revision += 1
        if len(tenant.log) == tenant.log.maxlen:
            tenant.dropped_upto = tenant.log[0].revision
        tenant.log.append(Change(tenant.revision, action, service, instance))
        if tenant.changed is not None:  # someone waits: wake them; the next waiter makes one
            tenant.changed.set()
            tenant.changed = None

    def _service(self, tenant: _Tenant, service_id: str) -> JSON:
        service = tenant.services.get(service_id)
        if service is None:
            raise RegistryError(ERR_SERVICE_NOT_EXISTS, f"service {service_id!r} does not exist")
        return service

    def _lease(self, tenant: _Tenant, service_id: str, instance_id: str) -> _Lease:
        self._service(tenant, service_id)
        lease = tenant.instances.get(service_id, {}).get(instance_id)
        if lease is None:
            raise RegistryError(
                ERR_INSTANCE_NOT_EXISTS,
                f"instance {instance_id!r} of service {service_id!r} does not exist",
            )
        return lease

    def _ttl(self, instance: Mapping[str, Any]) -> float:
        if self._ttl_override is not None:
            return self._ttl_override
        check = instance["healthCheck"]
        return float(check["interval"] * (check["times"] + 1))

    def _remove_instance(self, tenant: _Tenant, service_id: str, instance_id: str) -> None:
        leases = tenant.instances.get(service_id, {})
        lease = leases.pop(instance_id, None)
        if lease is None:
            return
        if not leases:
            tenant.instances.pop(service_id, None)
        self._record(tenant, "DELETE", tenant.services[service_id], lease.instance)

    def expire(self) -> int:
        """Remove every instance whose lease has run out; returns how many (DELETE changes)."""
        now = self._clock()
        removed = 0
        heap = self._expiry
        while heap and heap[0].due <= now:
            lease = heapq.heappop(heap)
            tenant, service_id = lease.tenant, lease.service_id
            instance_id = lease.instance["instanceId"]
            if tenant.instances.get(service_id, {}).get(instance_id) is not lease:
                continue  # unregistered, or replaced by a registration with a shorter lease
            if lease.expires_at > now:  # renewed since it was queued: queue it again
                lease.due = lease.expires_at
                heapq.heappush(heap, lease)
                continue
            self._remove_instance(tenant, service_id, instance_id)
            removed += 1
        return removed

    def _get(self, domain: str, project: str) -> _Tenant:
        self.expire()
        return self._tenant(domain, project)

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
        existing one, or that another service already has, is 400010.
        """
        tenant = self._get(domain, project)
        record = _validate_service(service)
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
        record["serviceId"] = requested or uuid.uuid4().hex
        record["timestamp"] = record["modTimestamp"] = _now_text()
        tenant.services[record["serviceId"]] = record
        tenant.keys[key] = record["serviceId"]
        self._record(tenant, "CREATE", record, None)
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
        self._record(tenant, "DELETE", service, None)

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
        exact = tenant.keys.get((environment, app_id or DEFAULT_APP, service_name, version))
        if exact is not None:
            return exact
        matches = self._match_services(tenant, app_id, service_name, version, environment)
        if not matches:
            raise RegistryError(
                ERR_SERVICE_NOT_EXISTS,
                f"service {environment}/{app_id}/{service_name}/{version} does not exist",
            )
        return str(max(matches, key=lambda s: _version_key(s["version"]))["serviceId"])

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

    def _match_services(
        self, tenant: _Tenant, app_id: str, service_name: str, version: str, environment: str
    ) -> list[JSON]:
        matcher = _version_matcher(version)
        candidates = [
            s
            for s in tenant.services.values()
            if s["appId"] == (app_id or DEFAULT_APP)
            and s["serviceName"] == service_name
            and s["environment"] == environment
        ]
        all_versions = [s["version"] for s in candidates]
        return [s for s in candidates if matcher(s["version"], all_versions)]

    # ------------------------------------------------------------------ instances

    async def register_instance(
        self,
        service_id: str,
        instance: Mapping[str, Any],
        *,
        domain: str = DEFAULT_DOMAIN,
        project: str = DEFAULT_PROJECT,
    ) -> str:
        """Register (or re-register) an instance; returns its id and starts its lease.

        A client-given ``instanceId`` is kept: registering it again overwrites the
        instance (UPDATE when anything changed) and renews its lease. Without one, an
        instance of the same service with identical endpoints keeps its id.
        """
        tenant = self._get(domain, project)
        service = self._service(tenant, service_id)
        record = _validate_instance(instance)
        leases = tenant.instances.setdefault(service_id, {})
        instance_id = record["instanceId"]
        if not instance_id:
            instance_id = next(
                (
                    i
                    for i, lease in leases.items()
                    if lease.instance["endpoints"] == record["endpoints"]
                ),
                uuid.uuid4().hex,
            )
        record["instanceId"] = instance_id
        record["serviceId"] = service_id
        record["version"] = service["version"]
        now = _now_text()
        previous = leases.get(instance_id)
        if previous is not None and _without_times(previous.instance) == record:
            action: Action | None = None
            record = previous.instance
        else:
            record["timestamp"] = now if previous is None else previous.instance["timestamp"]
            record["modTimestamp"] = now
            action = "CREATE" if previous is None else "UPDATE"
        ttl = self._ttl(record)
        expires_at = self._clock() + ttl
        if previous is not None and previous.due <= expires_at:
            # Still queued no later than the new expiry: update it in place (no heap entry).
            previous.instance, previous.ttl, previous.expires_at = record, ttl, expires_at
        else:
            lease = _Lease(record, ttl, expires_at, expires_at, tenant, service_id)
            leases[instance_id] = lease
            heapq.heappush(self._expiry, lease)
        if action is not None:
            self._record(tenant, action, service, record)
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
        self._check_consumer(tenant, consumer_id)
        self._service(tenant, service_id)
        leases = tenant.instances.get(service_id, {}).values()
        return [copy.deepcopy(lease.instance) for lease in leases], tenant.revision

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
        self._check_consumer(tenant, consumer_id)
        lease = self._lease(tenant, service_id, instance_id)
        return copy.deepcopy(lease.instance), tenant.revision

    async def unregister_instance(
        self,
        service_id: str,
        instance_id: str,
        *,
        domain: str = DEFAULT_DOMAIN,
        project: str = DEFAULT_PROJECT,
    ) -> None:
        tenant = self._get(domain, project)
        self._lease(tenant, service_id, instance_id)
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
        self._renew(tenant, self._lease(tenant, service_id, instance_id), service_id)

    def _renew(self, tenant: _Tenant, lease: _Lease, service_id: str) -> None:
        lease.expires_at = self._clock() + lease.ttl  # the heap entry catches up lazily

    async def heartbeat_set(
        self,
        pairs: Iterable[tuple[str, str]],
        *,
        domain: str = DEFAULT_DOMAIN,
        project: str = DEFAULT_PROJECT,
    ) -> list[JSON]:
        """Renew many leases: ``[{"serviceId", "instanceId", "errMessage"}]`` in order.

        ``errMessage`` is empty on success, else the failure (the instance is unknown).
        """
        tenant = self._get(domain, project)
        results: list[JSON] = []
        for service_id, instance_id in pairs:
            message = ""
            try:
                self._renew(tenant, self._lease(tenant, service_id, instance_id), service_id)
            except RegistryError as exc:
                message = exc.detail or exc.message
            results.append(
                {"serviceId": service_id, "instanceId": instance_id, "errMessage": message}
            )
        return results

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
        values = _string_map(properties, "properties")
        self._update(domain, project, service_id, instance_id, {"properties": values})

    def _update(
        self, domain: str, project: str, service_id: str, instance_id: str, fields: JSON
    ) -> None:
        tenant = self._get(domain, project)
        lease = self._lease(tenant, service_id, instance_id)
        if all(lease.instance.get(k) == v for k, v in fields.items()):
            return
        lease.instance = {**lease.instance, **fields, "modTimestamp": _now_text()}
        self._record(tenant, "UPDATE", tenant.services[service_id], lease.instance)

    def _check_consumer(self, tenant: _Tenant, consumer_id: str) -> JSON | None:
        if not consumer_id:
            return None
        consumer = tenant.services.get(consumer_id)
        if consumer is None:
            raise RegistryError(ERR_SERVICE_NOT_EXISTS, f"consumer {consumer_id!r} does not exist")
        return consumer

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
        consumer = self._check_consumer(tenant, consumer_id)
        if environment is None:
            environment = "" if consumer is None else str(consumer["environment"])
        services = self._match_services(tenant, app_id, service_name, version, environment)
        if not services:
            raise RegistryError(
                ERR_SERVICE_NOT_EXISTS,
                f"provider {environment}/{app_id}/{service_name}/{version} does not exist",
            )
        found = [
            copy.deepcopy(lease.instance)
            for s in services
            for lease in tenant.instances.get(s["serviceId"], {}).values()
        ]
        return found, tenant.revision

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
        details = [self._detail(tenant, sid, with_instances) for sid in tenant.services]
        out: JSON = {"allServicesDetail": details}
        if wanted & {"statistics", "all"}:
            out["statistics"] = self._statistics(tenant)
        return out, tenant.revision

    async def govern_service(
        self, service_id: str, *, domain: str = DEFAULT_DOMAIN, project: str = DEFAULT_PROJECT
    ) -> JSON:
        """``ServiceDetail`` of one service: itself, its instances, its sibling versions."""
        tenant = self._get(domain, project)
        service = self._service(tenant, service_id)
        detail = self._detail(tenant, service_id, True)
        detail["microServiceVersions"] = sorted(
            (
                s["version"]
                for s in tenant.services.values()
                if (s["environment"], s["appId"], s["serviceName"])
                == (service["environment"], service["appId"], service["serviceName"])
            ),
            key=_version_key,
        )
        return detail

    def _detail(self, tenant: _Tenant, service_id: str, with_instances: bool) -> JSON:
        detail: JSON = {"microService": copy.deepcopy(tenant.services[service_id])}
        if with_instances:
            leases = tenant.instances.get(service_id, {}).values()
            detail["instances"] = [copy.deepcopy(lease.instance) for lease in leases]
        return detail

    def _statistics(self, tenant: _Tenant) -> JSON:
        count = sum(len(v) for v in tenant.instances.values())
        return {
            "services": {"count": len(tenant.services), "onlineCount": len(tenant.instances)},
            "instances": {"count": count, "countByDomain": count},
            "apps": {"count": len({s["appId"] for s in tenant.services.values()})},
        }

    # ------------------------------------------------------------------ revisions, feed

    def revision(self, *, domain: str = DEFAULT_DOMAIN, project: str = DEFAULT_PROJECT) -> int:
        """The tenant's current revision (bumped by every change, not by heartbeats)."""
        self.expire()
        return self._tenant(domain, project).revision

    async def changes(
        self,
        since: int,
        timeout: float = 30.0,
        *,
        limit: int = MAX_CHANGES_PER_BATCH,
        domain: str = DEFAULT_DOMAIN,
        project: str = DEFAULT_PROJECT,
    ) -> ChangeBatch:
        """The changes after revision ``since``; waits up to ``timeout`` s for the first one.

        See :class:`ChangeBatch` for ``reset`` and the next ``since``.
        """
        if not 0 <= timeout <= MAX_FEED_TIMEOUT:
            raise invalid(f"'timeout' must be within 0..{MAX_FEED_TIMEOUT:g} seconds")
        if not 1 <= limit <= MAX_CHANGES_PER_BATCH:
            raise invalid(f"'limit' must be within 1..{MAX_CHANGES_PER_BATCH}")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            tenant = self._get(domain, project)
            if since > tenant.revision or since < tenant.dropped_upto:
                return ChangeBatch(tenant.revision, True, ())
            if since < tenant.revision:
                return self._collect(tenant, since, limit)
            remaining = deadline - loop.time()
            if remaining <= 0 or self._closed:
                return ChangeBatch(tenant.revision, False, ())
            event = tenant.changed
            if event is None:
                event = tenant.changed = asyncio.Event()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(event.wait(), min(remaining, self._wake_period()))

    def _wake_period(self) -> float:
        """How long a waiter may sleep: until the next lease may expire (at most 1 s)."""
        if not self._expiry:
            return 1.0
        return min(1.0, max(0.0, self._expiry[0].due - self._clock()) + 0.001)

    def _collect(self, tenant: _Tenant, since: int, limit: int) -> ChangeBatch:
        # The log holds consecutive revisions ending at tenant.revision.
        first = tenant.log[0].revision
        start = since + 1 - first
        picked = [tenant.log[i] for i in range(start, min(len(tenant.log), start + limit))]
        revision = picked[-1].revision if len(picked) == limit else tenant.revision
        return ChangeBatch(revision, False, tuple(picked))

    def close(self) -> None:
        """Wake every long-poll waiter so it answers now (used at shutdown)."""
        self._closed = True
        for tenant in self._tenants.values():
            if tenant.changed is not None:
                tenant.changed.set()

    async def run_eviction(self, interval: float = 1.0) -> None:
        """Remove expired instances every ``interval`` seconds until cancelled."""
        if interval <= 0:
            raise ValueError("eviction interval must be positive")
        while True:
            self.expire()
            await asyncio.sleep(interval)

    # ------------------------------------------------------------------ introspection

    def tenants(self) -> list[tuple[str, str]]:
        return list(self._tenants)

    def instance_count(
        self, *, domain: str = DEFAULT_DOMAIN, project: str = DEFAULT_PROJECT
    ) -> int:
        tenant = self._tenants.get((domain, project))
        return 0 if tenant is None else sum(len(v) for v in tenant.instances.values())
