# cython: language_level=3, embedsignature=True, freethreading_compatible=True
"""memberlist/Serf wire codec, compiled (twin: :mod:`pysyncer._core._wire_py`).

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

Encoding writes into one growing C buffer and decoding walks the input buffer in
place, so a whole compound or push/pull body costs one call and no intermediate
Python objects; every read is bounds-checked by hand (see ``_need``).
"""

cimport cython
from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.list cimport PyList_New, PyList_SET_ITEM
from cpython.long cimport PyLong_AsLongLongAndOverflow, PyLong_AsUnsignedLongLong
from cpython.mem cimport PyMem_Free, PyMem_Realloc
from cpython.ref cimport Py_INCREF
from cpython.unicode cimport PyUnicode_AsUTF8AndSize
from libc.stdint cimport int8_t, int16_t, int32_t, int64_t, uint8_t, uint32_t, uint64_t
from libc.string cimport memcpy

from binascii import crc32

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
    "IncompleteDataError",
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

cdef enum:
    C_PACK_MAX_DEPTH = 512
    C_META_MAX_SIZE = 512
    C_LABEL_MAX_SIZE = 255
    C_MAX_PUSH_STATE_BYTES = 20 * 1024 * 1024
    C_MAX_PUSH_STATE_NODES = 1024 * 1024
    C_MAX_USER_MSG_BYTES = 20 * 1024 * 1024
    C_DEFAULT_MAX_SIZE = 2 * C_MAX_PUSH_STATE_BYTES
    C_DEFAULT_MAX_DEPTH = 32


class IncompleteDataError(MalformedDataError):
    """The bytes end before the object does: a stream reader should wait for more."""


# ------------------------------------------------------------------- output buffer

cdef struct Writer:
    char* data
    Py_ssize_t size
    Py_ssize_t cap


cdef int _reserve(Writer* w, Py_ssize_t extra) except -1:
    """Make room for extra more bytes."""
    cdef Py_ssize_t cap
    cdef char* data
    if w.size + extra <= w.cap:
        return 0
    cap = max(w.size + extra, 2 * w.cap, 256)
    data = <char*>PyMem_Realloc(w.data, cap)
    if data == NULL:
        raise MemoryError()
    w.data = data
    w.cap = cap
    return 0


@cython.boundscheck(False)
@cython.wraparound(False)
cdef inline int _put_be(Writer* w, int marker, uint64_t value, int n) except -1:
    """Write marker (when >= 0) and the n low bytes of value, big-endian."""
    cdef int i
    _reserve(w, n + 1)
    if marker >= 0:
        w.data[w.size] = <char>marker
        w.size += 1
    for i in range(n):
        w.data[w.size + i] = <char>(value >> (8 * (n - 1 - i)))
    w.size += n
    return 0


cdef inline int _put(Writer* w, const char* p, Py_ssize_t n) except -1:
    _reserve(w, n)
    memcpy(w.data + w.size, p, n)
    w.size += n
    return 0


cdef object _finish(Writer* w):
    return PyBytes_FromStringAndSize(w.data, w.size)


# ---------------------------------------------------------------------------- pack

cdef int _pack_raw(Writer* w, const char* p, Py_ssize_t n) except -1:
    if n < 32:
        _put_be(w, -1, 0xA0 | n, 1)
    elif n < 0x10000:
        _put_be(w, 0xDA, n, 2)
    elif n <= 0xFFFFFFFF:
        _put_be(w, 0xDB, n, 4)
    else:
        raise ValueError("a string of 4 GiB or more cannot be packed")
    return _put(w, p, n)


cdef int _pack_str(Writer* w, object s) except -1:
    cdef Py_ssize_t n
    cdef const char* p = PyUnicode_AsUTF8AndSize(s, &n)
    return _pack_raw(w, p, n)


