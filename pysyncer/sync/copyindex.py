"""The importer's in-memory index of copies: one small entry per copy, nothing more.

Owns what the importer must answer without the store, per copy: is it held, with which
digest (replays are skipped), where it lives in the local registry (renewals), and per
origin data center the count, the copies per slot and the 16384-slot digest table. It
does not touch the registry or the store; the store's mapping table stays the full
record of every copy.

The digest table also counts the records the import filter refused (their digest and
slot only, one int each, never kept in the store): the origin's table has them, so
without them every slot holding one would differ from the origin's forever and be
repaired at every link heartbeat.

Layout, measured at 100,000 copies: a dict from the copy's 64-bit key hash (the one its
local id ``px<16 hex>`` is made of) to one int packing the origin record's digest (low
64 bits) and a *group* number (above): a group is one (origin data center, service)
pair with its slot and local service id, shared by every copy of that service. About
130 bytes per copy (dict slot plus two ints) instead of an Instance and a mapping entry.

The dict is split into ``SHARDS`` dicts by the key hash's top bits. Each grows on its own,
so no insert on the event loop allocates and first-touches a whole million-entry table at
once: one dict of 1,000,000 copies outgrowing 699,050 keys touches 41 MiB (10,241 page
faults, 300+ ms on a virtual machine whose memory the host had not backed yet, see
docs/capacity.md), one shard of it 1/64 of that.

Renewal rounds skip the copies written since the previous round began, with no memory
per copy: a write re-inserts its copy at the end of its shard's dict (ordered by
insertion), so a *mark* per shard (its newest key when a round begins, see
:meth:`CopyIndex.mark`) splits its copies into those written before it and after it; a
round lists its keys a shard at a time as it walks them, never all at once. A copy whose
registry lease was set before the current mark (a batch that straddled a round's start,
or a copy loaded from the store) moves its shard's mark past it: the next round renews it
with everything before.
"""

from __future__ import annotations

from array import array
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field

from pysyncer._core import digest as core_digest
from pysyncer.adapters.base import LocalRef
from pysyncer.model import ServiceKey, record_key_hash
from pysyncer.shardeddict import SHARD_BITS, SHARDS, ShardedDict

__all__ = ["DROP_STEP", "SHARDS", "CopyIndex", "copy_instance_id", "local_id_of"]

_MASK = (1 << 64) - 1
_SHARD_SHIFT = 64 - SHARD_BITS  # the low bits stay whole: each dict's slots spread evenly
DROP_STEP = 10_000  # copies looked at per step of CopyIndex.drop_slots_in_steps (~5 ms)
_SLOTS = core_digest.SLOT_COUNT


def copy_instance_id(origin_dc: str, origin_instance_id: str) -> str:
    """The local id of a copy: the same for every syncer of this data center, every time."""
    return local_id_of(record_key_hash(origin_dc, origin_instance_id))


def local_id_of(key_hash: int) -> str:
    """The local id of the copy of the record whose key hash is ``key_hash``."""
    return f"px{key_hash:016x}"


@dataclass(slots=True, eq=False)
class _Group:
    """Copies of one service from one origin data center."""

    origin: str
    service: ServiceKey
    slot: int
    service_id: str  # the local registry's id of the service (the latest seen)


@dataclass(slots=True, eq=False)
class _Origin:
    count: int = 0
    per_slot: array[int] = field(default_factory=lambda: array("I", bytes(4 * _SLOTS)))
    table: core_digest.SlotDigestTable = field(default_factory=core_digest.SlotDigestTable)
    stale: set[int] = field(default_factory=set)  # slots with copies forgotten in memory
    refused: dict[int, int] = field(default_factory=dict)  # key hash -> digest | slot << 64


_ALL = -1  # a round's boundary in a shard never marked: every key (no key hash is negative)


