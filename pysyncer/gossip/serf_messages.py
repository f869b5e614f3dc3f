"""Typed Serf messages: what rides inside a memberlist user message (serf/messages.go).

Owns the shape of every Serf message a pysyncer node exchanges with Serf peers: the Serf
type byte (:class:`SerfMessageType`), join and leave intents, user events, queries and
their responses, the key-rotation request and answer, Serf's push/pull state with its
user-event ring, and the relay wrapper. Go's field names and types go on the wire, as
for the memberlist messages; the codec that maps a Go struct to its msgpack map and back
(key order, zero values, nil versus empty) is :mod:`pysyncer.gossip.messages`' and is
not written again here.

Bad bytes raise :class:`~pysyncer.errors.MalformedDataError`, never anything else.
Plain data: must not import any gossip module but :mod:`~pysyncer.gossip.messages` (no
node, no Serf, no sockets), so the Serf parts and the tests can share these shapes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, ClassVar

from pysyncer._core import wire
from pysyncer.errors import MalformedDataError
from pysyncer.gossip.messages import (
    GoMessage,
    GoStruct,
    decode_field,
    decode_map,
    unexpected_type,
)

__all__ = [
    "SERF_PROTOCOL_VERSION_MAX",
    "SERF_PROTOCOL_VERSION_MIN",
    "KeyRequest",
    "NodeKeyResponse",
    "PushPullUserEvent",
    "PushPullUserEvents",
    "QueryFlag",
    "RelayHeader",
    "SerfJoin",
    "SerfLeave",
    "SerfMessage",
    "SerfMessageType",
    "SerfPushPull",
    "SerfQuery",
    "SerfQueryResponse",
    "SerfUserEvent",
    "decode_relay",
    "decode_serf",
    "encode_relay",
]


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


class QueryFlag(IntEnum):
    """Bits of SerfQuery.flags / SerfQueryResponse.flags."""

    ACK = 1
    NO_BROADCAST = 2


SERF_PROTOCOL_VERSION_MIN = 2
SERF_PROTOCOL_VERSION_MAX = 5


@dataclass(frozen=True, slots=True)
class SerfJoin(GoMessage):
    """Join intent: associates the node with a Lamport time."""

    MSG_TYPE: ClassVar[int] = SerfMessageType.JOIN
    GO_FIELDS: ClassVar[tuple[tuple[str, str, str, bool], ...]] = (
        ("ltime", "LTime", "u64", False),
        ("node", "Node", "str", False),
    )
    ltime: int
    node: str


@dataclass(frozen=True, slots=True)
class SerfLeave(GoMessage):
    """Leave intent; ``prune`` removes a failed node's tombstone at once."""

    MSG_TYPE: ClassVar[int] = SerfMessageType.LEAVE
    GO_FIELDS: ClassVar[tuple[tuple[str, str, str, bool], ...]] = (
        ("ltime", "LTime", "u64", False),
        ("node", "Node", "str", False),
        ("prune", "Prune", "bool", False),
    )
    ltime: int
    node: str
    prune: bool = False


@dataclass(frozen=True, slots=True)
class SerfUserEvent(GoMessage):
    MSG_TYPE: ClassVar[int] = SerfMessageType.USER_EVENT
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
class SerfQuery(GoMessage):
    """A query; ``timeout`` is a Go time.Duration in nanoseconds."""

    MSG_TYPE: ClassVar[int] = SerfMessageType.QUERY
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
class SerfQueryResponse(GoMessage):
    MSG_TYPE: ClassVar[int] = SerfMessageType.QUERY_RESPONSE
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
class KeyRequest(GoMessage):
    """Payload of the ``_serf_install-key`` / ``use-key`` / ``remove-key`` queries."""

    MSG_TYPE: ClassVar[int] = SerfMessageType.KEY_REQUEST
    GO_FIELDS: ClassVar[tuple[tuple[str, str, str, bool], ...]] = (("key", "Key", "bytes?", False),)
    key: bytes | None


@dataclass(frozen=True, slots=True)
class NodeKeyResponse(GoMessage):
    """One node's answer to a key query (serf ``nodeKeyResponse``)."""

    MSG_TYPE: ClassVar[int] = SerfMessageType.KEY_RESPONSE
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
class PushPullUserEvent(GoStruct):
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
        fields = decode_map(raw, "userEvents")
        events = fields.get(b"Events")
        if events is not None and type(events) is not list:
            raise unexpected_type("userEvents.Events", events)
        return cls(
            decode_field("u64", fields.get(b"LTime"), "userEvents.LTime"),
            tuple(PushPullUserEvent.from_struct(event) for event in events or ()),
        )


@dataclass(frozen=True, slots=True)
class SerfPushPull:
    """Serf's push/pull user state (serf ``messagePushPull``).

    ``events`` mirrors Serf's 512-slot event ring: None for an empty slot.
    """

    MSG_TYPE: ClassVar[int] = SerfMessageType.PUSH_PULL
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
        return wire.encode_message(self.MSG_TYPE, self.to_struct(sorted_fields=sorted_fields))

    @classmethod
    def from_struct(cls, raw: object) -> SerfPushPull:
        fields = decode_map(raw, "messagePushPull")
        status = fields.get(b"StatusLTimes")
        status_map = decode_map(status, "StatusLTimes") if status is not None else {}
        events = fields.get(b"Events")
        if events is not None and type(events) is not list:
            raise unexpected_type("messagePushPull.Events", events)
        left = decode_field("strs?", fields.get(b"LeftMembers"), "LeftMembers")
        return cls(
            ltime=decode_field("u64", fields.get(b"LTime"), "LTime"),
            status_ltimes={
                decode_field("str", k, "StatusLTimes"): decode_field("u64", v, "StatusLTimes")
                for k, v in status_map.items()
            },
            left_members=left or (),
            event_ltime=decode_field("u64", fields.get(b"EventLTime"), "EventLTime"),
            events=tuple(
                None if e is None else PushPullUserEvents.from_struct(e) for e in events or ()
            ),
            query_ltime=decode_field("u64", fields.get(b"QueryLTime"), "QueryLTime"),
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> SerfPushPull:
        msg_type, raw = wire.decode_message(data)
        if msg_type != cls.MSG_TYPE:
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
        fields = decode_map(raw, "relayHeader")
        addr = decode_map(fields.get(b"DestAddr") or {}, "relayHeader.DestAddr")
        return cls(
            decode_field("bytes", addr.get(b"IP"), "DestAddr.IP"),
            decode_field("int", addr.get(b"Port"), "DestAddr.Port"),
            decode_field("str", addr.get(b"Zone"), "DestAddr.Zone"),
            decode_field("str", fields.get(b"DestName"), "DestName"),
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