cdef int _pack_int(Writer* w, object obj) except -1:
    cdef int overflow = 0
    cdef long long v = PyLong_AsLongLongAndOverflow(obj, &overflow)
    cdef uint64_t u
    if overflow > 0:
        u = PyLong_AsUnsignedLongLong(obj)  # OverflowError above 2**64 - 1
        return _put_be(w, 0xCF, u, 8)
    if overflow < 0:
        raise OverflowError("int too small to pack (below -2**63)")
    if v >= 0:
        if v < 0x80:
            return _put_be(w, -1, v, 1)
        if v <= 0xFF:
            return _put_be(w, 0xCC, v, 1)
        if v <= 0xFFFF:
            return _put_be(w, 0xCD, v, 2)
        if v <= 0xFFFFFFFF:
            return _put_be(w, 0xCE, v, 4)
        return _put_be(w, 0xCF, v, 8)
    if v >= -32:
        return _put_be(w, -1, <uint64_t>v, 1)
    if v >= -0x80:
        return _put_be(w, 0xD0, <uint64_t>v, 1)
    if v >= -0x8000:
        return _put_be(w, 0xD1, <uint64_t>v, 2)
    if v >= -0x80000000:
        return _put_be(w, 0xD2, <uint64_t>v, 4)
    return _put_be(w, 0xD3, <uint64_t>v, 8)


cdef inline int _pack_len(Writer* w, Py_ssize_t n, int fix, int b16, int b32) except -1:
    if n < 16:
        return _put_be(w, -1, fix | n, 1)
    if n < 0x10000:
        return _put_be(w, b16, n, 2)
    return _put_be(w, b32, n, 4)


cdef int _pack(Writer* w, object obj, int depth) except -1:
    cdef double d
    cdef uint64_t bits
    cdef Py_ssize_t i, n
    if obj is None:
        return _put_be(w, -1, 0xC0, 1)
    if obj is True:
        return _put_be(w, -1, 0xC3, 1)
    if obj is False:
        return _put_be(w, -1, 0xC2, 1)
    if isinstance(obj, str):
        return _pack_str(w, obj)
    if isinstance(obj, bytes):
        return _pack_raw(w, PyBytes_AS_STRING(obj), PyBytes_GET_SIZE(obj))
    if isinstance(obj, int):
        return _pack_int(w, obj)
    if isinstance(obj, dict):
        if depth >= C_PACK_MAX_DEPTH:
            raise ValueError(f"cannot pack containers nested deeper than {PACK_MAX_DEPTH}")
        _pack_len(w, len(<dict>obj), 0x80, 0xDE, 0xDF)
        for key, value in (<dict>obj).items():
            if isinstance(key, str):
                _pack_str(w, key)
            elif isinstance(key, bytes):
                _pack_raw(w, PyBytes_AS_STRING(key), PyBytes_GET_SIZE(key))
            else:
                raise TypeError(f"map keys must be str or bytes, not {type(key).__name__}")
            _pack(w, value, depth + 1)
        return 0
    if isinstance(obj, (list, tuple)):
        if depth >= C_PACK_MAX_DEPTH:
            raise ValueError(f"cannot pack containers nested deeper than {PACK_MAX_DEPTH}")
        n = len(obj)
        _pack_len(w, n, 0x90, 0xDC, 0xDD)
        if isinstance(obj, list):
            for i in range(n):
                _pack(w, (<list>obj)[i], depth + 1)
        else:
            for i in range(n):
                _pack(w, (<tuple>obj)[i], depth + 1)
        return 0
    if isinstance(obj, float):
        d = obj
        memcpy(&bits, &d, 8)
        return _put_be(w, 0xCB, bits, 8)
    if isinstance(obj, (bytearray, memoryview)):
        obj = bytes(obj)
        return _pack_raw(w, PyBytes_AS_STRING(obj), PyBytes_GET_SIZE(obj))
    raise TypeError(f"cannot pack {type(obj).__name__} objects")


def pack(obj):
    """MessagePack of ``obj`` as go-msgpack writes it (old spec; see the module doc).

    Accepts None, bool, int, float, str, bytes-like, list/tuple and dict with str or
    bytes keys (in insertion order). Other types raise TypeError, ints outside
    [-2**63, 2**64) OverflowError, nesting deeper than :data:`PACK_MAX_DEPTH` ValueError.
    """
    cdef Writer w = Writer(NULL, 0, 0)
    try:
        _pack(&w, obj, 0)
        return _finish(&w)
    finally:
        PyMem_Free(w.data)


