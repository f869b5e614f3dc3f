"""ZooKeeper's jute wire format: frames, records, op codes, error codes.

Pure encoding and decoding (no I/O), written from the ``zookeeper.jute`` record
definitions and ``ZooDefs``/``KeeperException.Code``: big-endian ``int``/``long``,
one-byte ``boolean``, ``buffer``/``ustring`` as an int length (-1 = null) plus bytes,
``vector`` as an int count (-1 = null) plus items. Every frame on the socket is a
4-byte big-endian length followed by that many bytes.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

__all__ = [
    "ACL",
    "AUTH_XID",
    "MAX_FRAME",
    "NOTIFICATION_XID",
    "OPEN_ACL",
    "PING_XID",
    "SET_WATCHES_XID",
    "ConnectRequest",
    "ConnectResponse",
    "CreateFlag",
    "Err",
    "EventType",
    "KeeperState",
    "MultiOp",
    "Op",
    "Perm",
    "Reader",
    "Stat",
    "WatcherEvent",
    "Writer",
    "auth_request",
    "frame",
    "perms_from_letters",
    "request",
]

NOTIFICATION_XID: Final = -1
PING_XID: Final = -2
AUTH_XID: Final = -4
SET_WATCHES_XID: Final = -8
MAX_FRAME: Final = 64 * 1024 * 1024  # larger than jute.maxbuffer's 0xfffff default, bounded


class Op:
    """Request op codes (``ZooDefs.OpCode``)."""

    NOTIFICATION: Final = 0
    CREATE: Final = 1
    DELETE: Final = 2
    EXISTS: Final = 3
    GET_DATA: Final = 4
    SET_DATA: Final = 5
    GET_CHILDREN: Final = 8
    SYNC: Final = 9
    PING: Final = 11
    GET_CHILDREN2: Final = 12
    CHECK: Final = 13
    MULTI: Final = 14
    CREATE2: Final = 15
    AUTH: Final = 100
    SET_WATCHES: Final = 101
    CLOSE_SESSION: Final = -11
    ERROR: Final = -1


class CreateFlag:
    """``CreateMode`` flag values of a create request."""

    PERSISTENT: Final = 0
    EPHEMERAL: Final = 1
    SEQUENTIAL: Final = 2
    CONTAINER: Final = 4


class EventType:
    """``Watcher.Event.EventType`` values of a watch notification."""

    NONE: Final = -1
    NODE_CREATED: Final = 1
    NODE_DELETED: Final = 2
    NODE_DATA_CHANGED: Final = 3
    NODE_CHILDREN_CHANGED: Final = 4


class KeeperState:
    """``Watcher.Event.KeeperState`` values."""

    DISCONNECTED: Final = 0
    SYNC_CONNECTED: Final = 3
    AUTH_FAILED: Final = 4
    CONNECTED_READ_ONLY: Final = 5
    EXPIRED: Final = -112
    CLOSED: Final = 7


class Err:
    """``KeeperException.Code`` values (0 is OK)."""

    OK: Final = 0
    SYSTEM_ERROR: Final = -1
    RUNTIME_INCONSISTENCY: Final = -2
    DATA_INCONSISTENCY: Final = -3
    CONNECTION_LOSS: Final = -4
    MARSHALLING_ERROR: Final = -5
    UNIMPLEMENTED: Final = -6
    OPERATION_TIMEOUT: Final = -7
    BAD_ARGUMENTS: Final = -8
    UNKNOWN_SESSION: Final = -12
    NEW_CONFIG_NO_QUORUM: Final = -13
    RECONFIG_IN_PROGRESS: Final = -14
    API_ERROR: Final = -100
    NO_NODE: Final = -101
    NO_AUTH: Final = -102
    BAD_VERSION: Final = -103
    NO_CHILDREN_FOR_EPHEMERALS: Final = -108
    NODE_EXISTS: Final = -110
    NOT_EMPTY: Final = -111
    SESSION_EXPIRED: Final = -112
    INVALID_CALLBACK: Final = -113
    INVALID_ACL: Final = -114
    AUTH_FAILED: Final = -115
    SESSION_MOVED: Final = -118
    NOT_READ_ONLY: Final = -119
    EPHEMERAL_ON_LOCAL_SESSION: Final = -120
    NO_WATCHER: Final = -121
    REQUEST_TIMEOUT: Final = -122
    RECONFIG_DISABLED: Final = -123
    SESSION_CLOSED_REQUIRE_SASL_AUTH: Final = -124
    QUOTA_EXCEEDED: Final = -125
    THROTTLED_OP: Final = -127


ERROR_NAMES: Final[dict[int, str]] = {
    value: name
    for name, value in vars(Err).items()
    if not name.startswith("_") and isinstance(value, int)
}

_INT = struct.Struct(">i")
_LONG = struct.Struct(">q")
_STAT = struct.Struct(">qqqqiiiqiiq")


class Perm:
    """ACL permission bits (``ZooDefs.Perms``)."""

    READ: Final = 1
    WRITE: Final = 2
    CREATE: Final = 4
    DELETE: Final = 8
    ADMIN: Final = 16
    ALL: Final = 31


PERM_LETTERS: Final = {"r": Perm.READ, "w": Perm.WRITE, "c": Perm.CREATE, "d": Perm.DELETE,
                       "a": Perm.ADMIN}  # fmt: skip
"""The letters of ZooKeeper's CLI (``setAcl /p world:anyone:rc``)."""

