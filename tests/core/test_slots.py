"""pysyncer._core slots: Redis Cluster hash slots (CRC16/XMODEM, hash tags, 16384 slots).

Every behaviour test runs against both implementations (the ``slots`` fixture); parity
tests load both. Oracles: the golden values of Redis' cluster specification and a
bit-by-bit CRC16 written here from the polynomial.
"""

from __future__ import annotations

import threading
from array import array
from collections.abc import Callable, Iterable, Iterator
from types import ModuleType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import load_core_module

FAST = settings(max_examples=300, deadline=None)

# Text that exercises hash tags: braces often, ASCII, multi-byte UTF-8, NUL.
BRACES_TEXT = st.one_of(
    st.text(alphabet=st.sampled_from("{{{}}}ab\x00é漢😀"), max_size=24),
    st.text(max_size=40),
)
BRACES_BYTES = st.one_of(
    st.lists(st.sampled_from(b"{}{}ab\x00\xff\x80"), max_size=24).map(bytes),
    st.binary(max_size=40),
)
KEY = BRACES_TEXT | BRACES_BYTES
NOT_KEYS = [bytearray(b"foo"), memoryview(b"foo"), 12182, 1.5, None, ["foo"], ("foo",), object()]


@pytest.fixture(params=["py", "c"], ids=["py", "c"], scope="module")
def slots(request: pytest.FixtureRequest) -> ModuleType:
    """The slots module, once per implementation."""
    return load_core_module("slots", request.param)


@pytest.fixture(scope="module")
def both() -> tuple[ModuleType, ModuleType]:
    """(twin, compiled) for parity tests."""
    return load_core_module("slots", "py"), load_core_module("slots", "c")


def reference_crc16(data: bytes) -> int:
    """CRC16/XMODEM one bit at a time, straight from the definition."""
    crc = 0
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else crc << 1
            crc &= 0xFFFF
    return crc


def reference_slot(key: bytes) -> int:
    """Redis Cluster's keyHashSlot(), transcribed from the specification's prose."""
    start = key.find(b"{")
    if start != -1:
        end = key.find(b"}", start + 1)
        if end != -1 and end != start + 1:
            key = key[start + 1 : end]
    return reference_crc16(key) % 16384


# --- golden values -------------------------------------------------------------------


def test_slot_count(slots: ModuleType) -> None:
    assert slots.SLOT_COUNT == 16384


def test_crc16_check_value(slots: ModuleType) -> None:
    assert slots.crc16(b"123456789") == 0x31C3
    assert slots.crc16(b"") == 0


@pytest.mark.parametrize("size", [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 15, 16, 17, 31, 32, 33, 100])
def test_crc16_matches_bitwise_reference_at_every_length(slots: ModuleType, size: int) -> None:
    data = bytes((i * 37 + 11) & 0xFF for i in range(size))
    assert slots.crc16(data) == reference_crc16(data)


def test_foo_slot_from_redis_docs(slots: ModuleType) -> None:
    assert slots.key_slot("foo") == 12182
    assert slots.key_slot(b"foo") == 12182


def test_hash_tags_share_a_slot(slots: ModuleType) -> None:
    user = slots.key_slot("user1000")
    assert slots.key_slot("{user1000}.following") == user
    assert slots.key_slot("{user1000}.followers") == user


@pytest.mark.parametrize(
    ("key", "hashed"),
    [
        ("foo{}{bar}", "foo{}{bar}"),  # empty first tag: the whole key
        ("foo{{bar}}zap", "{bar"),  # first '{', first '}' after it
        ("foo{bar}{zap}", "bar"),  # only the first tag
        ("{}", "{}"),
        ("{", "{"),
        ("}", "}"),
        ("", ""),
        ("}{", "}{"),
        ("}{a}", "a"),
        ("a{b", "a{b"),
        ("{a}{b}", "a"),
        ("{{}}", "{"),
        ("{}a{b}", "{}a{b}"),
        ("é{漢字}x", "漢字"),
    ],
)
def test_hash_tag_rules_from_redis_docs(slots: ModuleType, key: str, hashed: str) -> None:
    expected = reference_crc16(hashed.encode()) % 16384
    assert slots.key_slot(key) == expected
    assert slots.key_slot(key.encode()) == expected


