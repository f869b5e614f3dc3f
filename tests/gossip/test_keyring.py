"""Keyring: key rules, memberlist AES-GCM payload layout and framings, Serf keyring files."""

from __future__ import annotations

import base64
import json
import os
import stat
import struct
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given, settings
from hypothesis import strategies as st

from pysyncer.errors import ConfigError, MalformedDataError, PysyncerError
from pysyncer.gossip.keyring import (
    ENCRYPT_MSG_TYPE,
    MAX_STREAM_PAYLOAD,
    OVERHEAD_V0,
    OVERHEAD_V1,
    Keyring,
    decode_key,
    decrypt_packet,
    decrypt_stream_payload,
    encode_key,
    encrypt_packet,
    encrypt_stream_payload,
    encrypted_length,
    stream_payload_length,
    validate_key,
)

K16 = bytes(range(16))
K24 = bytes(range(100, 124))
K32 = bytes(range(200, 232))
K32B = bytes(32)
# The shape `serf keygen` prints: standard base64 of 32 random bytes, with '=' padding.
SERF_KEYGEN_STYLE = "HUgtcouX/5VbefoEIvVntUQhtx1uX0z0yny+KCNNf/w="


# -- keys ------------------------------------------------------------------------------------


@pytest.mark.parametrize("key", [K16, K24, K32])
def test_valid_key_sizes(key: bytes) -> None:
    assert validate_key(bytearray(key)) == key
    assert decode_key(encode_key(key)) == key


@pytest.mark.parametrize("size", [0, 1, 15, 17, 23, 31, 33, 64])
def test_invalid_key_size_names_the_length(size: int) -> None:
    with pytest.raises(ConfigError, match=f"is {size} bytes; it must be 16, 24 or 32"):
        validate_key(bytes(size))
    if size:
        with pytest.raises(ConfigError, match=f"is {size} bytes"):
            decode_key(base64.b64encode(bytes(size)).decode())


def test_validate_key_type() -> None:
    with pytest.raises(TypeError):
        validate_key("0123456789abcdef")  # type: ignore[arg-type]


def test_decode_serf_keygen_output() -> None:
    key = decode_key(SERF_KEYGEN_STYLE + "\n")
    assert len(key) == 32
    assert encode_key(key) == SERF_KEYGEN_STYLE


@pytest.mark.parametrize(
    "text",
    ["", "   ", "not base64!!", "HUgtcouX/5VbefoEIvVntUQhtx1uX0z0yny+KCNNf/w", "ключ"],
)
def test_decode_key_rejects_bad_text(text: str) -> None:
    with pytest.raises(ConfigError, match="encryption key"):
        decode_key(text)


def test_errors_are_builtin_subclasses() -> None:
    with pytest.raises(ValueError):
        validate_key(b"short")
    with pytest.raises(PysyncerError):
        Keyring([K16]).decrypt(b"")


# -- keyring management (memberlist keyring.go semantics) -------------------------------------


def test_construction_orders_and_deduplicates() -> None:
    ring = Keyring([K16, K24, K16, K32])
    assert ring.keys == (K16, K24, K32)
    assert ring.primary == K16
    assert len(ring) == 3
    assert list(ring) == [K16, K24, K32]
    assert K24 in ring and K32B not in ring
    assert Keyring(K32).keys == (K32,)  # a single key


def test_empty_keyring_is_rejected() -> None:
    with pytest.raises(ConfigError, match="at least one key"):
        Keyring([])


def keys_of(ring: Keyring) -> tuple[bytes, ...]:
    """``ring.keys`` through a call, so mypy does not narrow it between mutations."""
    return ring.keys


def test_add_use_remove() -> None:
    ring = Keyring([K16])
    ring.add(K24)
    ring.add(K32)
    ring.add(K24)  # no-op
    assert keys_of(ring) == (K16, K24, K32)
    ring.use(K32)  # primary first, the others keep their order
    assert keys_of(ring) == (K32, K16, K24)
    ring.remove(K16)
    assert keys_of(ring) == (K32, K24)
    ring.remove(K32B)  # absent: no-op, as in memberlist
    assert keys_of(ring) == (K32, K24)
    with pytest.raises(ConfigError, match="primary"):
        ring.remove(K32)
    with pytest.raises(ConfigError, match="not installed"):
        ring.use(K32B)
    with pytest.raises(ConfigError, match="is 5 bytes"):
        ring.add(b"short")
    assert keys_of(ring) == (K32, K24)


def test_repr_hides_keys() -> None:
    text = repr(Keyring([K16, K32]))
    assert text == "<Keyring 2 key(s)>"
    assert encode_key(K16) not in text


def test_from_base64_errors_name_the_key() -> None:
    assert Keyring.from_base64(SERF_KEYGEN_STYLE).primary == decode_key(SERF_KEYGEN_STYLE)
    assert Keyring.from_base64([encode_key(K16), encode_key(K24)]).keys == (K16, K24)
    with pytest.raises(ConfigError, match="key #2"):
        Keyring.from_base64([encode_key(K16), "@@@"])


