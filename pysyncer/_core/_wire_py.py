"""memberlist/Serf wire codec, pure Python (twin of :mod:`pysyncer._core._wire_c`).

Owns the bytes of the gossip protocol, not its meaning:

* old-spec MessagePack exactly as hashicorp/go-msgpack (v0.5, as in Serf 0.9) writes it:
  :func:`pack` writes ``str`` and ``bytes`` both as legacy raw (fixraw/raw16/raw32,
  never bin, never str8), non-negative ints in the smallest unsigned form and negative
  ints in the smallest signed form, maps in the caller's key order (go-msgpack v0.5
  writes struct fields sorted by name, v2 in declaration order: pass what you need);
  :func:`unpack` / :func:`unpack_from` read old and new spec, return every string
  as ``bytes`` and check every length against the bytes present before allocating;
* memberlist framing: message type ids, type byte + body, compound packets, label and
  CRC prefixes, push/pull and user-message TCP streams, and Serf's tag encoding.

Bad input bytes raise :class:`~pysyncer.errors.MalformedDataError` and nothing else;
input that stops before its end raises the subclass :class:`IncompleteDataError`, so a
stream reader knows to wait for more bytes. Caller mistakes (an unpackable type, a
label too long) raise ``TypeError`` / ``ValueError`` / ``OverflowError``.
"""

from __future__ import annotations

import struct
from binascii import crc32
from collections.abc import Mapping, Sequence
from typing import Any

from pysyncer.errors import MalformedDataError

__all__ = [
    "ACK_RESP_MSG",
    "ALIVE_MSG",
    "COMPOUND_MSG",
    "COMPRESS_MSG",
    "DEAD_MSG",
    "DEFAULT_MAX_DEPTH",
    "DEFAULT_MAX_SIZE",
    "ENCRYPT_MSG",
    "ERR_MSG",
    "HAS_CRC_MSG",
    "HAS_LABEL_MSG",
    "INDIRECT_PING_MSG",
    "LABEL_MAX_SIZE",
    "MAX_COMPOUND_PARTS",
    "MAX_PUSH_STATE_BYTES",
    "MAX_PUSH_STATE_NODES",
    "MAX_USER_MSG_BYTES",
    "META_MAX_SIZE",
    "NACK_RESP_MSG",
    "PACK_MAX_DEPTH",
    "PING_MSG",
    "PROTOCOL_VERSION_2_COMPATIBLE",
    "PROTOCOL_VERSION_MAX",
    "PROTOCOL_VERSION_MIN",
    "PUSH_PULL_MSG",
    "SUSPECT_MSG",
    "TAG_MAGIC_BYTE",
    "USER_MSG",
    "IncompleteDataError",
    "add_crc",
    "add_label",
    "build_compound",
    "decode_message",
    "decode_push_pull",
    "decode_tags",
    "decode_user_stream",
    "encode_message",
    "encode_push_pull",
    "encode_tags",
    "encode_user_stream",
    "pack",
    "split_compound",
    "strip_label",
    "unpack",
    "unpack_from",
    "verify_crc",
]

# memberlist message types (net.go ``messageType``).
# WARNING: APPEND ONLY. The numbers are part of the wire protocol; never renumber.
PING_MSG = 0
INDIRECT_PING_MSG = 1
ACK_RESP_MSG = 2
SUSPECT_MSG = 3
ALIVE_MSG = 4
DEAD_MSG = 5
PUSH_PULL_MSG = 6
COMPOUND_MSG = 7
USER_MSG = 8
COMPRESS_MSG = 9
ENCRYPT_MSG = 10
NACK_RESP_MSG = 11
HAS_CRC_MSG = 12
ERR_MSG = 13
HAS_LABEL_MSG = 244  # high on purpose: never an encryption version (0/1) or a type above

PROTOCOL_VERSION_MIN = 1
PROTOCOL_VERSION_2_COMPATIBLE = 2  # what memberlist speaks by default
PROTOCOL_VERSION_MAX = 5

