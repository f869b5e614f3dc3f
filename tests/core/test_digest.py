"""pysyncer._core digest: XXH64, canonical record encoding, slot tables, snapshot diffs.

Every behaviour test runs against both implementations (the ``dg`` fixture); parity
tests load both. Oracles: ``xxhash`` for XXH64, ``msgpack`` for the encoding, and
naive Python for tables and diffs.
"""

from __future__ import annotations

import enum
import math
import pickle
import random
import struct
from array import array
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from types import MappingProxyType, ModuleType
from typing import Any

import msgpack
import pytest
import xxhash
from hypothesis import given, settings
from hypothesis import strategies as st

from pysyncer.errors import MalformedDataError
from tests.conftest import load_core_module

U64_MAX = 2**64 - 1
FAST = settings(max_examples=150, deadline=None)
SLOW = settings(max_examples=60, deadline=None)


@pytest.fixture(params=["py", "c"], scope="module")
def dg(request: pytest.FixtureRequest) -> ModuleType:
    """The digest module, once per implementation."""
    return load_core_module("digest", request.param)


@pytest.fixture(scope="module")
def py() -> ModuleType:
    return load_core_module("digest", "py")


@pytest.fixture(scope="module")
def c() -> ModuleType:
    return load_core_module("digest", "c")


def test_constants(dg: ModuleType) -> None:
    assert dg.SLOT_COUNT == 16384
    assert dg.TABLE_BYTES == 131072
    assert dg.RECORD_FORMAT_VERSION == 1
    assert dg.MAX_DEPTH == 32


# ------------------------------------------------------------------------ XXH64


def test_digest64_every_length_up_to_300(dg: ModuleType) -> None:
    # Covers <4, 4-7 and 8-31 bytes, and >= 32 bytes with every tail size (0..31).
    rng = random.Random(20240601)
    for n in range(301):
        for data in (rng.randbytes(n), b"\xff" * n, bytes(range(256)) * 2):
            data = data[:n]
            assert dg.digest64(data) == xxhash.xxh64_intdigest(data), n


def test_digest64_known_values(dg: ModuleType) -> None:
    assert dg.digest64(b"") == 0xEF46DB3751D8E999  # XXH64 of empty input, seed 0
    assert dg.digest64(b"abc") == 0x44BC2CF5AD770999


def test_digest64_large_input_releases_gil_path(dg: ModuleType) -> None:
    data = random.Random(7).randbytes(1 << 20) + b"tail!"
    assert dg.digest64(data) == xxhash.xxh64_intdigest(data)
    assert dg.digest64(bytearray(data)) == xxhash.xxh64_intdigest(data)


@given(st.binary(max_size=600))
@FAST
def test_digest64_matches_xxhash(dg: ModuleType, data: bytes) -> None:
    assert dg.digest64(data) == xxhash.xxh64_intdigest(data)


def test_digest64_bytes_like_and_errors(dg: ModuleType) -> None:
    raw = b"0123456789abcdef"
    for data in (bytearray(raw), memoryview(raw), array("H", [1, 2, 3])):
        assert dg.digest64(data) == xxhash.xxh64_intdigest(data)
    with pytest.raises(TypeError):
        dg.digest64("text")
    with pytest.raises(TypeError):
        dg.digest64(12)
    with pytest.raises(BufferError):
        dg.digest64(memoryview(raw)[::2])


# ------------------------------------------------------------- record encoding


def _sorted_plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _sorted_plain(value[k]) for k in sorted(value)}
    if isinstance(value, (list, tuple)):
        return [_sorted_plain(v) for v in value]
    return value


def oracle(service_key: str, fields: Mapping[str, Any]) -> bytes:
    """What the format says: msgpack of the recursively key-sorted record."""
    packed: bytes = msgpack.packb([1, service_key, _sorted_plain(fields)], use_bin_type=True)
    return packed


BOUNDARY_INTS = [
    0, 1, 127, 128, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**63 - 1, 2**63, U64_MAX,
    -1, -31, -32, -33, -127, -128, -129, -32767, -32768, -32769,
    -(2**31) + 1, -(2**31), -(2**31) - 1, -(2**63) + 1, -(2**63),
]  # fmt: skip
BOUNDARY_SIZES = [0, 1, 15, 16, 31, 32, 255, 256, 65535, 65536]