# -------------------------------------------------------------------------- unpack

cdef struct Reader:
    const uint8_t* data
    Py_ssize_t pos
    Py_ssize_t end
    int max_depth


cdef int _need(Reader* r, Py_ssize_t n) except -1:
    """Check that n more bytes are present: every read below goes through here."""
    if n > r.end - r.pos:
        raise IncompleteDataError(
            f"msgpack data truncated: {n} bytes needed at offset {r.pos}, "
            f"{r.end - r.pos} left"
        )
    return 0


@cython.boundscheck(False)
@cython.wraparound(False)
cdef inline uint64_t _be(Reader* r, int n) except? 0xFFFFFFFFFFFFFFFF:
    """The next n bytes as a big-endian unsigned number (consumed)."""
    cdef uint64_t v = 0
    cdef int i
    _need(r, n)
    for i in range(n):
        v = (v << 8) | r.data[r.pos + i]
    r.pos += n
    return v


cdef object _raw(Reader* r, Py_ssize_t n):
    _need(r, n)
    r.pos += n
    return PyBytes_FromStringAndSize(<const char*>r.data + r.pos - n, n)


cdef int _container(Reader* r, Py_ssize_t count, int per_item, int depth) except -1:
    if depth >= r.max_depth:
        raise MalformedDataError(f"msgpack containers nested deeper than {r.max_depth}")
    if count * per_item > r.end - r.pos:
        raise IncompleteDataError(
            f"msgpack container of {count} items at offset {r.pos} cannot fit in "
            f"the {r.end - r.pos} bytes left"
        )
    return 0


cdef list _read_array(Reader* r, Py_ssize_t count, int depth):
    cdef Py_ssize_t i
    cdef object item
    _container(r, count, 1, depth)
    cdef list out = PyList_New(count)
    for i in range(count):
        item = _read(r, depth + 1)
        Py_INCREF(item)
        PyList_SET_ITEM(out, i, item)
    return out


cdef dict _read_map(Reader* r, Py_ssize_t count, int depth):
    cdef Py_ssize_t _i, at
    cdef object key
    _container(r, count, 2, depth)
    cdef dict out = {}
    for _i in range(count):
        at = r.pos
        key = _read(r, depth + 1)
        if type(key) is not bytes:
            raise MalformedDataError(f"msgpack map key at offset {at} is not a string")
        out[key] = _read(r, depth + 1)
    return out


cdef object _read(Reader* r, int depth):
    cdef uint8_t b = <uint8_t>_be(r, 1)
    cdef uint32_t bits32
    cdef uint64_t bits64
    cdef float f
    cdef double d
    if b < 0x80:
        return b
    if b >= 0xE0:
        return <int>b - 0x100
    if 0xA0 <= b < 0xC0:
        return _raw(r, b & 0x1F)
    if b < 0x90:
        return _read_map(r, b & 0x0F, depth)
    if b < 0xA0:
        return _read_array(r, b & 0x0F, depth)
    if b == 0xC0:
        return None
    if b == 0xC2:
        return False
    if b == 0xC3:
        return True
    if b == 0xC4 or b == 0xD9:
        return _raw(r, <Py_ssize_t>_be(r, 1))
    if b == 0xC5 or b == 0xDA:
        return _raw(r, <Py_ssize_t>_be(r, 2))
    if b == 0xC6 or b == 0xDB:
        return _raw(r, <Py_ssize_t>_be(r, 4))
    if b == 0xCA:
        bits32 = <uint32_t>_be(r, 4)
        memcpy(&f, &bits32, 4)
        return <double>f
    if b == 0xCB:
        bits64 = _be(r, 8)
        memcpy(&d, &bits64, 8)
        return d
    if 0xCC <= b <= 0xCF:
        return _be(r, 1 << (b - 0xCC))
    if b == 0xD0:
        return <int>(<int8_t>_be(r, 1))
    if b == 0xD1:
        return <int>(<int16_t>_be(r, 2))
    if b == 0xD2:
        return <long long>(<int32_t>_be(r, 4))
    if b == 0xD3:
        return <long long>(<int64_t>_be(r, 8))
    if b == 0xDC:
        return _read_array(r, <Py_ssize_t>_be(r, 2), depth)
    if b == 0xDD:
        return _read_array(r, <Py_ssize_t>_be(r, 4), depth)
    if b == 0xDE:
        return _read_map(r, <Py_ssize_t>_be(r, 2), depth)
    if b == 0xDF:
        return _read_map(r, <Py_ssize_t>_be(r, 4), depth)
    what = "reserved byte 0xc1" if b == 0xC1 else f"extension type 0x{b:02x}"
    raise MalformedDataError(f"unsupported msgpack {what} at offset {r.pos - 1}")