ACL = tuple[tuple[int, str, str], ...]
"""An ACL: ``(perms, scheme, id)`` entries."""

# world:anyone with every permission (ZooDefs.Ids.OPEN_ACL_UNSAFE)
OPEN_ACL: Final[ACL] = ((Perm.ALL, "world", "anyone"),)


def perms_from_letters(text: str) -> int:
    """``"rc"`` -> READ|CREATE; ValueError naming a letter that is not one of ``rwcda``."""
    perms = 0
    for letter in text:
        if letter not in PERM_LETTERS:
            raise ValueError(f"{letter!r} is not a permission letter (r, w, c, d, a)")
        perms |= PERM_LETTERS[letter]
    return perms


def auth_request(scheme: str, credential: bytes) -> bytes:
    """A framed ``AuthPacket`` (``addauth``): sent with xid -4 on every new connection."""
    body = Writer().i32(0).string(scheme).buffer(credential).getvalue()
    return request(AUTH_XID, Op.AUTH, body)


class Writer:
    """Builds one jute record."""

    __slots__ = ("_parts",)

    def __init__(self) -> None:
        self._parts: list[bytes] = []

    def i32(self, value: int) -> Writer:
        self._parts.append(_INT.pack(value))
        return self

    def i64(self, value: int) -> Writer:
        self._parts.append(_LONG.pack(value))
        return self

    def boolean(self, value: bool) -> Writer:
        self._parts.append(b"\x01" if value else b"\x00")
        return self

    def buffer(self, value: bytes | None) -> Writer:
        if value is None:
            return self.i32(-1)
        self._parts.append(_INT.pack(len(value)))
        self._parts.append(bytes(value))
        return self

    def string(self, value: str | None) -> Writer:
        return self.buffer(None if value is None else value.encode("utf-8"))

    def strings(self, values: Sequence[str] | None) -> Writer:
        if values is None:
            return self.i32(-1)
        self.i32(len(values))
        for value in values:
            self.string(value)
        return self

    def acl(self, entries: Sequence[tuple[int, str, str]]) -> Writer:
        self.i32(len(entries))
        for perms, scheme, ident in entries:
            self.i32(perms).string(scheme).string(ident)
        return self

    def getvalue(self) -> bytes:
        return b"".join(self._parts)


class Reader:
    """Reads one jute record; a short or malformed record raises ValueError."""

    __slots__ = ("_data", "pos")

    def __init__(self, data: bytes, pos: int = 0) -> None:
        self._data = data
        self.pos = pos

    def _take(self, size: int) -> bytes:
        end = self.pos + size
        if size < 0 or end > len(self._data):
            raise ValueError(f"jute record truncated at byte {self.pos} (wanted {size})")
        chunk = self._data[self.pos : end]
        self.pos = end
        return chunk

    def i32(self) -> int:
        value: int = _INT.unpack(self._take(4))[0]
        return value

    def i64(self) -> int:
        value: int = _LONG.unpack(self._take(8))[0]
        return value

    def boolean(self) -> bool:
        return self._take(1) != b"\x00"

    def buffer(self) -> bytes | None:
        size = self.i32()
        if size == -1:
            return None
        if size < -1:
            raise ValueError(f"negative jute buffer length {size}")
        return self._take(size)

    def string(self) -> str | None:
        raw = self.buffer()
        if raw is None:
            return None
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ValueError(f"jute ustring is not UTF-8: {exc}") from None

    def strings(self) -> list[str]:
        count = self.i32()
        if count == -1:
            return []
        if count < 0 or count > len(self._data) - self.pos:  # each item takes >= 4 bytes
            raise ValueError(f"bad jute vector length {count}")
        return [self.string() or "" for _ in range(count)]

    def stat(self) -> Stat:
        return Stat(*_STAT.unpack(self._take(_STAT.size)))

    @property
    def remaining(self) -> int:
        return len(self._data) - self.pos


@dataclass(frozen=True, slots=True)
class Stat:
    """A znode's ``Stat`` record."""

    czxid: int
    mzxid: int
    ctime: int
    mtime: int
    version: int
    cversion: int
    aversion: int
    ephemeral_owner: int
    data_length: int
    num_children: int
    pzxid: int