@pytest.mark.parametrize("value", BOUNDARY_INTS)
def test_encode_int_boundaries(dg: ModuleType, value: int) -> None:
    encoded = dg.encode_record("k", {"v": value})
    assert encoded == oracle("k", {"v": value})
    assert msgpack.unpackb(encoded) == [1, "k", {"v": value}]


@pytest.mark.parametrize("size", BOUNDARY_SIZES)
def test_encode_length_boundaries(dg: ModuleType, size: int) -> None:
    fields = {
        "str": "x" * size,
        "utf8": "é" * (size // 2),  # two UTF-8 bytes per character
        "bin": b"\x01" * size,
        "list": [None] * size,
        "tuple": (True,) * size,
        "map": {f"k{i:06d}": i for i in range(size)},
    }
    assert dg.encode_record("key" * size, fields) == oracle("key" * size, fields)


@pytest.mark.parametrize(
    "value", [0.0, -0.0, 1.5, -2.25, 1e308, 5e-324, math.inf, -math.inf, math.nan]
)
def test_encode_floats_are_float64(dg: ModuleType, value: float) -> None:
    encoded = dg.encode_record("k", {"f": value})
    assert encoded == oracle("k", {"f": value})
    assert encoded.endswith(b"\xcb" + struct.pack(">d", value))


class Colour(enum.IntEnum):
    RED = 300


class Text(str):
    pass


class Chain(list[Any]):
    pass


class Frozen(Mapping[str, Any]):
    """A read-only Mapping that is not a dict."""

    def __init__(self, data: dict[str, Any]) -> None:
        self._data = data

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)


HAND_WRITTEN: list[tuple[str, dict[str, Any]]] = [
    ("", {}),
    ("svc", {"b": 1, "a": 2, "é": 3, "Z": 4, "aa": 5, "\U0001f600": 6, "\uffff": 7}),
    ("svc/ü", {"nested": {"z": [1, (2, 3), {"y": None, "x": b""}], "a": {}}}),
    ("k", {"enum": Colour.RED, "sub": Text("abc"), "chain": Chain([1, 2])}),
    ("k", {"ordered": OrderedDict([("b", 1), ("a", 2)]), "proxy": MappingProxyType({"q": 1})}),
    ("k", {"frozen": Frozen({"b": [1.0], "a": False})}),
    # read-only views of a mapping without copy() and of a dict subclass (the view's copy()
    # is no plain dict): read as any mapping
    ("k", {"p": MappingProxyType(Frozen({"b": 1})), "q": MappingProxyType(OrderedDict(x=1))}),
    ("k", {"bytes_sub": type("B", (bytes,), {})(b"xy"), "float_sub": type("F", (float,), {})(2.5)}),
]  # fmt: skip


@pytest.mark.parametrize(("service_key", "fields"), HAND_WRITTEN)
def test_encode_hand_written(dg: ModuleType, service_key: str, fields: dict[str, Any]) -> None:
    encoded = dg.encode_record(service_key, fields)
    assert encoded == oracle(service_key, fields)
    assert dg.encode_record(service_key, Frozen(fields)) == encoded  # any Mapping
    assert msgpack.packb(msgpack.unpackb(encoded), use_bin_type=True) == encoded
    assert dg.record_digest(service_key, fields) == xxhash.xxh64_intdigest(encoded)


GOLDEN_KEY = "orders-service/v1"
GOLDEN_FIELDS: dict[str, Any] = {
    "instanceId": "i-0123",
    "host": "10.0.0.7",
    "port": 8080,
    "weight": 0.5,
    "healthy": True,
    "zone": None,
    "endpoints": ["rest://10.0.0.7:8080", ("grpc", 9090)],
    "metadata": {"region": "eu-west", "ünïcode": "✓", "seq": -129},
    "token": b"\x00\xff",
    "version": 2**40,
}
GOLDEN_HEX = (
    "9301b16f72646572732d736572766963652f76318aa9656e64706f696e747392b4726573743a2f2f"
    "31302e302e302e373a3830383092a467727063cd2382a76865616c746879c3a4686f7374a831302e"
    "302e302e37aa696e7374616e63654964a6692d30313233a86d6574616461746183a6726567696f6e"
    "a765752d77657374a3736571d1ff7fa9c3bc6ec3af636f6465a3e29c93a4706f7274cd1f90a5746f"
    "6b656ec40200ffa776657273696f6ecf0000010000000000a6776569676874cb3fe0000000000000"
    "a47a6f6e65c0"
)
GOLDEN_DIGEST = 0xE90F6A819AB11865