cdef class _Input:
    """A read-only view of a bytes-like argument, released when collected."""

    cdef Py_buffer view
    cdef bint held
    cdef const uint8_t* data
    cdef Py_ssize_t size

    def __cinit__(self, object data):
        PyObject_GetBuffer(data, &self.view, PyBUF_SIMPLE)
        self.held = True
        self.data = <const uint8_t*>self.view.buf
        self.size = self.view.len

    def __dealloc__(self):
        if self.held:
            PyBuffer_Release(&self.view)

    cdef bytes slice(self, Py_ssize_t start, Py_ssize_t stop):
        return PyBytes_FromStringAndSize(<const char*>self.data + start, stop - start)


cdef int _start(Reader* r, _Input buf, Py_ssize_t offset, Py_ssize_t max_size,
                int max_depth) except -1:
    if offset < 0 or offset > buf.size:
        raise ValueError(f"offset {offset} is outside the buffer (0..{buf.size})")
    if buf.size - offset > max_size:
        raise MalformedDataError(
            f"msgpack input of {buf.size - offset} bytes exceeds the limit of {max_size}"
        )
    r.data = buf.data
    r.pos = offset
    r.end = buf.size
    r.max_depth = max_depth
    return 0


def unpack(data, *, Py_ssize_t max_size=C_DEFAULT_MAX_SIZE, int max_depth=C_DEFAULT_MAX_DEPTH):
    """The one MessagePack object that fills ``data`` (old or new spec).

    Strings (raw, str, bin) come back as ``bytes``, arrays as lists, maps as dicts
    with bytes keys. Extension types are refused. Raises MalformedDataError (or its
    subclass IncompleteDataError when the data stops early) on bad input, trailing
    bytes, more than ``max_size`` bytes or more than ``max_depth`` nested containers.
    """
    cdef _Input buf = _Input(data)
    cdef Reader r
    _start(&r, buf, 0, max_size, max_depth)
    obj = _read(&r, 0)
    if r.pos != r.end:
        raise MalformedDataError(f"{r.end - r.pos} bytes after the msgpack object")
    return obj


def unpack_from(data, Py_ssize_t offset=0, *, Py_ssize_t max_size=C_DEFAULT_MAX_SIZE,
                int max_depth=C_DEFAULT_MAX_DEPTH):
    """The MessagePack object at ``data[offset:]`` and the offset just after it.

    For streams that carry several objects in sequence; bytes after the object are
    left alone. Errors as :func:`unpack`; ``max_size`` bounds ``len(data) - offset``.
    """
    cdef _Input buf = _Input(data)
    cdef Reader r
    _start(&r, buf, offset, max_size, max_depth)
    obj = _read(&r, 0)
    return obj, r.pos


# ------------------------------------------------------------------------- framing

def encode_message(int msg_type, obj):
    """``[msg_type][pack(obj)]``: one memberlist (or Serf) message."""
    cdef Writer w = Writer(NULL, 0, 0)
    if not 0 <= msg_type <= 255:
        raise OverflowError("a message type is one byte (0..255)")
    try:
        _put_be(&w, -1, msg_type, 1)
        _pack(&w, obj, 0)
        return _finish(&w)
    finally:
        PyMem_Free(w.data)


