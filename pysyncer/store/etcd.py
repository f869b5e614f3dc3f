"""The etcd store backend: one key prefix shared by the syncers of a data center.

Owns :class:`EtcdStore`, the :class:`~pysyncer.store.base.Store` of ``--store
etcd://HOST:PORT[,HOST:PORT]`` and the data center's
:class:`~pysyncer.store.base.Coordinator` (members, slot table, leader, fencing). It
touches only keys under its prefix (layout in :mod:`pysyncer.store.etcd_layout`) through
:class:`~pysyncer.store.etcd_client.EtcdClient`; never a registry or the sync logic.

Reads are served from an in-memory **mirror** of the prefix: loaded page by page at a
fixed revision by :meth:`EtcdStore.open`, then kept current by a prefix watch (other
members' writes) and by this store's own commits. A per-key ``mod_revision`` keeps a
late watch event from undoing a newer write. So reads never wait on etcd and keep
working while it is unreachable (possibly stale for other members' writes then).

Writes go through one ordered **write queue** drained by a background flusher, one
write at a time. While etcd answers, a caller waits for its write to commit (durable in
etcd). When etcd does not answer, the store turns **degraded**: every queued write and
every new one is applied to the mirror at once ("pending") and returns, and the flusher
retries in order with backoff until the queue is empty; then health is ``ok`` again.
The queue holds at most ``max_queue`` operations (entries, records, cursors);
beyond that a write raises :class:`~pysyncer.store.base.StoreFullError`.

Transactions: etcd allows ``max_txn_ops`` (128 by default) operations and ~1.5 MiB per
transaction. A write that fits is one transaction. A bigger ``apply_batch`` is split
into several, in order, with the cursor in the LAST one: a crash or outage in between
leaves the cursor behind its mappings (re-applying the batch is idempotent), never
ahead. A bigger ``append_changes`` is split into sub-batches of whole records, each one
transaction that writes the log entries, the exported state and the revision counter
(compare on the counter's ``mod_revision``; renumbered and retried on conflict; after a
timed-out try, the try's first log entry tells whether it landed).

Fencing: a write with ``fence=Fence(node, epoch)`` also compares the slot epoch key's
value and the lease of this member's key; on failure nothing of that transaction is
written and :class:`~pysyncer.store.base.FencedError` is raised, or, for a write that
had already returned as queued during an outage, it is dropped and counted (the slots'
new owner replays them). After a dropped write, or when queued appends had to be
renumbered because another member appended during the outage (the log epoch then
changes, so peers repair by digests), the mirror is reloaded from etcd.
"""

from __future__ import annotations

import asyncio
import bisect
import collections
import contextlib
import logging
import math
import uuid
from collections.abc import AsyncGenerator, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from pysyncer.model import Record
from pysyncer.store.base import (
    SLOT_COUNT,
    Fence,
    FencedError,
    LogInfo,
    MappingEntry,
    MappingKey,
    PeerCursor,
    SlotTable,
    StoreClosedError,
    StoreCorruptError,
    StoreError,
    StoreFullError,
    StoreHealth,
)
from pysyncer.store.etcd_client import (
    Compare,
    EtcdClient,
    EtcdUnavailableError,
    Op,
    parse_endpoints,
)
from pysyncer.store.etcd_layout import (
    Kind,
    Layout,
    decode_counter,
    decode_cursor,
    decode_exported,
    decode_log,
    decode_mapping,
    decode_member,
    decode_meta,
    decode_slot_table,
    encode_counter,
    encode_cursor,
    encode_epoch,
    encode_exported,
    encode_log,
    encode_mapping,
    encode_member,
    encode_meta,
    encode_slot_table,
    prefix_end,
    record_body,
)

__all__ = ["DEFAULT_PREFIX", "EtcdStore"]

log = logging.getLogger(__name__)

DEFAULT_PREFIX = "/pysyncer/{dc}/"
"""Key prefix of a data center's store; ``{dc}`` is replaced by the data center name."""

_PAGE = 2000  # keys per range read while loading the mirror
_PENDING = 1 << 62  # mod_revision stand-in for a key written by a queued write
_MAX_BACKOFF = 2.0

Mutation = tuple[bytes, bytes | None, object]
"""``(key, value or None for a delete, decoded object or None)``."""


@dataclass(frozen=True, slots=True)
class _Attempt:
    """One transaction of an append, remembered until etcd says whether it landed."""

    first: int
    count: int
    mutations: list[Mutation]
    renumber: bool


@dataclass(eq=False)
class _Write:
    """One queued write: ordered mutations (or a record append), progress and waiter."""

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

    @property
    def is_append(self) -> bool:
        return bool(self.records)


