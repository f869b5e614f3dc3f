"""memberlist/Serf wire codec: go-msgpack bytes, framing, golden packets, hostile input.

Both implementations run every test; they must give identical bytes, identical
objects and identical exception types. Golden packets come from a real Serf agent or
from the documented layout (tests/golden/gossip/README.md).
"""

from __future__ import annotations

import math
import struct
import zlib
from pathlib import Path
from types import ModuleType
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pysyncer.errors import MalformedDataError
from tests.conftest import load_core_module

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "gossip"
GOLDEN_FILES = sorted(p.name for p in GOLDEN.glob("*.bin"))
SERF_TYPE_RELAY = 9


@pytest.fixture(params=["py", "c"])
def wire(request: pytest.FixtureRequest) -> ModuleType:
    return load_core_module("wire", request.param)


def _both() -> tuple[ModuleType, ModuleType]:
    return load_core_module("wire", "py"), load_core_module("wire", "c")


def _outcome(function: Any, *args: Any, **kwargs: Any) -> tuple[str, Any]:
    """("ok", result) or ("error", exception type name); other exceptions propagate."""
    try:
        return "ok", function(*args, **kwargs)
    except MalformedDataError as exc:
        return "error", type(exc).__name__


def _same(a: Any, b: Any) -> bool:
    """Equality that treats NaN as equal to NaN."""
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    if type(a) is not type(b):
        return False
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    return bool(a == b)


# ------------------------------------------------------------------- msgpack bytes


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0, "00"),
        (127, "7f"),
        (128, "cc80"),
        (255, "ccff"),
        (256, "cd0100"),
        (65535, "cdffff"),
        (65536, "ce00010000"),
        (2**32, "cf0000000100000000"),
        (2**64 - 1, "cfffffffffffffffff"),
        (-1, "ff"),
        (-32, "e0"),
        (-33, "d0df"),
        (-128, "d080"),
        (-129, "d1ff7f"),
        (-(2**15) - 1, "d2ffff7fff"),
        (-(2**31) - 1, "d3ffffffff7fffffff"),
        (None, "c0"),
        (True, "c3"),
        (False, "c2"),
        (1.5, "cb3ff8000000000000"),
        ("", "a0"),
        ("a" * 31, "bf" + "61" * 31),
        ("a" * 32, "da0020" + "61" * 32),
        (b"\x00\xff", "a200ff"),
        (bytearray(b"ab"), "a26162"),
        (memoryview(b"ab"), "a26162"),
        ([1, [2]], "920191" + "02"),
        ((1,), "9101"),
        ({"Vsn": b"\x01\x05\x02\x02\x05\x04"}, "81a356736ea6010502020504"),
    ],
)
def test_pack_matches_go_msgpack_v05(wire: ModuleType, value: object, expected: str) -> None:
    assert wire.pack(value).hex() == expected


def test_pack_long_strings_use_raw16_and_raw32_never_str8_or_bin(wire: ModuleType) -> None:
    assert wire.pack("x" * 255)[:3] == b"\xda\x00\xff"
    assert wire.pack(b"x" * 70000)[:5] == b"\xdb\x00\x01\x11\x70"
    assert wire.pack(list(range(16)))[:3] == b"\xdc\x00\x10"
    assert wire.pack({str(i): i for i in range(70000)})[:5] == b"\xdf\x00\x01\x11\x70"


def test_pack_agrees_with_msgpack_package(wire: ModuleType) -> None:
    value = {"a": [1, -5, 300, -70000, 2**40, "s" * 40, b"b" * 300, None, True, 0.25]}
    assert wire.pack(value) == msgpack.packb(value, use_bin_type=False)


@pytest.mark.parametrize(
    ("value", "error"),
    [
        ({1, 2}, TypeError),
        ({1: 2}, TypeError),
        (object(), TypeError),
        (2**64, OverflowError),
        (-(2**63) - 1, OverflowError),
        ("\ud800", UnicodeEncodeError),
    ],
)
def test_pack_refuses_what_go_cannot_hold(
    wire: ModuleType, value: object, error: type[Exception]
) -> None:
    with pytest.raises(error):
        wire.pack(value)


