"""Typed memberlist and Serf messages over the wire codec (:mod:`pysyncer._core` ``wire``).

Owns the shape of every message a pysyncer node exchanges with memberlist/Serf peers:
one frozen dataclass per Go struct, with Go's field names and types on the wire (IP as
4/16 raw bytes, ``Vsn`` as 6 raw bytes, Lamport times uint64, ``time.Duration`` as
int64 nanoseconds) and Python names and ``str`` text in memory.

``to_struct()`` gives the map that goes on the wire; by default its keys are sorted by
name, as go-msgpack v0.5 (Serf 0.9, memberlist 0.2-0.4) writes Go structs, which makes
our bytes identical to the real agent's; ``sorted_fields=False`` gives declaration
order (go-msgpack v2). Decoders accept any order, ignore unknown keys and read a
missing key or nil as Go's zero value. A field typed ``bytes | None`` keeps Go's
difference between a nil slice (None, written as msgpack nil) and an empty one.

Bad bytes raise :class:`~pysyncer.errors.MalformedDataError`, never anything else.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, ClassVar, TypeVar

from pysyncer._core import wire
from pysyncer.errors import MalformedDataError

__all__ = [
    "SERF_PROTOCOL_VERSION_MAX",
    "SERF_PROTOCOL_VERSION_MIN",
    "AckResp",
    "Alive",
    "Compress",
    "Dead",
    "ErrResp",
    "IndirectPingReq",
    "KeyRequest",
    "MessageType",
    "NackResp",
    "NodeKeyResponse",
    "NodeStatus",
    "Ping",
    "PushNodeState",
    "PushPull",
    "PushPullHeader",
    "PushPullUserEvent",
    "PushPullUserEvents",
    "QueryFlag",
    "RelayHeader",
    "SerfJoin",
    "SerfLeave",
    "SerfMessageType",
    "SerfPushPull",
    "SerfQuery",
    "SerfQueryResponse",
    "SerfUserEvent",
    "Suspect",
    "UserMsgHeader",
    "decode_push_pull",
    "decode_relay",
    "decode_serf",
    "encode_push_pull",
    "encode_relay",
    "ip_bytes",
    "ip_text",
    "serf_user_msg",
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


class SerfMessageType(IntEnum):
    """Serf message type byte inside a memberlist user message (serf/messages.go).

    WARNING: append only, never renumber.
    """

    LEAVE = 0
    JOIN = 1
    PUSH_PULL = 2
    USER_EVENT = 3
    QUERY = 4
    QUERY_RESPONSE = 5
    CONFLICT_RESPONSE = 6
    KEY_REQUEST = 7
    KEY_RESPONSE = 8
    RELAY = 9


class NodeStatus(IntEnum):
    """memberlist NodeStateType (Go int), the ``State`` of a push/pull node entry.

    WARNING: append only, never renumber.
    """

    ALIVE = 0
    SUSPECT = 1
    DEAD = 2
    LEFT = 3


class QueryFlag(IntEnum):
    """Bits of SerfQuery.flags / SerfQueryResponse.flags."""

    ACK = 1
    NO_BROADCAST = 2


SERF_PROTOCOL_VERSION_MIN = 2
SERF_PROTOCOL_VERSION_MAX = 5

# ------------------------------------------------------------------ field kinds

_UINT_MAX = {"u8": 0xFF, "u16": 0xFFFF, "u32": 0xFFFFFFFF, "u64": 0xFFFFFFFFFFFFFFFF}
_INT_MIN, _INT_MAX = -(2**63), 2**63 - 1


def _bad(what: str, value: object) -> MalformedDataError:
    return MalformedDataError(f"field {what}: unexpected {type(value).__name__} value")


def _to_text(value: object, what: str) -> str:
    if value is None:
        return ""
    if type(value) is not bytes:
        raise _bad(what, value)
    try:
        return value.decode()
    except UnicodeDecodeError:
        raise MalformedDataError(f"field {what} is not valid UTF-8") from None


def _decode_field(kind: str, value: object, what: str) -> Any:
    """Python value of a decoded wire value for a Go field of ``kind``."""
    if kind == "str":
        return _to_text(value, what)
    if kind in _UINT_MAX or kind == "int":
        if value is None:
            return 0
        if type(value) is not int:
            raise _bad(what, value)
        low, high = (0, _UINT_MAX[kind]) if kind in _UINT_MAX else (_INT_MIN, _INT_MAX)
        if not low <= value <= high:
            raise MalformedDataError(f"field {what}: {value} is out of range")
        return value
    if kind == "bytes":
        if value is None:
            return b""
        if type(value) is not bytes:
            raise _bad(what, value)
        return value
    if kind == "bytes?":
        if value is not None and type(value) is not bytes:
            raise _bad(what, value)
        return value
    if kind == "bool":
        if value is None:
            return False
        if type(value) is not bool:
            raise _bad(what, value)
        return value
    if kind == "strs?":
        if value is None:
            return None
        if type(value) is not list:
            raise _bad(what, value)
        return tuple(_to_text(item, what) for item in value)
    if kind == "bytes_list?":
        if value is None:
            return None
        if type(value) is not list:
            raise _bad(what, value)
        return tuple(_decode_field("bytes", item, what) for item in value)
    raise AssertionError(kind)


def _encode_field(kind: str, value: Any) -> object:
    if kind in ("strs?", "bytes_list?"):
        return None if value is None else list(value)
    if kind in ("u8", "u16", "u32", "u64", "int"):
        return int(value)
    return value


def _as_map(raw: object, what: str) -> dict[bytes, Any]:
    if type(raw) is not dict:
        raise MalformedDataError(f"{what} is not a map")
    return raw


_S = TypeVar("_S", bound="_Struct")


class _Struct:
    """Mixin of the dataclasses below: maps a Go struct to and from its wire map.

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
        fields = _as_map(raw, cls.__name__)
        values = {
            name: _decode_field(kind, fields.get(go_name.encode()), f"{cls.__name__}.{go_name}")
            for name, go_name, kind, _ in cls.GO_FIELDS
        }
        return cls(**values)


