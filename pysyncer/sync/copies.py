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
from pysyncer.sync.copyindex import local_id_of

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
        _, origin_dc, origin_id, service, slot, digest, revision, ref = self
        service_id, instance_id = ref
        return MappingEntry(  # positional (a copy's hot path), in MappingEntry's field order
            origin_dc,
            origin_id,
            service.text(),
            slot,
            digest,
            revision,
            service_id,
            instance_id,
            now,
            now,
        )


def copy_of(record: Record, origin: Instance, key_hash: int) -> Instance:
    """The copy of ``origin`` (the instance of ``record``, whose key hash is ``key_hash``)
    to register in this registry."""
    # unpacked (a copy's hot path): one step, not a descriptor call per field
    service, _, host, endpoints, status, _, interval, times = origin
    properties = origin.properties_dict()
    properties[ORIGIN_DC_PROPERTY] = record.origin_dc
    properties[ORIGIN_ID_PROPERTY] = record.instance_id
    return Instance(
        service,
        local_id_of(key_hash),  # copy_instance_id of the record, without hashing it again
        host,
        endpoints,
        status,
        MappingProxyType(properties),
        interval,
        times,
    )