def test_pack_nesting_limit(wire: ModuleType) -> None:
    nested: list[Any] = []
    for _ in range(wire.PACK_MAX_DEPTH - 1):
        nested = [nested]
    assert len(wire.pack(nested)) == wire.PACK_MAX_DEPTH
    with pytest.raises(ValueError):
        wire.pack([nested])


def test_unpack_reads_new_spec_and_returns_bytes(wire: ModuleType) -> None:
    new = msgpack.packb({"k": ["v" * 40, b"\x00"]}, use_bin_type=True)
    assert wire.unpack(new) == {b"k": [b"v" * 40, b"\x00"]}
    assert wire.unpack(b"\xca\x3f\xc0\x00\x00") == 1.5
    assert wire.unpack(b"\xd3\xff\xff\xff\xff\xff\xff\xff\xfe") == -2


def test_unpack_from_walks_a_stream(wire: ModuleType) -> None:
    data = wire.pack({"a": 1}) + wire.pack([2]) + b"\x03"
    first, pos = wire.unpack_from(data)
    second, pos = wire.unpack_from(data, pos)
    third, pos = wire.unpack_from(bytearray(data), pos)
    assert (first, second, third, pos) == ({b"a": 1}, [2], 3, len(data))
    with pytest.raises(wire.IncompleteDataError):
        wire.unpack_from(data, len(data))
    with pytest.raises(ValueError):
        wire.unpack_from(data, len(data) + 1)


@pytest.mark.parametrize(
    ("data", "incomplete"),
    [
        (b"", True),
        (b"\x92\x01", True),
        (b"\xdb\xff\xff\xff\xff", True),
        (b"\xdd\xff\xff\xff\xff", True),
        (b"\xdf\x7f\xff\xff\xff\x00", True),
        (b"\xc1", False),
        (b"\xd4\x01\x00", False),
        (b"\xc7\x01\x05\x00", False),
        (b"\x81\x01\x02", False),
        (b"\x81\x90\x02", False),
        (b"\x01\x02", False),
        (b"\x91" * 33 + b"\x00", False),
    ],
)
def test_unpack_rejects_bad_bytes(wire: ModuleType, data: bytes, incomplete: bool) -> None:
    expected = wire.IncompleteDataError if incomplete else MalformedDataError
    with pytest.raises(expected) as info:
        wire.unpack(data)
    assert incomplete or not isinstance(info.value, wire.IncompleteDataError)


def test_unpack_limits_are_configurable(wire: ModuleType) -> None:
    nested = b"\x91" * 40 + b"\x00"
    assert wire.unpack(nested, max_depth=40) is not None
    with pytest.raises(MalformedDataError):
        wire.unpack(nested, max_depth=39)
    with pytest.raises(MalformedDataError):
        wire.unpack(wire.pack("x" * 100), max_size=50)


# ------------------------------------------------------------------------- framing


def test_compound_round_trip_and_truncation(wire: ModuleType) -> None:
    parts = [b"\x00abc", b"", b"\x05" * 300]
    packet = wire.build_compound(parts)
    assert packet[:8] == b"\x07\x03\x00\x04\x00\x00\x01\x2c"
    assert wire.split_compound(packet) == (parts, 0)
    assert wire.split_compound(packet[:-1]) == (parts[:2], 1)
    assert wire.split_compound(packet[:9]) == ([], 3)
    for bad in (b"", b"\x07", b"\x07\x02\x00", b"\x08\x00"):
        with pytest.raises(MalformedDataError):
            wire.split_compound(bad)
    with pytest.raises(ValueError):
        wire.build_compound([b""] * 256)
    with pytest.raises(ValueError):
        wire.build_compound([b"x" * 65536])