def decode_message(data, *, Py_ssize_t max_size=C_DEFAULT_MAX_SIZE):
    """``(msg_type, obj)`` of ``[msg_type][msgpack object]``; errors as :func:`unpack`."""
    cdef _Input buf = _Input(data)
    cdef Reader r
    if buf.size == 0:
        raise IncompleteDataError("empty message: no type byte")
    _start(&r, buf, 1, max_size, C_DEFAULT_MAX_DEPTH)
    obj = _read(&r, 0)
    if r.pos != r.end:
        raise MalformedDataError(f"{r.end - r.pos} bytes after the msgpack object")
    return buf.data[0], obj


def build_compound(parts):
    """``[7][count u8][count x u16 BE length][parts]``: up to 255 parts of < 64 KiB."""
    cdef Py_ssize_t count = len(parts), total = 2, i, size
    cdef char* out
    if count > 255:
        raise ValueError("a compound message holds at most 255 parts")
    parts = tuple(parts)
    for part in parts:
        if not isinstance(part, bytes):
            raise TypeError(f"compound parts must be bytes, not {type(part).__name__}")
        if PyBytes_GET_SIZE(part) > 0xFFFF:
            raise ValueError("a compound part must be shorter than 64 KiB")
        total += 2 + PyBytes_GET_SIZE(part)
    result = PyBytes_FromStringAndSize(NULL, total)
    out = PyBytes_AS_STRING(result)
    out[0] = <char>COMPOUND_MSG
    out[1] = <char>count
    total = 2 + 2 * count
    for i in range(count):
        part = parts[i]
        size = PyBytes_GET_SIZE(part)
        out[2 + 2 * i] = <char>(size >> 8)
        out[3 + 2 * i] = <char>size
        memcpy(out + total, PyBytes_AS_STRING(part), size)
        total += size
    return result


def split_compound(data):
    """``(parts, truncated)`` of a compound message (starting with its type byte 7).

    Like memberlist, a part whose length runs past the end stops the split: the parts
    before it are returned and ``truncated`` counts the parts lost. A missing count or
    length table raises MalformedDataError.
    """
    cdef _Input buf = _Input(data)
    cdef Py_ssize_t count, pos, index, size
    cdef list parts = []
    if buf.size == 0 or buf.data[0] != COMPOUND_MSG:
        raise MalformedDataError("not a compound message (type byte 7)")
    if buf.size < 2:
        raise MalformedDataError("compound message without its part count")
    count = buf.data[1]
    pos = 2 + 2 * count
    if buf.size < pos:
        raise MalformedDataError("compound message with a truncated length table")
    for index in range(count):
        size = (buf.data[2 + 2 * index] << 8) | buf.data[3 + 2 * index]
        if size > buf.size - pos:
            return parts, count - index
        parts.append(buf.slice(pos, pos + size))
        pos += size
    return parts, 0


def add_label(bytes packet not None, str label):
    """``[244][len u8][label][packet]``, or ``packet`` itself for an empty label."""
    if not label:
        return packet
    raw = label.encode()
    if len(raw) > C_LABEL_MAX_SIZE:
        raise ValueError(f"label is longer than {LABEL_MAX_SIZE} bytes")
    return bytes((HAS_LABEL_MSG, len(raw))) + raw + packet


def strip_label(packet):
    """``(rest, label)`` of a packet or stream start; ``label`` is "" when absent."""
    cdef _Input buf = _Input(packet)
    cdef Py_ssize_t size
    if buf.size == 0 or buf.data[0] != HAS_LABEL_MSG:
        return buf.slice(0, buf.size), ""
    if buf.size < 2:
        raise IncompleteDataError("label header truncated")
    size = buf.data[1]
    if size < 1:
        raise MalformedDataError("label header cannot be empty when present")
    if buf.size < 2 + size:
        raise IncompleteDataError("label header truncated")
    try:
        label = buf.slice(2, 2 + size).decode()
    except UnicodeDecodeError:
        raise MalformedDataError("label is not valid UTF-8") from None
    return buf.slice(2 + size, buf.size), label


