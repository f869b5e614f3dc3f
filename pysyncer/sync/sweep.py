"""Judging held copies by the import filter as they are loaded (at start, on adoption).

Owns the verdict on a copy known from the mapping table, which holds no metadata, at the
service level: kept (its service is imported), doomed (it is not: the importer removes the
copy), or rechecked (metadata rules decide: the copy is invalidated in the copy index and
its origin marked for repair, so the next repair pulls it again through the filter).
Bookkeeping only: no registry or store access; removing the doomed copies is the
importer's job. Must not import the importer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from pysyncer.adapters.base import LocalRef
from pysyncer.model import ServiceKey, record_key_hash
from pysyncer.store.base import MappingEntry, MappingKey
from pysyncer.sync.copyindex import CopyIndex

__all__ = ["ServiceVerdict", "Sweep"]

# The import filter's decision per (origin dc, service): True/False, None when metadata decides.
ServiceVerdict = Callable[[str, ServiceKey], bool | None]


@dataclass(slots=True)
class Sweep:
    """Held copies the import filter no longer admits, found as they are loaded.

    Without ``decide``, every copy is rechecked against its origin.
    """

    decide: ServiceVerdict | None
    verdicts: dict[tuple[str, str], bool | None] = field(default_factory=dict)
    doomed: list[tuple[int, MappingKey, LocalRef]] = field(default_factory=list)
    rechecked: int = 0  # copies whose verdict depends on metadata: pulled again

    def screen(self, entry: MappingEntry, index: CopyIndex, needs_repair: set[str]) -> None:
        """Judge a copy just held: kept, doomed, or invalidated in ``index`` with its
        origin added to ``needs_repair``."""
        group = (entry.origin_dc, entry.service_text)
        if group in self.verdicts:
            verdict = self.verdicts[group]
        else:
            service = ServiceKey.parse(entry.service_text)
            verdict = None if self.decide is None else self.decide(entry.origin_dc, service)
            self.verdicts[group] = verdict
        if verdict is True:
            return
        key_hash = record_key_hash(entry.origin_dc, entry.origin_instance_id)
        if verdict is False:
            ref = LocalRef(entry.local_service_id, entry.local_instance_id)
            self.doomed.append((key_hash, entry.key, ref))
        elif index.invalidate(key_hash) is not None:
            needs_repair.add(entry.origin_dc)
            self.rechecked += 1
