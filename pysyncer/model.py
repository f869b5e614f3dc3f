"""The registry-neutral data model every layer shares: services, instances, records.

Owns what an instance *is* for pysyncer, independent of any registry's API: the
service it belongs to (:class:`ServiceKey`), its fields (:class:`Instance`), the origin
marker that copies carry in their properties, and the :class:`Record` that moves between
data centers with its origin, revision, hash slot and digest. Adapters translate
registry shapes to and from these; the sync engine only ever sees these.

Imports: _core.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, NamedTuple

from pysyncer._core import digest, slots

__all__ = [
    "ORIGIN_DC_PROPERTY",
    "ORIGIN_ID_PROPERTY",
    "Instance",
    "Record",
    "ServiceKey",
    "is_copy",
    "marks_copy",
    "record_key_hash",
]

# Copies carry their origin in these instance properties (the mapping table in the store
# is the authority: registries and operators sometimes strip metadata).
ORIGIN_DC_PROPERTY = "pysyncer.origin.dc"
ORIGIN_ID_PROPERTY = "pysyncer.origin.id"

_EMPTY: Mapping[str, str] = MappingProxyType({})


@dataclass(frozen=True, slots=True, order=True)
class ServiceKey:
    """Identity of a microservice: project (domain/project), environment, app, name, version.

    Its text form, slot and hash are worked out once, when it is made: one key is shared
    by every record of its service, and each record asks for them several times.
    """

    app: str
    name: str
    version: str
    environment: str = ""
    project: str = "default/default"
    _text: str = field(init=False, repr=False, compare=False)
    _slot: int = field(init=False, repr=False, compare=False)
    _hash: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        text = f"{self.project}/{self.environment}/{self.app}/{self.name}/{self.version}"
        object.__setattr__(self, "_text", text)
        object.__setattr__(self, "_slot", slots.key_slot(text))
        key = (self.app, self.name, self.version, self.environment, self.project)
        object.__setattr__(self, "_hash", hash(key))

    def __hash__(self) -> int:
        return self._hash

    def __reduce__(self) -> tuple[type[ServiceKey], tuple[str, str, str, str, str]]:
        # made again from its fields: a string's hash differs from one process to another
        return ServiceKey, (self.app, self.name, self.version, self.environment, self.project)

    def text(self) -> str:
        """The stable text form; its Redis-Cluster slot is the record's slot."""
        return self._text

    @property
    def slot(self) -> int:
        return self._slot

    @classmethod
    def parse(cls, text: str) -> ServiceKey:
        parts = text.split("/")
        if len(parts) != 6:
            raise ValueError(f"{text!r} is not domain/project/environment/app/name/version")
        domain, project, environment, app, name, version = parts
        return cls(app, name, version, environment, f"{domain}/{project}")


class Instance(NamedTuple):
    """One running instance of a service, as its origin registry describes it.

    A named tuple, as :class:`Record`: one or two are made per record synced, and a
    frozen dataclass takes several times as long to make (``_replace`` makes a changed
    one). Equal to another only with the same fields (compared as tuples)."""

    service: ServiceKey
    instance_id: str
    host_name: str
    endpoints: tuple[str, ...] = ()
    status: str = "UP"
    properties: Mapping[str, str] = _EMPTY
    health_interval: int = 30  # seconds between heartbeats
    health_times: int = 3  # missed heartbeats tolerated: TTL = interval * (times + 1)

    @property
    def ttl(self) -> int:
        return self.health_interval * (self.health_times + 1)

    def properties_dict(self) -> dict[str, str]:
        """A new plain dict of the properties (a read-only view is copied through the
        dict it wraps: ``dict()`` of a view goes key by key, several times slower)."""
        properties = self.properties
        if type(properties) is MappingProxyType:
            copied = properties.copy()
            if type(copied) is dict:
                return copied
        return dict(properties)

    def fields(self) -> dict[str, Any]:
        """The canonical record fields (what the digest covers; not the local ids)."""
        return {
            "id": self.instance_id,
            "host": self.host_name,
            "endpoints": list(self.endpoints),
            "status": self.status,
            "properties": self.properties_dict(),
            "health": [self.health_interval, self.health_times],
        }

    def digest(self) -> int:
        """``record_digest`` of the service's text and :meth:`fields` (not built)."""
        service, instance_id, host, endpoints, status, properties, interval, times = self
        return digest.instance_digest(
            service.text(), instance_id, host, endpoints, status, properties, interval, times
        )

    @classmethod
    def from_fields(cls, service: ServiceKey, fields: Mapping[str, Any]) -> Instance:
        """Inverse of :meth:`fields`; raises ValueError on a malformed mapping."""
        try:
            interval, times = fields["health"]
            return cls(
                service=service,
                instance_id=str(fields["id"]),
                host_name=str(fields["host"]),
                endpoints=tuple(str(e) for e in fields["endpoints"]),
                status=str(fields["status"]),
                properties=MappingProxyType(
                    {str(k): str(v) for k, v in dict(fields["properties"]).items()}
                ),
                health_interval=int(interval),
                health_times=int(times),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"malformed instance fields: {exc}") from None


def is_copy(instance: Instance) -> bool:
    """True when the instance carries pysyncer's origin marker (a copy from elsewhere)."""
    return marks_copy(instance.properties)


def marks_copy(properties: Mapping[str, Any]) -> bool:
    """True when instance properties (an :class:`Instance`'s, or a registry's raw record's)
    carry pysyncer's origin marker."""
    return ORIGIN_DC_PROPERTY in properties


def record_key_hash(origin_dc: str, instance_id: str) -> int:
    """64-bit identity of a record across data centers (the snapshot key)."""
    return digest.digest64(f"{origin_dc}\x00{instance_id}".encode())


class Record(NamedTuple):
    """An instance as exported by its origin data center, at one revision (a named
    tuple, as :class:`Instance`).

    ``instance`` is None for a deletion (a tombstone), which carries the service and id.
    """

    origin_dc: str
    service: ServiceKey
    instance_id: str
    revision: int
    instance: Instance | None

    @property
    def deleted(self) -> bool:
        return self.instance is None

    @property
    def slot(self) -> int:
        return self.service.slot

    @property
    def key_hash(self) -> int:
        return record_key_hash(self.origin_dc, self.instance_id)

    @property
    def digest(self) -> int:
        return 0 if self.instance is None else self.instance.digest()