class _Message(_Struct):
    """A memberlist message: ``[type byte][msgpack struct]``."""

    __slots__ = ()
    MSG_TYPE: ClassVar[int]

    def to_bytes(self, *, sorted_fields: bool = True) -> bytes:
        return wire.encode_message(self.MSG_TYPE, self.to_struct(sorted_fields=sorted_fields))

    @classmethod
    def from_bytes(cls: type[_S], data: bytes) -> _S:
        msg_type, raw = wire.decode_message(data)
        expected = getattr(cls, "MSG_TYPE", getattr(cls, "SERF_TYPE", None))
        if msg_type != expected:
            raise MalformedDataError(f"type byte {msg_type} is not a {cls.__name__}")
        return cls.from_struct(raw)


class _SerfMessage(_Message):
    """A Serf message: ``[serf type byte][msgpack struct]``, the payload of a userMsg."""

    __slots__ = ()
    SERF_TYPE: ClassVar[int]

    def to_bytes(self, *, sorted_fields: bool = True) -> bytes:
        return wire.encode_message(self.SERF_TYPE, self.to_struct(sorted_fields=sorted_fields))


# ------------------------------------------------------------ memberlist messages


@dataclass(frozen=True, slots=True)
class Ping(_Message):
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
class IndirectPingReq(_Message):
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
class AckResp(_Message):
    MSG_TYPE: ClassVar[int] = MessageType.ACK_RESP
    GO_FIELDS: ClassVar[tuple[tuple[str, str, str, bool], ...]] = (
        ("seq_no", "SeqNo", "u32", False),
        ("payload", "Payload", "bytes?", False),
    )
    seq_no: int
    payload: bytes | None = None


@dataclass(frozen=True, slots=True)
class NackResp(_Message):
    MSG_TYPE: ClassVar[int] = MessageType.NACK_RESP
    GO_FIELDS: ClassVar[tuple[tuple[str, str, str, bool], ...]] = (
        ("seq_no", "SeqNo", "u32", False),
    )
    seq_no: int


@dataclass(frozen=True, slots=True)
class ErrResp(_Message):
    MSG_TYPE: ClassVar[int] = MessageType.ERR
    GO_FIELDS: ClassVar[tuple[tuple[str, str, str, bool], ...]] = (
        ("error", "Error", "str", False),
    )
    error: str


@dataclass(frozen=True, slots=True)
class Suspect(_Message):
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
class Alive(_Message):
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
class Dead(_Message):
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