# -- payload layout ---------------------------------------------------------------------------


def test_overhead_constants() -> None:
    assert (OVERHEAD_V0, OVERHEAD_V1) == (45, 29)
    for n in range(0, 70):
        assert encrypted_length(1, n) == n + OVERHEAD_V1
        assert n + OVERHEAD_V1 < encrypted_length(0, n) <= n + OVERHEAD_V0
        assert (encrypted_length(0, n) - 29) % 16 == 0
    assert encrypted_length(0, 32) == 32 + OVERHEAD_V0  # a whole block of padding
    with pytest.raises(ValueError):
        encrypted_length(2, 0)


@pytest.mark.parametrize("version", [0, 1])
@pytest.mark.parametrize("key", [K16, K24, K32])
def test_layout_matches_memberlist(version: int, key: bytes) -> None:
    ring = Keyring([key])
    message = b"\x00\x82\xa5SeqNo\x01\xa4Node\xa1a"
    data = ring.encrypt(message, b"aad", version=version)
    assert data[0] == version
    assert len(data) == encrypted_length(version, len(message))
    # Open it with the raw AEAD: [vsn][12-byte nonce][ciphertext+16-byte tag].
    plain = AESGCM(key).decrypt(data[1:13], data[13:], b"aad")
    if version == 0:
        pad = 16 - len(message) % 16  # Go's pkcs7encode
        assert plain == message + bytes([pad]) * pad
    else:
        assert plain == message
    assert ring.decrypt(data, b"aad") == message


def test_known_answer_from_raw_aead() -> None:
    # A payload built by hand, as memberlist's encryptPayload lays it out (fixed nonce).
    nonce = bytes(range(12))
    v1 = b"\x01" + nonce + AESGCM(K32).encrypt(nonce, b"hello", b"")
    v0 = b"\x00" + nonce + AESGCM(K32).encrypt(nonce, b"hello" + b"\x0b" * 11, b"")
    ring = Keyring([K32])
    assert ring.decrypt(v1) == b"hello"
    assert ring.decrypt(v0) == b"hello"
    assert ring.decrypt(memoryview(v1)) == b"hello"


def test_nonces_are_random() -> None:
    ring = Keyring([K16])
    assert ring.encrypt(b"same") != ring.encrypt(b"same")


def test_decrypt_tries_every_key_in_order() -> None:
    old = Keyring([K16])
    new = Keyring([K32, K24, K16])
    assert new.decrypt(old.encrypt(b"msg")) == b"msg"
    assert Keyring([K24]).decrypt(Keyring([K24, K16]).encrypt(b"x")) == b"x"
    with pytest.raises(MalformedDataError, match="no installed key"):
        Keyring([K24, K32]).decrypt(old.encrypt(b"msg"))


def test_decrypt_rejects_bad_input() -> None:
    ring = Keyring([K16])
    good = ring.encrypt(b"payload")
    with pytest.raises(MalformedDataError, match="empty"):
        ring.decrypt(b"")
    with pytest.raises(MalformedDataError, match="unsupported encryption version 2"):
        ring.decrypt(b"\x02" + good[1:])
    with pytest.raises(MalformedDataError, match="too small"):
        ring.decrypt(good[:28])
    with pytest.raises(MalformedDataError, match="too small"):
        ring.decrypt(b"\x00" + bytes(43))  # version 0 needs 45
    tampered = bytearray(good)
    tampered[20] ^= 1
    with pytest.raises(MalformedDataError, match="no installed key"):
        ring.decrypt(bytes(tampered))
    with pytest.raises(MalformedDataError, match="no installed key"):
        ring.decrypt(good, b"other aad")
    # The version byte is outside the AEAD (as in memberlist): flipping 1 -> 0 on a long
    # enough payload decrypts, and then the padding check rejects it.
    long_v1 = ring.encrypt(b"payload" * 8)
    with pytest.raises(MalformedDataError, match="padding"):
        ring.decrypt(b"\x00" + long_v1[1:])
    with pytest.raises(ValueError, match="unknown encryption version"):
        ring.encrypt(b"x", version=2)


def test_bad_version_0_padding_is_rejected() -> None:
    nonce = bytes(12)
    for padded in (
        b"abc" + bytes(13),
        b"abc" + bytes(12) + b"\x11",
        b"abcd" * 3 + b"\x01\x02\x03\x03",
    ):
        data = b"\x00" + nonce + AESGCM(K16).encrypt(nonce, padded, b"")
        with pytest.raises(MalformedDataError, match="padding"):
            Keyring([K16]).decrypt(data)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_garbage_only_raises_malformed(data: bytes) -> None:
    with pytest.raises(MalformedDataError):
        Keyring([K16, K32]).decrypt(data)


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=2000), st.sampled_from([0, 1]), st.binary(max_size=255))
def test_round_trip(message: bytes, version: int, label: bytes) -> None:
    ring = Keyring([K24, K16])
    assert ring.decrypt(ring.encrypt(message, label, version), label) == message
    packet = encrypt_packet(ring, message, label, version)
    assert decrypt_packet(ring, packet, label) == message
    frame = encrypt_stream_payload(ring, message, label, version)
    assert decrypt_stream_payload(ring, frame, label) == message