def add_crc(bytes packet not None):
    """``[12][crc32 IEEE of packet, u32 BE][packet]`` (for peers with protocol max >= 5)."""
    cdef Writer w = Writer(NULL, 0, 0)
    try:
        _put_be(&w, HAS_CRC_MSG, crc32(packet), 4)
        _put(&w, PyBytes_AS_STRING(packet), PyBytes_GET_SIZE(packet))
        return _finish(&w)
    finally:
        PyMem_Free(w.data)


def verify_crc(packet):
    """The packet after a valid CRC prefix, or the packet itself when it has none.

    A prefix whose checksum does not match, or a packet of type 12 shorter than the
    prefix, raises MalformedDataError (memberlist drops such packets).
    """
    cdef _Input buf = _Input(packet)
    cdef Reader r
    if buf.size == 0 or buf.data[0] != HAS_CRC_MSG:
        return buf.slice(0, buf.size)
    if buf.size < 5:
        raise MalformedDataError("CRC header truncated")
    rest = buf.slice(5, buf.size)
    r = Reader(buf.data, 1, buf.size, 0)
    if _be(&r, 4) != crc32(rest):
        raise MalformedDataError("CRC mismatch")
    return rest


def encode_tags(tags):
    """Serf node meta: ``0xFF`` + msgpack ``map[string]string``, at most 512 bytes."""
    cdef Writer w = Writer(NULL, 0, 0)
    try:
        _put_be(&w, -1, TAG_MAGIC_BYTE, 1)
        _pack_len(&w, len(tags), 0x80, 0xDE, 0xDF)
        for key, value in tags.items():
            if not isinstance(key, str) or not isinstance(value, str):
                raise TypeError("tag names and values must be str")
            _pack_str(&w, key)
            _pack_str(&w, value)
        if w.size > C_META_MAX_SIZE:
            raise ValueError(f"encoded tags take {w.size} bytes, more than {META_MAX_SIZE}")
        return _finish(&w)
    finally:
        PyMem_Free(w.data)


cdef str _text(object value, str what):
    if type(value) is not bytes:
        raise MalformedDataError(f"{what} is not a string")
    try:
        return (<bytes>value).decode()
    except UnicodeDecodeError:
        raise MalformedDataError(f"{what} is not valid UTF-8") from None


def decode_tags(meta):
    """Tags of Serf node meta; meta without the magic byte is a role (Serf protocol 2)."""
    cdef _Input buf = _Input(meta)
    cdef Reader r
    if buf.size > C_META_MAX_SIZE:
        raise MalformedDataError(f"node meta of {buf.size} bytes exceeds {META_MAX_SIZE}")
    if buf.size == 0 or buf.data[0] != TAG_MAGIC_BYTE:
        return {"role": _text(buf.slice(0, buf.size), "role")}
    _start(&r, buf, 1, C_DEFAULT_MAX_SIZE, 1)
    raw = _read(&r, 0)
    if r.pos != r.end:
        raise MalformedDataError(f"{r.end - r.pos} bytes after the msgpack object")
    if type(raw) is not dict:
        raise MalformedDataError("Serf tags are not a map")
    return {_text(k, "tag name"): _text(v, "tag value") for k, v in (<dict>raw).items()}


def encode_push_pull(nodes, bytes user_state not None, bint join):
    """A push/pull stream body: ``[6]`` header{Join, Nodes, UserStateLen}, the node
    states (pushNodeState maps) and the raw user (Serf) state.

    The header keys are in go-msgpack v0.5 order (sorted by name, as Serf 0.9 writes
    them); decoders accept any order."""
    cdef Writer w = Writer(NULL, 0, 0)
    nodes = tuple(nodes)
    try:
        _put_be(&w, -1, PUSH_PULL_MSG, 1)
        _pack(&w, {"Join": join, "Nodes": len(nodes), "UserStateLen": len(user_state)}, 0)
        for node in nodes:
            _pack(&w, node, 0)
        _put(&w, PyBytes_AS_STRING(user_state), PyBytes_GET_SIZE(user_state))
        return _finish(&w)
    finally:
        PyMem_Free(w.data)