def test_str_is_hashed_as_utf8(slots: ModuleType) -> None:
    for key in ["é", "漢字", "😀", "a\x00b", "\x7f\x80", "{é}x", "naïve/{svc}"]:
        assert slots.key_slot(key) == slots.key_slot(key.encode("utf-8"))
        assert slots.key_slot(key) == reference_slot(key.encode("utf-8"))


def test_long_keys(slots: ModuleType) -> None:
    key = "x" * 10_000 + "{tag}" + "y" * 999
    assert slots.key_slot(key) == slots.key_slot("tag")
    assert slots.key_slot("z" * 4097) == reference_slot(b"z" * 4097)


def test_subclasses_hash_their_value(slots: ModuleType) -> None:
    class Name(str):
        def encode(self, *args: object, **kwargs: object) -> bytes:
            return b"not the key"

    class Raw(bytes):
        def find(self, *args: object, **kwargs: object) -> int:
            return -1

    assert slots.key_slot(Name("{user1000}x")) == slots.key_slot("user1000")
    assert slots.key_slot(Raw(b"{user1000}x")) == slots.key_slot("user1000")
    assert slots.key_slots([Name("foo"), Raw(b"foo")]).tolist() == [12182, 12182]
    assert slots.crc16(Raw(b"123456789")) == 0x31C3


# --- key_slots -----------------------------------------------------------------------


def test_key_slots_returns_uint16_array(slots: ModuleType) -> None:
    keys = ["foo", b"bar", "{user1000}.following", "é", "", "{}"]
    result = slots.key_slots(keys)
    assert isinstance(result, array)
    assert result.typecode == "H"
    assert result.tolist() == [slots.key_slot(k) for k in keys]


def test_key_slots_empty(slots: ModuleType) -> None:
    empties: list[Iterable[str]] = [[], (), iter([])]
    for empty in empties:
        result = slots.key_slots(empty)
        assert result.typecode == "H"
        assert len(result) == 0


def test_key_slots_accepts_list_tuple_and_iterables(slots: ModuleType) -> None:
    def generate() -> Iterator[str]:
        for i in range(1000):
            yield f"default/app-{i % 50}/service-{i}"

    expected = [slots.key_slot(k) for k in generate()]
    assert slots.key_slots(list(generate())).tolist() == expected
    assert slots.key_slots(tuple(generate())).tolist() == expected
    assert slots.key_slots(generate()).tolist() == expected


@pytest.mark.parametrize("count", [1, 2, 3, 255, 256, 257, 4095, 4096, 4097, 10_001])
def test_key_slots_across_chunk_sizes(slots: ModuleType, count: int) -> None:
    keys: list[str | bytes] = [
        f"{{app-{i % 7}}}/svc-{i}" if i % 3 else f"default/app/svc-{i}".encode()
        for i in range(count)
    ]
    assert slots.key_slots(keys).tolist() == [reference_slot(_raw(k)) for k in keys]


def test_key_slots_rejects_a_single_key(slots: ModuleType) -> None:
    for single in ["foo", b"foo"]:
        with pytest.raises(TypeError):
            slots.key_slots(single)


def test_key_slots_from_threads(slots: ModuleType) -> None:
    keys = [f"{{tenant-{i % 13}}}/svc-{i}" for i in range(20_000)]
    expected = slots.key_slots(keys)
    results: list[bool] = []

    def work() -> None:
        results.extend(slots.key_slots(keys) == expected for _ in range(5))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [True] * 20


def test_key_slots_survives_a_list_mutated_meanwhile(slots: ModuleType) -> None:
    # The compiled module hashes without the GIL: another thread may then shrink or grow
    # the list. Either the list's change is reported or the result is sound; no crash.
    keys = [f"default/app-{i % 50}/service-{i}" for i in range(40_000)]
    stop = threading.Event()

    def mutate() -> None:
        while not stop.is_set():
            del keys[-3000:]
            keys.extend(f"{{new}}-{i}" for i in range(3000))

    mutator = threading.Thread(target=mutate)
    mutator.start()
    try:
        for _ in range(30):
            try:
                result = slots.key_slots(keys)
            except RuntimeError as exc:
                assert "changed size" in str(exc)
                continue
            assert result.typecode == "H"
            assert len(result) > 30_000
            assert max(result) < 16384
    finally:
        stop.set()
        mutator.join()


