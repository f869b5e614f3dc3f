"""LZW codec of memberlist's ``compressMsg`` (Algo 0), bit-compatible with Go's compress/lzw.

Owns :func:`compress` and :func:`decompress` for the one variant memberlist uses:
``lzw.NewWriter(w, lzw.LSB, 8)`` / ``lzw.NewReader(r, lzw.LSB, 8)``, i.e. GIF-style LZW,
codes packed least significant bit first, 8-bit literals, codes 9 to 12 bits wide. The
msgpack ``compress{Algo, Buf}`` envelope around the bytes belongs to the message layer.

The exact rules implemented (those of Go's ``compress/lzw`` writer and reader):

* Codes 0..255 are literals, 256 is the clear code, 257 the end (EOF) code; the first
  table entry defined after a clear is 258. Every code starts 9 bits wide.
* ``hi`` is the most recently defined code, 257 right after a clear. The writer adds
  one to ``hi`` after every data code it emits (the entry "emitted string + next byte"
  gets number ``hi``); the reader adds one after every data code it reads (defining
  entry ``hi`` - 1 from the previous code once it knows the next string's first byte).
  Both widen codes by one bit as soon as ``hi`` reaches ``1 << width`` (512, 1024,
  2048), so the code *after* the one that made ``hi`` 512 is the first 10-bit code.
  No "early change" (that is the TIFF/PDF variant, which this is not).
* Table full: when the writer's ``hi`` reaches 4095 it emits a clear code, still 12
  bits wide, and restarts at 9 bits with an empty table (entry 4095 is never defined by
  this writer). The reader, which must also accept other writers, stops defining
  entries once ``hi`` would pass 4095 and keeps decoding 12-bit codes with the full
  table until it meets a clear code.
* A stream starts with a clear code (current Go writers send one, as does the Serf
  agent tested in ``tests/test_serf_encrypt_interop.py``; older Go writers did not, and
  the reader accepts both) and ends with the EOF code, then the pending bits padded
  with zeros to a whole byte. The empty input compresses to clear + EOF: ``00 03 02``.
  At close, the writer emits its pending code, advances ``hi`` once more (which may
  widen the EOF code, or emit a clear first), then the EOF code.
* The reader rejects a code above ``hi`` ("invalid code") and input that ends before
  the EOF code ("unexpected EOF"); bytes after the EOF code are ignored.

:func:`decompress` raises :class:`~pysyncer.errors.MalformedDataError` for invalid or
truncated streams, and :class:`DecompressionLimitError` (one of them) before the output
would pass ``max_size``: the bytes of a code are checked against the room left before
they are appended, so the output never grows past ``max_size``. Callers pass their own
budget (a UDP packet's in :mod:`pysyncer.gossip.packet`, a stream message's in
:mod:`pysyncer.gossip.stream`); the default is memberlist's ``maxDecompressedBytes``.
Every code consumes at least 9 input bits and produces at most 4096 bytes, so work is
linear in the input. The table holds at most 4096 entries, each one byte longer than an
earlier code's output, so its bytes never exceed the output's plus 4096.
"""

from __future__ import annotations

from pysyncer.errors import MalformedDataError

__all__ = [
    "CLEAR_CODE",
    "EOF_CODE",
    "MAX_CODE",
    "MAX_DECOMPRESSED_BYTES",
    "MAX_WIDTH",
    "DecompressionLimitError",
    "compress",
    "decompress",
]

CLEAR_CODE: int = 256
"""Resets the table and the code width to 9 bits."""

EOF_CODE: int = 257
"""Ends the stream."""

MAX_WIDTH: int = 12
"""Widest code, in bits."""

MAX_CODE: int = (1 << MAX_WIDTH) - 1
"""4095: the writer sends a clear code when its next entry would get this number."""

MAX_DECOMPRESSED_BYTES: int = 40 * 1024 * 1024
"""memberlist's ``maxDecompressedBytes`` (2 x 20 MiB push/pull state): default bound."""


class DecompressionLimitError(MalformedDataError):
    """A compressed stream would decompress to more than the caller's budget."""


_FIRST_WIDTH = 9
_FIRST_OVERFLOW = 1 << _FIRST_WIDTH
_EMPTY_STREAM = b"\x00\x03\x02"  # clear (9 bits) + EOF (9 bits) + 6 zero bits
_LITERALS = tuple(bytes((i,)) for i in range(256))


