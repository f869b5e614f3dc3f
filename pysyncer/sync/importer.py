"""The importer: remote instances as copies in the local registry, kept alive and tidy.

Applies records from remote data centers idempotently: a live record becomes a copy
(the service is ensured, the instance registered under a deterministic local id with
the origin marker in its properties) and a mapping entry; a tombstone unregisters the
copy and drops the entry. Registry writes happen first, then the mapping changes and the
peer's cursor in one store transaction, so a crash at any point is repaired by replaying
the same records (at-least-once, never a duplicate copy).

It also has the copies kept alive (:mod:`pysyncer.sync.renewals` runs the renew loop and
hands back the copies the registry lost), has those repaired from their origin, and
reconciles whole slots against an origin's full state: the only place a copy is removed
for being *absent* (no delete before a full view).
With an import filter, the copies it holds at start (or adopts) are swept: those of
services the filter refuses are removed at once, those its metadata rules decide are
pulled from their origin again and so pass through the filter. The digests of the records
the filter refuses count in the index's slot digests as they do at the origin, so a
filtered slot does not differ (and is not repaired) forever.
At start (and for adopted slots) it also checks the registry's copies against the
mapping table: a copy carrying the origin marker that no mapping records (a crash
between the registry write and the store commit) is an orphan. Anti-entropy compares
the mapping with the origin and cannot see it, and a replayed delete would not find it,
so it is removed at once; the replay (the cursor never passed its record) or the repair
registers it again if its origin still has it.

Every registry write it makes (a registration, an update, an unregistration) first takes
a token of its write budget (:mod:`pysyncer.sync.writebudget`), so a new data center or a
heal fills the registry at the configured pace; heartbeats do not, and a batch waiting for
tokens (with the lock held) never delays the renew loop; such a batch heartbeats the
copies it wrote so far itself (they are not in the index until it commits). A batch's
copies are registered a turn's worth at a time (:data:`WRITES_PER_TURN`, or as many as
have their tokens before the budget makes it wait) in one adapter call when the adapter
can (:func:`~pysyncer.adapters.base.register_all`). Judging held
copies by the import filter is :mod:`pysyncer.sync.sweep`'s; what a copy and its mapping
entry look like is :mod:`pysyncer.sync.copies`'.

Memory: the store's mapping table is the full record of every copy; in memory the
importer keeps one small entry per copy (see :class:`CopyIndex`), not the copy itself.
The copies written are frozen out of the garbage collector's reach now and then
(:meth:`Importer._settle`): the event loop must not stall on full collections.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from pysyncer._core import digest as core_digest
from pysyncer.adapters.base import Adapter, AdapterError, LocalRef, NotFoundError, register_all
from pysyncer.errors import PysyncerError
from pysyncer.model import (
    ORIGIN_DC_PROPERTY,
    ORIGIN_ID_PROPERTY,
    Instance,
    Record,
    ServiceKey,
    is_copy,
    record_key_hash,
)
from pysyncer.shardeddict import ShardedDict
from pysyncer.store.base import (
    CursorBatch,
    Fence,
    FencedError,
    MappingEntry,
    MappingKey,
    Store,
    apply_batches,
    iter_mappings,
)
from pysyncer.sync.copies import PendingCopy, copy_of
from pysyncer.sync.copyindex import CopyIndex, copy_instance_id
from pysyncer.sync.ownership import SlotOwnership
from pysyncer.sync.renewals import RENEW_BATCH, LostCopies, Renewals, chunks
from pysyncer.sync.sweep import ServiceVerdict, Sweep
from pysyncer.sync.writebudget import WriteBudget

__all__ = ["Importer", "ImporterStats", "copy_instance_id"]

log = logging.getLogger(__name__)

WRITES_PER_TURN = 100  # registry writes between two yields (a turn of 200 held the loop 80 ms)
# Copies held between two garbage-collector freezes. Each freeze first collects the
# young generations, which hold every object written since the last one: 10,000 copies'
# worth took up to 68 ms of the loop thread at 1,000,000 copies, 2,000 (a repair batch)
# up to 41 ms in process; on a slow host such a collection and the hold step before it,
# in one turn, held the loop 65 ms (the tripwire caught it in the collection). So it
# runs in a turn of its own, after the hold step that made it due.
FREEZE_EVERY = 2_000
# Copies added to the index between two yields after a commit: a repair batch of 15,000
# copies added in one turn held the loop 70-85 ms at 1,000,000 copies (py-spy), every
# shard of the index growing in it (they fill evenly, so they grow together). Also the
# mapping entries built per turn before the commit.
HOLD_STEP = 2_000
# Records of the waiting batches applied together (one store transaction), unless the
# first alone has more.
GROUP_RECORDS = 2_000


class _Batch:
    """One origin's batch to apply: its records (the last of each instance), the cursor
    and epoch committed with them, the records the import filter refused (by key hash),
    the slots it holds in full (a reconcile); then its outcome."""

    __slots__ = (
        "cursor",
        "done",
        "epoch",
        "error",
        "full_slots",
        "origin_dc",
        "records",
        "refused",
    )

    def __init__(
        self,
        origin_dc: str,
        records: list[Record],
        cursor: int,
        epoch: str | None,
        refused: Mapping[int, Record],
        full_slots: Collection[int] = (),
    ) -> None:
        self.origin_dc = origin_dc
        self.records = records
        self.cursor = cursor
        self.epoch = epoch
        self.refused = refused
        self.full_slots = full_slots
        self.done = False
        self.error: Exception | None = None

    def finish(self, error: Exception | None) -> None:
        self.done = True
        self.error = error


# A batch written to the registry: it, its copies written, the mappings it drops.
_Written = tuple[_Batch, list[PendingCopy], list[tuple[int, MappingKey]]]


class _Write(NamedTuple):
    """A copy to register, its token taken, with what its record gave for it."""

    record: Record
    copy: Instance
    key_hash: int
    digest: int


@dataclass
class ImporterStats:
    applied: int = 0
    registered: int = 0
    unregistered: int = 0
    renewals: int = 0
    lost: int = 0  # copies the registry no longer knew (repaired from their origin)
    reregistered: int = 0  # lost copies registered again
    filtered: int = 0  # records refused by the import filter (applied as deletes), and
    # copies removed at start (or adoption) because their service is no longer imported
    not_owned: int = 0  # records of slots another syncer of this data center owns
    errors: dict[str, int] = field(default_factory=dict)
    budget: WriteBudget = field(default_factory=WriteBudget.unlimited_budget)  # its pace

    def error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1


class Importer:
    """Copies of remote instances in the local registry, for every remote data center."""

    def __init__(
        self,
        local_dc: str,
        adapter: Adapter,
        store: Store,
        *,
        imports: Callable[[str, Instance], bool] | None = None,
        imports_service: ServiceVerdict | None = None,
        ownership: SlotOwnership | None = None,
        budget: WriteBudget | None = None,
    ) -> None:
        self.local_dc = local_dc
        self._ownership = ownership  # None: this syncer owns every slot
        self._imports = imports  # import filter (None: everything); failing = deleted
        # Its decision per (origin dc, service): True/False, None when metadata decides;
        # without it, every held copy is checked against its origin again at start.
        self._imports_service = imports_service
        self.adapter = adapter
        self.store = store
        # Registry writes are paced by it (unlimited when not given); renewals are not.
        self.budget = budget if budget is not None else WriteBudget.unlimited_budget()
        self.stats = ImporterStats(budget=self.budget)
        self.index = CopyIndex()
        self._service_ids: ShardedDict[ServiceKey, str] = ShardedDict()
        self._lock = asyncio.Lock()
        self._waiting: list[_Batch] = []  # batches whose callers wait for the lock
        # Several batches in one transaction only where the store commits them together.
        self._grouping = callable(getattr(store, "apply_batches", None))
        self.expired_origins: set[str] = set()  # origins gone past origin-grace: not renewed
        self.needs_repair: set[str] = set()  # origins with lost copies to pull again
        self._lost: set[int] = set()  # key hashes of lost copies not registered again yet
        self._unfrozen = 0  # copies held since the last garbage-collector freeze
        self.renewals = Renewals(
            adapter, self.index, self.stats, self.expired_origins, self._forget_lost, self._lock
        )

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self, renew_interval: float | None = None) -> None:
        """Load the mapping table; start renewing (every TTL/4 when not given).

        With slot ownership nothing is loaded here: copies are adopted slot by slot as
        the slots are gained (:meth:`adopt`). With an import filter, the copies loaded are
        swept (:meth:`_sweep`): the filter may have changed since they were made.
        """
        sweep = self._new_sweep()
        if self._ownership is None:
            for origin_dc in await self.store.mapping_counts():
                async for entry in iter_mappings(self.store, origin_dc):
                    self._hold(entry)
                    if sweep is not None:
                        sweep.screen(entry, self.index, self.needs_repair)
            async with self._lock:
                await self._check_registry(None)
        self.renewals.start(renew_interval)
        if sweep is not None:
            await self._sweep(sweep)

    def _new_sweep(self) -> Sweep | None:
        """A sweep of the copies about to be loaded, when an import filter is set."""
        return Sweep(self._imports_service) if self._imports is not None else None

    def _hold(self, entry: MappingEntry) -> None:
        self.index.add(
            record_key_hash(entry.origin_dc, entry.origin_instance_id),
            entry.origin_dc,
            ServiceKey.parse(entry.service_text),
            entry.slot,
            entry.digest,
            LocalRef(entry.local_service_id, entry.local_instance_id),
        )
        # The TTL is not stored: assume the default until the copy is re-applied.
        self.renewals.note_default_ttl()

    async def adopt(self, slots: Collection[int]) -> int:
        """Take over the copies of gained slots from the store (the previous owner's
        mapping), then renew everything held so none of them lapses; how many."""
        entries = await self.store.mappings_in_slots(slots)
        sweep = self._new_sweep()
        async with self._lock:
            for entry in entries:
                self._hold(entry)
                if sweep is not None:
                    sweep.screen(entry, self.index, self.needs_repair)
            await self._check_registry(slots)
        await self.renew_all()
        if sweep is not None:
            await self._sweep(sweep)
        return len(entries)

    async def _check_registry(self, slots: Collection[int] | None) -> None:
        """One registry listing, right after copies were loaded (of ``slots``, or of all
        when None), with the lock held (no apply between its registry write and commit):
        pace renewals by the copies' TTLs and remove the orphans among them (copies of a
        remote origin, in these slots, that the mapping table does not record)."""
        try:
            listing = await self.adapter.list_instances()
        except PysyncerError as exc:
            self.stats.error(type(exc).__name__)
            log.warning("importer: cannot list the registry to check copies: %s", exc)
            return
        copies = [instance for instance in listing if is_copy(instance)]
        self.renewals.learn_ttls(copies)
        orphans: list[LocalRef] = []
        for copy in copies:
            origin_dc = copy.properties[ORIGIN_DC_PROPERTY]
            origin_id = copy.properties.get(ORIGIN_ID_PROPERTY)
            if origin_dc == self.local_dc or not origin_id:
                continue  # not a copy this importer made
            if slots is not None and copy.service.slot not in slots:
                continue  # another syncer of this data center owns it
            if record_key_hash(origin_dc, origin_id) not in self.index:
                orphans.append(listing.ref(copy.instance_id))
        if not orphans:
            return
        await self._check_fence()
        try:
            for ref in orphans:
                with contextlib.suppress(NotFoundError):  # its lease ran out meanwhile
                    await self._unregister(ref)
        except PysyncerError as exc:  # the rest lapse by their TTL (nothing renews them)
            self.stats.error(type(exc).__name__)
            log.warning("importer: removing copies no mapping recorded failed: %s", exc)
            return
        log.info(
            "importer: removed %d copies no mapping recorded (written before a crash); "
            "their origins' replay or repair registers the live ones again",
            len(orphans),
        )

    async def _sweep(self, sweep: Sweep) -> int:
        """Remove the doomed copies of a sweep (unregistered, mappings deleted in batches);
        how many. Copies a failure leaves are invalidated instead: the next repair of their
        origin removes them (their records arrive and fail the filter)."""
        removed = 0
        doomed = sweep.doomed
        try:
            for chunk in chunks(doomed, RENEW_BATCH):
                async with self._lock:  # only copies still held: not released, not replaced
                    batch = [item for item in chunk if item[0] in self.index]
                    await self._check_fence()
                    for _, _, ref in batch:
                        await self._unregister(ref)
                    try:
                        await self.store.delete_mappings(
                            [key for _, key, _ in batch], fence=self._fence()
                        )
                    except FencedError:
                        self._fenced()
                        raise
                    for key_hash, _, _ in batch:
                        self.index.remove(key_hash)
                        self._lost.discard(key_hash)
                removed += len(batch)
                self.stats.filtered += len(batch)
        except PysyncerError as exc:
            if not isinstance(exc, FencedError):
                self.stats.error(type(exc).__name__)
            log.warning("import filter: removing copies failed, left to the next repair: %s", exc)
            for key_hash, key, _ in doomed:
                if self.index.invalidate(key_hash) is not None:
                    self.needs_repair.add(key[0])
        if removed or sweep.rechecked:
            log.info(
                "import filter: %d held copies removed (their service is no longer imported), "
                "%d to be checked against their origin at the next repair",
                removed,
                sweep.rechecked,
            )
        return removed

    async def release(self, slots: Collection[int]) -> int:
        """Forget the copies of slots handed to another syncer (never unregistered: the
        new owner adopts them); how many."""
        async with self._lock:  # no apply meanwhile; the loop runs between steps
            dropped = 0
            for so_far in self.index.drop_slots_in_steps(slots):
                dropped = so_far
                await asyncio.sleep(0)
            return dropped

    def _fence(self) -> Fence | None:
        return None if self._ownership is None else self._ownership.fence()

    async def _check_fence(self) -> None:
        """Before registry writes: FencedError when another syncer owns our slots now,
        StoreError when the shared store cannot confirm (apply waits for it)."""
        if self._ownership is not None:
            try:
                await self._ownership.check_fence()
            except FencedError:
                self.stats.error("fenced")
                raise

    def _fenced(self) -> None:
        """A write was refused: this syncer's view of the slot table is stale."""
        self.stats.error("fenced")
        if self._ownership is not None:
            self._ownership.nudge()

    def wants(self, slot: int) -> bool:
        """Whether this syncer applies records of ``slot`` (it owns it)."""
        return self._ownership is None or self._ownership.owns(slot)

    async def close(self) -> None:
        await self.renewals.close()

    # -- queries -----------------------------------------------------------------------

    def copy_ids(self) -> Collection[str]:
        """Local instance ids of every copy (the exporter skips them); a live, read-only view."""
        return self.index.local_ids

    def copies_by_origin(self) -> dict[str, int]:
        return self.index.counts()

    def digest_table(self, origin_dc: str) -> core_digest.SlotDigestTable:
        """What this data center holds of ``origin_dc``, as the origin's digest table."""
        return self.index.digest_table(origin_dc)

    # -- applying changes ------------------------------------------------------------

    async def apply(
        self, origin_dc: str, records: Sequence[Record], cursor: int, epoch: str | None = None
    ) -> None:
        """Apply one batch of an origin's changes, then advance its cursor atomically.

        Batches of other origins waiting for the lock meanwhile are applied with it, their
        mappings and cursors committed in the same store transaction (:meth:`_apply_group`):
        whoever takes the lock first applies every batch waiting; the others find theirs
        done (or failed) when their turn comes.
        """
        refused: dict[int, Record] = {}
        latest = self._latest(origin_dc, records, refused)
        batch = _Batch(origin_dc, list(latest.values()), cursor, epoch, refused)
        self._waiting.append(batch)
        try:
            async with self._lock:
                while not batch.done:  # not applied by an earlier holder of the lock
                    group = self._take_group()
                    try:
                        await self._apply_group(group)
                    finally:  # cancelled midway: those not done are their callers' again
                        self._waiting[:0] = [queued for queued in group if not queued.done]
        except asyncio.CancelledError:
            with contextlib.suppress(ValueError):  # not taken yet: nobody applies it now
                self._waiting.remove(batch)
            raise
        if batch.error is not None:
            raise batch.error
        self.stats.applied += len(latest)

    def _take_group(self) -> list[_Batch]:
        """The waiting batches to apply together: from the oldest on, one per origin (a
        second batch of an origin needs the first's copies in the index), at most
        :data:`GROUP_RECORDS` records unless one batch alone has more; only one when the
        store cannot commit several in one transaction."""
        waiting = self._waiting
        group = [waiting.pop(0)]
        origins = {group[0].origin_dc}
        size = len(group[0].records)
        while self._grouping and waiting:
            following = waiting[0]
            size += len(following.records)
            if following.origin_dc in origins or size > GROUP_RECORDS:
                break
            origins.add(following.origin_dc)
            group.append(waiting.pop(0))
        return group

    def _latest(
        self, origin_dc: str, records: Iterable[Record], refused: dict[int, Record]
    ) -> dict[MappingKey, Record]:
        """The last record of each instance, owned slots only; the ones the import filter
        refuses become deletes, and are kept by key hash in ``refused``."""
        latest: dict[MappingKey, Record] = {}
        for record in records:
            if record.origin_dc != origin_dc or origin_dc == self.local_dc:
                self.stats.error("foreign_record")
                continue
            own = self._ownership
            if own is not None and not own.owns(record.slot):
                if own.pending(record.slot):  # played back soon: pull it again after
                    self.needs_repair.add(origin_dc)
                self.stats.not_owned += 1
                continue
            instance = record.instance
            imports = self._imports
            if imports is not None:
                if instance is not None and not imports(origin_dc, instance):
                    self.stats.filtered += 1
                    refused[record.key_hash] = record
                    record = Record(origin_dc, record.service, record.instance_id, 0, None)
                else:
                    refused.pop(record.key_hash, None)
            latest[(origin_dc, record.instance_id)] = record
        return latest

    async def _apply_group(self, group: Sequence[_Batch]) -> None:
        """Write the registry, then commit the mappings and cursors, then the index; with
        the lock held. Each batch ends done, with the error that stopped it if any: a batch
        whose registry writes fail is left out of the commit (its origin replays it); a
        failed commit fails them all. Cancelled midway, the batches not done stay so.

        With an import filter, the index also counts the digests of each batch's
        ``refused`` records (and stops counting those admitted or deleted since, and, for
        ``full_slots`` pulled in full, those the origin no longer has): see :class:`CopyIndex`.
        """
        try:
            await self._check_fence()  # a stale owner must not touch the registry either
            generation = self.index.generation  # the renewal mark the leases are set in
            written: list[_Written] = []
            for batch in group:
                try:
                    pending, deletes = await self._write_registry(batch.records)
                except Exception as exc:  # this batch only: the others go on
                    batch.finish(exc)
                    continue
                written.append((batch, pending, deletes))
            commits = [
                CursorBatch(
                    batch.origin_dc,
                    await self._entries(pending),
                    [key for _, key in deletes],
                    batch.cursor,
                    batch.epoch,
                )
                for batch, pending, deletes in written
            ]
            if commits:
                try:
                    await apply_batches(self.store, commits, fence=self._fence())
                except FencedError:
                    self._fenced()
                    raise
            await self._hold_all(written, generation)
        except Exception as exc:
            for batch in group:
                if not batch.done:
                    batch.finish(exc)

    @staticmethod
    async def _entries(pending: Sequence[PendingCopy]) -> list[MappingEntry]:
        """The mapping entries of ``pending``, :data:`HOLD_STEP` per turn of the loop: a
        repair batch of 15,000 copies built them in one turn, 30-35 ms at 1,000,000 copies
        (py-spy)."""
        entries: list[MappingEntry] = []
        for start in range(0, len(pending), HOLD_STEP):
            if start:
                await asyncio.sleep(0)
            now = time.time()  # (one clock reading per step: the entries' registration)
            entries.extend([p.entry(now) for p in pending[start : start + HOLD_STEP]])
        return entries

    async def _hold_all(self, written: Sequence[_Written], generation: int) -> None:
        """The index after the commit of ``written``, :data:`HOLD_STEP` copies per turn
        of the loop; each batch finished once held. The copies are committed, so they
        must all be held: a cancellation between two steps holds the rest at once, then
        goes on."""
        steps = self._hold_steps(written, generation)
        try:
            for _ in steps:
                await asyncio.sleep(0)
        finally:
            for _ in steps:  # cancelled: the rest in this turn (nothing left otherwise)
                pass

    def _hold_steps(self, written: Sequence[_Written], generation: int) -> Iterator[None]:
        """:meth:`_hold_all`'s work, yielding after every :data:`HOLD_STEP` copies held."""
        for batch, pending, deletes in written:
            index = self.index
            for start in range(0, len(pending), HOLD_STEP):
                if start:
                    yield
                step = pending[start : start + HOLD_STEP]
                for key_hash, origin_dc, _, service, slot, digest, _, ref in step:
                    index.add(key_hash, origin_dc, service, slot, digest, ref, generation)
                self._unfrozen += len(step)
                if self._unfrozen >= FREEZE_EVERY:
                    yield  # the collection in a turn of its own, not the step's
                    self._settle()
            for key_hash, _ in deletes:
                index.remove(key_hash)
            if self._imports is not None:
                origin_dc, refused = batch.origin_dc, batch.refused
                if batch.full_slots:
                    index.forget_refused(origin_dc, batch.full_slots)
                for record in batch.records:
                    key_hash = record.key_hash
                    was = refused.get(key_hash)
                    if was is None:
                        index.admit(key_hash, origin_dc)
                    else:
                        index.refuse(key_hash, origin_dc, was.slot, was.digest)
            batch.finish(None)

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
        # Only slots owned now, decided once: a slot still pending its playback must not
        # be reconciled from records that were dropped for it (that would delete copies).
        owned = [slot for slot in slots if self.wants(slot)]
        own = self._ownership
        if len(owned) < len(slots) and own is not None and any(map(own.pending, slots)):
            self.needs_repair.add(origin_dc)
        refused: dict[int, Record] = {}
        latest = self._latest(origin_dc, (r for slot in owned for r in slots[slot]), refused)
        async with self._lock:
            # Copies of these slots that the origin no longer has, read from the store (the
            # authority: it also holds copies forgotten in memory after the registry lost
            # them). Slots this data center holds nothing of are not even looked up.
            held = [s for s in owned if self.index.may_hold(origin_dc, s)]
            if held:
                for entry in await self.store.mappings_in_slots(held, origin_dc):
                    key = entry.key
                    if key not in latest:
                        service = ServiceKey.parse(entry.service_text)
                        latest[key] = Record(origin_dc, service, key[1], 0, None)
                self.index.checked(origin_dc, held)
            batch = _Batch(origin_dc, list(latest.values()), cursor, epoch, refused, owned)
            await self._apply_group([batch])
        if batch.error is not None:
            raise batch.error
        self.stats.applied += len(latest)

    def _settle(self) -> None:
        """Collect the young generations and freeze what survives (the copies are
        long-lived), every :data:`FREEZE_EVERY` copies held, so the garbage collector's
        full collections never rescan the copies held: at a million copies one full
        collection stalled the event loop for seconds. Frozen objects are still freed by
        reference counting; only a cycle among them would wait for an unfreeze."""
        self._unfrozen = 0
        gc.collect(1)
        gc.freeze()

    async def _write_registry(
        self, records: Iterable[Record]
    ) -> tuple[list[PendingCopy], list[tuple[int, MappingKey]]]:
        """Write the copies of ``records`` (registered together, a turn's worth at a time)
        and remove those of its tombstones; the copies written and the mappings to drop."""
        pending: list[PendingCopy] = []
        deletes: list[tuple[int, MappingKey]] = []
        writes: list[_Write] = []  # copies to register at the turn's end (their tokens taken)
        ensured: ServiceKey | None = None  # the service of the last copy, known to exist
        index = self.index
        budget = self.budget
        clock = asyncio.get_running_loop().time
        renew_at = clock() + self.renewals.period()
        for done, record in enumerate(records, 1):
            if done % WRITES_PER_TURN == 0:  # a long batch lets the event loop run
                await self._register_all(writes, pending)
                writes = []
                await asyncio.sleep(0)
            if pending and clock() >= renew_at:
                await self._renew_pending(pending)
                renew_at = clock() + self.renewals.period()
            key_hash = record.key_hash
            instance = record.instance
            if instance is None:
                ref = index.ref(key_hash)
                if ref is not None:
                    await self._unregister(ref)
                # Deleted in the store even when not held in memory (a lost copy).
                deletes.append((key_hash, (record.origin_dc, record.instance_id)))
                continue
            digest = instance.digest()  # (record.digest, the instance known to be there)
            if index.digest(key_hash) == digest:
                continue  # already applied (a replay)
            copy = copy_of(record, instance, key_hash)
            service = copy.service
            if service is not ensured:  # a batch's records of one service share its key
                if service not in self._service_ids:
                    self._service_ids[service] = await self.adapter.ensure_service(service)
                ensured = service
            if not budget.unlimited:  # (unlimited: no token to take, nothing to await)
                if budget.tokens() < 1.0:  # spend() waits: write first
                    await self._register_all(writes, pending)
                    writes = []
                await budget.spend()
            writes.append(_Write(record, copy, key_hash, digest))
        await self._register_all(writes, pending)
        return pending, deletes

    async def _register_all(self, writes: Sequence[_Write], pending: list[PendingCopy]) -> None:
        """Register the copies of ``writes`` in one adapter call and add them to
        ``pending``; the first failure raises (the others were written: a replay repairs
        them). A copy whose service vanished (deleted by an operator) gets it again."""
        if not writes:
            return
        answers = await register_all(self.adapter, [write.copy for write in writes])
        for (record, copy, key_hash, digest), answer in zip(writes, answers, strict=True):
            if type(answer) is not LocalRef:  # (one check for the usual answer)
                if isinstance(answer, NotFoundError):
                    self._service_ids[copy.service] = await self.adapter.ensure_service(
                        copy.service
                    )
                    answer = await self.adapter.register(copy)
                elif isinstance(answer, AdapterError):
                    raise answer
            self.stats.registered += 1
            self.renewals.note_ttl(copy.ttl)
            if key_hash in self._lost:
                self._lost.discard(key_hash)
                self.stats.reregistered += 1
            origin_dc, service, instance_id, revision, _ = record
            pending.append(
                PendingCopy(
                    key_hash,
                    origin_dc,
                    instance_id,
                    service,
                    service.slot,
                    digest,
                    revision,
                    answer,
                )
            )

    async def _renew_pending(self, pending: Sequence[PendingCopy]) -> None:
        """Heartbeat the copies a batch wrote so far: the renew loop knows them only once
        the batch commits, and a batch paced by the write budget may outlast their TTL."""
        try:
            for chunk in chunks(pending, RENEW_BATCH):
                results = await self.adapter.renew([p.ref for p in chunk])
                self.stats.renewals += len(results)
        except PysyncerError as exc:  # the batch goes on; the renew loop takes over after
            self.stats.error(type(exc).__name__)
            log.warning("importer: renewing the copies of a long batch failed: %s", exc)

    async def _unregister(self, ref: LocalRef) -> None:
        await self.budget.spend()
        await self.adapter.unregister(ref)
        self.stats.unregistered += 1

    # -- keeping copies alive ------------------------------------------------------------

    async def renew_all(self) -> int:
        """Heartbeat every copy (except expired origins'); have lost ones repaired.

        A copy the registry says it does not know is forgotten in memory (its mapping
        stays in the store) and its origin is marked in :attr:`needs_repair`: the slot
        digests then differ, and the next repair pulls its slot and registers it again.
        """
        return await self.renewals.renew_all()

    async def _forget_lost(self, lost: LostCopies) -> None:
        """Forget the copies a renewal round found lost, unless an apply replaced them."""
        async with self._lock:  # an apply may have removed or replaced a copy meanwhile
            for key_hash, packed in lost:
                origin_dc = self.index.forget_if_same(key_hash, packed)
                if origin_dc is not None:
                    self._lost.add(key_hash)
                    self.stats.lost += 1
                    self.needs_repair.add(origin_dc)

    async def remove_origin(self, origin_dc: str) -> int:
        """Unregister every copy of ``origin_dc`` (origin-grace policy ``remove``).

        A chunk of :data:`RENEW_BATCH` at a time, the lock released in between: paced by
        the write budget, removing a large data center takes minutes, and the other
        origins' records (and slot handovers) must not wait for all of it. A copy its
        origin sent again meanwhile may be removed with the rest: the origin's next repair
        finds its slot differing and registers it again.
        """
        entries = [entry async for entry in iter_mappings(self.store, origin_dc)]
        for chunk in chunks(entries, RENEW_BATCH):
            async with self._lock:
                await self._check_fence()
                for entry in chunk:
                    await self._unregister(
                        LocalRef(entry.local_service_id, entry.local_instance_id)
                    )
                try:
                    await self.store.delete_mappings(
                        [entry.key for entry in chunk], fence=self._fence()
                    )
                except FencedError:
                    self._fenced()
                    raise
                for entry in chunk:
                    key_hash = record_key_hash(entry.origin_dc, entry.origin_instance_id)
                    self.index.remove(key_hash)
                    self._lost.discard(key_hash)
        return len(entries)