class _Mirror:
    """The decoded content of the prefix, with per-key revisions (see the module doc)."""

    def __init__(self, layout: Layout, member: str) -> None:
        self.layout = layout
        self.member = member
        self.epoch = ""
        self.log_last = 0
        self.log: dict[int, Record] = {}
        self._log_first = 1
        self.exported: dict[tuple[str, str], Record] = {}
        self.exported_by_slot: dict[int, dict[tuple[str, str], Record]] = {}
        self.mappings: dict[str, dict[str, MappingEntry]] = {}
        self.mappings_by_slot: dict[int, dict[MappingKey, MappingEntry]] = {}
        self._sorted_ids: dict[str, list[str]] = {}
        self.cursors: dict[str, PeerCursor] = {}
        self.revs: dict[bytes, int] = {}
        self.tombs: dict[bytes, int] = {}
        self.pending: dict[bytes, int] = {}

    def log_first(self) -> int:
        first = self._log_first
        if first in self.log:
            return first
        if not self.log:
            return self.log_last + 1
        first = min(self.log)  # after a trim: once, then cached
        self._log_first = first
        return first

    def sorted_ids(self, dc: str) -> list[str]:
        ids = self._sorted_ids.get(dc)
        if ids is None:
            ids = sorted(self.mappings.get(dc, ()))
            self._sorted_ids[dc] = ids
        return ids

    def is_stale(self, key: bytes, revision: int) -> bool:
        if self.pending.get(key):
            return True
        return revision <= self.revs.get(key, self.tombs.get(key, 0))

    def put(self, key: bytes, value: bytes | None, revision: int, obj: object = None) -> None:
        """Set (or delete, ``value=None``) one key at ``revision``; decodes the value."""
        self.decode_into(key, value, obj)
        if value is None:
            self.revs.pop(key, None)
            self.tombs[key] = revision
        else:
            self.tombs.pop(key, None)
            self.revs[key] = revision

    def decode_into(self, key: bytes, value: bytes | None, obj: object) -> None:
        parsed = self.layout.parse(key)
        kind = parsed.kind
        if kind is Kind.MAPPING:
            dc, origin_id = parsed.parts
            self._set_mapping(
                dc,
                origin_id,
                None
                if value is None
                else obj
                if isinstance(obj, MappingEntry)
                else decode_mapping(dc, origin_id, value),
            )
        elif kind is Kind.LOG:
            if value is None:
                self.log.pop(parsed.revision, None)
            else:
                record = obj if isinstance(obj, Record) else decode_log(parsed.revision, value)
                self.log[parsed.revision] = record
        elif kind is Kind.EXPORTED:
            service_text, instance_id = parsed.parts
            self._set_exported(
                (service_text, instance_id),
                None
                if value is None
                else obj
                if isinstance(obj, Record)
                else decode_exported(value),
            )
        elif kind is Kind.CURSOR:
            member, peer_dc = parsed.parts
            if member != self.member:
                return
            if value is None:
                self.cursors.pop(peer_dc, None)
            else:
                self.cursors[peer_dc] = decode_cursor(peer_dc, value)
        elif kind is Kind.COUNTER:
            if value is not None:
                self.log_last = max(self.log_last, decode_counter(value)[0])
        elif kind is Kind.META and value is not None:
            self.epoch = decode_meta(value)

    def _set_mapping(self, dc: str, origin_id: str, entry: MappingEntry | None) -> None:
        table = self.mappings.setdefault(dc, {})
        old = table.pop(origin_id, None)
        if old is not None:
            self.mappings_by_slot[old.slot].pop((dc, origin_id), None)
        if entry is None:
            if old is not None:
                self._sorted_ids.pop(dc, None)
            if not table:
                del self.mappings[dc]
            return
        table[origin_id] = entry
        self.mappings_by_slot.setdefault(entry.slot, {})[(dc, origin_id)] = entry
        if old is None:
            self._sorted_ids.pop(dc, None)

    def _set_exported(self, key: tuple[str, str], record: Record | None) -> None:
        old = self.exported.pop(key, None)
        if old is not None:
            self.exported_by_slot[old.slot].pop(key, None)
        if record is not None:
            self.exported[key] = record
            self.exported_by_slot.setdefault(record.slot, {})[key] = record

    def purge_tombs(self, through: int) -> None:
        if len(self.tombs) > 4096:
            self.tombs = {k: r for k, r in self.tombs.items() if r > through}