class _Shard:
    """The copies whose key hash has one value of the top ``SHARD_BITS`` bits, and their
    renewal mark: the newest key when the last round began (None: the shard was empty).
    ``marked`` is False before the first round and after the mark's own copy was removed:
    the next round then renews every copy of the shard."""

    __slots__ = ("entries", "mark_key", "marked")

    def __init__(self) -> None:
        self.entries: dict[int, int] = {}  # key hash -> digest | group << 64
        self.marked = False
        self.mark_key: int | None = None

    def begin_round(self) -> int | None:
        """A round's boundary in this shard (the previous mark; ``_ALL`` when there is
        none), and mark the keys held now."""
        boundary = self.mark_key if self.marked else _ALL
        self.marked = True
        self.mark_key = next(reversed(self.entries), None)
        return boundary

    def due(self, boundary: int | None) -> list[int]:
        """The keys held now up to a round's ``boundary``, in the order written; all of
        them when the boundary's copy is gone since."""
        if boundary is None:
            return []
        keys = list(self.entries)
        if boundary == _ALL:
            return keys
        if boundary in self.entries:  # else its copy was removed: the whole shard
            del keys[keys.index(boundary) + 1 :]
        return keys


class _LocalIds(Collection[str]):
    """Every copy's local instance id, as a live read-only view (no strings stored)."""

    def __init__(self, index: CopyIndex) -> None:
        self._index = index

    def __contains__(self, value: object) -> bool:
        index = self._index
        if not isinstance(value, str):
            return False
        if value in index._odd_keys:
            return True
        if len(value) != 18 or not value.startswith("px"):
            return False
        try:
            key_hash = int(value[2:], 16)
        except ValueError:
            return False
        return key_hash in index and key_hash not in index._odd_ids

    def __iter__(self) -> Iterator[str]:
        odd = self._index._odd_ids
        for key_hash in self._index.key_hashes():
            yield odd.get(key_hash) or local_id_of(key_hash)

    def __len__(self) -> int:
        return len(self._index)


