"""A remote record's copy: the instance the importer registers for it, and its mapping.

Owns the shape of a copy (the origin's instance under a deterministic local id, with
the origin marker in its properties) and of the mapping entry a written copy is
committed as. Pure values: no registry, store or index access; must not import the
importer.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import NamedTuple

from pysyncer.adapters.base import LocalRef
from pysyncer.model import ORIGIN_DC_PROPERTY, ORIGIN_ID_PROPERTY, Instance, Record, ServiceKey
from pysyncer.store.base import MappingEntry
from pysyncer.sync.copyindex import copy_instance_id

__all__ = ["PendingCopy", "copy_of"]


class PendingCopy(NamedTuple):
    """A copy written to the registry whose mapping is not committed yet (a named tuple:
    one is made per copy written, several times faster than a frozen dataclass)."""

    key_hash: int
    origin_dc: str
    origin_id: str
    service: ServiceKey
    slot: int
    digest: int
    revision: int
    ref: LocalRef

    def entry(self, now: float) -> MappingEntry:
        """Its mapping entry, registered and renewed at ``now`` (wall-clock seconds)."""
        ref = self.ref
        return MappingEntry(  # positional (a copy's hot path), in MappingEntry's field order
            self.origin_dc,
            self.origin_id,
            self.service.text(),
            self.slot,
            self.digest,
            self.revision,
            ref.service_id,
            ref.instance_id,
            now,
            now,
        )


def copy_of(record: Record, origin: Instance) -> Instance:
    """The copy of ``origin`` (the instance of ``record``) to register in this registry."""
    properties = origin.properties_dict()
    properties[ORIGIN_DC_PROPERTY] = record.origin_dc
    properties[ORIGIN_ID_PROPERTY] = record.instance_id
    return Instance(
        service=origin.service,
        instance_id=copy_instance_id(record.origin_dc, record.instance_id),
        host_name=origin.host_name,
        endpoints=origin.endpoints,
        status=origin.status,
        properties=MappingProxyType(properties),
        health_interval=origin.health_interval,
        health_times=origin.health_times,
    )