@dataclass(frozen=True, slots=True)
class ConnectRequest:
    """The session handshake a client sends first (plus the ``readOnly`` flag byte)."""

    protocol_version: int
    last_zxid_seen: int
    timeout_ms: int
    session_id: int
    password: bytes
    read_only: bool = False

    def encode(self) -> bytes:
        return (
            Writer()
            .i32(self.protocol_version)
            .i64(self.last_zxid_seen)
            .i32(self.timeout_ms)
            .i64(self.session_id)
            .buffer(self.password)
            .boolean(self.read_only)
            .getvalue()
        )

    @classmethod
    def decode(cls, data: bytes) -> ConnectRequest:
        r = Reader(data)
        version, zxid, timeout, session = r.i32(), r.i64(), r.i32(), r.i64()
        password = r.buffer() or b""
        read_only = r.boolean() if r.remaining else False
        return cls(version, zxid, timeout, session, password, read_only)


@dataclass(frozen=True, slots=True)
class ConnectResponse:
    """The server's answer; ``timeout_ms <= 0`` means the session has expired."""

    protocol_version: int
    timeout_ms: int
    session_id: int
    password: bytes
    read_only: bool = False

    @property
    def expired(self) -> bool:
        return self.timeout_ms <= 0

    def encode(self) -> bytes:
        return (
            Writer()
            .i32(self.protocol_version)
            .i32(self.timeout_ms)
            .i64(self.session_id)
            .buffer(self.password)
            .boolean(self.read_only)
            .getvalue()
        )

    @classmethod
    def decode(cls, data: bytes) -> ConnectResponse:
        r = Reader(data)
        version, timeout, session = r.i32(), r.i32(), r.i64()
        password = r.buffer() or b""
        read_only = r.boolean() if r.remaining else False  # older servers omit it
        return cls(version, timeout, session, password, read_only)


@dataclass(frozen=True, slots=True)
class WatcherEvent:
    """A watch notification (sent with xid -1)."""

    type: int
    state: int
    path: str

    @classmethod
    def decode(cls, r: Reader) -> WatcherEvent:
        return cls(r.i32(), r.i32(), r.string() or "")

    def encode(self) -> bytes:
        return Writer().i32(self.type).i32(self.state).string(self.path).getvalue()


@dataclass(frozen=True, slots=True)
class MultiOp:
    """One operation of a ``multi`` transaction: create, delete, set_data or check."""

    op: int
    path: str
    data: bytes = b""
    flags: int = CreateFlag.PERSISTENT
    version: int = -1
    acl: ACL = OPEN_ACL

    def encode_body(self, w: Writer) -> None:
        if self.op == Op.CREATE:
            w.string(self.path).buffer(self.data).acl(self.acl).i32(self.flags)
        elif self.op in (Op.DELETE, Op.CHECK):
            w.string(self.path).i32(self.version)
        elif self.op == Op.SET_DATA:
            w.string(self.path).buffer(self.data).i32(self.version)
        else:
            raise ValueError(f"op {self.op} cannot be part of a multi")


def frame(payload: bytes) -> bytes:
    """A length-prefixed frame."""
    return _INT.pack(len(payload)) + payload


def request(xid: int, op: int, body: bytes = b"") -> bytes:
    """A framed request: ``RequestHeader(xid, type)`` then the body."""
    return frame(_INT.pack(xid) + _INT.pack(op) + body)


def frame_length(header: bytes) -> int:
    """The payload length announced by a 4-byte frame header; ValueError when out of range."""
    (size,) = _INT.unpack(header)
    if size < 0 or size > MAX_FRAME:
        raise ValueError(f"frame length {size} out of range")
    return int(size)


def reply_header(r: Reader) -> tuple[int, int, int]:
    """``ReplyHeader``: (xid, zxid, err)."""
    return r.i32(), r.i64(), r.i32()


def encode_multi(ops: Sequence[MultiOp]) -> bytes:
    """The body of a ``multi`` request: MultiHeader + op per item, then the end marker."""
    w = Writer()
    for op in ops:
        w.i32(op.op).boolean(False).i32(-1)
        op.encode_body(w)
    w.i32(-1).boolean(True).i32(-1)
    return w.getvalue()


def decode_multi(r: Reader) -> list[tuple[int, int, str | Stat | None]]:
    """Results of a ``multi``: (op, err, path for create / stat for set_data / None)."""
    results: list[tuple[int, int, str | Stat | None]] = []
    while True:
        op, done, err = r.i32(), r.boolean(), r.i32()
        if done:
            return results
        if op == Op.ERROR:
            results.append((op, r.i32(), None))
        elif op == Op.CREATE:
            results.append((op, Err.OK, r.string()))
        elif op == Op.CREATE2:
            path = r.string()
            r.stat()
            results.append((op, Err.OK, path))
        elif op == Op.SET_DATA:
            results.append((op, Err.OK, r.stat()))
        elif op in (Op.DELETE, Op.CHECK):
            results.append((op, err if err != -1 else Err.OK, None))
        else:
            raise ValueError(f"unexpected op {op} in a multi response")
