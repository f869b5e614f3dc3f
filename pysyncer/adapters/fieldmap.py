"""The one field-mapping table between registry kinds, and the carry-over rules.

Owns how a :class:`~pysyncer.model.Instance` (the Service-Center-shaped model every
layer shares) corresponds to each registry kind's own fields: :data:`FIELD_MAP` is the
table (rendered in ``docs/adapters.md`` and checked against it by the tests), the
status tables translate health states both ways, and :func:`carry` /
:func:`restore` keep what a kind has no field for as instance metadata under the
``pysyncer.`` prefix, so nothing is lost silently. Adapters do the per-kind wire shapes;
this module only holds the rules they share. Pure data and functions: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from pysyncer.hostport import parse_host_port
from pysyncer.model import Instance, ServiceKey

__all__ = [
    "CANONICAL_STATUSES",
    "CARRIED_PREFIX",
    "FIELD_MAP",
    "KINDS",
    "STATUS_FROM_KIND",
    "STATUS_TO_KIND",
    "Carried",
    "FieldRow",
    "carry",
    "render_markdown",
    "restore",
    "split_endpoint",
]

KINDS: Final = ("servicecomb", "eureka", "nacos", "consul", "zookeeper", "etcd")

CANONICAL_STATUSES: Final = ("UP", "DOWN", "STARTING", "OUTOFSERVICE", "TESTING")


@dataclass(frozen=True, slots=True)
class FieldRow:
    """One concept and where each registry kind keeps it ("-": carried as metadata)."""

    concept: str
    model: str
    servicecomb: str
    eureka: str
    nacos: str
    consul: str
    zookeeper: str
    etcd: str

    def where(self, kind: str) -> str:
        return str(getattr(self, kind))


FIELD_MAP: Final[tuple[FieldRow, ...]] = (
    FieldRow(
        "service name",
        "service.name",
        "serviceName",
        "app (upper-cased by the server; read lower-cased)",
        "serviceName (without GROUP@@)",
        "Service.Service",
        "interface",
        "name",
    ),
    FieldRow(
        "application",
        "service.app",
        "appId",
        "-",
        "groupName",
        "-",
        "URL param application",
        "-",
    ),
    FieldRow(
        "version",
        "service.version",
        "version",
        "-",
        "-",
        "-",
        "URL param version",
        "version",
    ),
    FieldRow(
        "environment",
        "service.environment",
        "environment",
        "-",
        "-",
        "-",
        "-",
        "-",
    ),
    FieldRow(
        "project / namespace",
        "service.project",
        "x-domain-name/project",
        "-",
        "namespaceId (settings)",
        "-",
        "-",
        "-",
    ),
    FieldRow(
        "instance id",
        "instance_id",
        "instanceId",
        "instanceId",
        "- (id is ip#port#cluster#service)",
        "Service.ID",
        "- (the node name is the URL)",
        "id",
    ),
    FieldRow(
        "host name",
        "host_name",
        "hostName",
        "hostName",
        "-",
        "- (Node)",
        "-",
        "-",
    ),
    FieldRow(
        "endpoints",
        "endpoints",
        "endpoints[] scheme://ip:port",
        "ipAddr + port / securePort (first endpoint)",
        "ip + port (first endpoint)",
        "Address + Port (first endpoint)",
        "URL scheme://host:port (first endpoint)",
        "endpoints[]",
    ),
    FieldRow(
        "status",
        "status",
        "status",
        "status",
        "healthy + enabled",
        "check status",
        "- (presence is UP)",
        "-",
    ),
    FieldRow(
        "metadata",
        "properties",
        "properties",
        "metadata",
        "metadata",
        "Meta (keys escaped)",
        "URL params",
        "metadata",
    ),
    FieldRow(
        "liveness",
        "health_interval, health_times",
        "healthCheck interval/times",
        "leaseInfo renewalIntervalInSecs/durationInSecs",
        "beat (5 s) / preserved.heart.beat.*",
        "TTL check",
        "ephemeral node (session)",
        "lease TTL",
    ),
)

# canonical status -> the kind's own value; kinds without a status field are absent.
STATUS_TO_KIND: Final[Mapping[str, Mapping[str, str]]] = {
    "servicecomb": {s: s for s in CANONICAL_STATUSES},
    "eureka": {
        "UP": "UP",
        "DOWN": "DOWN",
        "STARTING": "STARTING",
        "OUTOFSERVICE": "OUT_OF_SERVICE",
        "TESTING": "UNKNOWN",
    },
    # nacos: "healthy,enabled"
    "nacos": {
        "UP": "true,true",
        "DOWN": "false,true",
        "STARTING": "false,true",
        "OUTOFSERVICE": "true,false",
        "TESTING": "true,false",
    },
    "consul": {
        "UP": "passing",
        "DOWN": "critical",
        "STARTING": "warning",
        "OUTOFSERVICE": "maintenance",
        "TESTING": "warning",
    },
}

# the kind's own value -> canonical status (what a native instance reads as).
STATUS_FROM_KIND: Final[Mapping[str, Mapping[str, str]]] = {
    "servicecomb": {s: s for s in CANONICAL_STATUSES},
    "eureka": {
        "UP": "UP",
        "DOWN": "DOWN",
        "STARTING": "STARTING",
        "OUT_OF_SERVICE": "OUTOFSERVICE",
        "UNKNOWN": "DOWN",
    },
    "nacos": {
        "true,true": "UP",
        "false,true": "DOWN",
        "true,false": "OUTOFSERVICE",
        "false,false": "OUTOFSERVICE",
    },
    "consul": {
        "passing": "UP",
        "warning": "STARTING",
        "critical": "DOWN",
        "maintenance": "OUTOFSERVICE",
    },
}

CARRIED_PREFIX: Final = "pysyncer."
"""Metadata keys under this prefix hold model fields a kind has no place for."""

# model fields carried as metadata, and the key each uses
_CARRIED_KEYS: Final = {
    "app": "pysyncer.app",
    "name": "pysyncer.name",
    "version": "pysyncer.version",
    "environment": "pysyncer.env",
    "project": "pysyncer.project",
    "instance_id": "pysyncer.id",
    "host_name": "pysyncer.host",
    "endpoints": "pysyncer.endpoints",
    "status": "pysyncer.status",
    "health": "pysyncer.health",
}


@dataclass(frozen=True, slots=True)
class Carried:
    """What a native record of some kind yields before :func:`restore` fills the gaps."""

    service: ServiceKey
    instance_id: str
    host_name: str
    endpoints: tuple[str, ...]
    status: str
    properties: Mapping[str, str]
    health_interval: int = 30
    health_times: int = 3


def carry(instance: Instance, native: frozenset[str]) -> dict[str, str]:
    """The instance's metadata for a kind that natively stores the fields in ``native``.

    ``native`` names model fields (``app``, ``name``, ``version``, ``environment``,
    ``project``, ``instance_id``, ``host_name``, ``endpoints``, ``status``, ``health``)
    the kind keeps in its own fields; every other one is added under its
    ``pysyncer.*`` key, so :func:`restore` gives the instance back unchanged.
    """
    meta = dict(instance.properties)
    service = instance.service
    values = {
        "app": service.app,
        "name": service.name,
        "version": service.version,
        "environment": service.environment,
        "project": service.project,
        "instance_id": instance.instance_id,
        "host_name": instance.host_name,
        "endpoints": ",".join(instance.endpoints),
        "status": instance.status,
        "health": f"{instance.health_interval}/{instance.health_times}",
    }
    for name, key in _CARRIED_KEYS.items():
        if name not in native:
            meta[key] = values[name]
    return meta


def restore(native: Carried) -> Instance:
    """The model instance from a kind's native fields plus any carried metadata.

    Carried keys win over the native guesses (they are the original values) and are
    removed from the properties; a malformed carried value falls back to the native one.
    """
    props = dict(native.properties)

    def take(field: str, default: str) -> str:
        value = props.pop(_CARRIED_KEYS[field], None)
        return default if value is None else value

    service = native.service
    service = ServiceKey(
        app=take("app", service.app),
        name=take("name", service.name),
        version=take("version", service.version),
        environment=take("environment", service.environment),
        project=take("project", service.project),
    )
    endpoints_text = take("endpoints", "\x00")
    endpoints = (
        native.endpoints
        if endpoints_text == "\x00"
        else tuple(e for e in endpoints_text.split(",") if e)
    )
    interval, times = native.health_interval, native.health_times
    health = take("health", "")
    left, sep, right = health.partition("/")
    if sep and left.isdigit() and right.isdigit():
        interval, times = int(left), int(right)
    status = take("status", native.status)
    if status not in CANONICAL_STATUSES:
        status = native.status
    return Instance(
        service=service,
        instance_id=take("instance_id", native.instance_id),
        host_name=take("host_name", native.host_name),
        endpoints=endpoints,
        status=status,
        properties=props,
        health_interval=interval,
        health_times=times,
    )


def split_endpoint(endpoint: str) -> tuple[str, str, int]:
    """``scheme://host:port[/...]`` -> (scheme, host, port); ValueError when malformed.

    IPv6 hosts are written in brackets (``rest://[::1]:8080``) and returned without them.
    """
    scheme, sep, rest = endpoint.partition("://")
    if not sep or not scheme:
        raise ValueError(f"endpoint {endpoint!r} is not scheme://host:port")
    try:
        host, port = parse_host_port(rest.split("/", 1)[0].split("?", 1)[0])
    except ValueError:
        port = 0
    if port == 0:
        raise ValueError(f"endpoint {endpoint!r} has no host:port")
    return scheme, host, port


def render_markdown() -> str:
    """:data:`FIELD_MAP` as the Markdown table that ``docs/adapters.md`` carries."""
    head = ("concept", "model", *KINDS)
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in FIELD_MAP:
        cells = (row.concept, f"`{row.model}`", *(row.where(k) for k in KINDS))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
