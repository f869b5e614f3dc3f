"""memberlist TCP stream framing, both directions (``net.go`` ``rawSendMsgStream``/``readStream``).

Owns the bytes around one plaintext stream message (a push/pull body, a ``[0]`` ping,
an ``[8]`` user message with its header, an ``[2]`` ack, an ``[13]`` errResp):

* :func:`frame_stream_message` -- sender side, in memberlist's order: optional LZW
  ``compress`` wrapper, optional ``[10][u32 len][vsn|nonce|ct|tag]`` encryption (AAD =
  the 5 header bytes + the label), then the ``[244][len][label]`` label header.
* :func:`read_stream_message` -- receiver side: reads exactly one framed message from an
  :class:`asyncio.StreamReader` (never to EOF and never past the message: the peer keeps
  the connection open for our reply), checks the label, decrypts, decompresses and
  returns the plaintext message, type byte first.
* :func:`stream_message_end` -- where a complete plaintext message ends in a buffer.

The label header is per *connection*, not per message: memberlist's
``labelWrappedTransport`` writes it once when it dials, and ``handleConn`` strips it once
on accept; the reply on the same connection has no label header, but the label is still
part of the encryption AAD in both directions. Hence ``label_header``: True (default) for
the first message of a connection we dialed / accepted, False for the reply we write on
an accepted connection and for the reply we read on a connection we dialed.

Plaintext streams carry no length prefix, so the reader walks the MessagePack structure
to learn how many bytes are still missing and reads exactly that lower bound each time
(``readexactly``): it never over-reads and never allocates more than ``max_size``.

Budget: ``max_size`` (default :data:`DEFAULT_MAX_STREAM_BYTES`, 10 MiB: the push/pull
state of a pool of :data:`PUSH_PULL_MEMBERS` members with full tags, plus
:data:`MAX_USER_STATE_BYTES` of Serf state) bounds both the bytes read for one message
and what a ``compress`` message may decompress to; a push/pull may list at most
:data:`PUSH_PULL_MEMBERS` members; one compression layer only; decryption is checked
before anything is decompressed. All the messages being read at once, every connection
together, hold at most :data:`MAX_BUFFERED_STREAM_BYTES` (a :class:`StreamBytePool`), so
many slow senders cannot each park a full budget. Going past any of these raises
:class:`StreamBudgetError`, which the agent counts as
``pysyncer_gossip_packets_dropped{reason="stream_budget"}``.

Errors: bad bytes, limits, wrong key and label problems raise :class:`StreamError` (a
:class:`~pysyncer.errors.MalformedDataError`; :class:`StreamBudgetError` for the
budget); the deadline raises :class:`TimeoutError`; EOF raises :class:`StreamClosedError`
(a :class:`ConnectionError`; ``received == 0`` means the peer closed before sending
anything, which memberlist treats as no error).
No sockets are opened here: :mod:`pysyncer.gossip.transport` does that.
"""

from __future__ import annotations

import asyncio
from typing import Any

from pysyncer._core import wire
from pysyncer.errors import MalformedDataError, PysyncerError
from pysyncer.gossip import lzw
from pysyncer.gossip.keyring import (
    DEFAULT_ENCRYPTION_VERSION,
    STREAM_HEADER_SIZE,
    Keyring,
    decrypt_stream_payload,
    encrypt_stream_payload,
    label_bytes,
    stream_payload_length,
)
from pysyncer.gossip.messages import LZW_ALGO, Compress

__all__ = [
    "DEFAULT_MAX_STREAM_BYTES",
    "INBOUND_STREAM_POOL",
    "MAX_BUFFERED_STREAM_BYTES",
    "MAX_USER_STATE_BYTES",
    "PUSH_PULL_MEMBERS",
    "LabelMismatchError",
    "StreamBudgetError",
    "StreamBytePool",
    "StreamClosedError",
    "StreamError",
    "frame_stream_message",
    "read_stream_message",
    "stream_message_end",
]


PUSH_PULL_MEMBERS = 8192
"""Pool size the stream budget is sized for: the most members one push/pull may list."""

_MEMBER_STATE_BYTES = 1024  # one member's node state with 512-byte tags: ~660 bytes

MAX_USER_STATE_BYTES = 2 * 1024 * 1024
"""The layer above's state in a push/pull: Serf's status times and left members of
:data:`PUSH_PULL_MEMBERS` members (~50-130 bytes each) and its event and query buffers."""