def test_golden_vector(dg: ModuleType) -> None:
    """The stable format: changing it needs a new RECORD_FORMAT_VERSION, not an edit here."""
    assert dg.encode_record(GOLDEN_KEY, GOLDEN_FIELDS).hex() == GOLDEN_HEX
    assert dg.record_digest(GOLDEN_KEY, GOLDEN_FIELDS) == GOLDEN_DIGEST
    assert dg.digest64(bytes.fromhex(GOLDEN_HEX)) == GOLDEN_DIGEST


def nest(depth: int) -> Any:
    """A value whose deepest container sits ``depth`` levels below the fields map."""
    value: Any = 0
    for i in range(depth):
        value = [value] if i % 2 else {"n": value}
    return value


def test_max_depth_boundary(dg: ModuleType) -> None:
    fields = {"v": nest(dg.MAX_DEPTH - 1)}  # fields (depth 1) + 31 levels = 32
    assert dg.encode_record("k", fields) == oracle("k", fields)
    with pytest.raises(ValueError) as info:
        dg.encode_record("k", {"v": nest(dg.MAX_DEPTH)})
    assert type(info.value) is ValueError
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(ValueError):
        dg.encode_record("k", {"loop": loop})


BAD_RECORDS: list[tuple[Any, Any, type[BaseException]]] = [
    (b"key", {}, TypeError),
    (None, {}, TypeError),
    ("k", [("a", 1)], TypeError),
    ("k", {1: "int key"}, TypeError),
    ("k", {"a": {b"bytes key": 1}}, TypeError),
    ("k", {"a": object()}, TypeError),
    ("k", {"a": {1, 2}}, TypeError),
    ("k", {"a": bytearray(b"x")}, TypeError),
    ("k", {"a": 1j}, TypeError),
    ("k", {"a": 2**64}, OverflowError),
    ("k", {"a": -(2**63) - 1}, OverflowError),
    ("k", {"a": [2**100]}, OverflowError),
    ("\ud800", {}, UnicodeEncodeError),
    ("k", {"\udfff": 1}, UnicodeEncodeError),
    ("k", {"a": ["ok", "\ud83d"]}, UnicodeEncodeError),
]


@pytest.mark.parametrize(("service_key", "fields", "error"), BAD_RECORDS)
def test_encode_errors(
    dg: ModuleType, service_key: Any, fields: Any, error: type[BaseException]
) -> None:
    with pytest.raises(error):
        dg.encode_record(service_key, fields)
    with pytest.raises(error):
        dg.record_digest(service_key, fields)


def _u64s() -> st.SearchStrategy[int]:
    return st.one_of(st.integers(0, U64_MAX), st.sampled_from([0, 1, 2**32, 2**63, U64_MAX]))


_ints = st.one_of(st.sampled_from(BOUNDARY_INTS), st.integers(-(2**63), U64_MAX))
_floats = st.one_of(st.floats(), st.sampled_from([-0.0, math.nan, math.inf, -math.inf]))
_texts = st.one_of(st.text(max_size=40), st.sampled_from(["x" * 31, "y" * 32, "é" * 16, "z" * 256]))
_binaries = st.one_of(st.binary(max_size=40), st.sampled_from([b"\0" * 32, b"\1" * 256]))
_scalars = st.one_of(st.none(), st.booleans(), _ints, _floats, _texts, _binaries)
_values = st.recursive(
    _scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=18),
        st.lists(inner, max_size=4).map(tuple),
        st.dictionaries(st.text(max_size=8), inner, max_size=18),
    ),
    max_leaves=40,
)
_fields = st.dictionaries(st.text(max_size=12), _values, max_size=12)


@given(service_key=st.text(max_size=40), fields=_fields)
@FAST
def test_encode_matches_msgpack(dg: ModuleType, service_key: str, fields: dict[str, Any]) -> None:
    encoded = dg.encode_record(service_key, fields)
    assert encoded == oracle(service_key, fields)
    decoded = msgpack.unpackb(encoded)
    assert decoded[:2] == [1, service_key]
    assert msgpack.packb(decoded, use_bin_type=True) == encoded
    assert dg.record_digest(service_key, fields) == dg.digest64(encoded)


_bad_leaves = st.sampled_from(
    [object(), 2**64, -(2**63) - 1, "\ud800", bytearray(b"x"), frozenset(), 1j, nest(40)]
)
_messy = st.recursive(
    st.one_of(_scalars, _bad_leaves),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(
            st.one_of(st.text(max_size=3), st.integers(0, 3), st.just("\udcff")),
            inner,
            max_size=4,
        ),
    ),
    max_leaves=12,
)


