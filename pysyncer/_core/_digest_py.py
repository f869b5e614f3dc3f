"""Record digests, per-slot digest tables and snapshot diffs, pure Python.

Twin of :mod:`pysyncer._core._digest_c`: same names, same results, same error types,
and the typed API that type checkers see for both.

Owns the anti-entropy arithmetic of the syncer:

* :func:`encode_record` - the canonical, stable MessagePack encoding of a record,
  ``[RECORD_FORMAT_VERSION, service_key, fields]`` with every map's keys sorted (code
  point order, which is UTF-8 byte order), smallest integer forms, float64, the str
  family for str and the bin family for bytes. Here the record is validated and
  key-sorted in Python, then packed by ``msgpack.packb``; the compiled module writes
  the same bytes itself.
* :func:`digest64` / :func:`record_digest` - XXH64 with seed 0 (``xxhash`` here; the
  compiled module implements it from the specification so it can drop the GIL).
* :class:`SlotDigestTable` - per Redis-Cluster hash slot, the sum mod 2**64 of the
  digests of the slot's records: order-independent, O(1) to update, and unlike XOR a
  record counted twice does not cancel out. :func:`diff_slots` lists the slots where
  two tables differ, so only those slots are pulled from the peer.
* :class:`DigestSnapshot` / :func:`snapshot_diff` - key hash -> record digest of one slot or
  of a whole data center, and its added/changed/removed keys against another one.

DigestSnapshot representation: the compiled module stores two parallel uint64 arrays sorted
by key - 16 bytes per record instead of ~100 for a dict of Python ints, sorted once at
construction (radix sort), after which a diff is one sequential merge pass over both
snapshots, with no hashing and the GIL released. Pure Python cannot run such a merge
loop fast, so this twin keeps a dict and diffs with C-level membership tests
(comprehensions over the dicts), sorting only the (small) results; sorted keys are
computed on first use and cached, snapshots being immutable.

Errors, identical in both modules: ``TypeError`` for wrong types (including map keys
that are not ``str``), ``OverflowError`` for integers out of range (record ints outside
-2**63..2**64-1, digests and key hashes outside 0..2**64-1), ``ValueError`` for slots
outside 0..16383, records nested deeper than :data:`MAX_DEPTH`, length mismatches and
duplicate keys, ``UnicodeEncodeError`` for lone surrogates, and
:class:`~pysyncer.errors.MalformedDataError` for a serialised table of the wrong size.
Batch operations validate all their input before changing anything.
"""

from __future__ import annotations

import operator
import sys
from array import array
from collections.abc import Iterable, Iterator, Mapping
from itertools import compress, pairwise
from typing import Any, NamedTuple, TypeAlias, Union

import msgpack
import xxhash

from pysyncer.errors import MalformedDataError

__all__ = [
    "MAX_DEPTH",
    "RECORD_FORMAT_VERSION",
    "SLOT_COUNT",
    "TABLE_BYTES",
    "DigestSnapshot",
    "SlotDigestTable",
    "SnapshotDiff",
    "Value",
    "diff_slots",
    "digest64",
    "encode_record",
    "instance_digest",
    "record_digest",
    "snapshot_diff",
]

SLOT_COUNT: int = 16384
"""Number of Redis Cluster hash slots, hence of entries in a :class:`SlotDigestTable`."""

TABLE_BYTES: int = SLOT_COUNT * 8
"""Size of :meth:`SlotDigestTable.to_bytes` output: one little-endian uint64 per slot."""

RECORD_FORMAT_VERSION: int = 1
"""First element of every encoded record; bump it when the encoding changes."""

MAX_DEPTH: int = 32
"""Deepest container nesting of a record; the ``fields`` mapping is at depth 1."""

Value: TypeAlias = Union[  # a Union: forward references cannot use ``|`` at runtime
    bool, int, float, str, bytes, "list[Value]", "tuple[Value, ...]", "Mapping[str, Value]", None
]
"""A record value: scalars, bytes, and lists, tuples or str-keyed maps of values."""

_I64_MIN = -(2**63)
_U64_MAX = 2**64 - 1
_MASK = _U64_MAX
_BIG_ENDIAN = sys.byteorder == "big"


