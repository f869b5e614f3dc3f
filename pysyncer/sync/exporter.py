"""The exporter: this data center's instances as a revisioned change log and slot digests.

Follows the local registry through its adapter (a full listing at start and after every
``resync``, then the change feed), keeps only instances whose origin is this data
center (copies are recognised by the importer's mapping table first, by the origin
marker in their properties second: :meth:`Exporter.is_copy`, also handed to an adapter
that can skip copies in its change feed before building them), and turns every real
change into a
:class:`~pysyncer.model.Record` appended to the store's change log with a new revision.
Beside the log it keeps, in memory, the 16384-slot digest table of what it exports.

It is the :class:`SyncSource` the RPC server serves to remote data centers: changes
since a revision, a wake-up when the revision moves, the digest table, and the full
records of chosen slots.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import time
from collections.abc import AsyncIterator, Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from pysyncer._core import digest as core_digest
from pysyncer.adapters.base import Adapter, ChangeBatch, SkipsCopies, Snapshot
from pysyncer.aiowait import wait_event
from pysyncer.errors import PysyncerError
from pysyncer.model import Instance, Record, marks_copy
from pysyncer.store.base import Store
from pysyncer.supervisor import Supervised, spawn

__all__ = ["Exporter", "ExporterStats"]

log = logging.getLogger(__name__)

StateKey = tuple[str, str]  # (service text, instance id)
RESYNC_BACKOFF_MAX = 5.0  # a registry back from a restart is followed again within 5 s
COMMIT_TIMES_KEPT = 4096
STARTUP_GRACE_MAX = 120.0
SLOTS_PER_READ = 256  # slots read from the store at once for a PullSlots answer (and one ahead)
TAIL_SIZE = 20_000  # recent changes kept in memory for the watch streams (at most the log's)
# Seconds from the start of one commit of the followed changes to the next, at least: a
# busy registry's changes are committed (fsynced) several at a time, not one by one. No
# longer than the RPC server's Watch window (a stream sends at most once per window): a
# change waits here about as long as it would have waited there for its stream.
COMMIT_SPACING = 0.01
# Log entries dropped by one store call when the change log is trimmed. A trim runs after
# the commit that made it due, outside the commit lock, a step at a time: the store's
# writer takes the commits that come meanwhile between two steps. In one statement a trim
# of ~930 entries held the commit, and the wake-up of every watch stream, 22-48 ms on a
# loaded host (5 ms idle); the default log (100,000) trims 10,000 at a time.
TRIM_STEP = 500


@dataclass
class ExporterStats:
    changes_exported: int = 0
    resyncs: int = 0
    feed_resets: int = 0  # the change feed lost our position: re-listed (a WARNING each)
    copies_skipped: int = 0
    filtered: int = 0
    deletes_deferred: int = 0
    log_entries_trimmed: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    # Registry revisions not read from the change feed yet, as of the last read of
    # Exporter.stats (None: the adapter cannot say). It grows while the exporter is stuck.
    registry_lag: int | None = None

    def error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1


class Exporter:
    """One data center's export side; also the RPC server's source of data."""

    def __init__(
        self,
        dc: str,
        node: str,
        adapter: Adapter,
        store: Store,
        *,
        copy_ids: Callable[[], Collection[str]] = frozenset,
        on_revision: Callable[[int], None] | None = None,
        startup_grace: float | None = None,
        change_log_size: int,
        exports: Callable[[Instance], bool] | None = None,
    ) -> None:
        self.dc = dc
        self.node = node
        self.adapter = adapter
        self.store = store
        self.epoch = ""
        self._stats = ExporterStats()
        self.ready = asyncio.Event()  # set after the first full listing is exported
        self.following = False  # the registry answered the last listing or change feed
        self._copy_ids = copy_ids
        self._exports = exports  # export filter (None: everything); failing = absent
        self._on_revision = on_revision
        self._state: dict[StateKey, Record] = {}
        self._table = core_digest.SlotDigestTable()
        self._revision = 0
        # Set (and replaced) at every commit: waiters for a revision hold no lock, so a
        # waiter cancelled mid-wait cannot leave one held (asyncio.Condition under
        # wait_for could, and the next commit then blocked forever).
        self._moved = asyncio.Event()
        self._task: Supervised | None = None
        self._lock = asyncio.Lock()
        # Recent commits, oldest first: parallel lists of revision and wall-clock time.
        self._commit_revisions: list[int] = []
        self._commit_clock: list[float] = []
        self._startup_grace = startup_grace
        self._change_log_size = change_log_size
        self._appended_since_trim = 0
        self._log_first = 1  # the oldest revision the change log may still hold
        self._trim_through = 0  # drop log entries up to this revision
        self._trimming: Supervised | None = None
        self._committed_at = 0.0  # loop time the last commit started
        self._deletes_from = 0.0  # loop time before which absence from a listing deletes nothing
        self._deferred: Supervised | None = None
        # The newest committed changes, oldest first, gapless: _tail[i] has revision
        # _tail_base + 1 + i. Watch streams read from it instead of the store.
        self._tail: list[Record] = []
        self._tail_base = 0
        self._tail_size = max(1, min(TAIL_SIZE, change_log_size))

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        info = await self.store.log_info()
        self.epoch = info.epoch
        self._revision = info.last_revision
        self._log_first = info.first_revision
        self._tail_base = info.last_revision
        for record in await self.store.exported_records():
            key = (record.service.text(), record.instance_id)
            self._state[key] = record
            self._table.add(record.slot, record.digest)
        if self._state:
            intervals = [r.instance.health_interval for r in self._state.values() if r.instance]
            grace = self._startup_grace
            if grace is None:
                grace = min(STARTUP_GRACE_MAX, max(intervals, default=30) + 5.0)
            self._deletes_from = asyncio.get_running_loop().time() + grace
        self._task = spawn("exporter", self._follow)

    @property
    def running(self) -> bool:
        """Started and not closed: this syncer exports its data center."""
        return self._task is not None and not self._task.done()

    async def close(self) -> None:
        if self._trimming is not None:
            await self._trimming.stop()
        if self._deferred is not None:
            await self._deferred.stop()
        if self._task is not None:
            await self._task.stop()

    # -- following the registry ------------------------------------------------------

    async def _follow(self) -> None:
        """List, then follow the change feed; on failure re-list with backoff. A failure is
        a WARNING when it starts or its reason changes, DEBUG while it repeats."""
        delay = 0.5
        shown = ""  # the failure last logged as a WARNING ("" while following)
        while True:
            try:
                await self.resync()
                self.ready.set()
                self.following = True
                if shown:
                    log.info("exporter: the registry answers again")
                    shown = ""
                delay = 0.5
                first = True  # a resync first says only that no listing covered the start
                async for batch in self._changes():
                    if batch.resync and not first:
                        self._stats.feed_resets += 1
                        log.warning(
                            "exporter: the registry's change feed lost our position (its log "
                            "no longer holds it, or the registry restarted); re-listing"
                        )
                    first = False
                    await self._apply_batch(batch)
                    await self._space_commits()
            except asyncio.CancelledError:
                raise
            except PysyncerError as exc:
                self.following = False
                self._stats.error(type(exc).__name__)
                level = logging.DEBUG if str(exc) == shown else logging.WARNING
                shown = str(exc)
                log.log(level, "exporter: %s; re-listing (backoff up to %.0f s)", exc,
                        RESYNC_BACKOFF_MAX)  # fmt: skip
            except Exception as exc:
                self.following = False
                self._stats.error("internal")
                shown = str(exc) or type(exc).__name__
                log.exception("exporter failed; re-listing in %.1f s", delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, RESYNC_BACKOFF_MAX)

    async def _space_commits(self) -> None:
        """Leave :data:`COMMIT_SPACING` between the starts of two commits: the changes the
        feed brings meanwhile go into the next commit together. Each commit of the change
        log is fsynced (a few hundred us of CPU here, whatever its size), and a busy
        registry's feed otherwise brings about one change per commit (500 registrations/s:
        1.26 changes per commit, 416-534 us of CPU per change with the registry's; spaced,
        about 10 per commit and 185 us). A first change after a quiet spell waits for
        nothing."""
        wait = self._committed_at + COMMIT_SPACING - asyncio.get_running_loop().time()
        if wait > 0:
            await asyncio.sleep(wait)

    def _changes(self) -> AsyncIterator[ChangeBatch]:
        """The adapter's change feed; without the copies when the adapter can leave them out
        (each is then tested on the registry's record: no value is built for it)."""
        if isinstance(self.adapter, SkipsCopies):
            return self.adapter.changes_without(self.is_copy)
        return self.adapter.changes()

    def is_copy(self, properties: Mapping[str, str], local_id: str | None) -> bool:
        """Whether a registry instance is a copy, never exported: the importer's mapping
        table holds its local id, or it carries the origin marker (registries and operators
        sometimes strip metadata: the mapping is the authority, the marker a fallback)."""
        return marks_copy(properties) or (local_id is not None and local_id in self._copy_ids())

    async def resync(self) -> int:
        """Export the difference between a full listing and what was exported; the revision."""
        snapshot = await self.adapter.list_instances()
        self._stats.resyncs += 1
        current = {(i.service.text(), i.instance_id): i for i in self._originals(snapshot)}
        records = [
            Record(self.dc, i.service, i.instance_id, 0, i)
            for key, i in current.items()
            if self._differs(key, i)
        ]
        missing = [old for key, old in self._state.items() if key not in current]
        wait = self._deletes_from - asyncio.get_running_loop().time()
        if missing and wait > 0:
            # Just started: a registry that lost its state (an embedded one restarted with
            # us) gets its applications' re-registrations first; a real removal still
            # arrives as a delete event, and anything still missing is removed afterwards.
            self._stats.deletes_deferred += len(missing)
            self._schedule_resync(wait)
        else:
            records += [Record(self.dc, old.service, old.instance_id, 0, None) for old in missing]
        return await self._commit(records)

    def _schedule_resync(self, delay: float) -> None:
        if self._deferred is not None and not self._deferred.done():
            return

        async def later() -> None:
            await asyncio.sleep(delay)
            try:
                await self.resync()
            except PysyncerError as exc:
                self._stats.error(type(exc).__name__)
                log.warning("exporter: the deferred re-listing failed: %s", exc)

        self._deferred = spawn("exporter-grace", later, critical=False)

    def _originals(self, snapshot: Snapshot) -> Iterable[Instance]:
        for instance in snapshot:
            ref = snapshot.refs.get(instance.instance_id)
            if self.is_copy(instance.properties, None if ref is None else ref.instance_id):
                self._stats.copies_skipped += 1
                continue
            if self._exports is not None and not self._exports(instance):
                self._stats.filtered += 1
                continue
            yield instance

    async def _apply_batch(self, batch: ChangeBatch) -> None:
        if batch.resync:
            await self.resync()
            return
        self._stats.copies_skipped += batch.skipped
        records: list[Record] = []
        seen: dict[StateKey, Record] = {}  # this batch's latest record per key
        for event in batch.events:
            instance, ref = event.instance, event.ref
            if self.is_copy(instance.properties, None if ref is None else ref.instance_id):
                self._stats.copies_skipped += 1
                continue
            key = (instance.service.text(), instance.instance_id)
            latest = seen[key] if key in seen else self._state.get(key)
            kind = event.kind
            if kind == "upsert" and self._exports is not None and not self._exports(instance):
                self._stats.filtered += 1
                kind = "delete"  # filtered out: exported as absent
            if kind == "delete":
                if latest is None or latest.deleted:
                    continue
                record = Record(self.dc, instance.service, instance.instance_id, 0, None)
            elif latest is None or latest.deleted or latest.digest != instance.digest():
                record = Record(self.dc, instance.service, instance.instance_id, 0, instance)
            else:
                continue
            seen[key] = record
            records.append(record)
        await self._commit(records)

    def _differs(self, key: StateKey, instance: Instance) -> bool:
        old = self._state.get(key)
        return old is None or old.digest != instance.digest()

    async def _commit(self, records: Sequence[Record]) -> int:
        if not records:
            return self._revision
        async with self._lock:
            self._committed_at = asyncio.get_running_loop().time()
            stored = await self.store.append_changes(records)
            self._remember(stored)
            for record in stored:
                key = (record.service.text(), record.instance_id)
                old = self._state.pop(key, None)
                if old is not None:
                    self._table.remove(old.slot, old.digest)
                if not record.deleted:
                    self._state[key] = record
                    self._table.add(record.slot, record.digest)
            self._stats.changes_exported += len(stored)
            self._appended_since_trim += len(stored)
            self._revision = stored[-1].revision
            self._commit_revisions.append(self._revision)
            self._commit_clock.append(time.time())
            if len(self._commit_revisions) > COMMIT_TIMES_KEPT:
                del self._commit_revisions[: COMMIT_TIMES_KEPT // 2]
                del self._commit_clock[: COMMIT_TIMES_KEPT // 2]
        self._moved.set()
        self._moved = asyncio.Event()
        if self._on_revision is not None:
            self._on_revision(self._revision)
        if self._appended_since_trim >= max(1, self._change_log_size // 10):
            self._appended_since_trim = 0
            self._trim_through = self._revision - self._change_log_size
            if self._trimming is None or self._trimming.done():
                self._trimming = spawn("exporter-trim", self._trim, critical=False)
        return self._revision

    async def _trim(self) -> None:
        """Keep the log bounded (a peer whose cursor fell out of it repairs by digests):
        drop entries up to ``_trim_through``, :data:`TRIM_STEP` per store call."""
        while self._log_first <= self._trim_through:
            through = min(self._log_first + TRIM_STEP - 1, self._trim_through)
            self._stats.log_entries_trimmed += await self.store.trim_changes(
                through_revision=through
            )
            self._log_first = through + 1

    def _remember(self, stored: Sequence[Record]) -> None:
        """Add just-committed changes to the memory tail."""
        if not stored:
            return
        tail = self._tail
        if stored[0].revision != self._tail_base + len(tail) + 1:
            # Not right after the tail (another writer of the log?): start it over here.
            tail.clear()
            self._tail_base = stored[0].revision - 1
        tail.extend(stored)
        excess = len(tail) - self._tail_size
        if excess > self._tail_size // 4:  # dropped in steps: amortised O(1) per change
            del tail[:excess]
            self._tail_base += excess

    def _from_tail(self, revision: int, limit: int) -> list[Record] | None:
        """Changes after ``revision`` from memory; None when the tail does not cover it or
        the store no longer holds it (the store decides: a reset, or records it has)."""
        floor = getattr(self.store, "log_floor", None)
        if not isinstance(floor, int) or revision < floor - 1:
            return None
        start = revision - self._tail_base
        if start < 0 or start > len(self._tail):
            return None
        return self._tail[start : start + limit]

    @property
    def stats(self) -> ExporterStats:
        """The counters, with the registry lag read now (from the adapter, when it can say:
        it is the one figure that shows an exporter stuck while its task is up)."""
        feed_lag = getattr(self.adapter, "feed_lag", None)
        self._stats.registry_lag = feed_lag() if callable(feed_lag) else None
        return self._stats

    # -- SyncSource (served to remote data centers) ------------------------------------

    def revision(self) -> int:
        return self._revision

    def commit_time(self, revision: int) -> float:
        """Wall-clock time the commit that reached ``revision`` happened (0.0: unknown)."""
        index = bisect.bisect_left(self._commit_revisions, revision)
        return self._commit_clock[index] if index < len(self._commit_clock) else 0.0

    def exported_count(self) -> int:
        return len(self._state)

    async def changes_since(self, revision: int, limit: int) -> tuple[list[Record], bool]:
        """Records after ``revision`` (at most ``limit``); ``reset`` when the log lost them.

        Recent ones come from memory (no store read, no decoding); older ones, or all of
        them with a store that cannot say cheaply what its log still holds, from the store.
        """
        recent = self._from_tail(revision, limit)
        if recent is not None:
            return recent, False
        info = await self.store.log_info()
        if revision > info.last_revision or revision < info.first_revision - 1:
            return [], True
        return await self.store.read_changes(revision, limit), False

    async def wait_for_revision(self, after: int, timeout: float) -> int:
        """Wait until the revision passes ``after`` (or ``timeout``); the revision then."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self._revision <= after:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            await wait_event(self._moved, remaining)
        return self._revision

    def digest_table(self) -> tuple[int, bytes]:
        return self._revision, self._table.to_bytes()

    async def slot_records(self, slots: Sequence[int]) -> AsyncIterator[tuple[int, list[Record]]]:
        """The full current state of each slot asked for (empty slots included), read
        :data:`SLOTS_PER_READ` slots at a time: the first slot goes out at once, and the
        next read runs while one's slots go out, so at most two reads' records are held
        however many the data center exports."""
        wanted = sorted(set(slots))
        parts = [wanted[i : i + SLOTS_PER_READ] for i in range(0, len(wanted), SLOTS_PER_READ)]
        reading: asyncio.Future[list[Record]] | None = None
        try:
            for number, part in enumerate(parts):
                if reading is None:
                    reading = asyncio.ensure_future(self.store.exported_records(part))
                records = await reading
                reading = None
                if number + 1 < len(parts):  # read ahead while this part goes out
                    reading = asyncio.ensure_future(self.store.exported_records(parts[number + 1]))
                by_slot: dict[int, list[Record]] = {slot: [] for slot in part}
                for record in records:
                    by_slot[record.slot].append(record)
                for slot in part:
                    yield slot, by_slot.pop(slot)
        finally:
            if reading is not None:  # the caller stopped early: the read ahead is not wanted
                reading.cancel()