def _outcome(fn: Callable[..., Any], *args: Any) -> tuple[str, Any]:
    try:
        return ("ok", fn(*args))
    except Exception as exc:
        return ("error", type(exc))


@given(
    service_key=st.one_of(st.text(max_size=4), st.just("\ud800"), st.just(b"k")),
    fields=st.one_of(st.dictionaries(st.text(max_size=4), _messy, max_size=5), _messy),
)
@FAST
def test_encode_error_parity(py: ModuleType, c: ModuleType, service_key: Any, fields: Any) -> None:
    """Both implementations agree on bytes or on the (first) error type, in any mix."""
    expected = _outcome(py.encode_record, service_key, fields)
    assert _outcome(c.encode_record, service_key, fields) == expected
    assert _outcome(c.record_digest, service_key, fields)[0] == expected[0]


_endpoint_lists = st.one_of(
    st.lists(_texts, max_size=4), st.lists(_texts, max_size=4).map(tuple), _texts
)


@given(
    service_key=st.one_of(_texts, st.just("\ud800"), st.just(b"k")),
    parts=st.tuples(
        st.one_of(_texts, _messy),
        st.one_of(_texts, _messy),
        st.one_of(_endpoint_lists, st.lists(_messy, max_size=3)),
        st.one_of(_texts, _messy),
        st.one_of(
            st.dictionaries(st.text(max_size=8), _texts, max_size=5),
            st.dictionaries(st.text(max_size=8), _texts, max_size=5).map(MappingProxyType),
            st.dictionaries(st.one_of(st.text(max_size=3), st.integers(0, 3)), _messy, max_size=3),
        ),
        st.one_of(_ints, _messy),
        st.one_of(_ints, _messy),
    ),
)
@FAST
def test_instance_digest_is_the_record_digest_of_the_instance_fields(
    py: ModuleType, c: ModuleType, service_key: Any, parts: tuple[Any, ...]
) -> None:
    """Both implementations digest an instance's parts as record_digest digests the
    fields built of them (:meth:`Instance.fields`), or fail with the same error type."""
    instance_id, host, endpoints, status, properties, interval, times = parts
    fields = {
        "id": instance_id,
        "host": host,
        "endpoints": list(endpoints),
        "status": status,
        "properties": dict(properties) if isinstance(properties, Mapping) else properties,
        "health": [interval, times],
    }
    expected = _outcome(py.record_digest, service_key, fields)
    assert _outcome(py.instance_digest, service_key, *parts) == expected
    assert _outcome(c.instance_digest, service_key, *parts) == expected


# -------------------------------------------------------------------- slot tables


def _naive_table(records: list[tuple[int, int]]) -> list[int]:
    sums = [0] * 16384
    for slot, digest in records:
        sums[slot] = (sums[slot] + digest) % 2**64
    return sums


def test_new_table(dg: ModuleType) -> None:
    table = dg.SlotDigestTable()
    assert len(table) == 16384
    assert table.to_bytes() == bytes(131072)
    assert table[0] == table[16383] == 0
    assert table.nonzero_slots() == 0
    assert list(table) == [0] * 16384


def test_table_arithmetic_wraps(dg: ModuleType) -> None:
    table = dg.SlotDigestTable()
    table.add(5, U64_MAX)
    table.add(5, 2)
    assert table[5] == 1
    table.remove(5, 3)
    assert table[5] == U64_MAX - 1
    table.replace(5, U64_MAX - 1, 7)
    assert table[5] == 7
    table.add(5, 7)  # the same record twice does not cancel (unlike XOR)
    assert table[5] == 14
    table.add(16383, 0x0102030405060708)
    raw = table.to_bytes()
    assert raw[5 * 8 : 6 * 8] == struct.pack("<Q", 14)
    assert raw[-8:] == bytes([8, 7, 6, 5, 4, 3, 2, 1])
    assert table.nonzero_slots() == 2
    assert "2 non-zero" in repr(table)