def test_label_and_crc(wire: ModuleType) -> None:
    packet = b"\x00\x80"
    labeled = wire.add_label(packet, "pool-a")
    assert labeled == b"\xf4\x06pool-a" + packet
    assert wire.strip_label(labeled) == (packet, "pool-a")
    assert wire.strip_label(packet) == (packet, "")
    assert wire.add_label(packet, "") == packet
    with pytest.raises(ValueError):
        wire.add_label(packet, "x" * 256)
    with pytest.raises(MalformedDataError):
        wire.strip_label(b"\xf4\x00")
    with pytest.raises(wire.IncompleteDataError):
        wire.strip_label(b"\xf4\x05abc")
    checked = wire.add_crc(packet)
    assert checked == b"\x0c" + struct.pack(">I", zlib.crc32(packet)) + packet
    assert wire.verify_crc(checked) == packet
    assert wire.verify_crc(packet) == packet
    with pytest.raises(MalformedDataError):
        wire.verify_crc(checked[:-1] + b"\x81")
    with pytest.raises(MalformedDataError):
        wire.verify_crc(b"\x0c\x00\x00")


def test_tags(wire: ModuleType) -> None:
    tags = {"role": "web", "dc": "eu-1"}
    meta = wire.encode_tags(tags)
    assert meta == b"\xff\x82\xa4role\xa3web\xa2dc\xa4eu-1"
    assert wire.decode_tags(meta) == tags
    assert wire.decode_tags(b"lb") == {"role": "lb"}
    with pytest.raises(ValueError):
        wire.encode_tags({"k": "v" * 600})
    for bad in (b"\xff\x81\xa1k\x01", b"\xff\x91\x01", b"\xff" + b"\x80" * 600, b"\xff\x81"):
        with pytest.raises(MalformedDataError):
            wire.decode_tags(bad)


def test_push_pull_stream(wire: ModuleType) -> None:
    nodes = [{"Name": "n1", "Port": 7946}, {"Name": "n2", "Port": 7947}]
    body = wire.encode_push_pull(nodes, b"serf", True)
    assert body[:1] == b"\x06"
    join, decoded, state, end = wire.decode_push_pull(body + b"next")
    assert (join, state, end) == (True, b"serf", len(body))
    assert decoded == [{b"Name": b"n1", b"Port": 7946}, {b"Name": b"n2", b"Port": 7947}]
    for cut in range(len(body)):
        with pytest.raises(wire.IncompleteDataError):
            wire.decode_push_pull(body[:cut])
    huge = b"\x06" + wire.pack({"Join": False, "Nodes": 2**21, "UserStateLen": 0})
    with pytest.raises(MalformedDataError):
        wire.decode_push_pull(huge)


def test_user_stream(wire: ModuleType) -> None:
    body = wire.encode_user_stream(b"\x03hello")
    assert body == b"\x08\x81\xaaUserMsgLen\x06\x03hello"
    assert wire.decode_user_stream(body) == (b"\x03hello", len(body))
    with pytest.raises(wire.IncompleteDataError):
        wire.decode_user_stream(body[:-1])
    with pytest.raises(MalformedDataError):
        wire.decode_user_stream(b"\x08" + wire.pack({"UserMsgLen": -1}))


# ------------------------------------------------------------------ golden packets


def _reencode(wire: ModuleType, data: bytes) -> bytes:
    """Decode one packet layer by layer and encode it again with ``wire``."""
    kind = data[0]
    if kind == wire.HAS_LABEL_MSG:
        rest, label = wire.strip_label(data)
        return bytes(wire.add_label(_reencode(wire, rest), label))
    if kind == wire.HAS_CRC_MSG:
        return bytes(wire.add_crc(_reencode(wire, wire.verify_crc(data))))
    if kind == wire.COMPOUND_MSG:
        parts, truncated = wire.split_compound(data)
        assert truncated == 0
        return bytes(wire.build_compound([_reencode(wire, part) for part in parts]))
    if kind == wire.PUSH_PULL_MSG:
        join, nodes, state, end = wire.decode_push_pull(data)
        assert end == len(data)
        return bytes(wire.encode_push_pull(nodes, _reencode_serf(wire, state), join))
    if kind == wire.USER_MSG and data[1:2] == b"\x81":  # TCP user stream
        payload, end = wire.decode_user_stream(data)
        assert end == len(data)
        return bytes(wire.encode_user_stream(_reencode_serf(wire, payload)))
    if kind == wire.USER_MSG:
        return bytes((kind,)) + _reencode_serf(wire, data[1:])
    msg_type, obj = wire.decode_message(data)
    return bytes(wire.encode_message(msg_type, obj))