class CopyIndex:
    """Copies held, by key hash (:func:`pysyncer.model.record_key_hash`)."""

    def __init__(self) -> None:
        self._shards = [_Shard() for _ in range(SHARDS)]
        self._groups: list[_Group] = []
        self._group_of: ShardedDict[tuple[str, ServiceKey], int] = ShardedDict()
        # the group of the last copy added (groups are never renumbered or dropped)
        self._last_group: tuple[ServiceKey | None, str, int] = (None, "", -1)
        self._origins: dict[str, _Origin] = {}
        # Copies whose registry kept another id than px<key hash> (none for Service-Center).
        self._odd_ids: dict[int, str] = {}
        self._odd_keys: dict[str, int] = {}
        self.local_ids: Collection[str] = _LocalIds(self)
        self.generation = 0  # bumped by every mark

    def __len__(self) -> int:
        return sum(len(shard.entries) for shard in self._shards)

    def __contains__(self, key_hash: object) -> bool:
        if not isinstance(key_hash, int) or not 0 <= key_hash <= _MASK:
            return False
        return key_hash in self._shards[key_hash >> _SHARD_SHIFT].entries

    def _packed(self, key_hash: int) -> int | None:
        return self._shards[key_hash >> _SHARD_SHIFT].entries.get(key_hash)

    def key_hashes(self) -> list[int]:
        """A snapshot of every key hash held."""
        keys: list[int] = []
        for shard in self._shards:
            keys.extend(shard.entries)
        return keys

    def mark(self) -> Iterator[int]:
        """Begin a renewal round: the key hashes of the copies written before the previous
        mark (every copy when there was none), and mark the copies held now.

        The copies written since the previous mark had their leases set less than a round
        ago; the next round renews them. Every copy is thus renewed at least every second
        round, and those only a round old are skipped. The keys are listed as the round
        walks them, a shard at a time (a list of every key would be 8 MiB of fresh memory
        at 1,000,000 copies, and a round with registry holders mostly needs none): a copy
        removed or written since the mark is left out (its lease was set by the write).
        """
        boundaries = [shard.begin_round() for shard in self._shards]
        self.generation += 1
        return self._due(boundaries)

    def _due(self, boundaries: list[int | None]) -> Iterator[int]:
        for shard, boundary in zip(self._shards, boundaries, strict=True):
            yield from shard.due(boundary)

    def add(
        self,
        key_hash: int,
        origin_dc: str,
        service: ServiceKey,
        slot: int,
        digest: int,
        ref: LocalRef,
        generation: int = -1,
    ) -> None:
        """Hold (or replace) one copy, whose registry lease was set (registered or
        heartbeated) in mark ``generation`` (-1, the default: unknown)."""
        shard = self._shards[key_hash >> _SHARD_SHIFT]
        if key_hash in shard.entries:
            self.remove(key_hash)
        last = self._last_group  # copies of one service come together: looked up once
        if last[0] is service and last[1] == origin_dc:
            number = last[2]
        else:
            known = self._group_of.get((origin_dc, service))
            if known is None:
                known = len(self._groups)
                self._groups.append(_Group(origin_dc, service, slot, ref.service_id))
                self._group_of[(origin_dc, service)] = known
            number = known
            self._last_group = (service, origin_dc, number)
        self._groups[number].service_id = ref.service_id  # the latest seen
        shard.entries[key_hash] = digest | (number << 64)
        state = self._origins.get(origin_dc)
        if state is None:
            state = self._origins[origin_dc] = _Origin()
        state.count += 1
        state.per_slot[slot] += 1
        state.table.add(slot, digest)
        if ref.instance_id != local_id_of(key_hash):
            self._odd_ids[key_hash] = ref.instance_id
            self._odd_keys[ref.instance_id] = key_hash
        if generation != self.generation and shard.marked:
            # Its lease predates the mark: the next round must renew it (and, the dict
            # being ordered, every copy of its shard written before it).
            shard.mark_key = key_hash

    def remove(self, key_hash: int) -> _Group | None:
        """Drop one copy; its group, or None when it was not held."""
        shard = self._shards[key_hash >> _SHARD_SHIFT]
        packed = shard.entries.pop(key_hash, None)
        if packed is None:
            return None
        if key_hash == shard.mark_key:
            shard.marked = False  # the mark is lost: the next round renews the whole shard
        group = self._groups[packed >> 64]
        state = self._origins[group.origin]
        state.count -= 1
        state.per_slot[group.slot] -= 1
        state.table.remove(group.slot, packed & _MASK)
        odd = self._odd_ids.pop(key_hash, None)
        if odd is not None:
            self._odd_keys.pop(odd, None)
        return group

    def drop_slots(self, slots: Collection[int]) -> int:
        """Forget every copy (and refused record) in ``slots`` (slots handed to another
        syncer); how many copies. One pass over every copy held (0.6 s at 1,000,000):
        from the event loop, use :meth:`drop_slots_in_steps`."""
        *_, dropped = self.drop_slots_in_steps(slots)
        return dropped

    def drop_slots_in_steps(self, slots: Collection[int], step: int = DROP_STEP) -> Iterator[int]:
        """:meth:`drop_slots` a bounded step at a time: yields the copies dropped so far
        after every ``step`` copies looked at, and once at the end (the total), so that an
        async caller lets the event loop run in between::

            for dropped in index.drop_slots_in_steps(slots):
                await asyncio.sleep(0)

        The copies held when it starts are looked at; a copy added in a dropped slot
        between two steps stays (the caller holds the writers off meanwhile)."""
        wanted = set(slots)
        for origin_dc in self._origins:
            self.forget_refused(origin_dc, wanted)
        keys = self.key_hashes()
        groups, packed_of = self._groups, self._packed
        dropped = 0
        for start in range(0, len(keys), step):
            for key_hash in keys[start : start + step]:
                packed = packed_of(key_hash)
                if packed is not None and groups[packed >> 64].slot in wanted:
                    self.remove(key_hash)
                    dropped += 1
            if start + step < len(keys):
                yield dropped
        yield dropped

    def digest(self, key_hash: int) -> int | None:
        packed = self._packed(key_hash)
        return None if packed is None else packed & _MASK

    def ref(self, key_hash: int) -> LocalRef | None:
        packed = self._packed(key_hash)
        return None if packed is None else self._ref(key_hash, packed)

    def _ref(self, key_hash: int, packed: int) -> LocalRef:
        group = self._groups[packed >> 64]
        local_id = self._odd_ids.get(key_hash) or local_id_of(key_hash)
        return LocalRef(group.service_id, local_id)

    def renewable(
        self, key_hash: int, expired_origins: Collection[str]
    ) -> tuple[LocalRef, int, str] | None:
        """(where the copy lives, its entry, its origin data center) unless gone or of an
        expired origin."""
        packed = self._packed(key_hash)
        if packed is None:
            return None
        origin = self._groups[packed >> 64].origin
        if origin in expired_origins:
            return None
        return self._ref(key_hash, packed), packed, origin

    def forget_if_same(self, key_hash: int, packed: int) -> str | None:
        """Drop a copy the registry lost, unless it changed since ``packed`` was read.

        Its slot is marked stale, so the next reconcile of that slot also looks in the
        store for it. Returns its origin data center when dropped.
        """
        if self._packed(key_hash) != packed:
            return None
        group = self.remove(key_hash)
        assert group is not None
        self._origins[group.origin].stale.add(group.slot)
        return group.origin

    def invalidate(self, key_hash: int) -> str | None:
        """Mark a held copy for checking against its origin again; its origin data center,
        None when not held.

        The copy stays held (renewed, known as a copy) but its digest becomes 0, which no
        record has: its slot's digest then differs from the origin's, so the next repair
        pulls that slot, and applying the record there does not skip it as a replay.
        """
        entries = self._shards[key_hash >> _SHARD_SHIFT].entries
        packed = entries.get(key_hash)
        if packed is None:
            return None
        group = self._groups[packed >> 64]
        digest = packed & _MASK
        if digest:
            entries[key_hash] = packed - digest
            self._origins[group.origin].table.replace(group.slot, digest, 0)
        return group.origin

    def refuse(self, key_hash: int, origin_dc: str, slot: int, digest: int) -> None:
        """A record of ``origin_dc`` the import filter refused: no copy, but its digest
        counts in its slot's digest as at the origin (replacing an older one of it)."""
        self.admit(key_hash, origin_dc)
        state = self._origins.get(origin_dc)
        if state is None:
            state = self._origins[origin_dc] = _Origin()
        state.refused[key_hash] = digest | (slot << 64)
        state.table.add(slot, digest)

    def admit(self, key_hash: int, origin_dc: str) -> None:
        """The record is no longer refused (admitted, or deleted at its origin)."""
        state = self._origins.get(origin_dc)
        packed = None if state is None else state.refused.pop(key_hash, None)
        if state is not None and packed is not None:
            state.table.remove(packed >> 64, packed & _MASK)

    def forget_refused(self, origin_dc: str, slots: Collection[int]) -> None:
        """Drop the refused records of these slots (a full view of them follows, or they
        went to another syncer)."""
        state = self._origins.get(origin_dc)
        if state is None or not state.refused:
            return
        wanted = slots if isinstance(slots, (set, frozenset)) else set(slots)
        for key_hash, packed in list(state.refused.items()):
            if packed >> 64 in wanted:
                del state.refused[key_hash]
                state.table.remove(packed >> 64, packed & _MASK)

    def may_hold(self, origin_dc: str, slot: int) -> bool:
        """Whether the store may hold copies of ``origin_dc`` in ``slot``."""
        state = self._origins.get(origin_dc)
        return state is not None and (state.per_slot[slot] > 0 or slot in state.stale)

    def checked(self, origin_dc: str, slots: Collection[int]) -> None:
        """These slots were reconciled against the store: none is stale any more."""
        state = self._origins.get(origin_dc)
        if state is not None:
            state.stale.difference_update(slots)

    def counts(self) -> dict[str, int]:
        """Copies held per origin data center."""
        return {dc: state.count for dc, state in self._origins.items() if state.count}

    def digest_table(self, origin_dc: str) -> core_digest.SlotDigestTable:
        """A copy of the digest table of what is held of ``origin_dc``, refused records
        included."""
        state = self._origins.get(origin_dc)
        return state.table.copy() if state is not None else core_digest.SlotDigestTable()