DEFAULT_MAX_STREAM_BYTES = PUSH_PULL_MEMBERS * _MEMBER_STATE_BYTES + MAX_USER_STATE_BYTES
"""Budget of one stream message (10 MiB): its bytes on the wire, label header excluded,
and what it decompresses to. memberlist allows 20 MiB of state (40 MiB decompressed);
a pool of a few thousand members needs well under this."""

MAX_BUFFERED_STREAM_BYTES = 4 * DEFAULT_MAX_STREAM_BYTES
"""Bytes all the stream messages being read may hold at once (40 MiB): four full ones.
memberlist lets 128 inbound streams run at once; without this, 128 slow senders could
park 128 budgets."""

_U32_MAX = 0xFFFF_FFFF  # the encrypted length field is a u32; the budget is checked by fill

# Message types made of the type byte and exactly one MessagePack object.
_ONE_OBJECT_TYPES = frozenset(
    (
        wire.PING_MSG,
        wire.INDIRECT_PING_MSG,
        wire.ACK_RESP_MSG,
        wire.SUSPECT_MSG,
        wire.ALIVE_MSG,
        wire.DEAD_MSG,
        wire.COMPRESS_MSG,
        wire.NACK_RESP_MSG,
        wire.ERR_MSG,
    )
)

# MessagePack lead bytes of fixed-size scalars -> total size including the lead byte.
_FIXED_SIZE = {
    0xC0: 1,
    0xC2: 1,
    0xC3: 1,
    0xCA: 5,
    0xCB: 9,
    0xCC: 2,
    0xCD: 3,
    0xCE: 5,
    0xCF: 9,
    0xD0: 2,
    0xD1: 3,
    0xD2: 5,
    0xD3: 9,
}
# Lead byte -> bytes of the big-endian length after it (strings) / count (containers).
_RAW_LEN = {0xC4: 1, 0xD9: 1, 0xC5: 2, 0xDA: 2, 0xC6: 4, 0xDB: 4}
_ARRAY_LEN = {0xDC: 2, 0xDD: 4}
_MAP_LEN = {0xDE: 2, 0xDF: 4}


class StreamError(MalformedDataError):
    """A stream message is malformed, too large, undecryptable or wrongly labelled."""


class StreamBudgetError(StreamError):
    """A stream message is larger, on the wire or decompressed, than the stream budget."""


class StreamBytePool:
    """The bytes that stream messages being read hold, every connection together.

    :meth:`take` refuses (StreamBudgetError) what would pass ``limit``; a reader gives
    back all it took when its message is read or refused.
    """

    __slots__ = ("held", "limit")

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("a stream byte pool needs a limit of at least 1")
        self.limit = limit
        self.held = 0

    def take(self, size: int) -> None:
        if self.held + size > self.limit:
            raise StreamBudgetError(
                f"stream messages being read already hold {self.held} bytes; "
                f"{size} more would pass {self.limit}"
            )
        self.held += size

    def give(self, size: int) -> None:
        self.held -= size


INBOUND_STREAM_POOL = StreamBytePool(MAX_BUFFERED_STREAM_BYTES)
"""The pool every :func:`read_stream_message` of this process takes from by default."""


class LabelMismatchError(StreamError):
    """The stream's label header is missing, unexpected or names another label."""


class StreamClosedError(PysyncerError, ConnectionError):
    """The peer closed the stream before the end of the message.

    ``received`` counts the message bytes read before EOF (0: nothing was sent).
    """

    def __init__(self, message: str, received: int) -> None:
        super().__init__(message)
        self.received = received


# ------------------------------------------------------------------------ sending


def frame_stream_message(
    message: bytes,
    *,
    keyring: Keyring | None,
    label: str = "",
    compress: bool = False,
    label_header: bool = True,
    encryption_version: int = DEFAULT_ENCRYPTION_VERSION,
) -> bytes:
    """The bytes to write on a stream for one plaintext ``message`` (type byte first).

    ``compress`` wraps it in ``compress{Algo: 0, Buf: lzw(message)}`` (memberlist does
    so for every stream message when ``EnableCompression`` is on, smaller or not); a
    ``keyring`` encrypts it with the primary key (AAD = ``[10][u32 len]`` + label); a
    non-empty ``label`` is prefixed as ``[244][len][label]`` unless ``label_header`` is
    False (a reply on an accepted connection: see the module doc).
    """
    if not isinstance(message, bytes):
        raise TypeError(f"message must be bytes, not {type(message).__name__}")
    if not message:
        raise ValueError("a stream message needs at least its type byte")
    label_bytes(label)
    body = message
    if compress:
        body = Compress(algo=LZW_ALGO, buf=lzw.compress(message)).to_bytes()
    if keyring is not None:
        body = encrypt_stream_payload(keyring, body, label, encryption_version)
    if label and label_header:
        body = wire.add_label(body, label)
    return body