def _reencode_serf(wire: ModuleType, data: bytes) -> bytes:
    if data[0] == SERF_TYPE_RELAY:
        header, end = wire.unpack_from(data, 1)
        return bytes(wire.pack(header)).join((b"\x09", _reencode_serf(wire, data[end:])))
    msg_type, obj = wire.decode_message(data)
    return bytes(wire.encode_message(msg_type, obj))


@pytest.mark.parametrize("name", GOLDEN_FILES)
def test_golden_packets_reencode_byte_for_byte(wire: ModuleType, name: str) -> None:
    data = (GOLDEN / name).read_bytes()
    if name.startswith("layout_serf_"):
        assert _reencode_serf(wire, data) == data
    else:
        assert _reencode(wire, data) == data


def test_real_agent_ack_payload_and_alive(wire: ModuleType) -> None:
    """The Serf agent's ack carries its Vivaldi coordinate; its alive carries its tags."""
    parts, _ = wire.split_compound((GOLDEN / "serf_ack_compound.bin").read_bytes())
    ack_type, ack = wire.decode_message(parts[0])
    alive_type, alive = wire.decode_message(parts[1])
    assert (ack_type, ack[b"SeqNo"]) == (wire.ACK_RESP_MSG, 42)
    coordinate = wire.unpack(ack[b"Payload"][1:])
    assert ack[b"Payload"][0] == 1 and len(coordinate[b"Vec"]) == 8
    assert alive_type == wire.ALIVE_MSG
    assert wire.decode_tags(alive[b"Meta"]) == {"role": "golden"}
    assert list(alive) == sorted(alive)  # go-msgpack v0.5 writes struct fields by name


# ------------------------------------------------------------------ hostile input

GOLDEN_DATA = [(GOLDEN / name).read_bytes() for name in GOLDEN_FILES]

_DECODERS: list[tuple[str, dict[str, Any]]] = [
    ("unpack", {}),
    ("decode_message", {}),
    ("split_compound", {}),
    ("strip_label", {}),
    ("verify_crc", {}),
    ("decode_tags", {}),
    ("decode_push_pull", {}),
    ("decode_user_stream", {}),
    ("unpack_from", {"max_depth": 4}),
]


def _check_all_decoders(data: bytes) -> None:
    twin, compiled = _both()
    for name, kwargs in _DECODERS:
        a = _outcome(getattr(twin, name), data, **kwargs)
        b = _outcome(getattr(compiled, name), data, **kwargs)
        assert a[0] == b[0], (name, data.hex(), a, b)
        assert _same(a[1], b[1]), (name, data.hex(), a, b)


_FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_FAST
@given(st.binary(max_size=200))
def test_random_bytes_only_raise_malformed(data: bytes) -> None:
    _check_all_decoders(data)


@_FAST
@given(st.sampled_from(GOLDEN_DATA), st.data())
def test_truncated_and_flipped_golden_packets(packet: bytes, draw: st.DataObject) -> None:
    cut = draw.draw(st.integers(0, len(packet)))
    _check_all_decoders(packet[:cut])
    position = draw.draw(st.integers(0, len(packet) - 1))
    bit = draw.draw(st.integers(0, 7))
    flipped = bytearray(packet)
    flipped[position] ^= 1 << bit
    _check_all_decoders(bytes(flipped))
    _check_all_decoders(bytes(flipped[1:]))  # the body without its type byte


_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=40)
    | st.binary(max_size=40),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5)
    ),
    max_leaves=20,
)


@_FAST
@given(_VALUES)
def test_pack_parity_and_round_trip(value: object) -> None:
    twin, compiled = _both()
    packed = twin.pack(value)
    assert compiled.pack(value) == packed
    assert packed == msgpack.packb(value, use_bin_type=False)
    expected = msgpack.unpackb(packed, raw=True, strict_map_key=False)
    assert _same(twin.unpack(packed), expected)
    assert _same(compiled.unpack(packed), expected)