@pytest.mark.parametrize(
    ("slot", "digest", "error"),
    [
        (-1, 1, ValueError),
        (16384, 1, ValueError),
        (2**70, 1, ValueError),
        (-(2**70), 1, ValueError),
        (1.0, 1, TypeError),
        ("1", 1, TypeError),
        (1, -1, OverflowError),
        (1, 2**64, OverflowError),
        (1, 1.0, TypeError),
        (16384, -1, ValueError),  # slot is checked first
    ],
)
def test_table_argument_errors(
    dg: ModuleType, slot: Any, digest: Any, error: type[BaseException]
) -> None:
    table = dg.SlotDigestTable()
    calls: list[Callable[[], object]] = [
        lambda: table.add(slot, digest),
        lambda: table.remove(slot, digest),
        lambda: table.replace(slot, digest, 0),
        lambda: table.replace(slot, 0, digest),
        lambda: table.add_many([slot], [digest]),
        lambda: table.remove_many([0, slot], [0, digest]),
    ]
    for call in calls:
        with pytest.raises(error):
            call()
    assert table.to_bytes() == bytes(131072)  # nothing half-applied


@pytest.mark.parametrize(
    ("slot", "error"),
    [(-1, ValueError), (16384, ValueError), (2**70, ValueError), (1.0, TypeError)],
)
def test_table_getitem_errors(dg: ModuleType, slot: Any, error: type[Exception]) -> None:
    with pytest.raises(error):
        dg.SlotDigestTable()[slot]


def test_table_batch_errors(dg: ModuleType) -> None:
    table = dg.SlotDigestTable()
    table.add(1, 10)
    before = table.to_bytes()
    with pytest.raises(ValueError):
        table.add_many([1, 2], [1])
    with pytest.raises(ValueError):
        table.add_many(array("H", [1, 2]), array("Q", [1, 2, 3]))
    with pytest.raises(ValueError):
        table.add_many(array("H", [1, 16384]), array("Q", [1, 2]))  # valid uint16, bad slot
    with pytest.raises(OverflowError):
        table.remove_many([1, 2], [5, -5])
    with pytest.raises(TypeError):
        table.add_many(3, [1])
    assert table.to_bytes() == before


_slot_values = st.one_of(st.integers(0, 16383), st.integers(0, 3), st.just(16383))
_ops = st.lists(
    st.one_of(
        st.tuples(st.just("add"), _slot_values, _u64s()),
        st.tuples(st.just("remove"), st.integers(0, 1000), st.just(0)),
        st.tuples(st.just("replace"), st.integers(0, 1000), _u64s()),
    ),
    max_size=60,
)


def _run_ops(table: Any, ops: list[tuple[str, int, int]]) -> list[tuple[int, int]]:
    """Apply ops to table; return the records the table should now hold."""
    records: list[tuple[int, int]] = []
    for name, arg, digest in ops:
        if name == "add":
            table.add(arg, digest)
            records.append((arg, digest))
        elif records:
            slot, old = records[arg % len(records)]
            if name == "remove":
                table.remove(slot, old)
                records.remove((slot, old))
            else:
                table.replace(slot, old, digest)
                records[records.index((slot, old))] = (slot, digest)
    return records


@given(ops=_ops, seed=st.integers(0, 2**32))
@FAST
def test_table_equals_rebuild(dg: ModuleType, ops: list[tuple[str, int, int]], seed: int) -> None:
    table = dg.SlotDigestTable()
    records = _run_ops(table, ops)
    random.Random(seed).shuffle(records)
    rebuilt = dg.SlotDigestTable()
    for slot, digest in records:
        rebuilt.add(slot, digest)
    assert table == rebuilt
    assert table.to_bytes() == rebuilt.to_bytes()
    assert list(table) == _naive_table(records)


@given(ops=_ops)
@FAST
def test_table_parity_and_cross_loading(
    py: ModuleType, c: ModuleType, ops: list[tuple[str, int, int]]
) -> None:
    pt, ct = py.SlotDigestTable(), c.SlotDigestTable()
    _run_ops(pt, ops)
    _run_ops(ct, ops)
    raw = pt.to_bytes()
    assert ct.to_bytes() == raw
    assert c.SlotDigestTable.from_bytes(raw) == ct
    assert py.SlotDigestTable.from_bytes(ct.to_bytes()) == pt
    assert list(py.diff_slots(pt, py.SlotDigestTable())) == list(
        c.diff_slots(ct, c.SlotDigestTable())
    )


_pairs = st.lists(st.tuples(_slot_values, _u64s()), max_size=80)