cdef Py_ssize_t _header_int(dict header, bytes key, Py_ssize_t limit) except -1:
    value = header.get(key, 0)
    if value is None:
        return 0
    if type(value) is not int or value < 0 or value > limit:
        raise MalformedDataError(f"push/pull header {key.decode()} is out of range")
    return value


cdef int _stream_start(_Input buf, Py_ssize_t offset, int msg_type, str what) except -1:
    if offset < 0 or offset > buf.size:
        raise ValueError(f"offset {offset} is outside the buffer (0..{buf.size})")
    if offset == buf.size:
        raise IncompleteDataError(f"{what} stream: no type byte yet")
    if buf.data[offset] != msg_type:
        raise MalformedDataError(f"not a {what} message (type byte {msg_type})")
    return 0


cdef dict _read_header_map(Reader* r, _Input buf, Py_ssize_t offset, str what):
    _start(r, buf, offset, C_DEFAULT_MAX_SIZE, 1)
    header = _read(r, 0)
    if type(header) is not dict:
        raise MalformedDataError(f"{what} is not a map")
    return header


def decode_push_pull(data, Py_ssize_t offset=0):
    """``(join, nodes, user_state, next_offset)`` of a push/pull body at ``offset``.

    ``data[offset]`` must be the type byte 6. Node states are returned as unpacked
    maps. Limits are memberlist's: at most 1 Mi nodes and 20 MiB of user state.
    IncompleteDataError means the stream has not delivered the whole body yet.
    """
    cdef _Input buf = _Input(data)
    cdef Reader r
    cdef Py_ssize_t count, state_len, i
    _stream_start(buf, offset, PUSH_PULL_MSG, "push/pull")
    header = _read_header_map(&r, buf, offset + 1, "push/pull header")
    count = _header_int(header, b"Nodes", C_MAX_PUSH_STATE_NODES)
    state_len = _header_int(header, b"UserStateLen", C_MAX_PUSH_STATE_BYTES)
    join = header.get(b"Join", False)
    if join is None:
        join = False
    elif type(join) is not bool:
        raise MalformedDataError("push/pull header Join is not a bool")
    if count > r.end - r.pos:
        raise IncompleteDataError("push/pull stream: node states not all received")
    cdef list nodes = PyList_New(count)
    for i in range(count):
        node = _read(&r, 0)
        if type(node) is not dict:
            raise MalformedDataError("push/pull node state is not a map")
        Py_INCREF(node)
        PyList_SET_ITEM(nodes, i, node)
    if state_len > r.end - r.pos:
        raise IncompleteDataError("push/pull stream: user state not all received")
    return join, nodes, buf.slice(r.pos, r.pos + state_len), r.pos + state_len


def encode_user_stream(bytes payload not None):
    """A user message over TCP: ``[8]`` userMsgHeader{UserMsgLen} + the payload."""
    cdef Writer w = Writer(NULL, 0, 0)
    try:
        _put_be(&w, -1, USER_MSG, 1)
        _pack(&w, {"UserMsgLen": len(payload)}, 0)
        _put(&w, PyBytes_AS_STRING(payload), PyBytes_GET_SIZE(payload))
        return _finish(&w)
    finally:
        PyMem_Free(w.data)


def decode_user_stream(data, Py_ssize_t offset=0):
    """``(payload, next_offset)`` of a TCP user message at ``offset`` (type byte 8)."""
    cdef _Input buf = _Input(data)
    cdef Reader r
    cdef Py_ssize_t size
    _stream_start(buf, offset, USER_MSG, "user message")
    header = _read_header_map(&r, buf, offset + 1, "user message header")
    size = _header_int(header, b"UserMsgLen", C_MAX_USER_MSG_BYTES)
    if size > r.end - r.pos:
        raise IncompleteDataError("user message stream: payload not all received")
    return buf.slice(r.pos, r.pos + size), r.pos + size
