"""The etcd store's transactions: one queued write committed within etcd's limits, fenced.

Owns :class:`Write` (what the write queue holds) and :class:`Committer`, which turns one
write into etcd transactions and books each commit into the
:class:`~pysyncer.store.etcd_mirror.Mirror`. Transactions respect etcd's ``max_txn_ops``
and byte limits: a bigger write is split in order (an ``apply_batch`` keeps its cursor
in the LAST transaction); an append is split into sub-batches of whole records, each one
transaction that writes the log entries, the exported state and the revision counter,
compared on the counter's ``mod_revision`` (renumbered and retried on conflict, under a
new log epoch when its revisions had already been handed out; after a timed-out try, the
try's first log entry tells whether it landed).

Fencing: a write with ``fence=Fence(node, epoch)`` also compares the slot epoch key's
value and the lease of the member's key (:meth:`Committer.fence_compares`); on failure
nothing of that transaction is written and :class:`~pysyncer.store.base.FencedError` is
raised.

It knows nothing of the queue's order, outages or the spool (that is
:mod:`pysyncer.store.etcd_writes`) and must not import the store facade, the write
queue, the watch or the coordinator: the member's lease comes in as a callable.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pysyncer.model import Record
from pysyncer.store.base import Fence, FencedError, StoreCorruptError
from pysyncer.store.etcd_client import Compare, EtcdClient, Op
from pysyncer.store.etcd_layout import (
    decode_counter,
    encode_counter,
    encode_epoch,
    encode_exported,
    encode_log,
    encode_meta,
)
from pysyncer.store.etcd_mirror import Mirror, Mutation

__all__ = ["Committer", "Write", "renumber"]


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


class Committer:
    """Commits one :class:`Write` at a time to etcd (see the module doc).

    ``lease_of(node)`` is the lease the store holds for member ``node`` (0: none).
    """

    def __init__(
        self,
        client: EtcdClient,
        mirror: Mirror,
        *,
        max_txn_ops: int,
        max_txn_bytes: int,
        lease_of: Callable[[str], int],
    ) -> None:
        if max_txn_ops < 8:
            raise ValueError(f"max_txn_ops must be >= 8, not {max_txn_ops}")
        self.client = client
        self._mirror = mirror
        self._layout = mirror.layout
        self._max_ops = max_txn_ops
        self._max_bytes = max_txn_bytes
        self._lease_of = lease_of

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

    async def commit(self, write: Write) -> Any:
        """Commit what etcd does not have yet of ``write``; what the write returns.
        EtcdUnavailableError when etcd does not answer (call again: it goes on from its
        progress), FencedError, StoreError."""
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

    def append_mutations(
        self, records: Sequence[Record], bodies: Sequence[list[Any]], first: int
    ) -> list[Mutation]:
        """The log entries of ``records`` numbered from ``first``, then the exported state
        of each instance once (as its last record leaves it)."""
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
                mutations = self.append_mutations(records, bodies, first)
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