# ------------------------------------------------------------ message boundaries


def _scan(buf: bytes | bytearray, pos: int, max_depth: int) -> tuple[bool, int]:
    """Walk one MessagePack object at ``buf[pos:]`` without building it.

    Returns ``(True, end)`` when it is complete, else ``(False, need)`` where ``need`` is
    a lower bound of the buffer length the object needs (so reading up to it can never
    read past the object). Unsupported lead bytes or nesting deeper than ``max_depth``
    raise StreamError.
    """
    n = len(buf)
    remaining = [1]  # items still to walk at each open level; the bottom is the object
    while remaining:
        if remaining[-1] == 0:
            remaining.pop()
            continue
        remaining[-1] -= 1
        after = sum(remaining)  # every item still to come takes at least one byte
        if pos >= n:
            return False, pos + 1 + after
        b = buf[pos]
        if b < 0x80 or b >= 0xE0:
            pos += 1
            continue
        if 0xA0 <= b < 0xC0:
            size, head = b & 0x1F, 1
        elif b in _RAW_LEN:
            width = _RAW_LEN[b]
            if pos + 1 + width > n:
                return False, pos + 1 + width + after
            size, head = int.from_bytes(buf[pos + 1 : pos + 1 + width], "big"), 1 + width
        elif b in _FIXED_SIZE:
            size, head = 0, _FIXED_SIZE[b]
        else:
            if b < 0x90:
                count, head = (b & 0x0F) * 2, 1
            elif b < 0xA0:
                count, head = b & 0x0F, 1
            elif b in _ARRAY_LEN or b in _MAP_LEN:
                width = _ARRAY_LEN.get(b) or _MAP_LEN[b]
                if pos + 1 + width > n:
                    return False, pos + 1 + width + after
                count = int.from_bytes(buf[pos + 1 : pos + 1 + width], "big")
                count *= 2 if b in _MAP_LEN else 1
                head = 1 + width
            else:
                raise StreamError(f"unsupported msgpack lead byte 0x{b:02x} at offset {pos}")
            if len(remaining) > max_depth:
                raise StreamError(f"msgpack containers nested deeper than {max_depth}")
            pos += head
            remaining.append(count)
            continue
        end = pos + head + size
        if end > n:
            return False, end + after
        pos = end
    return True, pos


def _header_int(header: dict[bytes, Any], key: bytes, limit: int) -> int:
    value = header.get(key, 0)
    if value is None:
        return 0
    if type(value) is not int or value < 0:
        raise StreamError(f"stream header {key.decode()} is not a count")
    if value > limit:
        raise StreamBudgetError(f"stream header {key.decode()} is {value}, more than {limit}")
    return value


def _header(buf: bytes | bytearray, pos: int, what: str) -> tuple[dict[bytes, Any], int]:
    header, end = wire.unpack_from(buf, pos, max_depth=1)
    if type(header) is not dict:
        raise StreamError(f"{what} header is not a map")
    return header, end


class _Need(Exception):
    """Internal: the buffer must hold at least ``need`` bytes before parsing goes on."""

    def __init__(self, need: int) -> None:
        super().__init__(need)
        self.need = need


def _object_end(buf: bytes | bytearray, pos: int, max_depth: int, extra: int = 0) -> int:
    done, at = _scan(buf, pos, max_depth)
    if not done:
        raise _Need(at + extra)
    return at