class SnapshotDiff(NamedTuple):
    """Key hashes (ascending ``array('Q')``) added, changed and removed."""

    added: array[int]
    changed: array[int]
    removed: array[int]


# ---------------------------------------------------------------------- digests


def digest64(data: bytes) -> int:
    """XXH64 (seed 0) of a bytes-like object, as an int in 0..2**64-1.

    ``str`` and non-contiguous buffers are refused (TypeError, BufferError).
    """
    return xxhash.xxh64_intdigest(data)


def _check_depth(depth: int) -> None:
    if depth > MAX_DEPTH:
        raise ValueError(f"record nesting is deeper than MAX_DEPTH={MAX_DEPTH}")


def _check_utf8(text: str) -> None:
    """Raise UnicodeEncodeError now (lone surrogates), in the compiled module's order."""
    if not str.isascii(text):
        str.encode(text)


def _plain(value: object, depth: int) -> object:
    """value validated, with lists for tuples and key-sorted dicts for mappings.

    depth is the depth value has if it is a container. The checks run in the same
    order as the compiled encoder writes, so both raise the same first error.
    """
    if value is None or value is True or value is False:
        return value
    if isinstance(value, int):
        if not _I64_MIN <= value <= _U64_MAX:
            raise OverflowError(f"integer {value} is out of range -2**63..2**64-1 for a record")
        return value
    if isinstance(value, float):
        return value
    if isinstance(value, str):
        _check_utf8(value)
        return value
    if isinstance(value, bytes):
        return value
    if isinstance(value, (list, tuple)):
        _check_depth(depth)
        return [_plain(item, depth + 1) for item in value]
    if isinstance(value, Mapping):
        return _plain_map(value, depth)
    raise TypeError(f"cannot encode {type(value).__name__} in a record")


def _plain_map(mapping: Mapping[Any, object], depth: int) -> dict[str, object]:
    _check_depth(depth)
    keys = list(mapping)
    plain = True
    for key in keys:  # all keys are checked, in iteration order, before any value
        if type(key) is not str:
            if not isinstance(key, str):
                raise TypeError(f"record map keys must be str, not {type(key).__name__}")
            plain = False
        _check_utf8(key)
    if plain:
        keys.sort()
    else:
        keys.sort(key=str.__str__)  # code point order, whatever a subclass's __lt__ says
    return {key: _plain(mapping[key], depth + 1) for key in keys}


def encode_record(service_key: str, fields: Mapping[str, Value]) -> bytes:
    """Canonical MessagePack bytes of ``[RECORD_FORMAT_VERSION, service_key, fields]``.

    Maps have their (str) keys sorted; ints use their smallest form, floats float64,
    str the str family, bytes the bin family, lists and tuples arrays.
    Errors: TypeError (non-str key, unsupported value), OverflowError (int outside
    -2**63..2**64-1), ValueError (nesting deeper than MAX_DEPTH), UnicodeEncodeError
    (lone surrogate).
    """
    if not isinstance(service_key, str):
        raise TypeError(f"service_key must be str, not {type(service_key).__name__}")
    _check_utf8(service_key)
    if not isinstance(fields, Mapping):
        raise TypeError(f"fields must be a mapping, not {type(fields).__name__}")
    record = [RECORD_FORMAT_VERSION, service_key, _plain_map(fields, 1)]
    packed: bytes = msgpack.packb(record, use_bin_type=True)
    return packed


def record_digest(service_key: str, fields: Mapping[str, Value]) -> int:
    """``digest64(encode_record(service_key, fields))``."""
    return xxhash.xxh64_intdigest(encode_record(service_key, fields))


def instance_digest(
    service_key: str,
    instance_id: Value,
    host: Value,
    endpoints: Iterable[Value],
    status: Value,
    properties: Mapping[str, Value],
    interval: Value,
    times: Value,
) -> int:
    """``record_digest(service_key, fields)`` of an instance's canonical fields:
    ``{"id": instance_id, "host": host, "endpoints": list(endpoints), "status": status,
    "properties": properties, "health": [interval, times]}`` (what
    :meth:`pysyncer.model.Instance.fields` gives)."""
    fields: dict[str, Value] = {
        "id": instance_id,
        "host": host,
        "endpoints": list(endpoints),
        "status": status,
        "properties": properties,
        "health": [interval, times],
    }
    return record_digest(service_key, fields)