def _raw(key: str | bytes) -> bytes:
    return key.encode() if isinstance(key, str) else key


# --- errors --------------------------------------------------------------------------


@pytest.mark.parametrize("bad", NOT_KEYS, ids=lambda bad: type(bad).__name__)
def test_non_keys_raise_type_error(slots: ModuleType, bad: object) -> None:
    with pytest.raises(TypeError):
        slots.key_slot(bad)
    with pytest.raises(TypeError):
        slots.key_slots(["ok", bad])
    with pytest.raises(TypeError):
        slots.key_slots([b"ok", bad])
    with pytest.raises(TypeError):
        slots.crc16(bad)


def test_crc16_takes_bytes_only(slots: ModuleType) -> None:
    with pytest.raises(TypeError):
        slots.crc16("123456789")


def test_lone_surrogates_raise_unicode_encode_error(slots: ModuleType) -> None:
    for key in ["\ud800", "a{\udfff}b", "\udcff"]:
        with pytest.raises(UnicodeEncodeError):
            slots.key_slot(key)
        with pytest.raises(UnicodeEncodeError):
            slots.key_slots(["ok", b"ok", key])


def test_key_slots_needs_an_iterable(slots: ModuleType) -> None:
    with pytest.raises(TypeError):
        slots.key_slots(12)
    with pytest.raises(TypeError):
        slots.key_slots(None)


# --- parity (hypothesis) -------------------------------------------------------------


@FAST
@given(data=st.binary(max_size=64))
def test_parity_crc16(both: tuple[ModuleType, ModuleType], data: bytes) -> None:
    twin, compiled = both
    assert compiled.crc16(data) == twin.crc16(data) == reference_crc16(data)


@FAST
@given(key=KEY)
def test_parity_key_slot(both: tuple[ModuleType, ModuleType], key: str | bytes) -> None:
    twin, compiled = both
    assert compiled.key_slot(key) == twin.key_slot(key) == reference_slot(_raw(key))


@FAST
@given(keys=st.lists(KEY, max_size=300))
def test_parity_key_slots(both: tuple[ModuleType, ModuleType], keys: list[str | bytes]) -> None:
    twin, compiled = both
    expected = [reference_slot(_raw(k)) for k in keys]
    assert compiled.key_slots(keys).tolist() == expected
    assert twin.key_slots(keys).tolist() == expected
    assert compiled.key_slots(tuple(keys)) == twin.key_slots(iter(keys))


def _memoryview(data: bytes) -> memoryview:
    return memoryview(data)


def _error_type(function: Callable[[object], object], argument: object) -> type | None:
    try:
        function(argument)
    except Exception as exc:
        return type(exc)
    return None


@FAST
@given(
    value=st.one_of(
        st.text(alphabet=st.sampled_from("ab{}\ud800\udfff"), max_size=8),
        st.binary(max_size=8),
        st.binary(max_size=8).map(bytearray),
        st.binary(max_size=8).map(_memoryview),
        st.integers(),
        st.none(),
        st.floats(allow_nan=False),
        st.lists(st.text(max_size=3), max_size=3),
    )
)
def test_parity_error_types(both: tuple[ModuleType, ModuleType], value: object) -> None:
    twin, compiled = both
    for name in ["crc16", "key_slot"]:
        assert _error_type(getattr(compiled, name), value) is _error_type(
            getattr(twin, name), value
        )
    for keys in [[value], ["ok", value], [b"ok", value], value]:
        assert _error_type(compiled.key_slots, keys) is _error_type(twin.key_slots, keys)


def test_public_api_is_identical(both: tuple[ModuleType, ModuleType]) -> None:
    twin, compiled = both
    assert twin.__all__ == compiled.__all__ == ["SLOT_COUNT", "crc16", "key_slot", "key_slots"]
    assert twin.SLOT_COUNT == compiled.SLOT_COUNT