@dataclass(frozen=True, slots=True)
class Compress(_Message):
    """``compress{Algo, Buf}``; Algo 0 is LZW (:mod:`pysyncer.gossip.lzw`)."""

    MSG_TYPE: ClassVar[int] = MessageType.COMPRESS
    GO_FIELDS: ClassVar[tuple[tuple[str, str, str, bool], ...]] = (
        ("algo", "Algo", "u8", False),
        ("buf", "Buf", "bytes", False),
    )
    algo: int
    buf: bytes


@dataclass(frozen=True, slots=True)
class PushPullHeader(_Struct):
    GO_FIELDS: ClassVar[tuple[tuple[str, str, str, bool], ...]] = (
        ("nodes", "Nodes", "int", False),
        ("user_state_len", "UserStateLen", "int", False),
        ("join", "Join", "bool", False),
    )
    nodes: int
    user_state_len: int
    join: bool


@dataclass(frozen=True, slots=True)
class UserMsgHeader(_Struct):
    GO_FIELDS: ClassVar[tuple[tuple[str, str, str, bool], ...]] = (
        ("user_msg_len", "UserMsgLen", "int", False),
    )
    user_msg_len: int


@dataclass(frozen=True, slots=True)
class PushNodeState(_Struct):
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


# ------------------------------------------------------------------ Serf messages


def serf_user_msg(serf_message: bytes) -> bytes:
    """The memberlist user message (type 8) that carries an encoded Serf message."""
    return bytes((MessageType.USER,)) + serf_message


@dataclass(frozen=True, slots=True)
class SerfJoin(_SerfMessage):
    """Join intent: associates the node with a Lamport time."""

    SERF_TYPE: ClassVar[int] = SerfMessageType.JOIN
    GO_FIELDS: ClassVar[tuple[tuple[str, str, str, bool], ...]] = (
        ("ltime", "LTime", "u64", False),
        ("node", "Node", "str", False),
    )
    ltime: int
    node: str


@dataclass(frozen=True, slots=True)
class SerfLeave(_SerfMessage):
    """Leave intent; ``prune`` removes a failed node's tombstone at once."""

    SERF_TYPE: ClassVar[int] = SerfMessageType.LEAVE
    GO_FIELDS: ClassVar[tuple[tuple[str, str, str, bool], ...]] = (
        ("ltime", "LTime", "u64", False),
        ("node", "Node", "str", False),
        ("prune", "Prune", "bool", False),
    )
    ltime: int
    node: str
    prune: bool = False


@dataclass(frozen=True, slots=True)
class SerfUserEvent(_SerfMessage):
    SERF_TYPE: ClassVar[int] = SerfMessageType.USER_EVENT
    GO_FIELDS: ClassVar[tuple[tuple[str, str, str, bool], ...]] = (
        ("ltime", "LTime", "u64", False),
        ("name", "Name", "str", False),
        ("payload", "Payload", "bytes?", False),
        ("cc", "CC", "bool", False),
    )
    ltime: int
    name: str
    payload: bytes | None
    cc: bool = False


@dataclass(frozen=True, slots=True)
class SerfQuery(_SerfMessage):
    """A query; ``timeout`` is a Go time.Duration in nanoseconds."""

    SERF_TYPE: ClassVar[int] = SerfMessageType.QUERY
    GO_FIELDS: ClassVar[tuple[tuple[str, str, str, bool], ...]] = (
        ("ltime", "LTime", "u64", False),
        ("id", "ID", "u32", False),
        ("addr", "Addr", "bytes", False),
        ("port", "Port", "u16", False),
        ("source_node", "SourceNode", "str", False),
        ("filters", "Filters", "bytes_list?", False),
        ("flags", "Flags", "u32", False),
        ("relay_factor", "RelayFactor", "u8", False),
        ("timeout", "Timeout", "int", False),
        ("name", "Name", "str", False),
        ("payload", "Payload", "bytes?", False),
    )
    ltime: int
    id: int
    addr: bytes
    port: int
    source_node: str
    filters: tuple[bytes, ...] | None
    flags: int
    relay_factor: int
    timeout: int
    name: str
    payload: bytes | None


@dataclass(frozen=True, slots=True)
class SerfQueryResponse(_SerfMessage):
    SERF_TYPE: ClassVar[int] = SerfMessageType.QUERY_RESPONSE
    GO_FIELDS: ClassVar[tuple[tuple[str, str, str, bool], ...]] = (
        ("ltime", "LTime", "u64", False),
        ("id", "ID", "u32", False),
        ("from_node", "From", "str", False),
        ("flags", "Flags", "u32", False),
        ("payload", "Payload", "bytes?", False),
    )
    ltime: int
    id: int
    from_node: str
    flags: int
    payload: bytes | None