@given(pairs=_pairs, base=_pairs)
@FAST
def test_batch_equals_single(
    dg: ModuleType, pairs: list[tuple[int, int]], base: list[tuple[int, int]]
) -> None:
    slots = [s for s, _ in pairs]
    digests = [d for _, d in pairs]
    single, as_lists, as_arrays = (dg.SlotDigestTable() for _ in range(3))
    for table in (single, as_lists, as_arrays):
        for slot, digest in base:
            table.add(slot, digest)
    for slot, digest in pairs:
        single.add(slot, digest)
    as_lists.add_many(slots, tuple(digests))
    as_arrays.add_many(array("H", slots), array("Q", digests))
    assert single == as_lists == as_arrays
    as_lists.remove_many(tuple(slots), digests)
    as_arrays.remove_many(memoryview(array("H", slots)), memoryview(array("Q", digests)))
    for slot, digest in pairs:
        single.remove(slot, digest)
    assert single == as_lists == as_arrays
    assert list(single) == _naive_table(base)


def test_batch_accepts_other_integer_sequences(dg: ModuleType) -> None:
    expected = dg.SlotDigestTable()
    for slot, digest in [(1, 5), (2, 6), (1, 7)]:
        expected.add(slot, digest)
    for slots, digests in [
        (array("I", [1, 2, 1]), array("L", [5, 6, 7])),
        (array("q", [1, 2, 1]), array("B", [5, 6, 7])),
        ((1, 2, 1), range(5, 8)),
        (iter([1, 2, 1]), (d for d in [5, 6, 7])),
        (bytes([1, 2, 1]), [5, 6, 7]),
    ]:
        table = dg.SlotDigestTable()
        table.add_many(slots, digests)
        assert table == expected


def test_table_serialisation(dg: ModuleType) -> None:
    table = dg.SlotDigestTable()
    table.add_many(range(0, 16384, 7), [i * 0x9E3779B97F4A7C15 % 2**64 for i in range(2341)])
    raw = table.to_bytes()
    assert len(raw) == dg.TABLE_BYTES
    for data in (raw, bytearray(raw), memoryview(raw), array("Q", raw)):
        assert dg.SlotDigestTable.from_bytes(data) == table
    for size in (0, 131071, 131073, 8):
        with pytest.raises(MalformedDataError):
            dg.SlotDigestTable.from_bytes(bytes(size))
    with pytest.raises(ValueError):  # MalformedDataError is a ValueError
        dg.SlotDigestTable.from_bytes(raw[:-8])
    with pytest.raises(TypeError):
        dg.SlotDigestTable.from_bytes("x" * 131072)
    copied = table.copy()
    assert copied == table and copied is not table
    copied.add(0, 1)
    assert copied != table
    assert pickle.loads(pickle.dumps(table)) == table
    assert table != raw
    with pytest.raises(TypeError):
        hash(table)


@given(a=_pairs, b=_pairs)
@FAST
def test_diff_slots(py: ModuleType, c: ModuleType, a: list[tuple[int, int]], b: list[Any]) -> None:
    results = []
    for mod in (py, c):
        ta, tb = mod.SlotDigestTable(), mod.SlotDigestTable()
        for slot, digest in a:
            ta.add(slot, digest)
        for slot, digest in b:
            tb.add(slot, digest)
        diff = mod.diff_slots(ta, tb)
        assert diff.typecode == "H"
        naive = [s for s in range(16384) if ta[s] != tb[s]]
        assert list(diff) == naive
        assert list(mod.diff_slots(tb, ta)) == naive
        assert len(mod.diff_slots(ta, ta.copy())) == 0
        results.append(diff)
    assert results[0] == results[1]


def test_diff_slots_edges(dg: ModuleType) -> None:
    a, b = dg.SlotDigestTable(), dg.SlotDigestTable()
    assert list(dg.diff_slots(a, b)) == []
    b.add_many(range(16384), [1] * 16384)
    assert list(dg.diff_slots(a, b)) == list(range(16384))
    with pytest.raises(TypeError):
        dg.diff_slots(a, None)
    with pytest.raises(TypeError):
        dg.diff_slots(a.to_bytes(), b)


# ---------------------------------------------------------------------- snapshots


def _naive_diff(old: dict[int, int], new: dict[int, int]) -> tuple[list[int], ...]:
    added = sorted(new.keys() - old.keys())
    removed = sorted(old.keys() - new.keys())
    changed = sorted(k for k in old.keys() & new.keys() if old[k] != new[k])
    return added, changed, removed