def compress(data: bytes) -> bytes:
    """LZW-compress ``data`` exactly as Go's ``lzw.NewWriter(w, lzw.LSB, 8)`` + Close does."""
    if not data:
        return _EMPTY_STREAM
    out = bytearray()
    append = out.append
    # The bit accumulator starts with the leading 9-bit clear code already in it.
    bits = CLEAR_CODE
    nbits = _FIRST_WIDTH
    width = _FIRST_WIDTH
    hi = EOF_CODE
    overflow = _FIRST_OVERFLOW
    table: dict[int, int] = {}
    get = table.get
    code = data[0]
    for byte in memoryview(data)[1:]:
        key = (code << 8) | byte
        found = get(key)
        if found is not None:
            code = found
            continue
        bits |= code << nbits
        nbits += width
        while nbits >= 8:
            append(bits & 0xFF)
            bits >>= 8
            nbits -= 8
        code = byte
        hi += 1
        if hi == overflow:
            width += 1
            overflow <<= 1
        if hi == MAX_CODE:
            bits |= CLEAR_CODE << nbits
            nbits += width
            width = _FIRST_WIDTH
            hi = EOF_CODE
            overflow = _FIRST_OVERFLOW
            table.clear()
            continue
        table[key] = hi
    # Close: the pending code, one more hi step, then EOF and the final partial byte.
    bits |= code << nbits
    nbits += width
    hi += 1
    if hi == overflow:
        width += 1
    if hi == MAX_CODE:
        bits |= CLEAR_CODE << nbits
        nbits += width
        width = _FIRST_WIDTH
    bits |= EOF_CODE << nbits
    nbits += width
    while nbits > 0:
        append(bits & 0xFF)
        bits >>= 8
        nbits -= 8
    return bytes(out)


def decompress(data: bytes, max_size: int = MAX_DECOMPRESSED_BYTES) -> bytes:
    """Decompress a Go ``compress/lzw`` LSB/8 stream, at most ``max_size`` bytes of output.

    Raises :class:`~pysyncer.errors.MalformedDataError` when the stream holds an invalid
    code or ends before its EOF code, and :class:`DecompressionLimitError` as soon as the
    next code's bytes would take the output past ``max_size`` (nothing past it is held).
    """
    if max_size < 0:
        raise ValueError(f"max_size must be >= 0, got {max_size}")
    table: list[bytes] = [*_LITERALS, b"", b""]  # index == code; 256/257 never looked up
    table.extend(b"" for _ in range(MAX_CODE + 1 - len(table)))
    out = bytearray()
    size = len(data)
    pos = 0
    bits = 0
    nbits = 0
    width = _FIRST_WIDTH
    mask = (1 << width) - 1
    hi = EOF_CODE
    overflow = _FIRST_OVERFLOW
    last = -1  # no previous code: the next one defines no entry
    while True:
        while nbits < width:
            if pos >= size:
                raise MalformedDataError(
                    f"LZW stream ends without its end code after {len(out)} output bytes"
                )
            bits |= data[pos] << nbits
            pos += 1
            nbits += 8
        code = bits & mask
        bits >>= width
        nbits -= width
        if code < CLEAR_CODE:
            entry = _LITERALS[code]
            if last >= 0:
                table[hi] = table[last] + entry
        elif code == CLEAR_CODE:
            width = _FIRST_WIDTH
            mask = (1 << width) - 1
            hi = EOF_CODE
            overflow = _FIRST_OVERFLOW
            last = -1
            continue
        elif code == EOF_CODE:
            return bytes(out)
        elif code <= hi:
            if code == hi and last >= 0:
                # The code being defined right now: previous string + its own first byte.
                previous = table[last]
                entry = previous + previous[:1]
            else:
                entry = table[code]
            if last >= 0:
                table[hi] = table[last] + entry[:1]
        else:
            raise MalformedDataError(
                f"invalid LZW code {code} (highest defined is {hi}) at input byte {pos}"
            )
        if len(out) + len(entry) > max_size:
            raise DecompressionLimitError(f"LZW stream decompresses to more than {max_size} bytes")
        out += entry
        last = code
        hi += 1
        if hi >= overflow:
            if width == MAX_WIDTH:
                # Table full: keep decoding with it, define nothing until a clear code.
                last = -1
                hi -= 1
            else:
                width += 1
                mask = (1 << width) - 1
                overflow <<= 1