# ------------------------------------------------------------------ slot tables


def _slot(slot: int) -> int:
    s = operator.index(slot)
    if not 0 <= s < SLOT_COUNT:
        raise ValueError(f"slot {slot} is outside 0..{SLOT_COUNT - 1}")
    return s


def _u64(digest: int) -> int:
    d = operator.index(digest)
    if not 0 <= d <= _U64_MAX:
        raise OverflowError(f"{digest} is outside the uint64 range 0..2**64-1")
    return d


def _u64_array(values: Iterable[int]) -> array[int]:
    """values as array('Q'): TypeError / OverflowError per item, as compiled.

    A bytes or bytearray counts as a sequence of small ints (array() would
    reinterpret its raw bytes).
    """
    if isinstance(values, (bytes, bytearray)):
        values = list(values)
    return array("Q", values)


class SlotDigestTable:
    """Per hash slot, the sum mod 2**64 of the digests of the slot's records.

    New tables are all zero. Slots outside 0..16383 raise ValueError, digests
    outside 0..2**64-1 OverflowError. Batch operations validate everything before
    changing anything.
    """

    __slots__ = ("_v",)

    def __init__(self) -> None:
        self._v: list[int] = [0] * SLOT_COUNT

    def add(self, slot: int, digest: int) -> None:
        """Count a record of digest ``digest`` in ``slot``."""
        s = _slot(slot)
        self._v[s] = (self._v[s] + _u64(digest)) & _MASK

    def remove(self, slot: int, digest: int) -> None:
        """Uncount a record of digest ``digest`` from ``slot``."""
        s = _slot(slot)
        self._v[s] = (self._v[s] - _u64(digest)) & _MASK

    def replace(self, slot: int, old_digest: int, new_digest: int) -> None:
        """A record of ``slot`` changed from ``old_digest`` to ``new_digest``."""
        s = _slot(slot)
        old = _u64(old_digest)
        self._v[s] = (self._v[s] + _u64(new_digest) - old) & _MASK

    def add_many(self, slots: Iterable[int], digests: Iterable[int]) -> None:
        """``add`` for each pair; array('H') slots and array('Q') digests are fastest."""
        self._apply(slots, digests, 1)

    def remove_many(self, slots: Iterable[int], digests: Iterable[int]) -> None:
        """``remove`` for each pair; array('H') slots and array('Q') digests are fastest."""
        self._apply(slots, digests, -1)

    def _apply(self, slots: Iterable[int], digests: Iterable[int], sign: int) -> None:
        checked = [_slot(s) for s in slots]
        values = _u64_array(digests)
        if len(values) != len(checked):
            raise ValueError(f"{len(checked)} slots but {len(values)} digests")
        v = self._v
        for s, d in zip(checked, values, strict=True):
            v[s] = (v[s] + sign * d) & _MASK

    def __getitem__(self, slot: int) -> int:
        return self._v[_slot(slot)]

    def __len__(self) -> int:
        return SLOT_COUNT

    def __iter__(self) -> Iterator[int]:
        return iter(self._v)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SlotDigestTable):
            return NotImplemented
        return self._v == other._v

    def __repr__(self) -> str:
        return f"<SlotDigestTable: {self.nonzero_slots()} non-zero slots>"

    def __reduce__(self) -> tuple[object, tuple[bytes]]:
        return (type(self).from_bytes, (self.to_bytes(),))

    def nonzero_slots(self) -> int:
        """Number of slots whose digest is not 0."""
        return SLOT_COUNT - self._v.count(0)

    def copy(self) -> SlotDigestTable:
        """An independent copy."""
        twin = type(self)()
        twin._v = self._v.copy()
        return twin

    def to_bytes(self) -> bytes:
        """TABLE_BYTES bytes: the digests as little-endian uint64, slot 0 first."""
        values = array("Q", self._v)
        if _BIG_ENDIAN:
            values.byteswap()
        return values.tobytes()

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview) -> SlotDigestTable:
        """Table from to_bytes() output (any C-contiguous bytes-like object).

        Raises MalformedDataError (a ValueError) unless it is TABLE_BYTES long.
        """
        raw = memoryview(data).cast("B")
        if raw.nbytes != TABLE_BYTES:
            raise MalformedDataError(
                f"a slot digest table is {TABLE_BYTES} bytes, not {raw.nbytes}"
            )
        values = array("Q")
        values.frombytes(raw)
        if _BIG_ENDIAN:
            values.byteswap()
        table = cls()
        table._v = values.tolist()
        return table