@dataclass(frozen=True, slots=True)
class KeyRequest(_SerfMessage):
    """Payload of the ``_serf_install-key`` / ``use-key`` / ``remove-key`` queries."""

    SERF_TYPE: ClassVar[int] = SerfMessageType.KEY_REQUEST
    GO_FIELDS: ClassVar[tuple[tuple[str, str, str, bool], ...]] = (("key", "Key", "bytes?", False),)
    key: bytes | None


@dataclass(frozen=True, slots=True)
class NodeKeyResponse(_SerfMessage):
    """One node's answer to a key query (serf ``nodeKeyResponse``)."""

    SERF_TYPE: ClassVar[int] = SerfMessageType.KEY_RESPONSE
    GO_FIELDS: ClassVar[tuple[tuple[str, str, str, bool], ...]] = (
        ("result", "Result", "bool", False),
        ("message", "Message", "str", False),
        ("keys", "Keys", "strs?", False),
        ("primary_key", "PrimaryKey", "str", False),
    )
    result: bool
    message: str
    keys: tuple[str, ...] | None = None
    primary_key: str = ""


@dataclass(frozen=True, slots=True)
class PushPullUserEvent(_Struct):
    """One user event of Serf's push/pull event ring (serf ``userEvent``).

    The wire shape only; the event Serf delivers is :class:`pysyncer.gossip.lamport.UserEvent`.
    """

    GO_FIELDS: ClassVar[tuple[tuple[str, str, str, bool], ...]] = (
        ("name", "Name", "str", False),
        ("payload", "Payload", "bytes?", False),
    )
    name: str
    payload: bytes | None


@dataclass(frozen=True, slots=True)
class PushPullUserEvents:
    """The user events of one Lamport time in the push/pull ring (serf ``userEvents``)."""

    ltime: int
    events: tuple[PushPullUserEvent, ...]

    def to_struct(self, *, sorted_fields: bool = True) -> dict[str, object]:
        events: object = [event.to_struct(sorted_fields=sorted_fields) for event in self.events]
        if sorted_fields:
            return {"Events": events, "LTime": self.ltime}
        return {"LTime": self.ltime, "Events": events}

    @classmethod
    def from_struct(cls, raw: object) -> PushPullUserEvents:
        fields = _as_map(raw, "userEvents")
        events = fields.get(b"Events")
        if events is not None and type(events) is not list:
            raise _bad("userEvents.Events", events)
        return cls(
            _decode_field("u64", fields.get(b"LTime"), "userEvents.LTime"),
            tuple(PushPullUserEvent.from_struct(event) for event in events or ()),
        )


