"""The importer: remote instances as copies in the local registry, kept alive and tidy.

Applies records from remote data centers idempotently: a live record becomes a copy
(the service is ensured, the instance registered under a deterministic local id with
the origin marker in its properties) and a mapping entry; a tombstone unregisters the
copy and drops the entry. Registry writes happen first, then the mapping changes and the
peer's cursor in one store transaction, so a crash at any point is repaired by replaying
the same records (at-least-once, never a duplicate copy).

It also renews every copy in batches ahead of its TTL, re-registers copies the registry
lost, and reconciles whole slots against an origin's full state: the only place a copy
is removed for being *absent* (no delete before a full view).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

from pysyncer._core import digest as core_digest
from pysyncer.adapters.base import Adapter, LocalRef, NotFoundError
from pysyncer.errors import PysyncerError
from pysyncer.model import (
    ORIGIN_DC_PROPERTY,
    ORIGIN_ID_PROPERTY,
    Instance,
    Record,
    ServiceKey,
    record_key_hash,
)
from pysyncer.store.base import MappingEntry, MappingKey, Store, iter_mappings

__all__ = ["Importer", "ImporterStats", "copy_instance_id"]

log = logging.getLogger(__name__)

RENEW_BATCH = 500
DEFAULT_TTL = 120  # Service-Center's default lease: 30 s x (3 + 1)
RENEW_TICK = 1.0  # how often the renewal period is re-checked (copies with short TTLs arrive)
RENEW_STARTUP_DELAY = 1.0


def copy_instance_id(origin_dc: str, origin_instance_id: str) -> str:
    """The local id of a copy: the same for every syncer of this data center, every time."""
    return f"px{record_key_hash(origin_dc, origin_instance_id):016x}"


@dataclass
class ImporterStats:
    applied: int = 0
    registered: int = 0
    unregistered: int = 0
    renewals: int = 0
    reregistered: int = 0
    errors: dict[str, int] = field(default_factory=dict)

    def error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1


@dataclass(slots=True)
class _Copy:
    entry: MappingEntry
    instance: Instance  # the copy as registered (to re-register it when lost)


class Importer:
    """Copies of remote instances in the local registry, for every remote data center."""

    def __init__(self, local_dc: str, adapter: Adapter, store: Store) -> None:
        self.local_dc = local_dc
        self.adapter = adapter
        self.store = store
        self.stats = ImporterStats()
        self._copies: dict[MappingKey, _Copy] = {}
        self._local_ids: set[str] = set()
        self._min_ttl = float("inf")
        self._by_slot: dict[tuple[str, int], set[MappingKey]] = {}  # (origin, slot) -> copies
        self._tables: dict[str, core_digest.SlotDigestTable] = {}
        self._service_ids: dict[ServiceKey, str] = {}
        self._lock = asyncio.Lock()
        self._renew_task: asyncio.Task[None] | None = None
        self.expired_origins: set[str] = set()  # origins gone past origin-grace: not renewed
        self.needs_repair: set[str] = set()  # origins with lost copies we cannot rebuild alone
        self._pending_instances: dict[MappingKey, Instance] = {}

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self, renew_interval: float | None = None) -> None:
        """Load the mapping table; start renewing (every TTL/4 when not given)."""
        for origin_dc in await self.store.mapping_counts():
            async for entry in iter_mappings(self.store, origin_dc):
                self._remember(entry, _placeholder(entry))
        self._renew_task = asyncio.get_running_loop().create_task(
            self._renew_loop(renew_interval), name="importer-renew"
        )

    async def close(self) -> None:
        if self._renew_task is not None:
            self._renew_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renew_task

    # -- queries -----------------------------------------------------------------------

    def copy_ids(self) -> Collection[str]:
        """Local instance ids of every copy (the exporter skips them); a live, read-only view."""
        return self._local_ids

    def copies_by_origin(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for origin_dc, _ in self._copies:
            counts[origin_dc] = counts.get(origin_dc, 0) + 1
        return counts

    def digest_table(self, origin_dc: str) -> core_digest.SlotDigestTable:
        """What this data center holds of ``origin_dc``, as the origin's digest table."""
        table = self._tables.get(origin_dc)
        return table.copy() if table is not None else core_digest.SlotDigestTable()

    # -- applying changes ------------------------------------------------------------

    async def apply(
        self, origin_dc: str, records: Sequence[Record], cursor: int, epoch: str | None = None
    ) -> None:
        """Apply one batch of an origin's changes, then advance its cursor atomically."""
        latest: dict[MappingKey, Record] = {}
        for record in records:
            if record.origin_dc != origin_dc or origin_dc == self.local_dc:
                self.stats.error("foreign_record")
                continue
            latest[(origin_dc, record.instance_id)] = record
        async with self._lock:
            upserts, deletes = await self._write_registry(latest.values())
            await self.store.apply_batch(origin_dc, upserts, deletes, cursor, epoch)
            self._commit(upserts, deletes)
        self.stats.applied += len(latest)

    async def reconcile_slot(
        self, origin_dc: str, slot: int, records: Sequence[Record], cursor: int, epoch: str
    ) -> None:
        """Make this slot's copies of ``origin_dc`` exactly ``records`` (a full view of it)."""
        await self.reconcile_slots(origin_dc, {slot: records}, cursor, epoch)

    async def reconcile_slots(
        self,
        origin_dc: str,
        slots: Mapping[int, Sequence[Record]],
        cursor: int,
        epoch: str,
    ) -> None:
        """:meth:`reconcile_slot` for many slots in one store transaction."""
        batch: list[Record] = []
        for slot, records in slots.items():
            present = {r.instance_id for r in records if not r.deleted}
            batch.extend(records)
            batch.extend(
                Record(
                    origin_dc,
                    ServiceKey.parse(self._copies[key].entry.service_text),
                    key[1],
                    0,
                    None,
                )
                for key in self._by_slot.get((origin_dc, slot), ())
                if key[1] not in present
            )
        await self.apply(origin_dc, batch, cursor, epoch)

    async def _write_registry(
        self, records: Iterable[Record]
    ) -> tuple[list[MappingEntry], list[MappingKey]]:
        upserts: list[MappingEntry] = []
        deletes: list[MappingKey] = []
        now = time.time()
        for record in records:
            key = (record.origin_dc, record.instance_id)
            known = self._copies.get(key)
            if record.instance is None:
                if known is not None:
                    await self._unregister(known.entry)
                    deletes.append(key)
                continue
            if known is not None and known.entry.digest == record.digest:
                continue  # already applied (a replay)
            copy = self._copy_of(record, record.instance)
            ref = await self._register(copy)
            upserts.append(
                MappingEntry(
                    origin_dc=record.origin_dc,
                    origin_instance_id=record.instance_id,
                    service_text=record.service.text(),
                    slot=record.slot,
                    digest=record.digest,
                    origin_revision=record.revision,
                    local_service_id=ref.service_id,
                    local_instance_id=ref.instance_id,
                    registered_at=now,
                    renewed_at=now,
                )
            )
            self._pending_instances[key] = copy
        return upserts, deletes

    def _commit(self, upserts: Sequence[MappingEntry], deletes: Sequence[MappingKey]) -> None:
        for entry in upserts:
            instance = self._pending_instances.pop(entry.key, None) or _placeholder(entry)
            self._forget(entry.key)
            self._remember(entry, instance)
        for key in deletes:
            self._forget(key)

    def _remember(self, entry: MappingEntry, instance: Instance) -> None:
        self._copies[entry.key] = _Copy(entry, instance)
        self._min_ttl = min(self._min_ttl, float(instance.ttl))
        self._local_ids.add(entry.local_instance_id)
        self._by_slot.setdefault((entry.origin_dc, entry.slot), set()).add(entry.key)
        table = self._tables.setdefault(entry.origin_dc, core_digest.SlotDigestTable())
        table.add(entry.slot, entry.digest)

    def _forget(self, key: MappingKey) -> None:
        old = self._copies.pop(key, None)
        if old is not None:
            self._local_ids.discard(old.entry.local_instance_id)
            in_slot = self._by_slot.get((key[0], old.entry.slot))
            if in_slot is not None:
                in_slot.discard(key)
                if not in_slot:
                    del self._by_slot[(key[0], old.entry.slot)]
            self._tables[key[0]].remove(old.entry.slot, old.entry.digest)

    def _copy_of(self, record: Record, origin: Instance) -> Instance:
        properties = dict(origin.properties)
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

    async def _register(self, copy: Instance) -> LocalRef:
        if copy.service not in self._service_ids:
            self._service_ids[copy.service] = await self.adapter.ensure_service(copy.service)
        try:
            ref = await self.adapter.register(copy)
        except NotFoundError:  # the service vanished (deleted by an operator): recreate it
            self._service_ids[copy.service] = await self.adapter.ensure_service(copy.service)
            ref = await self.adapter.register(copy)
        self.stats.registered += 1
        return ref

    async def _unregister(self, entry: MappingEntry) -> None:
        await self.adapter.unregister(LocalRef(entry.local_service_id, entry.local_instance_id))
        self.stats.unregistered += 1

    # -- keeping copies alive ------------------------------------------------------------

    async def _renew_loop(self, interval: float | None) -> None:
        """Renew every ``interval`` (or TTL/4 of the shortest-lived copy, re-read each second).

        The first round runs right after start: copies known only from the store (after a
        restart) are checked at once, and the ones the registry lost are repaired.
        """
        last = float("-inf")
        first = True
        while True:
            await asyncio.sleep(RENEW_STARTUP_DELAY if first else RENEW_TICK)
            period = interval or self._renew_period()
            now = asyncio.get_running_loop().time()
            if not first and now - last < period:
                continue
            first = False
            last = now
            try:
                await self.renew_all()
            except asyncio.CancelledError:
                raise
            except PysyncerError as exc:
                self.stats.error(type(exc).__name__)
                log.warning("renewing copies failed: %s", exc)
            except Exception:
                self.stats.error("internal")
                log.exception("renewing copies failed")

    def _renew_period(self) -> float:
        # The shortest TTL ever held (kept as copies arrive; never raised when one goes):
        # renewing a little too often is harmless, too rarely lets copies expire.
        ttl = self._min_ttl if self._min_ttl != float("inf") else DEFAULT_TTL
        return max(1.0, ttl / 4)

    async def renew_all(self) -> int:
        """Heartbeat every copy (except expired origins'); re-register lost ones."""
        copies = [c for c in self._copies.values() if c.entry.origin_dc not in self.expired_origins]
        lost: list[_Copy] = []
        by_ref = {LocalRef(c.entry.local_service_id, c.entry.local_instance_id): c for c in copies}
        refs = list(by_ref)
        for start in range(0, len(refs), RENEW_BATCH):
            results = await self.adapter.renew(refs[start : start + RENEW_BATCH])
            for result in results:
                if result.not_found:
                    lost.append(by_ref[result.ref])
                elif not result.ok:
                    self.stats.error("renew")
            self.stats.renewals += len(results)
        async with self._lock:  # an apply may have removed or replaced a copy meanwhile
            lost = [c for c in lost if self._copies.get(c.entry.key) is c]
            await self._restore(lost)
        return len(refs)

    async def _restore(self, lost: Sequence[_Copy]) -> None:
        for copy in lost:
            if copy.instance.host_name == "":
                # Known only from the store (after a restart): forget it in memory, so the
                # slot's digest differs and the next repair pulls and re-registers it.
                self._forget(copy.entry.key)
                self.needs_repair.add(copy.entry.origin_dc)
                continue
            await self._register(copy.instance)
            self.stats.reregistered += 1

    async def remove_origin(self, origin_dc: str) -> int:
        """Unregister every copy of ``origin_dc`` (origin-grace policy ``remove``)."""
        keys = [key for key in self._copies if key[0] == origin_dc]
        async with self._lock:
            for key in keys:
                await self._unregister(self._copies[key].entry)
            await self.store.delete_mappings(keys)
            for key in keys:
                self._forget(key)
        return len(keys)


def _placeholder(entry: MappingEntry) -> Instance:
    """A copy known only from its mapping entry (after a restart, before a repair)."""
    return Instance(
        service=ServiceKey.parse(entry.service_text),
        instance_id=entry.local_instance_id,
        host_name="",
    )
