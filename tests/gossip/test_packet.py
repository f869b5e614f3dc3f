"""The UDP packet pipeline: every combination round-trips; bad packets name their reason."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pysyncer._core import wire
from pysyncer.gossip import messages as m
from pysyncer.gossip.keyring import Keyring
from pysyncer.gossip.packet import PacketError, decode_packet, encode_packet

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "gossip"
KEY = bytes(range(32))
PING = m.Ping(7, "node-a").to_bytes()
ALIVE = m.Alive(3, "node-b", bytes([127, 0, 0, 2]), 7946, b"", bytes([1, 5, 2, 2, 5, 4]))


@pytest.mark.parametrize("keyring", [None, Keyring(KEY)], ids=["plain", "encrypted"])
@pytest.mark.parametrize("label", ["", "dc-east"])
@pytest.mark.parametrize("crc", [False, True])
@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize("count", [1, 3])
def test_round_trip(
    keyring: Keyring | None, label: str, crc: bool, compress: bool, count: int
) -> None:
    parts = [PING] + [ALIVE.to_bytes()] * (count - 1)
    data = encode_packet(parts, keyring=keyring, label=label, crc=crc, compress=compress)
    assert decode_packet(data, keyring=keyring, label=label) == (parts, 0)


def test_compression_only_when_smaller() -> None:
    small = encode_packet([PING], compress=True)
    assert small == PING
    big = [ALIVE.to_bytes()] * 20
    assert len(encode_packet(big, compress=True)) < len(encode_packet(big))


@pytest.mark.parametrize(
    ("data", "kwargs", "reason"),
    [
        (encode_packet([PING], label="a"), {"label": "b"}, "label"),
        (PING, {"label": "b"}, "label"),
        (encode_packet([PING], label="a"), {}, "label"),
        (PING, {"keyring": Keyring(KEY)}, "decrypt"),
        (encode_packet([PING], keyring=Keyring(bytes(16))), {"keyring": Keyring(KEY)}, "decrypt"),
        (wire.add_crc(PING)[:-1] + b"\x00", {}, "crc"),
        (bytes([wire.COMPOUND_MSG]), {}, "compound"),
        (m.Compress(0, b"\xff\xff\xff").to_bytes(), {}, "compress"),
        (m.Compress(1, b"").to_bytes(), {}, "compress"),
        (b"", {}, "empty"),
        (bytes([wire.ENCRYPT_MSG, 0, 0]), {}, "plaintext"),
    ],
    ids=lambda value: value if isinstance(value, str) else "",  # encrypted bytes differ per run
)
def test_bad_packets_name_the_step(data: bytes, kwargs: dict[str, object], reason: str) -> None:
    with pytest.raises(PacketError) as info:
        decode_packet(data, **kwargs)  # type: ignore[arg-type]
    assert info.value.reason == reason


def test_plaintext_accepted_when_not_verifying_incoming() -> None:
    parts, _ = decode_packet(PING, keyring=Keyring(KEY), verify_incoming=False)
    assert parts == [PING]


def test_nesting_is_bounded() -> None:
    data = PING
    for _ in range(6):
        data = wire.add_crc(data)
    with pytest.raises(PacketError) as info:
        decode_packet(data)
    assert info.value.reason == "nesting"


def test_truncated_compound_parts_are_counted() -> None:
    data = wire.build_compound([PING, PING])[:-3]
    parts, truncated = decode_packet(data)
    assert (parts, truncated) == ([PING], 1)


def test_real_serf_packets_flatten() -> None:
    parts, truncated = decode_packet((GOLDEN / "serf_gossip_crc_compressed.bin").read_bytes())
    assert truncated == 0
    assert [p[0] for p in parts] == [
        wire.ALIVE_MSG,
        wire.ALIVE_MSG,
        wire.USER_MSG,
        wire.USER_MSG,
    ]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_never_escape(data: bytes) -> None:
    with contextlib.suppress(PacketError):
        decode_packet(data, keyring=None)
