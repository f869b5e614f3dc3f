"""The UDP packet pipeline of memberlist, both ways.

Sending: one message or a compound of several -> LZW compression when it makes the
packet smaller -> CRC prefix for peers that speak protocol 5 -> AES-GCM with the
primary key -> label header. Receiving undoes it in the opposite order and flattens
compound, compressed and CRC-wrapped messages into the plain messages inside.

Every way a packet can be bad raises :class:`PacketError` with a short ``reason``
(``label``, ``decrypt``, ``plaintext``, ``crc``, ``compound``, ``compress``,
``compress_nested``, ``budget``, ``nesting``, ``empty``) that the node counts
(``pysyncer_gossip_packets_dropped{reason}``); nothing else escapes, so a hostile packet
can never break the receive loop.

Bounds, against packets built to expand (a "zip bomb" of compressed compound parts):

* decryption comes first: with a keyring, a packet that does not decrypt is refused
  (``decrypt``) before any of it is decompressed, unless ``verify_incoming`` is off;
* one compression layer: a ``compress`` message inside a decompressed one is refused
  (``compress_nested``); memberlist compresses a packet once, around its compound;
* :data:`MAX_PACKET_DECOMPRESSED_BYTES` bounds the bytes decompressed from one packet,
  summed over all its compound parts (``budget``): memberlist compresses only when that
  makes the packet smaller and fills a packet up to its UDP buffer, so a legitimate
  packet never expands past one 64 KiB buffer; four of them leave room for any sender.
"""

from __future__ import annotations

from collections.abc import Sequence

from pysyncer._core import wire
from pysyncer.errors import MalformedDataError
from pysyncer.gossip import lzw
from pysyncer.gossip.keyring import Keyring, decrypt_packet, encrypt_packet
from pysyncer.gossip.messages import LZW_ALGO, Compress
from pysyncer.gossip.transport import UDP_PACKET_BUF_SIZE

__all__ = [
    "COMPOUND_OVERHEAD",
    "COMPOUND_PART_OVERHEAD",
    "MAX_NESTING",
    "MAX_PACKET_DECOMPRESSED_BYTES",
    "PacketError",
    "decode_packet",
    "encode_packet",
    "label_overhead",
]

COMPOUND_OVERHEAD = 2  # type byte + part count
COMPOUND_PART_OVERHEAD = 2  # u16 length per part
MAX_NESTING = 4  # crc > compress > compound > message is the deepest memberlist sends
MAX_PACKET_DECOMPRESSED_BYTES = 4 * UDP_PACKET_BUF_SIZE
"""Bytes one UDP packet may decompress to, all its compound parts together (256 KiB)."""


class PacketError(MalformedDataError):
    """A received packet was dropped; ``reason`` names the pipeline step that refused it."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


def label_overhead(label: str) -> int:
    return 2 + len(label.encode()) if label else 0


def encode_packet(
    messages: Sequence[bytes],
    *,
    keyring: Keyring | None = None,
    label: str = "",
    crc: bool = False,
    compress: bool = False,
) -> bytes:
    """One UDP packet carrying ``messages`` (each starting with its type byte)."""
    if not messages:
        raise ValueError("a packet needs at least one message")
    body = messages[0] if len(messages) == 1 else wire.build_compound(list(messages))
    if compress:
        packed = Compress(LZW_ALGO, lzw.compress(body)).to_bytes()
        if len(packed) < len(body):
            body = packed
    if crc:
        body = wire.add_crc(body)
    if keyring is not None:
        body = encrypt_packet(keyring, body, label)
    if label:
        body = wire.add_label(body, label)
    return body


def decode_packet(
    data: bytes,
    *,
    keyring: Keyring | None = None,
    label: str = "",
    verify_incoming: bool = True,
    max_decompressed: int = MAX_PACKET_DECOMPRESSED_BYTES,
) -> tuple[list[bytes], int]:
    """The plain messages in a received packet, and how many compound parts were cut off.

    ``max_decompressed`` bounds the bytes decompressed from the whole packet.
    """
    try:
        body, got_label = wire.strip_label(data)
    except MalformedDataError as exc:
        raise PacketError("label", str(exc)) from None
    if got_label != label:
        raise PacketError("label", f"packet label {got_label!r} is not {label!r}")
    if keyring is not None:
        try:
            body = decrypt_packet(keyring, body, label)
        except MalformedDataError as exc:
            if verify_incoming:
                raise PacketError("decrypt", str(exc)) from None
    unwrapper = _Unwrapper(max_decompressed)
    truncated = unwrapper.unwrap(body, 0, compressed=False)
    return unwrapper.messages, truncated


class _Unwrapper:
    """Flattens one packet's body; ``room`` is what is left of its decompression budget."""

    __slots__ = ("messages", "room")

    def __init__(self, room: int) -> None:
        self.messages: list[bytes] = []
        self.room = room

    def unwrap(self, body: bytes, depth: int, *, compressed: bool) -> int:
        """Append the plain messages in ``body``; the compound parts cut off."""
        if depth > MAX_NESTING:
            raise PacketError("nesting", f"wrapped deeper than {MAX_NESTING} levels")
        if not body:
            raise PacketError("empty", "no message type byte")
        kind = body[0]
        if kind == wire.HAS_CRC_MSG:
            try:
                inner = wire.verify_crc(body)
            except MalformedDataError as exc:
                raise PacketError("crc", str(exc)) from None
            return self.unwrap(inner, depth + 1, compressed=compressed)
        if kind == wire.COMPRESS_MSG:
            if compressed:
                raise PacketError("compress_nested", "a compressed message inside another one")
            return self.unwrap(self._decompress(body), depth + 1, compressed=True)
        if kind == wire.COMPOUND_MSG:
            try:
                parts, truncated = wire.split_compound(body)
            except MalformedDataError as exc:
                raise PacketError("compound", str(exc)) from None
            for part in parts:
                truncated += self.unwrap(part, depth + 1, compressed=compressed)
            return truncated
        if kind == wire.ENCRYPT_MSG or kind == wire.HAS_LABEL_MSG:
            raise PacketError("plaintext", f"message type {kind} is not allowed inside a packet")
        self.messages.append(body)
        return 0

    def _decompress(self, body: bytes) -> bytes:
        try:
            compressed = Compress.from_bytes(body)
            if compressed.algo != LZW_ALGO:
                raise MalformedDataError(f"unknown compression algorithm {compressed.algo}")
            inner = lzw.decompress(compressed.buf, max_size=self.room)
        except lzw.DecompressionLimitError as exc:
            raise PacketError("budget", f"packet decompresses past its budget: {exc}") from None
        except MalformedDataError as exc:
            raise PacketError("compress", str(exc)) from None
        self.room -= len(inner)
        return inner