@dataclass(frozen=True, slots=True)
class SerfPushPull:
    """Serf's push/pull user state (serf ``messagePushPull``).

    ``events`` mirrors Serf's 512-slot event ring: None for an empty slot.
    """

    SERF_TYPE: ClassVar[int] = SerfMessageType.PUSH_PULL
    ltime: int
    status_ltimes: Mapping[str, int]
    left_members: tuple[str, ...]
    event_ltime: int
    events: tuple[PushPullUserEvents | None, ...]
    query_ltime: int

    def to_struct(self, *, sorted_fields: bool = True) -> dict[str, object]:
        fields: dict[str, object] = {
            "LTime": self.ltime,
            "StatusLTimes": dict(self.status_ltimes),
            "LeftMembers": list(self.left_members),
            "EventLTime": self.event_ltime,
            "Events": [
                None if e is None else e.to_struct(sorted_fields=sorted_fields) for e in self.events
            ],
            "QueryLTime": self.query_ltime,
        }
        return dict(sorted(fields.items())) if sorted_fields else fields

    def to_bytes(self, *, sorted_fields: bool = True) -> bytes:
        return wire.encode_message(self.SERF_TYPE, self.to_struct(sorted_fields=sorted_fields))

    @classmethod
    def from_struct(cls, raw: object) -> SerfPushPull:
        fields = _as_map(raw, "messagePushPull")
        status = fields.get(b"StatusLTimes")
        status_map = _as_map(status, "StatusLTimes") if status is not None else {}
        events = fields.get(b"Events")
        if events is not None and type(events) is not list:
            raise _bad("messagePushPull.Events", events)
        left = _decode_field("strs?", fields.get(b"LeftMembers"), "LeftMembers")
        return cls(
            ltime=_decode_field("u64", fields.get(b"LTime"), "LTime"),
            status_ltimes={
                _to_text(k, "StatusLTimes"): _decode_field("u64", v, "StatusLTimes")
                for k, v in status_map.items()
            },
            left_members=left or (),
            event_ltime=_decode_field("u64", fields.get(b"EventLTime"), "EventLTime"),
            events=tuple(
                None if e is None else PushPullUserEvents.from_struct(e) for e in events or ()
            ),
            query_ltime=_decode_field("u64", fields.get(b"QueryLTime"), "QueryLTime"),
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> SerfPushPull:
        msg_type, raw = wire.decode_message(data)
        if msg_type != cls.SERF_TYPE:
            raise MalformedDataError(f"type byte {msg_type} is not a Serf push/pull")
        return cls.from_struct(raw)


@dataclass(frozen=True, slots=True)
class RelayHeader:
    """Where a relayed Serf message goes (serf ``relayHeader``; DestAddr is a net.UDPAddr)."""

    dest_ip: bytes
    dest_port: int
    dest_zone: str
    dest_name: str

    def to_struct(self, *, sorted_fields: bool = True) -> dict[str, object]:
        # net.UDPAddr fields IP, Port, Zone are already sorted; DestAddr < DestName.
        addr = {"IP": self.dest_ip, "Port": self.dest_port, "Zone": self.dest_zone}
        return {"DestAddr": addr, "DestName": self.dest_name}

    @classmethod
    def from_struct(cls, raw: object) -> RelayHeader:
        fields = _as_map(raw, "relayHeader")
        addr = _as_map(fields.get(b"DestAddr") or {}, "relayHeader.DestAddr")
        return cls(
            _decode_field("bytes", addr.get(b"IP"), "DestAddr.IP"),
            _decode_field("int", addr.get(b"Port"), "DestAddr.Port"),
            _decode_field("str", addr.get(b"Zone"), "DestAddr.Zone"),
            _decode_field("str", fields.get(b"DestName"), "DestName"),
        )


def encode_relay(header: RelayHeader, serf_message: bytes) -> bytes:
    """``[9][relayHeader][encoded Serf message]`` (serf ``encodeRelayMessage``)."""
    return wire.encode_message(SerfMessageType.RELAY, header.to_struct()) + serf_message


def decode_relay(data: bytes) -> tuple[RelayHeader, bytes]:
    """The header of a relay message and the Serf message it carries."""
    if not data or data[0] != SerfMessageType.RELAY:
        raise MalformedDataError("not a Serf relay message (type byte 9)")
    raw, end = wire.unpack_from(data, 1)
    return RelayHeader.from_struct(raw), data[end:]


_SERF_CLASSES: dict[int, Any] = {
    SerfMessageType.LEAVE: SerfLeave,
    SerfMessageType.JOIN: SerfJoin,
    SerfMessageType.PUSH_PULL: SerfPushPull,
    SerfMessageType.USER_EVENT: SerfUserEvent,
    SerfMessageType.QUERY: SerfQuery,
    SerfMessageType.QUERY_RESPONSE: SerfQueryResponse,
    SerfMessageType.KEY_REQUEST: KeyRequest,
    SerfMessageType.KEY_RESPONSE: NodeKeyResponse,
}

SerfMessage = (
    SerfJoin
    | SerfLeave
    | SerfPushPull
    | SerfUserEvent
    | SerfQuery
    | SerfQueryResponse
    | KeyRequest
    | NodeKeyResponse
)


def decode_serf(data: bytes) -> SerfMessage:
    """The Serf message in a memberlist user message payload (after the type byte 8).

    Relay messages are unwrapped with :func:`decode_relay` first; conflict responses
    (a serialized Member) are not modelled yet and raise MalformedDataError.
    """
    if not data:
        raise MalformedDataError("empty Serf message")
    cls = _SERF_CLASSES.get(data[0])
    if cls is None:
        raise MalformedDataError(f"unsupported Serf message type {data[0]}")
    message: SerfMessage = cls.from_bytes(data)
    return message