class _Parser:
    """Resumable walk over one plaintext message: ``advance`` picks up where it stopped.

    Objects already walked are not walked again when more bytes arrive, so a push/pull
    of many node states costs one pass however the bytes are chunked.
    """

    __slots__ = ("count", "index", "pos", "state_len", "user")

    def __init__(self) -> None:
        self.pos = 0  # end of what has been walked
        self.count = -1  # node states of a push/pull, once its header is read
        self.index = 0
        self.state_len = 0
        self.user = -1  # payload length of a user message, once its header is read

    def advance(self, buf: bytes | bytearray) -> int:
        """End of the message at the start of ``buf``, or ``_Need`` if more is needed."""
        if not buf:
            raise _Need(1)
        msg_type = buf[0]
        if msg_type in _ONE_OBJECT_TYPES:
            end = _object_end(buf, 1, wire.DEFAULT_MAX_DEPTH)
            wire.unpack_from(buf, 1)  # full validation, once the object is all there
            return end
        if msg_type == wire.PUSH_PULL_MSG:
            if self.count < 0:
                _object_end(buf, 1, 1)
                header, self.pos = _header(buf, 1, "push/pull")
                self.count = _header_int(header, b"Nodes", PUSH_PULL_MEMBERS)
                self.state_len = _header_int(header, b"UserStateLen", MAX_USER_STATE_BYTES)
            while self.index < self.count:
                rest = self.count - self.index - 1 + self.state_len
                self.pos = _object_end(buf, self.pos, 1, rest)
                self.index += 1
            end = self.pos + self.state_len
            if end > len(buf):
                raise _Need(end)
            _, _, _, end = wire.decode_push_pull(bytes(buf[:end]))
            return int(end)
        if msg_type == wire.USER_MSG:
            if self.user < 0:
                _object_end(buf, 1, 1)
                header, self.pos = _header(buf, 1, "user message")
                self.user = _header_int(header, b"UserMsgLen", wire.MAX_USER_MSG_BYTES)
            end = self.pos + self.user
            if end > len(buf):
                raise _Need(end)
            _, end = wire.decode_user_stream(bytes(buf[:end]))
            return int(end)
        raise StreamError(f"unexpected message type {msg_type} on a stream")


def stream_message_end(data: bytes | bytearray) -> int:
    """Length of the complete plaintext stream message at the start of ``data``.

    Push/pull: header + ``Nodes`` states + ``UserStateLen`` bytes; user message: header
    + ``UserMsgLen`` bytes; ping/ack/err/compress/...: one MessagePack object. Raises
    ``wire.IncompleteDataError`` when ``data`` stops early, StreamError (or another
    MalformedDataError) when it is invalid; bytes after the message are ignored.
    """
    try:
        return _Parser().advance(data)
    except _Need as need:
        raise wire.IncompleteDataError(
            f"stream message incomplete: {need.need} bytes needed, {len(data)} present"
        ) from None


# ------------------------------------------------------------------------ reading


class _Frame:
    """Bytes of one message read so far; reads only what the message still needs."""

    __slots__ = ("buf", "max_size", "pool", "reader", "taken")

    def __init__(self, reader: asyncio.StreamReader, max_size: int, pool: StreamBytePool) -> None:
        self.reader = reader
        self.max_size = max_size
        self.pool = pool
        self.taken = 0  # bytes taken from the pool, given back by read_stream_message
        self.buf = bytearray()

    async def fill(self, need: int) -> None:
        """Read until ``len(buf) >= need``; the bound is checked before reading."""
        missing = need - len(self.buf)
        if missing <= 0:
            return
        if need > self.max_size:
            raise StreamBudgetError(
                f"stream message needs at least {need} bytes, more than the limit {self.max_size}"
            )
        self.pool.take(missing)
        self.taken += missing
        try:
            self.buf += await self.reader.readexactly(missing)
        except asyncio.IncompleteReadError as exc:
            received = len(self.buf) + len(exc.partial)
            raise StreamClosedError(
                f"stream closed after {received} bytes of a message needing at least {need}",
                received,
            ) from None


def _unwrap(plain: bytes, *, allow_compress: bool, max_size: int) -> bytes:
    """The plaintext message inside a decrypted (or decompressed) buffer."""
    if not plain:
        raise StreamError("empty stream message")
    msg_type = plain[0]
    if msg_type == wire.ENCRYPT_MSG:
        raise StreamError("an encrypted message inside an encrypted or compressed one")
    if msg_type == wire.COMPRESS_MSG:
        if not allow_compress:
            raise StreamError("a compressed message inside a compressed one")
        return _decompress(plain, max_size)
    try:
        end = stream_message_end(plain)
    except wire.IncompleteDataError as exc:
        raise StreamError(f"truncated inner stream message: {exc}") from None
    return plain[:end]