def test_snapshot_basics(dg: ModuleType) -> None:
    snap = dg.DigestSnapshot([30, 10, U64_MAX, 0, 20], [3, 1, 9, 0, 2])
    assert len(snap) == 5
    assert snap.keys() == array("Q", [0, 10, 20, 30, U64_MAX])
    assert snap.digests() == array("Q", [0, 1, 2, 3, 9])
    assert snap.keys().typecode == snap.digests().typecode == "Q"
    assert 10 in snap and U64_MAX in snap and 11 not in snap
    assert snap.get(30) == 3 and snap.get(0) == 0 and snap.get(31) is None
    for missing in (-1, 2**64, "10", 10.0, None):
        assert missing not in snap
        assert snap.get(missing) is None
    assert snap.get(False) == 0  # an int-like index
    same = dg.DigestSnapshot.from_mapping({0: 0, 10: 1, 20: 2, 30: 3, U64_MAX: 9})
    assert same == snap
    assert dg.DigestSnapshot(array("Q", snap.keys()), snap.digests()) == snap
    assert pickle.loads(pickle.dumps(snap)) == snap
    assert dg.DigestSnapshot([], []) != snap
    assert "5 records" in repr(snap)


@pytest.mark.parametrize(
    ("keys", "digests", "error"),
    [
        ([1, 2, 1], [1, 2, 3], ValueError),
        ([5, 5], [1, 1], ValueError),
        ([1, 2], [1], ValueError),
        (array("Q", [1]), array("Q", [1, 2]), ValueError),
        ([1, -1], [1, 2], OverflowError),
        ([1, 2], [1, 2**64], OverflowError),
        ([1, 2.0], [1, 2], TypeError),
        ([1, 2], ["1", 2], TypeError),
        (None, [], TypeError),
    ],
)
def test_snapshot_errors(dg: ModuleType, keys: Any, digests: Any, error: type[Exception]) -> None:
    with pytest.raises(error):
        dg.DigestSnapshot(keys, digests)


ODD_U64_INPUTS: list[Callable[[], Any]] = [
    lambda: b"\x01\x02",
    lambda: bytearray(b"\x05\x03"),
    lambda: memoryview(b"\x02\x01"),
    lambda: "ab",
    lambda: None,
    lambda: 5,
    lambda: (x for x in (3, 1)),
    lambda: range(3),
    lambda: [1.0, 2.0],
    lambda: [1, -1],
    lambda: [2**64, 1],
    lambda: array("d", [1.0, 2.0]),
    lambda: array("q", [2, -1]),
    lambda: array("L", [9, 8]),
    lambda: memoryview(array("Q", [7, 6, 5]))[::-1],
    lambda: [True, False],
]


@pytest.mark.parametrize("make", ODD_U64_INPUTS)
def test_uint64_input_parity(py: ModuleType, c: ModuleType, make: Callable[[], Any]) -> None:
    """Key and digest sequences are read identically (values or error type) by both."""

    def build(mod: ModuleType) -> tuple[str, Any]:
        try:
            snap = mod.DigestSnapshot(make(), make())
        except Exception as exc:
            return ("error", type(exc))
        return ("ok", (snap.keys().tolist(), snap.digests().tolist()))

    outcome = build(py)
    assert build(c) == outcome
    if outcome[0] == "ok":
        assert outcome[1][0] == sorted(outcome[1][0])


def test_from_mapping_checks_keys_before_values(dg: ModuleType) -> None:
    with pytest.raises(TypeError):
        dg.DigestSnapshot.from_mapping({1: -1, "k": 2})  # bad key (TypeError) beats bad value
    with pytest.raises(OverflowError):
        dg.DigestSnapshot.from_mapping({1: 2, 3: -1})
    assert dg.DigestSnapshot.from_mapping(MappingProxyType({3: 1, 2: 2})).keys().tolist() == [2, 3]


def _key_patterns(n: int, rng: random.Random) -> Iterator[list[int]]:
    yield [rng.getrandbits(64) for _ in range(n)]
    yield list(range(n))
    yield list(range(n, 0, -1))
    yield [rng.getrandbits(8) << 56 | i for i in range(n)]  # only the top byte varies much
    yield [i << 32 | 0xABCD for i in rng.sample(range(n * 4), n)]  # constant low bytes
    yield [U64_MAX - i for i in range(n)]