def diff_slots(a: SlotDigestTable, b: SlotDigestTable) -> array[int]:
    """array('H') of the slots, ascending, whose digests differ between a and b."""
    if not isinstance(a, SlotDigestTable) or not isinstance(b, SlotDigestTable):
        raise TypeError("diff_slots() expects two SlotDigestTable objects")
    return array("H", compress(range(SLOT_COUNT), map(operator.ne, a._v, b._v)))


# -------------------------------------------------------------------- snapshots


def _index_or_none(key: object) -> int | None:
    try:
        return operator.index(key)  # type: ignore[arg-type]
    except TypeError:
        return None


class DigestSnapshot:
    """An immutable set of (key hash -> record digest), both uint64.

    ``DigestSnapshot(keys, digests)`` takes equal-length iterables of ints (or uint64
    buffers such as array('Q')); a key given twice raises ValueError.
    """

    __slots__ = ("_map", "_sorted_keys")

    def __init__(self, keys: Iterable[int], digests: Iterable[int]) -> None:
        ks = _u64_array(keys)
        ds = _u64_array(digests)
        if len(ks) != len(ds):
            raise ValueError(f"{len(ks)} keys but {len(ds)} digests")
        self._map: dict[int, int] = dict(zip(ks, ds, strict=True))
        self._sorted_keys: list[int] | None = None
        if len(self._map) != len(ks):
            ordered = sorted(ks)
            duplicate = next(k for k, n in pairwise(ordered) if k == n)
            raise ValueError(f"duplicate key {duplicate}")

    @classmethod
    def from_mapping(cls, mapping: Mapping[int, int]) -> DigestSnapshot:
        """The snapshot of a {key hash: record digest} mapping."""
        return cls(list(mapping.keys()), list(mapping.values()))

    def _ordered(self) -> list[int]:
        if self._sorted_keys is None:
            self._sorted_keys = sorted(self._map)
        return self._sorted_keys

    def __len__(self) -> int:
        return len(self._map)

    def __contains__(self, key: object) -> bool:
        k = _index_or_none(key)
        return k is not None and k in self._map

    def get(self, key: int) -> int | None:
        """The record digest of key, or None."""
        k = _index_or_none(key)
        return None if k is None else self._map.get(k)

    def keys(self) -> array[int]:
        """array('Q') of the key hashes, ascending."""
        return array("Q", self._ordered())

    def digests(self) -> array[int]:
        """array('Q') of the record digests, aligned with keys()."""
        return array("Q", map(self._map.__getitem__, self._ordered()))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, DigestSnapshot):
            return NotImplemented
        return self._map == other._map

    def __repr__(self) -> str:
        return f"<DigestSnapshot: {len(self._map)} records>"

    def __reduce__(self) -> tuple[object, tuple[array[int], array[int]]]:
        return (type(self), (self.keys(), self.digests()))


def snapshot_diff(old: DigestSnapshot, new: DigestSnapshot) -> SnapshotDiff:
    """SnapshotDiff(added, changed, removed) from old to new.

    added: keys only in new; removed: keys only in old; changed: keys in both whose
    digests differ. Each is an ascending array('Q').
    """
    if not isinstance(old, DigestSnapshot) or not isinstance(new, DigestSnapshot):
        raise TypeError("snapshot_diff() expects two DigestSnapshot objects")
    o, n = old._map, new._map
    get = o.get
    differ = [k for k, d in n.items() if get(k) != d]  # added (get gives None) or changed
    removed = [k for k in o if k not in n]
    added = sorted(k for k in differ if k not in o)
    changed = sorted(k for k in differ if k in o)
    removed.sort()
    return SnapshotDiff(array("Q", added), array("Q", changed), array("Q", removed))