# Limits (memberlist net.go, label.go).
META_MAX_SIZE = 512
LABEL_MAX_SIZE = 255
MAX_COMPOUND_PARTS = 255
MAX_PUSH_STATE_BYTES = 20 * 1024 * 1024
MAX_PUSH_STATE_NODES = 1024 * 1024
MAX_USER_MSG_BYTES = 20 * 1024 * 1024
DEFAULT_MAX_SIZE = 2 * MAX_PUSH_STATE_BYTES  # memberlist's maxDecompressedBytes
DEFAULT_MAX_DEPTH = 32  # containers nested in containers; memberlist messages use <= 4
PACK_MAX_DEPTH = 512  # pack() refuses deeper nesting (ValueError) instead of recursing on
TAG_MAGIC_BYTE = 0xFF  # Serf meta: 0xFF + msgpack map[string]string


class IncompleteDataError(MalformedDataError):
    """The bytes end before the object does: a stream reader should wait for more."""


_B = struct.Struct(">B")
_H = struct.Struct(">H")
_I = struct.Struct(">I")
_Q = struct.Struct(">Q")
_b = struct.Struct(">b")
_h = struct.Struct(">h")
_i = struct.Struct(">i")
_q = struct.Struct(">q")
_f = struct.Struct(">f")
_d = struct.Struct(">d")
_bytes = bytes


# ---------------------------------------------------------------------------- pack


def _pack_raw(out: bytearray, data: bytes) -> None:
    n = len(data)
    if n < 32:
        out.append(0xA0 | n)
    elif n < 0x10000:
        out += b"\xda" + _H.pack(n)
    elif n <= 0xFFFFFFFF:
        out += b"\xdb" + _I.pack(n)
    else:
        raise ValueError("a string of 4 GiB or more cannot be packed")
    out += data


def _pack_int(out: bytearray, v: int) -> None:
    if v >= 0:
        if v < 0x80:
            out.append(v)
        elif v <= 0xFF:
            out += b"\xcc" + _B.pack(v)
        elif v <= 0xFFFF:
            out += b"\xcd" + _H.pack(v)
        elif v <= 0xFFFFFFFF:
            out += b"\xce" + _I.pack(v)
        elif v <= 0xFFFFFFFFFFFFFFFF:
            out += b"\xcf" + _Q.pack(v)
        else:
            raise OverflowError("int too large to pack (above 2**64 - 1)")
    elif v >= -32:
        out.append(v & 0xFF)
    elif v >= -0x80:
        out += b"\xd0" + _b.pack(v)
    elif v >= -0x8000:
        out += b"\xd1" + _h.pack(v)
    elif v >= -0x80000000:
        out += b"\xd2" + _i.pack(v)
    elif v >= -0x8000000000000000:
        out += b"\xd3" + _q.pack(v)
    else:
        raise OverflowError("int too small to pack (below -2**63)")


def _pack_len(out: bytearray, n: int, fix: int, b16: bytes, b32: bytes) -> None:
    if n < 16:
        out.append(fix | n)
    elif n < 0x10000:
        out += b16 + _H.pack(n)
    else:
        out += b32 + _I.pack(n)


def _pack(out: bytearray, obj: object, depth: int) -> None:
    if obj is None:
        out.append(0xC0)
    elif obj is True:
        out.append(0xC3)
    elif obj is False:
        out.append(0xC2)
    elif isinstance(obj, str):
        _pack_raw(out, str.encode(obj))
    elif isinstance(obj, bytes):
        _pack_raw(out, obj)
    elif isinstance(obj, int):
        _pack_int(out, int(obj))
    elif isinstance(obj, dict):
        if depth >= PACK_MAX_DEPTH:
            raise ValueError(f"cannot pack containers nested deeper than {PACK_MAX_DEPTH}")
        _pack_len(out, len(obj), 0x80, b"\xde", b"\xdf")
        for key, value in dict.items(obj):
            if not isinstance(key, (str, bytes)):
                raise TypeError(f"map keys must be str or bytes, not {type(key).__name__}")
            _pack(out, key, depth + 1)
            _pack(out, value, depth + 1)
    elif isinstance(obj, (list, tuple)):
        if depth >= PACK_MAX_DEPTH:
            raise ValueError(f"cannot pack containers nested deeper than {PACK_MAX_DEPTH}")
        _pack_len(out, len(obj), 0x90, b"\xdc", b"\xdd")
        for item in obj:
            _pack(out, item, depth + 1)
    elif isinstance(obj, float):
        out += b"\xcb" + _d.pack(obj)
    elif isinstance(obj, (bytearray, memoryview)):
        _pack_raw(out, _bytes(obj))
    else:
        raise TypeError(f"cannot pack {type(obj).__name__} objects")