# -- framings ---------------------------------------------------------------------------------


def test_packet_aad_is_the_label() -> None:
    ring = Keyring([K16])
    packet = encrypt_packet(ring, b"\x00ping", "dc1")
    assert ring.decrypt(packet, b"dc1") == b"\x00ping"
    assert decrypt_packet(ring, packet, b"dc1") == b"\x00ping"
    with pytest.raises(MalformedDataError):
        decrypt_packet(ring, packet)  # unlabelled receiver
    assert decrypt_packet(ring, encrypt_packet(ring, b"x")) == ring.decrypt(ring.encrypt(b"x"))
    with pytest.raises(ConfigError, match="256 bytes"):
        encrypt_packet(ring, b"x", "l" * 256)


@pytest.mark.parametrize("version", [0, 1])
def test_stream_frame_layout(version: int) -> None:
    ring = Keyring([K32])
    body = b"\x06" + bytes(100)
    frame = encrypt_stream_payload(ring, body, "lbl", version)
    msg_type, length = struct.unpack(">BI", frame[:5])
    assert msg_type == ENCRYPT_MSG_TYPE == 10
    assert length == len(frame) - 5 == encrypted_length(version, len(body))
    assert frame[5] == version  # the version byte is inside the counted payload
    # AAD = the 5 header bytes + label, as memberlist's encryptLocalState builds it.
    assert ring.decrypt(frame[5:], frame[:5] + b"lbl") == body
    assert stream_payload_length(frame[:5]) == length
    assert decrypt_stream_payload(ring, frame, "lbl") == body
    with pytest.raises(MalformedDataError):
        decrypt_stream_payload(ring, frame, "")


def test_stream_frame_errors() -> None:
    ring = Keyring([K16])
    frame = encrypt_stream_payload(ring, b"\x06abc")
    with pytest.raises(MalformedDataError, match="not 10"):
        stream_payload_length(b"\x06" + frame[1:5])
    with pytest.raises(MalformedDataError, match="5 expected"):
        stream_payload_length(frame[:4])
    with pytest.raises(MalformedDataError, match="exceeds"):
        stream_payload_length(struct.pack(">BI", 10, MAX_STREAM_PAYLOAD + 1))
    assert stream_payload_length(struct.pack(">BI", 10, MAX_STREAM_PAYLOAD)) == MAX_STREAM_PAYLOAD
    with pytest.raises(MalformedDataError, match="carries"):
        decrypt_stream_payload(ring, frame + b"x")
    with pytest.raises(MalformedDataError, match="carries"):
        decrypt_stream_payload(ring, frame[:-1])
    # The length is authenticated: a forged header with a matching body length fails.
    forged = struct.pack(">BI", 10, len(frame) - 4) + frame[5:] + b"\x00"
    with pytest.raises(MalformedDataError, match="no installed key"):
        decrypt_stream_payload(ring, forged)


# -- Serf keyring file ------------------------------------------------------------------------


def test_save_writes_serf_format_atomically(tmp_path: Path) -> None:
    path = tmp_path / "keyring"
    path.write_text("old")
    ring = Keyring([K32, K16])
    ring.save(path)
    # Go's json.MarshalIndent(keys, "", "  "): no trailing newline.
    assert path.read_text() == f'[\n  "{encode_key(K32)}",\n  "{encode_key(K16)}"\n]'
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keyring"]  # no temporary left
    assert Keyring.load(path).keys == (K32, K16)
    assert Keyring.load(str(path)).primary == K32


def test_load_accepts_serf_written_files(tmp_path: Path) -> None:
    path = tmp_path / "keyring"
    path.write_text(json.dumps([SERF_KEYGEN_STYLE, encode_key(K16), SERF_KEYGEN_STYLE]))
    ring = Keyring.load(path)
    assert ring.keys == (decode_key(SERF_KEYGEN_STYLE), K16)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "not valid JSON"),
        ("{", "not valid JSON"),
        ('{"a": 1}', "JSON list of base64 strings"),
        ("[1, 2]", "JSON list of base64 strings"),
        ("[]", "contains no keys"),
        ('["@@@"]', "key #1"),
        (f'["{SERF_KEYGEN_STYLE}", "AAAA"]', "key #2: encryption key is 3 bytes"),
    ],
)
def test_load_errors(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "keyring"
    path.write_text(content)
    with pytest.raises(ConfigError, match=message):
        Keyring.load(path)


def test_load_and_save_io_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read keyring file"):
        Keyring.load(tmp_path / "missing")
    with pytest.raises(ConfigError, match="cannot write keyring file"):
        Keyring([K16]).save(tmp_path / "no" / "such" / "dir" / "keyring")
    assert not os.path.exists(tmp_path / "no")
