"""Typed memberlist messages and the Go struct codec under every gossip message.

Owns the shape of every memberlist message a pysyncer node exchanges with its peers
(memberlist net.go: ping, indirect ping, ack, nack, error, suspect, alive, dead, compress,
the push/pull stream body), memberlist's type byte (:class:`MessageType`) and status
number (:class:`NodeStatus`), the wire form of an IP address, and the user message
(type 8) that carries a Serf message. The Serf messages themselves are
:mod:`pysyncer.gossip.serf_messages`'.

Owns too the codec both build on: one frozen dataclass per Go struct
(:class:`GoStruct`, :class:`GoMessage` for one sent after its type byte), with Go's
field names and types on the wire (IP as 4/16 raw bytes, ``Vsn`` as 6 raw bytes,
Lamport times uint64, ``time.Duration`` as int64 nanoseconds) and Python names and
``str`` text in memory. ``to_struct()`` gives the map that goes on the wire; by default
its keys are sorted by name, as go-msgpack v0.5 (Serf 0.9, memberlist 0.2-0.4) writes
Go structs, which makes our bytes identical to the real agent's; ``sorted_fields=False``
gives declaration order (go-msgpack v2). Decoders accept any order, ignore unknown keys
and read a missing key or nil as Go's zero value. A field typed ``bytes | None`` keeps
Go's difference between a nil slice (None, written as msgpack nil) and an empty one.

Bad bytes raise :class:`~pysyncer.errors.MalformedDataError`, never anything else.
The bottom of the gossip package: must not import any other gossip module.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, ClassVar, TypeVar

from pysyncer._core import wire
from pysyncer.errors import MalformedDataError

__all__ = [
    "LZW_ALGO",
    "AckResp",
    "Alive",
    "Compress",
    "Dead",
    "ErrResp",
    "GoMessage",
    "GoStruct",
    "IndirectPingReq",
    "MessageType",
    "NackResp",
    "NodeStatus",
    "Ping",
    "PushNodeState",
    "PushPull",
    "PushPullHeader",
    "Suspect",
    "UserMsgHeader",
    "decode_field",
    "decode_map",
    "decode_push_pull",
    "encode_push_pull",
    "ip_bytes",
    "ip_text",
    "serf_user_msg",
    "unexpected_type",
]


def ip_bytes(host: str) -> bytes:
    """4 or 16 raw bytes of an IP address, as memberlist puts it on the wire."""
    return ipaddress.ip_address(host).packed


def ip_text(raw: bytes) -> str:
    """The text form of a 4 or 16 byte wire IP address."""
    if len(raw) == 4:
        return socket.inet_ntop(socket.AF_INET, raw)
    if len(raw) == 16:
        return socket.inet_ntop(socket.AF_INET6, raw)
    raise MalformedDataError(f"an IP address has 4 or 16 bytes, not {len(raw)}")


class MessageType(IntEnum):
    """memberlist message type byte (net.go). WARNING: append only, never renumber."""

    PING = wire.PING_MSG
    INDIRECT_PING = wire.INDIRECT_PING_MSG
    ACK_RESP = wire.ACK_RESP_MSG
    SUSPECT = wire.SUSPECT_MSG
    ALIVE = wire.ALIVE_MSG
    DEAD = wire.DEAD_MSG
    PUSH_PULL = wire.PUSH_PULL_MSG
    COMPOUND = wire.COMPOUND_MSG
    USER = wire.USER_MSG
    COMPRESS = wire.COMPRESS_MSG
    ENCRYPT = wire.ENCRYPT_MSG
    NACK_RESP = wire.NACK_RESP_MSG
    HAS_CRC = wire.HAS_CRC_MSG
    ERR = wire.ERR_MSG
    HAS_LABEL = wire.HAS_LABEL_MSG


class NodeStatus(IntEnum):
    """memberlist NodeStateType (Go int), the ``State`` of a push/pull node entry.

    WARNING: append only, never renumber.
    """

    ALIVE = 0
    SUSPECT = 1
    DEAD = 2
    LEFT = 3


# ----------------------------------- the Go struct codec (shared with serf_messages)

_UINT_MAX = {"u8": 0xFF, "u16": 0xFFFF, "u32": 0xFFFFFFFF, "u64": 0xFFFFFFFFFFFFFFFF}
_INT_MIN, _INT_MAX = -(2**63), 2**63 - 1


def unexpected_type(what: str, value: object) -> MalformedDataError:
    """The error for a wire value of the wrong type in field ``what``."""
    return MalformedDataError(f"field {what}: unexpected {type(value).__name__} value")


def _to_text(value: object, what: str) -> str:
    if value is None:
        return ""
    if type(value) is not bytes:
        raise unexpected_type(what, value)
    try:
        return value.decode()
    except UnicodeDecodeError:
        raise MalformedDataError(f"field {what} is not valid UTF-8") from None


def decode_field(kind: str, value: object, what: str) -> Any:
    """Python value of a decoded wire value for a Go field of ``kind``."""
    if kind == "str":
        return _to_text(value, what)
    if kind in _UINT_MAX or kind == "int":
        if value is None:
            return 0
        if type(value) is not int:
            raise unexpected_type(what, value)
        low, high = (0, _UINT_MAX[kind]) if kind in _UINT_MAX else (_INT_MIN, _INT_MAX)
        if not low <= value <= high:
            raise MalformedDataError(f"field {what}: {value} is out of range")
        return value
    if kind == "bytes":
        if value is None:
            return b""
        if type(value) is not bytes:
            raise unexpected_type(what, value)
        return value
    if kind == "bytes?":
        if value is not None and type(value) is not bytes:
            raise unexpected_type(what, value)
        return value
    if kind == "bool":
        if value is None:
            return False
        if type(value) is not bool:
            raise unexpected_type(what, value)
        return value
    if kind == "strs?":
        if value is None:
            return None
        if type(value) is not list:
            raise unexpected_type(what, value)
        return tuple(_to_text(item, what) for item in value)
    if kind == "bytes_list?":
        if value is None:
            return None
        if type(value) is not list:
            raise unexpected_type(what, value)
        return tuple(decode_field("bytes", item, what) for item in value)
    raise AssertionError(kind)


def _encode_field(kind: str, value: Any) -> object:
    if kind in ("strs?", "bytes_list?"):
        return None if value is None else list(value)
    if kind in ("u8", "u16", "u32", "u64", "int"):
        return int(value)
    return value


def decode_map(raw: object, what: str) -> dict[bytes, Any]:
    """An unpacked wire map (its keys are the Go names as bytes), or MalformedDataError."""
    if type(raw) is not dict:
        raise MalformedDataError(f"{what} is not a map")
    return raw


_S = TypeVar("_S", bound="GoStruct")
_M = TypeVar("_M", bound="GoMessage")


class GoStruct:
    """Mixin of the message dataclasses: maps a Go struct to and from its wire map.

    ``GO_FIELDS`` lists (python name, Go name, kind, omitempty) in declaration order.
    """

    __slots__ = ()
    GO_FIELDS: ClassVar[tuple[tuple[str, str, str, bool], ...]] = ()
    _SORTED: ClassVar[tuple[tuple[str, str, str, bool], ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._SORTED = tuple(sorted(cls.GO_FIELDS, key=lambda field: field[1]))

    def to_struct(self, *, sorted_fields: bool = True) -> dict[str, object]:
        """The Go struct as a wire map (keys sorted by name unless told otherwise)."""
        out: dict[str, object] = {}
        for name, go_name, kind, omitempty in self._SORTED if sorted_fields else self.GO_FIELDS:
            value = getattr(self, name)
            if omitempty and not value:
                continue
            out[go_name] = _encode_field(kind, value)
        return out

    @classmethod
    def from_struct(cls: type[_S], raw: object) -> _S:
        """Instance from an unpacked wire map; MalformedDataError when it does not fit."""
        fields = decode_map(raw, cls.__name__)
        values = {
            name: decode_field(kind, fields.get(go_name.encode()), f"{cls.__name__}.{go_name}")
            for name, go_name, kind, _ in cls.GO_FIELDS
        }
        return cls(**values)


class GoMessage(GoStruct):
    """A Go struct sent after its type byte: ``[type byte][msgpack struct]``.

    ``MSG_TYPE`` is a memberlist :class:`MessageType`, or a Serf message type for the Serf
    messages a memberlist user message carries.
    """

    __slots__ = ()
    MSG_TYPE: ClassVar[int]

    def to_bytes(self, *, sorted_fields: bool = True) -> bytes:
        return wire.encode_message(self.MSG_TYPE, self.to_struct(sorted_fields=sorted_fields))

    @classmethod
    def from_bytes(cls: type[_M], data: bytes) -> _M:
        msg_type, raw = wire.decode_message(data)
        if msg_type != cls.MSG_TYPE:
            raise MalformedDataError(f"type byte {msg_type} is not a {cls.__name__}")
        return cls.from_struct(raw)


# ------------------------------------------------------------ memberlist messages


@dataclass(frozen=True, slots=True)
class Ping(GoMessage):
    MSG_TYPE: ClassVar[int] = MessageType.PING
    GO_FIELDS: ClassVar[tuple[tuple[str, str, str, bool], ...]] = (
        ("seq_no", "SeqNo", "u32", False),
        ("node", "Node", "str", False),
        ("source_addr", "SourceAddr", "bytes", True),
        ("source_port", "SourcePort", "u16", True),
        ("source_node", "SourceNode", "str", True),
    )
    seq_no: int
    node: str
    source_addr: bytes = b""
    source_port: int = 0
    source_node: str = ""


@dataclass(frozen=True, slots=True)
class IndirectPingReq(GoMessage):
    MSG_TYPE: ClassVar[int] = MessageType.INDIRECT_PING
    GO_FIELDS: ClassVar[tuple[tuple[str, str, str, bool], ...]] = (
        ("seq_no", "SeqNo", "u32", False),
        ("target", "Target", "bytes", False),
        ("port", "Port", "u16", False),
        ("node", "Node", "str", False),
        ("nack", "Nack", "bool", False),
        ("source_addr", "SourceAddr", "bytes", True),
        ("source_port", "SourcePort", "u16", True),
        ("source_node", "SourceNode", "str", True),
    )
    seq_no: int
    target: bytes
    port: int
    node: str
    nack: bool = False
    source_addr: bytes = b""
    source_port: int = 0
    source_node: str = ""


@dataclass(frozen=True, slots=True)
class AckResp(GoMessage):
    MSG_TYPE: ClassVar[int] = MessageType.ACK_RESP
    GO_FIELDS: ClassVar[tuple[tuple[str, str, str, bool], ...]] = (
        ("seq_no", "SeqNo", "u32", False),
        ("payload", "Payload", "bytes?", False),
    )
    seq_no: int
    payload: bytes | None = None


@dataclass(frozen=True, slots=True)
class NackResp(GoMessage):
    MSG_TYPE: ClassVar[int] = MessageType.NACK_RESP
    GO_FIELDS: ClassVar[tuple[tuple[str, str, str, bool], ...]] = (
        ("seq_no", "SeqNo", "u32", False),
    )
    seq_no: int


@dataclass(frozen=True, slots=True)
class ErrResp(GoMessage):
    MSG_TYPE: ClassVar[int] = MessageType.ERR
    GO_FIELDS: ClassVar[tuple[tuple[str, str, str, bool], ...]] = (
        ("error", "Error", "str", False),
    )
    error: str


@dataclass(frozen=True, slots=True)
class Suspect(GoMessage):
    MSG_TYPE: ClassVar[int] = MessageType.SUSPECT
    GO_FIELDS: ClassVar[tuple[tuple[str, str, str, bool], ...]] = (
        ("incarnation", "Incarnation", "u32", False),
        ("node", "Node", "str", False),
        ("from_node", "From", "str", False),
    )
    incarnation: int
    node: str
    from_node: str


@dataclass(frozen=True, slots=True)
class Alive(GoMessage):
    MSG_TYPE: ClassVar[int] = MessageType.ALIVE
    GO_FIELDS: ClassVar[tuple[tuple[str, str, str, bool], ...]] = (
        ("incarnation", "Incarnation", "u32", False),
        ("node", "Node", "str", False),
        ("addr", "Addr", "bytes", False),
        ("port", "Port", "u16", False),
        ("meta", "Meta", "bytes?", False),
        ("vsn", "Vsn", "bytes", False),
    )
    incarnation: int
    node: str
    addr: bytes
    port: int
    meta: bytes | None
    vsn: bytes  # pmin, pmax, pcur, dmin, dmax, dcur


@dataclass(frozen=True, slots=True)
class Dead(GoMessage):
    """``from_node == node`` means a graceful leave (state Left)."""

    MSG_TYPE: ClassVar[int] = MessageType.DEAD
    GO_FIELDS: ClassVar[tuple[tuple[str, str, str, bool], ...]] = (
        ("incarnation", "Incarnation", "u32", False),
        ("node", "Node", "str", False),
        ("from_node", "From", "str", False),
    )
    incarnation: int
    node: str
    from_node: str


LZW_ALGO = 0
"""memberlist ``lzwAlgo``: the only algorithm of :class:`Compress`."""


@dataclass(frozen=True, slots=True)
class Compress(GoMessage):
    """``compress{Algo, Buf}``; Algo 0 is LZW (:mod:`pysyncer.gossip.lzw`)."""

    MSG_TYPE: ClassVar[int] = MessageType.COMPRESS
    GO_FIELDS: ClassVar[tuple[tuple[str, str, str, bool], ...]] = (
        ("algo", "Algo", "u8", False),
        ("buf", "Buf", "bytes", False),
    )
    algo: int
    buf: bytes


@dataclass(frozen=True, slots=True)
class PushPullHeader(GoStruct):
    GO_FIELDS: ClassVar[tuple[tuple[str, str, str, bool], ...]] = (
        ("nodes", "Nodes", "int", False),
        ("user_state_len", "UserStateLen", "int", False),
        ("join", "Join", "bool", False),
    )
    nodes: int
    user_state_len: int
    join: bool


@dataclass(frozen=True, slots=True)
class UserMsgHeader(GoStruct):
    GO_FIELDS: ClassVar[tuple[tuple[str, str, str, bool], ...]] = (
        ("user_msg_len", "UserMsgLen", "int", False),
    )
    user_msg_len: int


@dataclass(frozen=True, slots=True)
class PushNodeState(GoStruct):
    GO_FIELDS: ClassVar[tuple[tuple[str, str, str, bool], ...]] = (
        ("name", "Name", "str", False),
        ("addr", "Addr", "bytes", False),
        ("port", "Port", "u16", False),
        ("meta", "Meta", "bytes?", False),
        ("incarnation", "Incarnation", "u32", False),
        ("state", "State", "int", False),
        ("vsn", "Vsn", "bytes", False),
    )
    name: str
    addr: bytes
    port: int
    meta: bytes | None
    incarnation: int
    state: int
    vsn: bytes


@dataclass(frozen=True, slots=True)
class PushPull:
    """A whole push/pull stream body: node states and the raw Serf state after them."""

    join: bool
    nodes: tuple[PushNodeState, ...]
    user_state: bytes


def encode_push_pull(message: PushPull, *, sorted_fields: bool = True) -> bytes:
    """``[6]`` header + node states + user state, as memberlist's sendLocalState."""
    nodes = [node.to_struct(sorted_fields=sorted_fields) for node in message.nodes]
    return wire.encode_push_pull(nodes, message.user_state, message.join)


def decode_push_pull(data: bytes) -> PushPull:
    """The push/pull body that fills ``data`` (type byte 6 first; trailing bytes refused)."""
    join, nodes, user_state, end = wire.decode_push_pull(data)
    if end != len(data):
        raise MalformedDataError(f"{len(data) - end} bytes after the push/pull body")
    return PushPull(join, tuple(PushNodeState.from_struct(n) for n in nodes), user_state)


def serf_user_msg(serf_message: bytes) -> bytes:
    """The memberlist user message (type 8) that carries an encoded Serf message."""
    return bytes((MessageType.USER,)) + serf_message