def pack(obj: object) -> bytes:
    """MessagePack of ``obj`` as go-msgpack writes it (old spec; see the module doc).

    Accepts None, bool, int, float, str, bytes-like, list/tuple and dict with str or
    bytes keys (in insertion order). Other types raise TypeError, ints outside
    [-2**63, 2**64) OverflowError, nesting deeper than :data:`PACK_MAX_DEPTH` ValueError.
    """
    out = bytearray()
    _pack(out, obj, 0)
    return bytes(out)


# -------------------------------------------------------------------------- unpack


class _Reader:
    """Cursor over one buffer; every read checks the bytes present first."""

    __slots__ = ("data", "end", "max_depth", "pos")

    def __init__(self, data: bytes, pos: int, max_depth: int) -> None:
        self.data = data
        self.pos = pos
        self.end = len(data)
        self.max_depth = max_depth

    def take(self, n: int) -> int:
        """Start of the next n bytes, which are consumed."""
        start = self.pos
        if n > self.end - start:
            raise IncompleteDataError(
                f"msgpack data truncated: {n} bytes needed at offset {start}, "
                f"{self.end - start} left"
            )
        self.pos = start + n
        return start

    def length(self, st: struct.Struct) -> int:
        return int(st.unpack_from(self.data, self.take(st.size))[0])

    def raw(self, n: int) -> bytes:
        start = self.take(n)
        return self.data[start : start + n]

    def container(self, count: int, per_item: int, depth: int) -> None:
        if depth >= self.max_depth:
            raise MalformedDataError(f"msgpack containers nested deeper than {self.max_depth}")
        if count * per_item > self.end - self.pos:
            raise IncompleteDataError(
                f"msgpack container of {count} items at offset {self.pos} cannot fit in "
                f"the {self.end - self.pos} bytes left"
            )

    def read(self, depth: int) -> Any:
        b = self.data[self.take(1)]
        if b < 0x80:
            return b
        if b >= 0xE0:
            return b - 0x100
        if b >= 0xA0 and b < 0xC0:
            return self.raw(b & 0x1F)
        if b < 0x90:
            return self.read_map(b & 0x0F, depth)
        if b < 0xA0:
            return self.read_array(b & 0x0F, depth)
        if b == 0xC0:
            return None
        if b == 0xC2:
            return False
        if b == 0xC3:
            return True
        if b == 0xC4 or b == 0xD9:
            return self.raw(self.length(_B))
        if b == 0xC5 or b == 0xDA:
            return self.raw(self.length(_H))
        if b == 0xC6 or b == 0xDB:
            return self.raw(self.length(_I))
        reader = _FIXED.get(b)
        if reader is not None:
            return reader.unpack_from(self.data, self.take(reader.size))[0]
        if b == 0xDC:
            return self.read_array(self.length(_H), depth)
        if b == 0xDD:
            return self.read_array(self.length(_I), depth)
        if b == 0xDE:
            return self.read_map(self.length(_H), depth)
        if b == 0xDF:
            return self.read_map(self.length(_I), depth)
        what = "reserved byte 0xc1" if b == 0xC1 else f"extension type 0x{b:02x}"
        raise MalformedDataError(f"unsupported msgpack {what} at offset {self.pos - 1}")

    def read_array(self, count: int, depth: int) -> list[Any]:
        self.container(count, 1, depth)
        return [self.read(depth + 1) for _ in range(count)]

    def read_map(self, count: int, depth: int) -> dict[bytes, Any]:
        self.container(count, 2, depth)
        out: dict[bytes, Any] = {}
        for _ in range(count):
            at = self.pos
            key = self.read(depth + 1)
            if type(key) is not bytes:
                raise MalformedDataError(f"msgpack map key at offset {at} is not a string")
            out[key] = self.read(depth + 1)
        return out


_FIXED: dict[int, struct.Struct] = {
    0xCA: _f,
    0xCB: _d,
    0xCC: _B,
    0xCD: _H,
    0xCE: _I,
    0xCF: _Q,
    0xD0: _b,
    0xD1: _h,
    0xD2: _i,
    0xD3: _q,
}