def test_snapshot_sorts_large_inputs(dg: ModuleType) -> None:
    rng = random.Random(99)
    for keys in _key_patterns(30000, rng):
        digests = [rng.getrandbits(64) for _ in keys]
        snap = dg.DigestSnapshot(keys, array("Q", digests))
        expected = sorted(zip(keys, digests, strict=True))
        assert snap.keys() == array("Q", [k for k, _ in expected])
        assert snap.digests() == array("Q", [d for _, d in expected])
    with pytest.raises(ValueError):
        dg.DigestSnapshot([*range(1000, 0, -1), 500], range(1001))


@st.composite
def snapshot_pairs(draw: st.DrawFn) -> tuple[dict[int, int], dict[int, int]]:
    keys = st.one_of(st.integers(0, U64_MAX), st.integers(0, 40), st.sampled_from([U64_MAX]))
    old = draw(st.dictionaries(keys, _u64s(), max_size=120))
    new: dict[int, int] = {}
    for key, digest in old.items():
        action = draw(st.sampled_from(["keep", "keep", "keep", "drop", "change"]))
        if action == "keep":
            new[key] = digest
        elif action == "change":
            new[key] = draw(_u64s())
    for key, digest in draw(st.dictionaries(keys, _u64s(), max_size=40)).items():
        new.setdefault(key, digest)
    return old, new


@given(pair=snapshot_pairs())
@FAST
def test_snapshot_diff_oracle_and_parity(
    py: ModuleType, c: ModuleType, pair: tuple[dict[int, int], dict[int, int]]
) -> None:
    old, new = pair
    expected = _naive_diff(old, new)
    diffs = []
    for mod in (py, c):
        diff = mod.snapshot_diff(
            mod.DigestSnapshot.from_mapping(old), mod.DigestSnapshot.from_mapping(new)
        )
        assert isinstance(diff, mod.SnapshotDiff)
        assert all(part.typecode == "Q" for part in diff)
        assert tuple(list(part) for part in diff) == expected
        assert (diff.added, diff.changed, diff.removed) == tuple(diff)
        diffs.append(diff)
    assert tuple(diffs[0]) == tuple(diffs[1])


@given(pair=snapshot_pairs())
@SLOW
def test_snapshot_structure_parity(
    py: ModuleType, c: ModuleType, pair: tuple[dict[int, int], dict[int, int]]
) -> None:
    old, _ = pair
    ps = py.DigestSnapshot(list(old), list(old.values()))
    cs = c.DigestSnapshot(array("Q", old), array("Q", old.values()))
    assert ps.keys() == cs.keys() == array("Q", sorted(old))
    assert ps.digests() == cs.digests()
    assert len(ps) == len(cs) == len(old)
    for key in list(old)[:10]:
        assert ps.get(key) == cs.get(key) == old[key]


def test_snapshot_diff_edges(dg: ModuleType) -> None:
    empty = dg.DigestSnapshot([], [])
    some = dg.DigestSnapshot([1, 2, 3], [10, 20, 30])
    other = dg.DigestSnapshot([4, 5], [10, 20])
    q: Callable[..., array[int]] = lambda *v: array("Q", v)  # noqa: E731
    assert tuple(dg.snapshot_diff(empty, empty)) == (q(), q(), q())
    assert tuple(dg.snapshot_diff(some, some)) == (q(), q(), q())
    assert tuple(dg.snapshot_diff(empty, some)) == (q(1, 2, 3), q(), q())
    assert tuple(dg.snapshot_diff(some, empty)) == (q(), q(), q(1, 2, 3))
    assert tuple(dg.snapshot_diff(some, other)) == (q(4, 5), q(), q(1, 2, 3))
    changed = dg.DigestSnapshot([1, 2, 3], [10, 21, 30])
    assert tuple(dg.snapshot_diff(some, changed)) == (q(), q(2), q())
    with pytest.raises(TypeError):
        dg.snapshot_diff(some, None)
    with pytest.raises(TypeError):
        dg.snapshot_diff({1: 2}, some)


def test_snapshot_diff_large(py: ModuleType, c: ModuleType) -> None:
    rng = random.Random(5)
    old = {rng.getrandbits(64): rng.getrandbits(64) for _ in range(50000)}
    new = dict(old)
    for key in rng.sample(sorted(old), 600):
        if key % 2:
            del new[key]
        else:
            new[key] ^= 1
    new.update({rng.getrandbits(64): 7 for _ in range(300)})
    expected = _naive_diff(old, new)
    for mod in (py, c):
        diff = mod.snapshot_diff(
            mod.DigestSnapshot.from_mapping(old), mod.DigestSnapshot.from_mapping(new)
        )
        assert tuple(list(part) for part in diff) == expected
