"""The etcd store's mirror: the decoded content of its key prefix, held in memory.

Owns :class:`Mirror`, from which every read of the etcd store's Store protocol is
answered without a round trip: the change log, the exported state and the mapping table
(with their per-slot indexes), this member's peer cursors, the groups trusted for remote
data centers, the log epoch and counter,
and per key the ``mod_revision`` it was last seen at, so a late watch event never undoes
a newer write. :meth:`Mirror.load` fills it page by page at one etcd revision; the watch
(:mod:`pysyncer.store.etcd_watch`) and the write queue (:mod:`pysyncer.store.etcd_writes`)
keep it current. Must not import the store facade, the watch, the write queue or the
coordinator; it issues no etcd request but the range reads of :meth:`Mirror.load`.
"""

from __future__ import annotations

from pysyncer.etcdchannels import prefix_range_end
from pysyncer.model import Record
from pysyncer.store.base import MappingEntry, MappingKey, PeerCursor, StoreCorruptError
from pysyncer.store.etcd_client import EtcdClient
from pysyncer.store.etcd_layout import (
    Kind,
    Layout,
    decode_counter,
    decode_cursor,
    decode_exported,
    decode_log,
    decode_mapping,
    decode_meta,
    decode_trust,
)

__all__ = ["Mirror", "Mutation"]

Mutation = tuple[bytes, bytes | None, object]
"""``(key, value or None for a delete, decoded object or None)``."""

_PAGE = 2000  # keys per range read while loading
_TOMBS_KEPT = 4096  # deleted keys' revisions kept before the watch position purges them


class Mirror:
    """The decoded content of the prefix, with per-key revisions (see the module doc).

    ``member`` is this syncer: only its peer cursors are kept. ``revision`` is the etcd
    revision the mirror is current to (the watch resumes after it); ``counter_last`` and
    ``counter_mod`` are the log counter key's value and ``mod_revision`` as last seen,
    which appends compare against. ``pending`` counts, per key, queued writes applied
    ahead of etcd while it is unreachable.
    """

    def __init__(self, layout: Layout, member: str) -> None:
        self.layout = layout
        self.member = member
        self.revision = 0
        self.counter_last = 0
        self.counter_mod = 0
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
        self.trusted: dict[str, str] = {}  # peer dc -> ownership group followed
        self.revs: dict[bytes, int] = {}
        self.tombs: dict[bytes, int] = {}
        self.pending: dict[bytes, int] = {}

    # -- loading -------------------------------------------------------------------------

    async def load(self, client: EtcdClient) -> None:
        """Replace the content by the whole prefix as etcd holds it at one revision.

        Nothing changes until every page is read; then the new content takes the old
        one's place at once (no await in between).
        """
        layout = self.layout
        fresh = Mirror(layout, self.member)
        start, end = layout.prefix, prefix_range_end(layout.prefix)
        revision = 0
        counter: tuple[int, int] | None = None
        while True:
            page = await client.range(start, end, limit=_PAGE, revision=revision)
            revision = revision or page.revision
            for kv in page.kvs:
                fresh.put(kv.key, kv.value, kv.mod_revision)
                if kv.key == layout.counter:
                    counter = (decode_counter(kv.value)[0], kv.mod_revision)
            if not page.more or not page.kvs:
                break
            start = page.kvs[-1].key + b"\0"
        if not fresh.epoch or counter is None:
            raise StoreCorruptError(
                f"etcd store {layout.prefix_text}: meta or log counter key is missing"
            )
        fresh.log_last = max(fresh.log_last, counter[0])
        fresh.counter_last, fresh.counter_mod = counter
        fresh.revision = revision
        self.replace_with(fresh)

    def clear(self) -> None:
        """Forget everything (the store was closed)."""
        self.replace_with(Mirror(self.layout, self.member))

    def replace_with(self, other: Mirror) -> None:
        vars(self).update(vars(other))

    # -- reads ---------------------------------------------------------------------------

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

    def exists(self, key: bytes) -> bool:
        """Whether ``key`` holds a value now (queued writes included)."""
        parsed = self.layout.parse(key)
        if parsed.kind is Kind.MAPPING:
            dc, oid = parsed.parts
            return oid in self.mappings.get(dc, {})
        return key in self.revs

    def is_stale(self, key: bytes, revision: int) -> bool:
        """Whether an event for ``key`` at ``revision`` is older than what the mirror holds."""
        if self.pending.get(key):
            return True
        return revision <= self.revs.get(key, self.tombs.get(key, 0))

    # -- updates -------------------------------------------------------------------------

    def put(self, key: bytes, value: bytes | None, revision: int, obj: object = None) -> None:
        """Set (or delete, ``value=None``) one key at ``revision``; decodes the value."""
        self.decode_into(key, value, obj)
        self.mark(key, value is None, revision)

    def mark(self, key: bytes, deleted: bool, revision: int) -> None:
        """Remember that ``key`` was written (or deleted) at ``revision``."""
        if deleted:
            self.revs.pop(key, None)
            self.tombs[key] = revision
        else:
            self.tombs.pop(key, None)
            self.revs[key] = revision

    def decode_into(self, key: bytes, value: bytes | None, obj: object) -> None:
        """Apply one key's value (``obj``: its decoded form when the caller has it)."""
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
        elif kind is Kind.TRUST:
            (peer_dc,) = parsed.parts
            if value is None:
                self.trusted.pop(peer_dc, None)
            else:
                self.trusted[peer_dc] = decode_trust(peer_dc, value)
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
        if len(self.tombs) > _TOMBS_KEPT:
            self.tombs = {k: r for k, r in self.tombs.items() if r > through}