def _as_bytes(data: object) -> bytes:
    if type(data) is bytes:
        return data
    view = memoryview(data)  # type: ignore[arg-type]  # TypeError for non-buffers
    if not view.c_contiguous:
        raise BufferError("the buffer is not C-contiguous")
    return view.tobytes()


def _reader(data: object, offset: int, max_size: int, max_depth: int) -> _Reader:
    buf = _as_bytes(data)
    if offset < 0 or offset > len(buf):
        raise ValueError(f"offset {offset} is outside the buffer (0..{len(buf)})")
    if len(buf) - offset > max_size:
        raise MalformedDataError(
            f"msgpack input of {len(buf) - offset} bytes exceeds the limit of {max_size}"
        )
    return _Reader(buf, offset, max_depth)


def unpack(
    data: bytes | bytearray | memoryview,
    *,
    max_size: int = DEFAULT_MAX_SIZE,
    max_depth: int = DEFAULT_MAX_DEPTH,
) -> Any:
    """The one MessagePack object that fills ``data`` (old or new spec).

    Strings (raw, str, bin) come back as ``bytes``, arrays as lists, maps as dicts
    with bytes keys. Extension types are refused. Raises MalformedDataError (or its
    subclass IncompleteDataError when the data stops early) on bad input, trailing
    bytes, more than ``max_size`` bytes or more than ``max_depth`` nested containers.
    """
    reader = _reader(data, 0, max_size, max_depth)
    obj = reader.read(0)
    if reader.pos != reader.end:
        raise MalformedDataError(f"{reader.end - reader.pos} bytes after the msgpack object")
    return obj


def unpack_from(
    data: bytes | bytearray | memoryview,
    offset: int = 0,
    *,
    max_size: int = DEFAULT_MAX_SIZE,
    max_depth: int = DEFAULT_MAX_DEPTH,
) -> tuple[Any, int]:
    """The MessagePack object at ``data[offset:]`` and the offset just after it.

    For streams that carry several objects in sequence; bytes after the object are
    left alone. Errors as :func:`unpack`; ``max_size`` bounds ``len(data) - offset``.
    """
    reader = _reader(data, offset, max_size, max_depth)
    obj = reader.read(0)
    return obj, reader.pos


# ------------------------------------------------------------------------- framing


def encode_message(msg_type: int, obj: object) -> bytes:
    """``[msg_type][pack(obj)]``: one memberlist (or Serf) message."""
    out = bytearray(_B.pack(msg_type))
    _pack(out, obj, 0)
    return bytes(out)


def decode_message(
    data: bytes | bytearray | memoryview, *, max_size: int = DEFAULT_MAX_SIZE
) -> tuple[int, Any]:
    """``(msg_type, obj)`` of ``[msg_type][msgpack object]``; errors as :func:`unpack`."""
    buf = _as_bytes(data)
    if not buf:
        raise IncompleteDataError("empty message: no type byte")
    return buf[0], unpack(buf[1:], max_size=max_size)


def build_compound(parts: Sequence[bytes]) -> bytes:
    """``[7][count u8][count x u16 BE length][parts]``: up to 255 parts of < 64 KiB."""
    if len(parts) > MAX_COMPOUND_PARTS:
        raise ValueError(f"a compound message holds at most {MAX_COMPOUND_PARTS} parts")
    out = bytearray((COMPOUND_MSG, len(parts)))
    for part in parts:
        if not isinstance(part, bytes):
            raise TypeError(f"compound parts must be bytes, not {type(part).__name__}")
        if len(part) > 0xFFFF:
            raise ValueError("a compound part must be shorter than 64 KiB")
        out += _H.pack(len(part))
    for part in parts:
        out += part
    return bytes(out)


def split_compound(data: bytes | bytearray | memoryview) -> tuple[list[bytes], int]:
    """``(parts, truncated)`` of a compound message (starting with its type byte 7).

    Like memberlist, a part whose length runs past the end stops the split: the parts
    before it are returned and ``truncated`` counts the parts lost. A missing count or
    length table raises MalformedDataError.
    """
    buf = _as_bytes(data)
    if not buf or buf[0] != COMPOUND_MSG:
        raise MalformedDataError("not a compound message (type byte 7)")
    if len(buf) < 2:
        raise MalformedDataError("compound message without its part count")
    count = buf[1]
    pos = 2 + 2 * count
    if len(buf) < pos:
        raise MalformedDataError("compound message with a truncated length table")
    parts: list[bytes] = []
    for index in range(count):
        (size,) = _H.unpack_from(buf, 2 + 2 * index)
        if size > len(buf) - pos:
            return parts, count - index
        parts.append(buf[pos : pos + size])
        pos += size
    return parts, 0