def _decompress(data: bytes, max_size: int) -> bytes:
    try:
        end = stream_message_end(data)
    except wire.IncompleteDataError as exc:
        raise StreamError(f"truncated compress message: {exc}") from None
    message = Compress.from_bytes(data[:end])
    if message.algo != LZW_ALGO:
        raise StreamError(f"unknown compression algorithm {message.algo}")
    try:
        inner = lzw.decompress(message.buf, max_size)
    except lzw.DecompressionLimitError as exc:
        raise StreamBudgetError(f"compressed stream message: {exc}") from None
    if not inner:
        raise StreamError("decompressed message is empty")
    return _unwrap(inner, allow_compress=False, max_size=max_size)


async def _read_label(frame: _Frame, label: str, label_header: bool) -> None:
    await frame.fill(1)
    if frame.buf[0] != wire.HAS_LABEL_MSG:
        if label and label_header:
            raise LabelMismatchError(f"stream has no label header; expected label {label!r}")
        return
    if not label_header:
        raise LabelMismatchError("unexpected label header on a reply stream")
    await frame.fill(2)
    size = frame.buf[1]
    if size < 1:
        raise LabelMismatchError("label header cannot be empty when present")
    await frame.fill(2 + size)
    try:
        got = frame.buf[2 : 2 + size].decode()
    except UnicodeDecodeError:
        raise LabelMismatchError("stream label is not valid UTF-8") from None
    if got != label:
        raise LabelMismatchError(f"stream label {got!r} is not the expected {label!r}")
    del frame.buf[: 2 + size]


async def _read_message(
    frame: _Frame, keyring: Keyring | None, label: str, label_header: bool, verify_incoming: bool
) -> bytes:
    await _read_label(frame, label, label_header)
    await frame.fill(1)
    if frame.buf[0] == wire.ENCRYPT_MSG:
        if keyring is None:
            raise StreamError("remote stream is encrypted and encryption is not configured")
        await frame.fill(STREAM_HEADER_SIZE)
        length = stream_payload_length(frame.buf, _U32_MAX)
        await frame.fill(STREAM_HEADER_SIZE + length)  # the budget is checked before reading
        try:
            plain = decrypt_stream_payload(keyring, frame.buf, label, length)
        except MalformedDataError as exc:
            raise StreamError(f"cannot decrypt stream message: {exc}") from None
        return _unwrap(plain, allow_compress=True, max_size=frame.max_size)
    if keyring is not None and verify_incoming:
        raise StreamError("encryption is configured but the remote stream is not encrypted")
    parser = _Parser()
    while True:
        try:
            end = parser.advance(frame.buf)
        except _Need as need:
            await frame.fill(need.need)
            continue
        break
    message = bytes(frame.buf[:end])
    if message[0] == wire.COMPRESS_MSG:
        return _decompress(message, frame.max_size)
    return message


async def read_stream_message(
    reader: asyncio.StreamReader,
    *,
    keyring: Keyring | None,
    label: str = "",
    verify_incoming: bool = True,
    timeout: float,
    max_size: int = DEFAULT_MAX_STREAM_BYTES,
    label_header: bool = True,
    pool: StreamBytePool = INBOUND_STREAM_POOL,
) -> bytes:
    """Read exactly one framed stream message and return its plaintext, type byte first.

    With ``label_header`` (first message of a connection) a ``[244]`` header must be
    present and equal ``label`` when ``label`` is set, and absent when it is not; without
    it (a reply) no label header may come, but ``label`` is still the encryption AAD.
    An encrypted message (``[10]``) needs a ``keyring``; a plaintext one is refused when a
    keyring is set and ``verify_incoming`` is True (memberlist ``GossipVerifyIncoming``).
    A ``compress`` message is decompressed, once (not one inside another).

    ``max_size`` bounds the message's bytes on the wire (label header excluded) and what
    it decompresses to, and what is read is taken from ``pool`` until the message is read
    (StreamBudgetError); the whole read is bounded by ``timeout`` seconds (TimeoutError).
    Other failures raise StreamError / MalformedDataError, or StreamClosedError on EOF.
    """
    label_bytes(label)
    if max_size < 1:
        raise ValueError("max_size must be at least 1")
    frame = _Frame(reader, max_size, pool)
    try:
        async with asyncio.timeout(timeout):
            return await _read_message(frame, keyring, label, label_header, verify_incoming)
    except (StreamError, StreamClosedError, TimeoutError):
        raise
    except MalformedDataError as exc:
        raise StreamError(str(exc)) from exc
    finally:
        pool.give(frame.taken)
