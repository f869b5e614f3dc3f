"""The etcd store's write queue: ordered commits, outages, transaction limits, fencing.

Owns :class:`WriteQueue`: every write of the etcd store goes through one ordered queue
drained by a background flusher, one write at a time, and lands in the
:class:`~pysyncer.store.etcd_mirror.Mirror` once committed. While etcd answers, a caller
waits for its write to commit. When etcd does not answer the queue turns **degraded**:
every queued and every new write is applied to the mirror at once as pending and
returns; the flusher retries in order with backoff until the queue is empty. At most
``max_queue`` operations wait; beyond that a write raises
:class:`~pysyncer.store.base.StoreFullError`.

With a spool (:class:`~pysyncer.store.etcd_spool.WriteSpool`, under the data dir) such a
write returns only once it is on disk: the queue marks the spool degraded (fsynced)
before the first write goes ahead of etcd, spools each write as it goes ahead, and
acknowledges after one group fsync; a write etcd has is noted done, and the spool is
emptied whenever the queue is. :meth:`WriteQueue.replay` queues a recovered spool's
writes again after a restart; a replayed append whose revisions are no longer free is
renumbered under a new log epoch, like any queued append.

Transactions respect etcd's ``max_txn_ops`` and byte limits: a bigger write is split
in order (an ``apply_batch`` keeps its cursor in the LAST transaction); an append is
split into sub-batches of whole records, each one transaction that writes the log
entries, the exported state and the revision counter, compared on the counter's
``mod_revision`` (renumbered and retried on conflict; after a timed-out try, the try's
first log entry tells whether it landed).

Fencing: a write with ``fence=Fence(node, epoch)`` also compares the slot epoch key's
value and the lease of the member's key (:meth:`WriteQueue.fence_compares`); on failure
nothing of that transaction is written and :class:`~pysyncer.store.base.FencedError`
is raised, or, for a write that had already returned as queued during an outage, it is
dropped and counted. After a dropped write, or when queued appends were renumbered
because another member appended during the outage (their transaction writes a new log
epoch), the queue asks for the mirror to be reloaded.

Must not import the store facade, the watch or the coordinator: what it needs of them
comes in as callables (the member's lease, the reload, the error note).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pysyncer.model import Record
from pysyncer.store.base import (
    Fence,
    FencedError,
    StoreClosedError,
    StoreCorruptError,
    StoreError,
    StoreFullError,
)
from pysyncer.store.codec import record_from_body
from pysyncer.store.etcd_client import MAX_BACKOFF, Compare, EtcdClient, EtcdUnavailableError, Op
from pysyncer.store.etcd_layout import (
    decode_counter,
    encode_counter,
    encode_epoch,
    encode_exported,
    encode_log,
    encode_meta,
)
from pysyncer.store.etcd_mirror import Mirror, Mutation
from pysyncer.store.etcd_spool import SpooledWrite, WriteSpool
from pysyncer.supervisor import Supervised, spawn, tolerate

__all__ = ["Write", "WriteQueue", "renumber"]

log = logging.getLogger(__name__)

_FIRST_BACKOFF = 0.1


@dataclass(frozen=True, slots=True)
class _Attempt:
    """One transaction of an append, remembered until etcd says whether it landed."""

    first: int
    count: int
    mutations: list[Mutation]
    new_meta: bytes | None  # the meta value of a new log epoch (a renumbering try)

    @property
    def renumber(self) -> bool:
        return self.new_meta is not None


@dataclass(eq=False)
class Write:
    """One queued write: ordered mutations (or a record append), progress and waiter.

    ``size`` counts the operations it holds against ``max_queue``. An append carries
    ``records`` and their ``bodies`` (:func:`pysyncer.store.codec.record_body`) and
    returns them numbered; ``delete_range`` deletes a key range in one operation
    (``mutations`` then name the keys it removes from the mirror); ``counts_deletes``
    makes the write return how many keys it deleted. ``seq``: its number in the spool
    (0: not spooled); ``lease``: the member's lease its fence compares when this store
    holds none (a write replayed after a restart).
    """

    fence: Fence | None
    size: int
    mutations: list[Mutation] = field(default_factory=list)
    records: list[Record] = field(default_factory=list)
    bodies: list[list[Any]] = field(default_factory=list)
    delete_range: tuple[bytes, bytes] | None = None
    counts_deletes: bool = False
    future: asyncio.Future[Any] | None = None
    provisional: bool = False
    result: Any = None
    progress: int = 0  # mutations (or records) committed so far
    deleted: int = 0
    done: list[Record] = field(default_factory=list)
    provisional_first: int = 0
    renumbered: bool = False
    attempt: _Attempt | None = None
    seq: int = 0
    lease: int = 0

    @property
    def is_append(self) -> bool:
        return bool(self.records)


def renumber(record: Record, revision: int) -> Record:
    """``record`` at log revision ``revision``."""
    return Record(record.origin_dc, record.service, record.instance_id, revision, record.instance)


class WriteQueue:
    """The ordered write queue of one etcd store (see the module doc).

    ``lease_of(node)`` is the lease this store holds for member ``node`` (0: none);
    ``reload()`` reloads the mirror and restarts its watch; ``note_error(text)``
    records the last error for the store's health and ``last_error()`` reads it back.
    """

    def __init__(
        self,
        client: EtcdClient,
        mirror: Mirror,
        *,
        max_queue: int,
        max_txn_ops: int,
        max_txn_bytes: int,
        lease_of: Callable[[str], int],
        reload: Callable[[], Awaitable[None]],
        note_error: Callable[[str], None],
        last_error: Callable[[], str | None],
        spool: WriteSpool | None = None,
    ) -> None:
        if max_txn_ops < 8:
            raise ValueError(f"max_txn_ops must be >= 8, not {max_txn_ops}")
        self.client = client
        self._mirror = mirror
        self._layout = mirror.layout
        self._max_queue = max_queue
        self._max_ops = max_txn_ops
        self._max_bytes = max_txn_bytes
        self._lease_of = lease_of
        self._reload = reload
        self._note_error = note_error
        self._last_error = last_error
        self.spool = spool
        self._queue: collections.deque[Write] = collections.deque()
        self.queued_ops = 0
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self.degraded = False
        self._reload_needed = False
        self.dropped = 0
        self.renumbered = 0
        self._task: Supervised | None = None

    def __len__(self) -> int:
        return len(self._queue)

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        self._task = spawn("etcd-store-flush", self._flush_loop)

    async def drain(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for the queue to empty."""
        if not self._queue:
            return
        self._wake.set()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._drained(), timeout)

    async def _drained(self) -> None:
        while self._queue:
            self._idle.clear()
            await self._idle.wait()

    async def stop(self) -> None:
        """Stop the flusher; writes still queued fail with StoreClosedError."""
        task, self._task = self._task, None
        if task is not None:
            await task.stop()
        for write in self._queue:
            if write.future is not None and not write.future.done():
                write.future.set_exception(StoreClosedError("etcd store closed before the write"))
        self._queue.clear()
        self.queued_ops = 0

    def request_reload(self) -> None:
        """Have the flusher reload the mirror once the queue is empty."""
        self._reload_needed = True
        self._wake.set()

    # -- submitting ----------------------------------------------------------------------

    async def submit(self, write: Write) -> Any:
        """Queue ``write``; its result once committed (at once, if degraded)."""
        if self.queued_ops + write.size > self._max_queue and self._queue:
            raise StoreFullError(
                f"etcd store {self._layout.prefix_text}: write queue full "
                f"({self.queued_ops} of {self._max_queue} operations waiting for "
                f"{self.client.endpoint_text}; last error: {self._last_error()})"
            )
        self._queue.append(write)
        self.queued_ops += write.size
        self._wake.set()
        if self.degraded:
            self._make_provisional(write)
            if self.spool is not None:
                await self.spool.sync()  # acknowledged once on disk
            return write.result
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        write.future = future
        return await asyncio.shield(future)

    def _make_provisional(self, write: Write) -> None:
        """Apply a queued write to the mirror as pending, compute what it returns, and
        spool what etcd does not have of it (durable after the spool's next sync)."""
        mirror = self._mirror
        write.provisional = True
        if write.is_append:
            first = mirror.log_last + 1
            write.provisional_first = first
            remaining = write.records[write.progress :]
            mutations = self._append_mutations(remaining, write.bodies[write.progress :], first)
            numbered = [renumber(record, first + offset) for offset, record in enumerate(remaining)]
            write.result = write.done + numbered
            mirror.log_last = first + len(remaining) - 1 if remaining else mirror.log_last
        else:
            mutations = write.mutations[write.progress :]
            if write.delete_range is not None:
                write.result = len(mutations)
            elif write.counts_deletes:
                write.result = write.deleted + sum(
                    1 for key, value, _ in mutations if value is None and mirror.exists(key)
                )
        for key, value, obj in mutations:
            mirror.pending[key] = mirror.pending.get(key, 0) + 1
            mirror.decode_into(key, value, obj)
        if self.spool is not None and not write.seq:
            self._spool_write(write)

    def _spool_write(self, write: Write) -> None:
        assert self.spool is not None
        write.seq = self.spool.next_seq()
        fence = write.fence
        write.lease = self._lease_of(fence.node) if fence is not None else 0
        start = write.progress
        self.spool.record(
            SpooledWrite(
                seq=write.seq,
                fence=fence,
                lease=write.lease,
                size=write.size,
                mutations=[(key, value) for key, value, _ in write.mutations[start:]],
                entries=[
                    (record.origin_dc, record.instance_id, body)
                    for record, body in zip(
                        write.records[start:], write.bodies[start:], strict=True
                    )
                ],
                delete_range=write.delete_range,
                counts_deletes=write.counts_deletes,
                first_revision=write.provisional_first,
            )
        )

    async def _go_degraded(self) -> None:
        """Apply every queued write ahead of etcd; acknowledge them once spooled."""
        failure: StoreError | None = None
        if self.spool is not None:
            try:
                self.spool.degraded()  # on disk before anything goes ahead of etcd
            except StoreError as exc:
                failure = exc
        self.degraded = True
        ahead = [queued for queued in self._queue if not queued.provisional]
        for queued in ahead:
            self._make_provisional(queued)
        if self.spool is not None and failure is None:
            try:
                await self.spool.sync()
            except StoreError as exc:
                failure = exc
        if failure is not None:
            log.error("etcd store %s: %s", self._layout.prefix_text, failure)
        for queued in ahead:
            if queued.future is not None and not queued.future.done():
                if failure is None:
                    queued.future.set_result(queued.result)
                else:
                    queued.future.set_exception(failure)

    # -- replay after a restart ------------------------------------------------------------

    def replay(self, spooled: Sequence[SpooledWrite]) -> list[asyncio.Future[Any]]:
        """Queue a recovered spool's writes, in order (they stay spooled until done); the
        futures of those not already answered by it. Appends whose first records are in
        the mirror at the revisions they were given (the try that was in flight when the
        process died landed) skip those records."""
        futures: list[asyncio.Future[Any]] = []
        loop = asyncio.get_running_loop()
        for item in spooled:
            records = [
                record_from_body(dc, oid, 0, body, f"spooled record {item.seq}")
                for dc, oid, body in item.entries
            ]
            write = Write(
                item.fence,
                item.size,
                [(key, value, None) for key, value in item.mutations],
                records=records,
                bodies=[body for _, _, body in item.entries],
                delete_range=item.delete_range,
                counts_deletes=item.counts_deletes,
                provisional_first=item.first_revision,
                seq=item.seq,
                lease=item.lease,
            )
            while write.progress < len(records):
                revision = item.first_revision + write.progress
                landed = self._mirror.log.get(revision)
                if landed != renumber(records[write.progress], revision):
                    break
                write.progress += 1
            if records and write.progress == len(records):
                assert self.spool is not None
                self.spool.done(item.seq)
                continue
            write.future = loop.create_future()
            futures.append(write.future)
            self._queue.append(write)
            self.queued_ops += write.size
        self._wake.set()
        return futures

    # -- the flusher ---------------------------------------------------------------------

    async def _flush_loop(self) -> None:
        delay = _FIRST_BACKOFF
        while True:
            if not self._queue:
                self._idle.set()
                if self.spool is not None and not self.spool.empty:
                    self.spool.reset()  # etcd holds every spooled write
                if self.degraded:
                    self.degraded = False
                    log.info("etcd store %s: queue flushed, healthy", self._layout.prefix_text)
                if self._reload_needed:
                    try:
                        await self._reload()
                    except EtcdUnavailableError as exc:
                        self._note_error(str(exc))
                        await asyncio.sleep(delay)
                        delay = min(delay * 2, MAX_BACKOFF)
                        continue
                    except StoreError as exc:
                        self._note_error(str(exc))
                        log.error("etcd store reload failed: %s", exc)
                    finally:
                        self._reload_needed = False
                await self._wake.wait()
                self._wake.clear()
                continue
            write = self._queue[0]
            try:
                result = await self._commit(write)
            except EtcdUnavailableError as exc:
                self._note_error(str(exc))
                if not self.degraded:
                    log.warning(
                        "etcd store %s: etcd unreachable, queueing writes%s: %s",
                        self._layout.prefix_text,
                        "" if self.spool is None else f" (spooled to {self.spool.path})",
                        exc,
                    )
                    await self._go_degraded()
                await asyncio.sleep(delay)
                delay = min(delay * 2, MAX_BACKOFF)
                continue
            except (StoreError, ValueError) as exc:
                self._finish(write)
                if write.provisional:
                    self.dropped += 1
                    self._reload_needed = True
                    self._note_error(str(exc))
                    log.warning(
                        "etcd store %s: dropped a queued write: %s", self._layout.prefix_text, exc
                    )
                elif write.future is not None and not write.future.done():
                    write.future.set_exception(exc)
                continue
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a bug must not stop the flusher
                tolerate("etcd-store-write", exc, level=logging.ERROR, trace=True)
                self._finish(write)
                if write.future is not None and not write.future.done():
                    write.future.set_exception(StoreError(f"etcd store: {exc!r}"))
                continue
            delay = _FIRST_BACKOFF
            self._finish(write)
            if write.renumbered:
                self.renumbered += 1
                self._reload_needed = True
            if write.future is not None and not write.future.done():
                write.future.set_result(result)

    def _finish(self, write: Write) -> None:
        self._queue.popleft()
        self.queued_ops -= write.size
        if write.seq and self.spool is not None:
            self.spool.done(write.seq)

    # -- fencing -------------------------------------------------------------------------

    def fence_compares(self, fence: Fence | None, lease_hint: int = 0) -> list[Compare]:
        """The compares that fence a transaction; FencedError if no lease backs ``fence``
        (``lease_hint``: the lease to compare when this store holds none for the node)."""
        if fence is None:
            return []
        lease = self._lease_of(fence.node) or lease_hint
        if not lease:
            raise FencedError(
                f"etcd store {self._layout.prefix_text}: member {fence.node!r} holds no lease "
                "here (not joined, left, or lease lost)"
            )
        epoch_key = self._layout.slot_epoch
        epoch = (
            Compare(epoch_key, "value", "==", encode_epoch(fence.epoch))
            if fence.epoch > 0
            else Compare(epoch_key, "version", "==", 0)
        )
        return [epoch, Compare(self._layout.member(fence.node), "lease", "==", lease)]

    def fenced(self, fence: Fence | None) -> FencedError:
        """The error of a transaction whose fence compares failed."""
        assert fence is not None
        return FencedError(
            f"etcd store {self._layout.prefix_text}: write fenced off: slot epoch is no "
            f"longer {fence.epoch} or member {fence.node!r} lost its lease"
        )

    # -- committing ----------------------------------------------------------------------

    async def _commit(self, write: Write) -> Any:
        if write.is_append:
            return await self._commit_append(write)
        if write.delete_range is not None:
            start, end = write.delete_range
            result = await self.client.txn(
                self.fence_compares(write.fence, write.lease),
                [Op("delete", start, range_end=end)],
            )
            if not result.succeeded:
                raise self.fenced(write.fence)
            self._committed(write, write.mutations, result.revision)
            write.progress = len(write.mutations)
            return result.deleted[0] if result.deleted else 0
        mutations = write.mutations
        while write.progress < len(mutations):
            chunk = self._chunk(mutations, write.progress)
            compares = self.fence_compares(write.fence, write.lease)
            ops = [
                Op("put", key, value) if value is not None else Op("delete", key)
                for key, value, _ in chunk
            ]
            result = await self.client.txn(compares, ops)
            if not result.succeeded:
                raise self.fenced(write.fence)
            write.deleted += sum(result.deleted)
            self._committed(write, chunk, result.revision)
            write.progress += len(chunk)
        return write.deleted if write.counts_deletes else None

    def _chunk(self, mutations: Sequence[Mutation], start: int) -> list[Mutation]:
        chunk: list[Mutation] = []
        size = 0
        limit = self._max_ops - 2
        for item in mutations[start:]:
            item_size = len(item[0]) + len(item[1] or b"") + 16
            if chunk and (len(chunk) >= limit or size + item_size > self._max_bytes):
                break
            chunk.append(item)
            size += item_size
        return chunk

    def _committed(self, write: Write, mutations: Sequence[Mutation], revision: int) -> None:
        """Bring the mirror up to a commit at ``revision`` of ``mutations``."""
        mirror = self._mirror
        for key, value, obj in mutations:
            if write.provisional:
                count = mirror.pending.get(key, 0) - 1
                if count > 0:
                    mirror.pending[key] = count
                    continue
                mirror.pending.pop(key, None)
                mirror.mark(key, value is None, revision)
            elif not mirror.is_stale(key, revision):
                mirror.put(key, value, revision, obj)

    def _append_mutations(
        self, records: Sequence[Record], bodies: Sequence[list[Any]], first: int
    ) -> list[Mutation]:
        layout = self._layout
        log_ops: list[Mutation] = []
        state: dict[bytes, Mutation] = {}
        for offset, (record, body) in enumerate(zip(records, bodies, strict=True)):
            numbered = renumber(record, first + offset)
            log_ops.append((layout.log(numbered.revision), encode_log(numbered, body), numbered))
            key = layout.exported(record.service.text(), record.instance_id)
            state.pop(key, None)  # keep the order of the last write
            if record.instance is None:
                state[key] = (key, None, None)
            else:
                state[key] = (key, encode_exported(numbered, body), numbered)
        return log_ops + list(state.values())

    async def _commit_append(self, write: Write) -> list[Record]:
        layout = self._layout
        mirror = self._mirror
        while write.progress < len(write.records):
            attempt = write.attempt
            if attempt is not None:
                # The last try timed out: did it land? Its first log entry says so.
                write.attempt = None
                landed = await self.client.get(attempt.mutations[0][0])
                if landed is not None and landed.value == attempt.mutations[0][1]:
                    self._appended(write, attempt, landed.mod_revision)
                    continue
            first = mirror.counter_last + 1
            # Whole records per transaction: a log put and an exported-state op each,
            # plus the counter (and a new epoch when renumbering).
            count = min((self._max_ops - 4) // 2, len(write.records) - write.progress)
            while True:
                records = write.records[write.progress : write.progress + count]
                bodies = write.bodies[write.progress : write.progress + count]
                mutations = self._append_mutations(records, bodies, first)
                size = sum(len(k) + len(v or b"") + 16 for k, v, _ in mutations)
                if size <= self._max_bytes or count == 1:
                    break
                count = max(1, count * self._max_bytes // size - 1)
            # provisional_first: revisions handed out ahead of etcd (or by a replayed spool)
            renumbered = bool(write.provisional_first) and (
                first != write.provisional_first + write.progress
            )
            # Revisions already handed out for these records now belong to other records:
            # a new log epoch makes every peer repair by digests.
            new_meta = encode_meta(uuid.uuid4().hex) if renumbered else None
            attempt = _Attempt(first, count, mutations, new_meta)
            success = [
                Op("put", key, value) if value is not None else Op("delete", key)
                for key, value, _ in mutations
            ]
            success.append(Op("put", layout.counter, encode_counter(first + count - 1, "")))
            if new_meta is not None:
                success.append(Op("put", layout.meta, new_meta))
            expected = mirror.counter_mod
            compares = [Compare(layout.counter, "mod", "==", expected)]
            compares += self.fence_compares(write.fence, write.lease)
            write.attempt = attempt
            result = await self.client.txn(compares, success, [Op("get", layout.counter)])
            write.attempt = None
            if not result.succeeded:
                current = result.gets[0][0] if result.gets and result.gets[0] else None
                if current is None:
                    raise StoreCorruptError(f"etcd store {layout.prefix_text}: log counter gone")
                if current.mod_revision == expected and write.fence is not None:
                    raise self.fenced(write.fence)
                if current.mod_revision > mirror.counter_mod:
                    mirror.counter_last, _ = decode_counter(current.value)
                    mirror.counter_mod = current.mod_revision
                continue  # another member appended first: number after it
            self._appended(write, attempt, result.revision)
        return write.done

    def _appended(self, write: Write, attempt: _Attempt, revision: int) -> None:
        """Book a committed sub-batch of an append (at etcd revision ``revision``)."""
        mirror = self._mirror
        last = attempt.first + attempt.count - 1
        if revision > mirror.counter_mod:
            mirror.counter_last, mirror.counter_mod = last, revision
        if attempt.new_meta is not None and not mirror.is_stale(self._layout.meta, revision):
            # the new epoch holds from now on: no read may pair it with the old one
            mirror.put(self._layout.meta, attempt.new_meta, revision)
        if attempt.renumber:
            write.renumbered = True
        elif write.provisional:
            self._committed(write, attempt.mutations, revision)
        if not write.provisional:
            self._committed(write, attempt.mutations, revision)
            mirror.log_last = max(mirror.log_last, last)
        records = write.records[write.progress : write.progress + attempt.count]
        write.done.extend(
            renumber(record, attempt.first + offset) for offset, record in enumerate(records)
        )
        write.progress += attempt.count