def _require_bytes(value: object, what: str) -> None:
    if not isinstance(value, bytes):
        raise TypeError(f"{what} must be bytes, not {type(value).__name__}")


def add_label(packet: bytes, label: str) -> bytes:
    """``[244][len u8][label][packet]``, or ``packet`` itself for an empty label."""
    _require_bytes(packet, "packet")
    if not label:
        return packet
    raw = str.encode(label)
    if len(raw) > LABEL_MAX_SIZE:
        raise ValueError(f"label is longer than {LABEL_MAX_SIZE} bytes")
    return bytes((HAS_LABEL_MSG, len(raw))) + raw + packet


def strip_label(packet: bytes | bytearray | memoryview) -> tuple[bytes, str]:
    """``(rest, label)`` of a packet or stream start; ``label`` is "" when absent."""
    buf = _as_bytes(packet)
    if not buf or buf[0] != HAS_LABEL_MSG:
        return buf, ""
    if len(buf) < 2:
        raise IncompleteDataError("label header truncated")
    size = buf[1]
    if size < 1:
        raise MalformedDataError("label header cannot be empty when present")
    if len(buf) < 2 + size:
        raise IncompleteDataError("label header truncated")
    try:
        label = buf[2 : 2 + size].decode()
    except UnicodeDecodeError:
        raise MalformedDataError("label is not valid UTF-8") from None
    return buf[2 + size :], label


def add_crc(packet: bytes) -> bytes:
    """``[12][crc32 IEEE of packet, u32 BE][packet]`` (for peers with protocol max >= 5)."""
    _require_bytes(packet, "packet")
    return bytes((HAS_CRC_MSG,)) + _I.pack(crc32(packet)) + packet


def verify_crc(packet: bytes | bytearray | memoryview) -> bytes:
    """The packet after a valid CRC prefix, or the packet itself when it has none.

    A prefix whose checksum does not match, or a packet of type 12 shorter than the
    prefix, raises MalformedDataError (memberlist drops such packets).
    """
    buf = _as_bytes(packet)
    if not buf or buf[0] != HAS_CRC_MSG:
        return buf
    if len(buf) < 5:
        raise MalformedDataError("CRC header truncated")
    if _I.unpack_from(buf, 1)[0] != crc32(buf[5:]):
        raise MalformedDataError("CRC mismatch")
    return buf[5:]


def encode_tags(tags: Mapping[str, str]) -> bytes:
    """Serf node meta: ``0xFF`` + msgpack ``map[string]string``, at most 512 bytes."""
    out = bytearray((TAG_MAGIC_BYTE,))
    _pack_len(out, len(tags), 0x80, b"\xde", b"\xdf")
    for key, value in tags.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise TypeError("tag names and values must be str")
        _pack_raw(out, str.encode(key))
        _pack_raw(out, str.encode(value))
    if len(out) > META_MAX_SIZE:
        raise ValueError(f"encoded tags take {len(out)} bytes, more than {META_MAX_SIZE}")
    return bytes(out)


def _text(value: object, what: str) -> str:
    if type(value) is not bytes:
        raise MalformedDataError(f"{what} is not a string")
    try:
        return value.decode()
    except UnicodeDecodeError:
        raise MalformedDataError(f"{what} is not valid UTF-8") from None


def decode_tags(meta: bytes | bytearray | memoryview) -> dict[str, str]:
    """Tags of Serf node meta; meta without the magic byte is a role (Serf protocol 2)."""
    buf = _as_bytes(meta)
    if len(buf) > META_MAX_SIZE:
        raise MalformedDataError(f"node meta of {len(buf)} bytes exceeds {META_MAX_SIZE}")
    if not buf or buf[0] != TAG_MAGIC_BYTE:
        return {"role": _text(buf, "role")}
    raw = unpack(buf[1:], max_depth=1)
    if type(raw) is not dict:
        raise MalformedDataError("Serf tags are not a map")
    return {_text(k, "tag name"): _text(v, "tag value") for k, v in raw.items()}


