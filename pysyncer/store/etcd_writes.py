"""The etcd store's write queue: ordered commits, outages, the spool, fenced-off drops.

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

Each write is committed by the :class:`~pysyncer.store.etcd_txn.Committer` (etcd's
transaction limits, appends numbered under the counter, fencing). A fenced-off write
raises :class:`~pysyncer.store.base.FencedError` to its caller or, when it had already
returned as queued during an outage, is dropped and counted. After a dropped write, or
when queued appends were renumbered because another member appended during the outage
(their transaction writes a new log epoch), the queue asks for the mirror to be
reloaded.

Must not import the store facade, the watch or the coordinator: what it needs of them
comes in as callables (the member's lease, the reload, the error note).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from pysyncer.store.base import StoreClosedError, StoreError, StoreFullError
from pysyncer.store.codec import record_from_body
from pysyncer.store.etcd_client import MAX_BACKOFF, EtcdClient, EtcdUnavailableError
from pysyncer.store.etcd_mirror import Mirror
from pysyncer.store.etcd_spool import SpooledWrite, WriteSpool
from pysyncer.store.etcd_txn import Committer, Write, renumber
from pysyncer.supervisor import Supervised, spawn, tolerate

__all__ = ["WriteQueue"]

log = logging.getLogger(__name__)

_FIRST_BACKOFF = 0.1


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
        self.committer = Committer(
            client, mirror, max_txn_ops=max_txn_ops, max_txn_bytes=max_txn_bytes, lease_of=lease_of
        )
        self._mirror = mirror
        self._layout = mirror.layout
        self._max_queue = max_queue
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
                f"{self.committer.client.endpoint_text}; last error: {self._last_error()})"
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
            mutations = self.committer.append_mutations(
                remaining, write.bodies[write.progress :], first
            )
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
                result = await self.committer.commit(write)
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