class EtcdStore:
    """The etcd :class:`~pysyncer.store.base.Store` and :class:`Coordinator`.

    ``endpoints``: ``"HOST:PORT[,HOST:PORT]"`` or pairs (failover in order).
    ``prefix``: the data center's key prefix (``/pysyncer/<dc>/`` by default, see
    :data:`DEFAULT_PREFIX`); every syncer of one data center uses the same one.
    ``member``: this syncer's node name; its peer cursors are kept apart from the
    other members' (each member streams from the peers independently).
    ``open_timeout``: how long :meth:`open` waits for etcd before raising StoreError.
    ``request_timeout``: deadline of one etcd request; ``max_queue``: bound of the
    write queue in operations; ``max_txn_ops`` / ``max_txn_bytes``: etcd's limits
    (``--max-txn-ops``, ``--max-request-bytes``); ``close_timeout``: how long
    :meth:`close` waits for queued writes to drain.
    """

    def __init__(
        self,
        endpoints: str | Sequence[tuple[str, int]],
        *,
        prefix: str,
        member: str,
        open_timeout: float = 30.0,
        request_timeout: float = 5.0,
        max_queue: int = 100_000,
        max_txn_ops: int = 128,
        max_txn_bytes: int = 1024 * 1024,
        close_timeout: float = 5.0,
    ) -> None:
        pairs = parse_endpoints(endpoints) if isinstance(endpoints, str) else list(endpoints)
        if max_txn_ops < 8:
            raise ValueError(f"max_txn_ops must be >= 8, not {max_txn_ops}")
        self._client = EtcdClient(pairs, request_timeout)
        self._layout = Layout(prefix)
        self._member = member
        self._open_timeout = open_timeout
        self._max_queue = max_queue
        self._max_ops = max_txn_ops
        self._max_bytes = max_txn_bytes
        self._close_timeout = close_timeout
        self._mirror = _Mirror(self._layout, member)
        self._open = False
        self._queue: collections.deque[_Write] = collections.deque()
        self._queued_ops = 0
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._degraded = False
        self._reload_needed = False
        self._last_error: str | None = None
        self._dropped = 0
        self._renumbered = 0
        self._counter_last = 0
        self._counter_mod = 0
        self._watch_rev = 0
        self._watch_ok = False
        self._subscribers: set[asyncio.Event] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._watch_task: asyncio.Task[None] | None = None
        self._node: str | None = None
        self._info: dict[str, str] = {}
        self._ttl = 0
        self._lease = 0
        self._keepalive_task: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        state = "open" if self._open else "closed"
        return f"<EtcdStore {self._client.endpoint_text} {self._layout.prefix_text} {state}>"

    @property
    def prefix(self) -> str:
        return self._layout.prefix_text

    @property
    def member(self) -> str:
        return self._member

    @property
    def endpoints(self) -> str:
        return self._client.endpoint_text

    # -- lifecycle -----------------------------------------------------------------------

    async def open(self) -> None:
        if self._open:
            return
        try:
            await self._client.wait_ready(self._open_timeout)
            await self._init_meta()
            await self._load()
        except EtcdUnavailableError as exc:
            await self._client.close()
            self._client = EtcdClient(self._client.endpoints, self._client.request_timeout)
            raise StoreError(
                f"etcd store {self._layout.prefix_text} at {self._client.endpoint_text}: {exc}"
            ) from None
        except BaseException:
            await self._client.close()
            self._client = EtcdClient(self._client.endpoints, self._client.request_timeout)
            raise
        self._open = True
        self._tasks = [asyncio.create_task(self._flush_loop(), name="etcd-store-flush")]
        self._start_watch()

    async def close(self) -> None:
        if not self._open:
            return
        self._open = False
        if self._queue:
            self._wake.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._drained(), self._close_timeout)
        if self._queue:
            log.error(
                "etcd store %s: closing with %d queued writes (%d operations) not written",
                self._layout.prefix_text,
                len(self._queue),
                self._queued_ops,
            )
        tasks = [*self._tasks, self._watch_task, self._keepalive_task]
        self._tasks, self._watch_task, self._keepalive_task = [], None, None
        for task in tasks:
            if task is not None:
                task.cancel()
        for task in tasks:
            if task is not None:
                with contextlib.suppress(BaseException):
                    await task
        if self._lease:
            with contextlib.suppress(StoreError):
                await self._client.revoke(self._lease)
            self._lease = 0
            self._node = None
        for write in self._queue:
            if write.future is not None and not write.future.done():
                write.future.set_exception(StoreClosedError("etcd store closed before the write"))
        self._queue.clear()
        self._queued_ops = 0
        for event in self._subscribers:
            event.set()
        await self._client.close()
        self._client = EtcdClient(self._client.endpoints, self._client.request_timeout)
        self._mirror = _Mirror(self._layout, self._member)

    async def _drained(self) -> None:
        while self._queue:
            self._idle.clear()
            await self._idle.wait()

    async def __aenter__(self) -> EtcdStore:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def _check_open(self) -> None:
        if not self._open:
            raise StoreClosedError(
                f"etcd store {self._layout.prefix_text} at {self._client.endpoint_text} is not open"
            )

    async def _init_meta(self) -> None:
        layout = self._layout
        await self._client.txn(
            [Compare(layout.meta, "create", "==", 0)],
            [
                Op("put", layout.meta, encode_meta(uuid.uuid4().hex)),
                Op("put", layout.counter, encode_counter(0, "")),
            ],
        )

    async def _load(self) -> None:
        """Read the whole prefix at one revision into a fresh mirror."""
        layout = self._layout
        mirror = _Mirror(layout, self._member)
        start, end = layout.prefix, prefix_end(layout.prefix)
        revision = 0
        counter: tuple[int, int] | None = None
        while True:
            page = await self._client.range(start, end, limit=_PAGE, revision=revision)
            revision = revision or page.revision
            for kv in page.kvs:
                mirror.put(kv.key, kv.value, kv.mod_revision)
                if kv.key == layout.counter:
                    counter = (decode_counter(kv.value)[0], kv.mod_revision)
            if not page.more or not page.kvs:
                break
            start = page.kvs[-1].key + b"\0"
        if not mirror.epoch or counter is None:
            raise StoreCorruptError(
                f"etcd store {layout.prefix_text}: meta or log counter key is missing"
            )
        mirror.log_last = max(mirror.log_last, counter[0])
        self._counter_last, self._counter_mod = counter
        self._mirror = mirror
        self._watch_rev = revision
        self._watch_ok = True
        self._notify()

    # -- health --------------------------------------------------------------------------

    def health(self) -> StoreHealth:
        """``ok``, or ``degraded`` while writes wait in the queue or etcd is unreachable."""
        degraded = self._degraded or (self._open and not self._watch_ok)
        return StoreHealth(
            status="degraded" if degraded else "ok",
            queued=self._queued_ops,
            dropped=self._dropped,
            last_error=self._last_error,
            endpoint=self._client.current_endpoint,
        )

    @property
    def renumbered(self) -> int:
        """Queued appends renumbered after an outage (each changed the log epoch)."""
        return self._renumbered

    # -- write queue ---------------------------------------------------------------------

    async def _submit(self, write: _Write) -> Any:
        self._check_open()
        if self._queued_ops + write.size > self._max_queue and self._queue:
            raise StoreFullError(
                f"etcd store {self._layout.prefix_text}: write queue full "
                f"({self._queued_ops} of {self._max_queue} operations waiting for "
                f"{self._client.endpoint_text}; last error: {self._last_error})"
            )
        self._queue.append(write)
        self._queued_ops += write.size
        self._wake.set()
        if self._degraded:
            self._make_provisional(write)
            return write.result
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        write.future = future
        return await asyncio.shield(future)

    def _make_provisional(self, write: _Write) -> None:
        """Apply a queued write to the mirror as pending and compute what it returns."""
        mirror = self._mirror
        write.provisional = True
        if write.is_append:
            first = mirror.log_last + 1
            write.provisional_first = first
            remaining = write.records[write.progress :]
            mutations = self._append_mutations(remaining, write.bodies[write.progress :], first)
            numbered = [
                _renumber(record, first + offset) for offset, record in enumerate(remaining)
            ]
            write.result = write.done + numbered
            mirror.log_last = first + len(remaining) - 1 if remaining else mirror.log_last
        else:
            mutations = write.mutations[write.progress :]
            if write.delete_range is not None:
                write.result = len(mutations)
            elif write.counts_deletes:
                write.result = write.deleted + sum(
                    1 for key, value, _ in mutations if value is None and _exists(mirror, key)
                )
        for key, value, obj in mutations:
            mirror.pending[key] = mirror.pending.get(key, 0) + 1
            mirror.decode_into(key, value, obj)
        if write.future is not None and not write.future.done():
            write.future.set_result(write.result)

    async def _flush_loop(self) -> None:
        delay = 0.1
        while True:
            if not self._queue:
                self._idle.set()
                if self._degraded:
                    self._degraded = False
                    log.info("etcd store %s: queue flushed, healthy", self._layout.prefix_text)
                if self._reload_needed:
                    try:
                        await self._reload()
                    except EtcdUnavailableError as exc:
                        self._last_error = str(exc)
                        await asyncio.sleep(delay)
                        delay = min(delay * 2, _MAX_BACKOFF)
                        continue
                    except StoreError as exc:
                        self._last_error = str(exc)
                        log.error("etcd store reload failed: %s", exc)
                        self._reload_needed = False
                await self._wake.wait()
                self._wake.clear()
                continue
            write = self._queue[0]
            try:
                result = await self._commit(write)
            except EtcdUnavailableError as exc:
                self._last_error = str(exc)
                if not self._degraded:
                    log.warning(
                        "etcd store %s: etcd unreachable, queueing writes: %s",
                        self._layout.prefix_text,
                        exc,
                    )
                    self._degraded = True
                    for queued in self._queue:
                        if not queued.provisional:
                            self._make_provisional(queued)
                await asyncio.sleep(delay)
                delay = min(delay * 2, _MAX_BACKOFF)
                continue
            except (StoreError, ValueError) as exc:
                self._finish(write)
                if write.provisional:
                    self._dropped += 1
                    self._reload_needed = True
                    self._last_error = str(exc)
                    log.warning(
                        "etcd store %s: dropped a queued write: %s", self._layout.prefix_text, exc
                    )
                elif write.future is not None and not write.future.done():
                    write.future.set_exception(exc)
                continue
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a bug must not stop the flusher
                log.exception("etcd store: unexpected error while writing")
                self._finish(write)
                if write.future is not None and not write.future.done():
                    write.future.set_exception(StoreError(f"etcd store: {exc!r}"))
                continue
            delay = 0.1
            self._finish(write)
            if write.renumbered:
                self._renumbered += 1
                self._reload_needed = True
            if write.future is not None and not write.future.done():
                write.future.set_result(result)

    def _finish(self, write: _Write) -> None:
        self._queue.popleft()
        self._queued_ops -= write.size

    async def _reload(self) -> None:
        if self._watch_task is not None:
            self._watch_task.cancel()
            with contextlib.suppress(BaseException):
                await self._watch_task
            self._watch_task = None
        try:
            await self._load()
        finally:
            self._reload_needed = False
            self._start_watch()

    # -- committing ----------------------------------------------------------------------

    def _fence_compares(self, fence: Fence | None) -> list[Compare]:
        if fence is None:
            return []
        if fence.node != self._node or not self._lease:
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
        return [epoch, Compare(self._layout.member(fence.node), "lease", "==", self._lease)]

    def _fenced(self, fence: Fence | None) -> FencedError:
        assert fence is not None
        return FencedError(
            f"etcd store {self._layout.prefix_text}: write fenced off: slot epoch is no "
            f"longer {fence.epoch} or member {fence.node!r} lost its lease"
        )

    async def _commit(self, write: _Write) -> Any:
        if write.is_append:
            return await self._commit_append(write)
        if write.delete_range is not None:
            start, end = write.delete_range
            result = await self._client.txn(
                self._fence_compares(write.fence), [Op("delete", start, range_end=end)]
            )
            if not result.succeeded:
                raise self._fenced(write.fence)
            self._committed(write, write.mutations, result.revision)
            write.progress = len(write.mutations)
            return result.deleted[0] if result.deleted else 0
        mutations = write.mutations
        while write.progress < len(mutations):
            chunk = self._chunk(mutations, write.progress)
            compares = self._fence_compares(write.fence)
            ops = [
                Op("put", key, value) if value is not None else Op("delete", key)
                for key, value, _ in chunk
            ]
            result = await self._client.txn(compares, ops)
            if not result.succeeded:
                raise self._fenced(write.fence)
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

    def _committed(self, write: _Write, mutations: Sequence[Mutation], revision: int) -> None:
        """Bring the mirror up to a commit at ``revision`` of ``mutations``."""
        mirror = self._mirror
        for key, value, obj in mutations:
            if write.provisional:
                count = mirror.pending.get(key, 0) - 1
                if count > 0:
                    mirror.pending[key] = count
                    continue
                mirror.pending.pop(key, None)
                if value is None:
                    mirror.revs.pop(key, None)
                    mirror.tombs[key] = revision
                else:
                    mirror.tombs.pop(key, None)
                    mirror.revs[key] = revision
            elif not mirror.is_stale(key, revision):
                mirror.put(key, value, revision, obj)

    def _append_mutations(
        self, records: Sequence[Record], bodies: Sequence[list[Any]], first: int
    ) -> list[Mutation]:
        layout = self._layout
        log_ops: list[Mutation] = []
        state: dict[bytes, Mutation] = {}
        for offset, (record, body) in enumerate(zip(records, bodies, strict=True)):
            numbered = _renumber(record, first + offset)
            log_ops.append((layout.log(numbered.revision), encode_log(numbered, body), numbered))
            key = layout.exported(record.service.text(), record.instance_id)
            state.pop(key, None)  # keep the order of the last write
            if record.instance is None:
                state[key] = (key, None, None)
            else:
                state[key] = (key, encode_exported(numbered, body), numbered)
        return log_ops + list(state.values())

    async def _commit_append(self, write: _Write) -> list[Record]:
        layout = self._layout
        while write.progress < len(write.records):
            attempt = write.attempt
            if attempt is not None:
                # The last try timed out: did it land? Its first log entry says so.
                write.attempt = None
                landed = await self._client.get(attempt.mutations[0][0])
                if landed is not None and landed.value == attempt.mutations[0][1]:
                    self._appended(write, attempt, landed.mod_revision)
                    continue
            first = self._counter_last + 1
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
            renumber = write.provisional and first != write.provisional_first + write.progress
            attempt = _Attempt(first, count, mutations, renumber)
            success = [
                Op("put", key, value) if value is not None else Op("delete", key)
                for key, value, _ in mutations
            ]
            success.append(Op("put", layout.counter, encode_counter(first + count - 1, "")))
            if renumber:
                # Revisions already handed out for these records now belong to other
                # records: a new log epoch makes every peer repair by digests.
                success.append(Op("put", layout.meta, encode_meta(uuid.uuid4().hex)))
            expected = self._counter_mod
            compares = [Compare(layout.counter, "mod", "==", expected)]
            compares += self._fence_compares(write.fence)
            write.attempt = attempt
            result = await self._client.txn(compares, success, [Op("get", layout.counter)])
            write.attempt = None
            if not result.succeeded:
                current = result.gets[0][0] if result.gets and result.gets[0] else None
                if current is None:
                    raise StoreCorruptError(f"etcd store {layout.prefix_text}: log counter gone")
                if current.mod_revision == expected and write.fence is not None:
                    raise self._fenced(write.fence)
                if current.mod_revision > self._counter_mod:
                    self._counter_last, _ = decode_counter(current.value)
                    self._counter_mod = current.mod_revision
                continue  # another member appended first: number after it
            self._appended(write, attempt, result.revision)
        return write.done

    def _appended(self, write: _Write, attempt: _Attempt, revision: int) -> None:
        """Book a committed sub-batch of an append (at etcd revision ``revision``)."""
        last = attempt.first + attempt.count - 1
        if revision > self._counter_mod:
            self._counter_last, self._counter_mod = last, revision
        if attempt.renumber:
            write.renumbered = True
        elif write.provisional:
            self._committed(write, attempt.mutations, revision)
        if not write.provisional:
            self._committed(write, attempt.mutations, revision)
            self._mirror.log_last = max(self._mirror.log_last, last)
        records = write.records[write.progress : write.progress + attempt.count]
        write.done.extend(
            _renumber(record, attempt.first + offset) for offset, record in enumerate(records)
        )
        write.progress += attempt.count

    # -- mapping table -------------------------------------------------------------------

    async def get_mapping(self, origin_dc: str, origin_instance_id: str) -> MappingEntry | None:
        self._check_open()
        return self._mirror.mappings.get(origin_dc, {}).get(origin_instance_id)

    async def list_mappings(
        self, origin_dc: str, after: str | None = None, limit: int = 1000
    ) -> list[MappingEntry]:
        if limit <= 0:
            raise ValueError(f"limit must be positive, not {limit}")
        self._check_open()
        ids = self._mirror.sorted_ids(origin_dc)
        start = 0 if after is None else bisect.bisect_right(ids, after)
        table = self._mirror.mappings.get(origin_dc, {})
        return [table[i] for i in ids[start : start + limit]]

    async def mappings_in_slots(
        self, slots: Collection[int], origin_dc: str | None = None
    ) -> list[MappingEntry]:
        wanted = {_check_slot(slot) for slot in slots}
        self._check_open()
        by_slot = self._mirror.mappings_by_slot
        found = [
            entry
            for slot in wanted
            for entry in by_slot.get(slot, {}).values()
            if origin_dc is None or entry.origin_dc == origin_dc
        ]
        found.sort(key=lambda entry: entry.key)
        return found

    async def count_mappings(self, origin_dc: str | None = None) -> int:
        self._check_open()
        mappings = self._mirror.mappings
        if origin_dc is None:
            return sum(len(table) for table in mappings.values())
        return len(mappings.get(origin_dc, ()))

    async def mapping_counts(self) -> dict[str, int]:
        self._check_open()
        return {dc: len(t) for dc, t in sorted(self._mirror.mappings.items()) if t}

    def _mapping_mutations(self, entries: Sequence[MappingEntry]) -> dict[bytes, Mutation]:
        layout = self._layout
        out: dict[bytes, Mutation] = {}
        for entry in entries:
            key = layout.mapping(entry.origin_dc, entry.origin_instance_id)
            out.pop(key, None)
            out[key] = (key, encode_mapping(entry), entry)  # validates slot and digest
        return out

    async def put_mappings(
        self, entries: Sequence[MappingEntry], *, fence: Fence | None = None
    ) -> None:
        mutations = list(self._mapping_mutations(entries).values())
        self._fence_compares(fence)
        if mutations:
            await self._submit(_Write(fence, len(mutations), mutations))

    async def delete_mappings(
        self, keys: Sequence[MappingKey], *, fence: Fence | None = None
    ) -> int:
        layout = self._layout
        unique = {layout.mapping(str(dc), str(oid)): None for dc, oid in keys}
        self._fence_compares(fence)
        if not unique:
            return 0
        mutations: list[Mutation] = [(key, None, None) for key in unique]
        result = await self._submit(_Write(fence, len(mutations), mutations, counts_deletes=True))
        return int(result)

    # -- cursors and atomic apply --------------------------------------------------------

    async def get_cursor(self, peer_dc: str) -> PeerCursor | None:
        self._check_open()
        return self._mirror.cursors.get(peer_dc)

    async def list_cursors(self) -> list[PeerCursor]:
        self._check_open()
        return [self._mirror.cursors[dc] for dc in sorted(self._mirror.cursors)]

    async def set_cursor(self, peer_dc: str, revision: int, epoch: str) -> None:
        await self.apply_batch(peer_dc, (), (), revision, epoch)

    async def delete_cursor(self, peer_dc: str) -> None:
        key = self._layout.cursor(self._member, peer_dc)
        await self._submit(_Write(None, 1, [(key, None, None)]))

    async def apply_batch(
        self,
        peer_dc: str,
        upserts: Sequence[MappingEntry],
        deletes: Sequence[MappingKey],
        cursor: int,
        epoch: str | None = None,
        *,
        fence: Fence | None = None,
    ) -> None:
        if cursor < 0:
            raise ValueError(f"cursor must be >= 0, not {cursor}")
        final = self._mapping_mutations(upserts)
        layout = self._layout
        for dc, oid in deletes:
            key = layout.mapping(str(dc), str(oid))
            final.pop(key, None)
            final[key] = (key, None, None)
        self._fence_compares(fence)
        self._check_open()
        if epoch is None:
            stored = self._mirror.cursors.get(peer_dc)
            epoch = "" if stored is None else stored.epoch
        cursor_key = layout.cursor(self._member, peer_dc)
        final.pop(cursor_key, None)
        mutations = [*final.values(), (cursor_key, encode_cursor(cursor, epoch), None)]
        await self._submit(_Write(fence, len(mutations), mutations))

    # -- change log and exported state ---------------------------------------------------

    async def append_changes(
        self, records: Sequence[Record], *, fence: Fence | None = None
    ) -> list[Record]:
        bodies = [record_body(record) for record in records]  # validates before writing
        self._fence_compares(fence)
        if not records:
            self._check_open()
            return []
        write = _Write(fence, 2 * len(records), records=list(records), bodies=bodies)
        result: list[Record] = await self._submit(write)
        return result

    async def read_changes(self, since_revision: int, limit: int = 1000) -> list[Record]:
        if limit <= 0:
            raise ValueError(f"limit must be positive, not {limit}")
        self._check_open()
        mirror = self._mirror
        entries = mirror.log
        revision = max(since_revision + 1, mirror.log_first())
        out: list[Record] = []
        while revision <= mirror.log_last and len(out) < limit:
            record = entries.get(revision)
            if record is not None:
                out.append(record)
            revision += 1
        return out

    async def current_revision(self) -> int:
        self._check_open()
        return self._mirror.log_last

    async def log_info(self) -> LogInfo:
        self._check_open()
        mirror = self._mirror
        return LogInfo(
            epoch=mirror.epoch,
            first_revision=mirror.log_first(),
            last_revision=mirror.log_last,
            entries=len(mirror.log),
        )

    async def trim_changes(
        self, *, keep_last: int | None = None, through_revision: int | None = None
    ) -> int:
        if (keep_last is None) == (through_revision is None):
            raise ValueError("trim_changes takes exactly one of keep_last, through_revision")
        if keep_last is not None and keep_last < 0:
            raise ValueError(f"keep_last must be >= 0, not {keep_last}")
        self._check_open()
        mirror = self._mirror
        if through_revision is None:
            assert keep_last is not None
            through_revision = mirror.log_last - keep_last
        layout = self._layout
        doomed = [r for r in mirror.log if r <= through_revision]
        if not doomed:
            return 0
        mutations: list[Mutation] = [(layout.log(r), None, None) for r in sorted(doomed)]
        write = _Write(
            None,
            1,
            mutations,
            delete_range=(layout.log_prefix, layout.log(through_revision + 1)),
        )
        return int(await self._submit(write))

    async def exported_records(self, slots: Collection[int] | None = None) -> list[Record]:
        wanted = None if slots is None else {_check_slot(slot) for slot in slots}
        self._check_open()
        mirror = self._mirror
        if wanted is None:
            items = list(mirror.exported.items())
        else:
            by_slot = mirror.exported_by_slot
            items = [item for slot in wanted for item in by_slot.get(slot, {}).items()]
        items.sort(key=lambda item: item[0])
        return [record for _, record in items]

    async def count_exported(self) -> int:
        self._check_open()
        return len(self._mirror.exported)

    # -- watch (mirror upkeep and coordination notifications) ----------------------------

    def _start_watch(self) -> None:
        self._watch_task = asyncio.create_task(self._watch_loop(), name="etcd-store-watch")

    async def _watch_loop(self) -> None:
        layout = self._layout
        delay = 0.2
        while True:
            try:
                async for batch in self._client.watch(
                    layout.prefix, prefix_end(layout.prefix), self._watch_rev + 1
                ):
                    if batch.compacted:
                        log.warning(
                            "etcd store %s: history compacted past the mirror; reloading",
                            layout.prefix_text,
                        )
                        self._reload_needed = True
                        self._wake.set()
                        return
                    if not self._watch_ok:
                        self._watch_ok = True
                        self._notify()
                    self._on_events(batch.events)
                    last = max((rev for _, _, rev in batch.events), default=batch.revision)
                    self._watch_rev = max(self._watch_rev, last)
                    self._mirror.purge_tombs(self._watch_rev)
                    delay = 0.2
            except StoreError as exc:
                if self._watch_ok:
                    log.warning("etcd store %s: watch lost: %s", layout.prefix_text, exc)
                self._watch_ok = False
                self._last_error = str(exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, _MAX_BACKOFF)

    def _on_events(self, events: Sequence[tuple[bytes, bytes | None, int]]) -> None:
        mirror = self._mirror
        layout = self._layout
        changed = False
        for key, value, revision in events:
            if key == layout.counter and value is not None and revision > self._counter_mod:
                self._counter_last = decode_counter(value)[0]
                self._counter_mod = revision
            if key.startswith(layout.member_prefix) or key in (
                layout.slot_table,
                layout.slot_epoch,
            ):
                changed = True
            if mirror.is_stale(key, revision):
                continue
            try:
                mirror.put(key, value, revision)
            except (StoreError, ValueError) as exc:
                self._last_error = str(exc)
                log.error("etcd store %s: ignoring key %r: %s", layout.prefix_text, key, exc)
        if changed:
            self._notify()

    def _notify(self) -> None:
        for event in self._subscribers:
            event.set()

    # -- coordination --------------------------------------------------------------------

    async def join(self, node: str, info: Mapping[str, str], ttl: float) -> None:
        self._check_open()
        if self._node is not None and self._node != node:
            await self.leave()
        self._node = node
        self._info = dict(info)
        self._ttl = max(2, math.ceil(ttl))
        if not self._lease:
            self._lease = await self._client.grant(self._ttl)
        await self._client.txn(
            [], [Op("put", self._layout.member(node), encode_member(self._info), self._lease)]
        )
        if self._keepalive_task is None:
            self._keepalive_task = asyncio.create_task(
                self._keepalive_loop(), name="etcd-store-lease"
            )

    async def leave(self) -> None:
        task, self._keepalive_task = self._keepalive_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        lease, self._lease = self._lease, 0
        self._node = None
        if lease:
            with contextlib.suppress(StoreError):  # unreachable or already gone: it expires
                await self._client.revoke(lease)

    async def _keepalive_loop(self) -> None:
        while True:
            await asyncio.sleep(max(0.2, self._ttl / 3))
            node = self._node
            if node is None:
                return
            try:
                remaining = await self._client.keepalive(self._lease) if self._lease else 0
                if remaining <= 0:
                    log.warning("etcd store: lease of member %s expired; re-joining", node)
                    self._lease = 0
                    self._lease = await self._client.grant(self._ttl)
                    await self._client.txn(
                        [],
                        [
                            Op(
                                "put",
                                self._layout.member(node),
                                encode_member(self._info),
                                self._lease,
                            )
                        ],
                    )
            except StoreError as exc:
                self._last_error = str(exc)
            except Exception as exc:  # the lease must outlive any surprise
                self._last_error = str(exc)
                log.warning("etcd store: keep-alive of member %s failed: %r", node, exc)

    async def live_members(self) -> dict[str, dict[str, str]]:
        self._check_open()
        members = await self._members()
        return {node: info for node, (info, _) in sorted(members.items())}

    async def _members(self) -> dict[str, tuple[dict[str, str], int]]:
        prefix = self._layout.member_prefix
        page = await self._client.range(prefix, prefix_end(prefix))
        found: dict[str, tuple[dict[str, str], int]] = {}
        for kv in page.kvs:
            parsed = self._layout.parse(kv.key)
            if parsed.kind is Kind.MEMBER:
                found[parsed.parts[0]] = (decode_member(kv.value), kv.create_revision)
        return found

    async def check_fence(self, fence: Fence) -> None:
        """Raise FencedError unless ``fence`` would pass now (one etcd round trip)."""
        self._check_open()
        result = await self._client.txn(self._fence_compares(fence), [])
        if not result.succeeded:
            raise self._fenced(fence)

    async def leader(self) -> str | None:
        self._check_open()
        members = await self._members()
        if not members:
            return None
        return min(members, key=lambda node: (members[node][1], node))

    async def watch(self) -> AsyncGenerator[None, None]:
        self._check_open()
        event = asyncio.Event()
        event.set()
        self._subscribers.add(event)
        try:
            while True:
                await event.wait()
                event.clear()
                if not self._open:
                    return
                yield None
        finally:
            self._subscribers.discard(event)

    async def read_slot_table(self) -> SlotTable:
        self._check_open()
        kv = await self._client.get(self._layout.slot_table)
        if kv is None:
            return SlotTable(0, ("",) * SLOT_COUNT, 0)
        epoch, owners = decode_slot_table(kv.value)
        return SlotTable(epoch, owners, kv.mod_revision)

    async def write_slot_table(
        self, owners: Sequence[str], expected_revision: int
    ) -> SlotTable | None:
        self._check_open()
        owners = tuple(owners)
        current = await self.read_slot_table()
        if current.revision != expected_revision:
            return None
        epoch = current.epoch + 1
        layout = self._layout
        result = await self._client.txn(
            [Compare(layout.slot_table, "mod", "==", expected_revision)],
            [
                Op("put", layout.slot_table, encode_slot_table(epoch, owners)),
                Op("put", layout.slot_epoch, encode_epoch(epoch)),
            ],
        )
        if not result.succeeded:
            return None
        return SlotTable(epoch, owners, result.revision)


def _renumber(record: Record, revision: int) -> Record:
    return Record(record.origin_dc, record.service, record.instance_id, revision, record.instance)


def _check_slot(slot: int) -> int:
    if not 0 <= slot < SLOT_COUNT:
        raise ValueError(f"slot {slot} is outside 0..{SLOT_COUNT - 1}")
    return slot


def _exists(mirror: _Mirror, key: bytes) -> bool:
    parsed = mirror.layout.parse(key)
    if parsed.kind is Kind.MAPPING:
        dc, oid = parsed.parts
        return oid in mirror.mappings.get(dc, {})
    return key in mirror.revs