def encode_push_pull(nodes: Sequence[Mapping[str, object]], user_state: bytes, join: bool) -> bytes:
    """A push/pull stream body: ``[6]`` header{Join, Nodes, UserStateLen}, the node
    states (pushNodeState maps) and the raw user (Serf) state.

    The header keys are in go-msgpack v0.5 order (sorted by name, as Serf 0.9 writes
    them); decoders accept any order."""
    _require_bytes(user_state, "user_state")
    out = bytearray((PUSH_PULL_MSG,))
    _pack(out, {"Join": bool(join), "Nodes": len(nodes), "UserStateLen": len(user_state)}, 0)
    for node in nodes:
        _pack(out, node, 0)
    out += user_state
    return bytes(out)


def _header_int(header: dict[bytes, Any], key: bytes, limit: int) -> int:
    value = header.get(key, 0)
    if value is None:
        return 0
    if type(value) is not int or value < 0 or value > limit:
        raise MalformedDataError(f"push/pull header {key.decode()} is out of range")
    return value


def decode_push_pull(
    data: bytes | bytearray | memoryview, offset: int = 0
) -> tuple[bool, list[dict[bytes, Any]], bytes, int]:
    """``(join, nodes, user_state, next_offset)`` of a push/pull body at ``offset``.

    ``data[offset]`` must be the type byte 6. Node states are returned as unpacked
    maps. Limits are memberlist's: at most 1 Mi nodes and 20 MiB of user state.
    IncompleteDataError means the stream has not delivered the whole body yet.
    """
    buf = _as_bytes(data)
    if offset < 0 or offset > len(buf):
        raise ValueError(f"offset {offset} is outside the buffer (0..{len(buf)})")
    if offset == len(buf):
        raise IncompleteDataError("push/pull stream: no type byte yet")
    if buf[offset] != PUSH_PULL_MSG:
        raise MalformedDataError("not a push/pull message (type byte 6)")
    header, pos = unpack_from(buf, offset + 1, max_depth=1)
    if type(header) is not dict:
        raise MalformedDataError("push/pull header is not a map")
    count = _header_int(header, b"Nodes", MAX_PUSH_STATE_NODES)
    state_len = _header_int(header, b"UserStateLen", MAX_PUSH_STATE_BYTES)
    join = header.get(b"Join", False)
    if join is None:
        join = False
    elif type(join) is not bool:
        raise MalformedDataError("push/pull header Join is not a bool")
    if count > len(buf) - pos:
        raise IncompleteDataError("push/pull stream: node states not all received")
    nodes: list[dict[bytes, Any]] = []
    for _ in range(count):
        node, pos = unpack_from(buf, pos, max_depth=1)
        if type(node) is not dict:
            raise MalformedDataError("push/pull node state is not a map")
        nodes.append(node)
    if state_len > len(buf) - pos:
        raise IncompleteDataError("push/pull stream: user state not all received")
    return join, nodes, buf[pos : pos + state_len], pos + state_len


def encode_user_stream(payload: bytes) -> bytes:
    """A user message over TCP: ``[8]`` userMsgHeader{UserMsgLen} + the payload."""
    _require_bytes(payload, "payload")
    out = bytearray((USER_MSG,))
    _pack(out, {"UserMsgLen": len(payload)}, 0)
    out += payload
    return bytes(out)


def decode_user_stream(data: bytes | bytearray | memoryview, offset: int = 0) -> tuple[bytes, int]:
    """``(payload, next_offset)`` of a TCP user message at ``offset`` (type byte 8)."""
    buf = _as_bytes(data)
    if offset < 0 or offset > len(buf):
        raise ValueError(f"offset {offset} is outside the buffer (0..{len(buf)})")
    if offset == len(buf):
        raise IncompleteDataError("user message stream: no type byte yet")
    if buf[offset] != USER_MSG:
        raise MalformedDataError("not a user message (type byte 8)")
    header, pos = unpack_from(buf, offset + 1, max_depth=1)
    if type(header) is not dict:
        raise MalformedDataError("user message header is not a map")
    size = _header_int(header, b"UserMsgLen", MAX_USER_MSG_BYTES)
    if size > len(buf) - pos:
        raise IncompleteDataError("user message stream: payload not all received")
    return buf[pos : pos + size], pos + size
