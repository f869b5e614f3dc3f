# cython: language_level=3, embedsignature=True, freethreading_compatible=True
"""Record digests, per-slot digest tables and snapshot diffs, compiled.

Twin: :mod:`pysyncer._core._digest_py` (same names, same results, same error types).

Owns the anti-entropy arithmetic of the syncer:

* :func:`encode_record` - the canonical, stable MessagePack encoding of a record
  (``[RECORD_FORMAT_VERSION, service_key, fields]``, map keys sorted, smallest
  integer forms, float64, str/bin families), written here straight into a growable
  C buffer (a 512-byte stack buffer first, the heap only for big records).
* :func:`digest64` / :func:`record_digest` - XXH64 (seed 0), implemented here from
  the XXH64 specification in C-level code so it can run with the GIL released.
* :class:`SlotDigestTable` - per Redis-Cluster hash slot, the sum mod 2**64 of the
  digests of the slot's records: order-independent, O(1) to update, and unlike XOR
  a record counted twice does not cancel out. :func:`diff_slots` lists the slots
  where two tables differ, so only those slots are pulled.
* :class:`DigestSnapshot` / :func:`snapshot_diff` - key hash -> record digest of one slot or
  a whole data center, and its added/changed/removed keys against another snapshot.

Why a DigestSnapshot is two parallel sorted uint64 arrays (keys ascending, digests aligned)
rather than a dict: 16 bytes per record instead of ~100 for a dict of Python ints;
it is sorted once at construction, with the GIL released (a radix sort on the key
bytes carrying the digests, skipped when the input is already sorted), after which a
diff is one sequential merge pass over both snapshots - no hashing, no allocation per
record, cache- and prefetch-friendly - that also runs with the GIL released. Lookups
are binary searches. The twin keeps a dict and diffs with dict membership tests in
comprehensions, the fastest honest pure Python, sorting only the (small) results.

Objects here are not locked: share a table between threads only under a lock.
"""

from collections.abc import Mapping
from types import MappingProxyType
from typing import NamedTuple, Union

from cpython.array cimport array, clone, resize
from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport (
    PyBytes_AS_STRING,
    PyBytes_CheckExact,
    PyBytes_FromStringAndSize,
    PyBytes_GET_SIZE,
)
from cpython.dict cimport PyDict_CheckExact, PyDict_Next
from cpython.float cimport PyFloat_AS_DOUBLE, PyFloat_CheckExact
from cpython.list cimport PyList_CheckExact
from cpython.long cimport PyLong_AsLongLongAndOverflow, PyLong_CheckExact
from cpython.number cimport PyNumber_Index
from cpython.object cimport PyObject
from cpython.ref cimport Py_XDECREF, Py_XINCREF
from cpython.sequence cimport PySequence_Fast
from cpython.tuple cimport PyTuple_CheckExact
from cpython.unicode cimport PyUnicode_AsUTF8AndSize, PyUnicode_CheckExact
from libc.stdint cimport int64_t, uint16_t, uint64_t
from libc.stdlib cimport free, malloc, qsort, realloc
from libc.string cimport memcmp, memcpy

import sys

from pysyncer.errors import MalformedDataError

__all__ = [
    "MAX_DEPTH",
    "RECORD_FORMAT_VERSION",
    "SLOT_COUNT",
    "TABLE_BYTES",
    "DigestSnapshot",
    "SlotDigestTable",
    "SnapshotDiff",
    "Value",
    "diff_slots",
    "digest64",
    "encode_record",
    "instance_digest",
    "record_digest",
    "snapshot_diff",
]

cdef extern from *:
    """
    #define PYS_XXH_P1 0x9E3779B185EBCA87ULL
    #define PYS_XXH_P2 0xC2B2AE3D27D4EB4FULL
    #define PYS_XXH_P3 0x165667B19E3779F9ULL
    #define PYS_XXH_P4 0x85EBCA77C2B2AE63ULL
    #define PYS_XXH_P5 0x27D4EB2F165667C5ULL
    """
    const uint64_t P1 "PYS_XXH_P1"
    const uint64_t P2 "PYS_XXH_P2"
    const uint64_t P3 "PYS_XXH_P3"
    const uint64_t P4 "PYS_XXH_P4"
    const uint64_t P5 "PYS_XXH_P5"

cdef enum:
    N_SLOTS = 16384
    SLOT_MASK = 16383
    DEPTH_LIMIT = 32
    FORMAT_VERSION = 1
    STACK_BYTES = 512          # records up to this size are encoded without malloc
    SMALL_MAP = 24             # maps up to this size are sorted on the stack
    NOGIL_HASH_BYTES = 16384   # digest64 releases the GIL from this input size
    INSERTION_MAX = 24         # DigestSnapshot sort: smaller buckets use insertion sort

SLOT_COUNT = N_SLOTS
TABLE_BYTES = N_SLOTS * 8
RECORD_FORMAT_VERSION = FORMAT_VERSION
MAX_DEPTH = DEPTH_LIMIT

Value = Union[None, bool, int, float, str, bytes, list, tuple, Mapping]
"""Runtime form of the record value type; the twin spells out the recursive type."""

SnapshotDiff = NamedTuple(
    "SnapshotDiff", [("added", array), ("changed", array), ("removed", array)]
)
SnapshotDiff.__doc__ = "Key hashes (ascending array('Q')) added, changed and removed."
SnapshotDiff.__module__ = __name__

cdef bint _LITTLE_ENDIAN = sys.byteorder == "little"
cdef array _U16 = array("H")
cdef array _U64 = array("Q")
cdef object _U64_MAX = 0xFFFFFFFFFFFFFFFF


cdef inline uint64_t* _u64p(array a) noexcept:
    return <uint64_t*>a.data.as_voidptr


cdef inline uint16_t* _u16p(array a) noexcept:
    return <uint16_t*>a.data.as_voidptr


# ---------------------------------------------------------------------------- XXH64

cdef inline uint64_t _rotl(uint64_t x, int r) noexcept nogil:
    return (x << r) | (x >> (64 - r))


cdef inline uint64_t _read64(const unsigned char* p) noexcept nogil:
    # Little-endian load written portably; compilers turn it into one load.
    return (<uint64_t>p[0] | <uint64_t>p[1] << 8 | <uint64_t>p[2] << 16
            | <uint64_t>p[3] << 24 | <uint64_t>p[4] << 32 | <uint64_t>p[5] << 40
            | <uint64_t>p[6] << 48 | <uint64_t>p[7] << 56)


cdef inline uint64_t _read32(const unsigned char* p) noexcept nogil:
    return (<uint64_t>p[0] | <uint64_t>p[1] << 8 | <uint64_t>p[2] << 16
            | <uint64_t>p[3] << 24)


cdef inline uint64_t _round(uint64_t acc, uint64_t lane) noexcept nogil:
    return _rotl(acc + lane * P2, 31) * P1


cdef inline uint64_t _merge(uint64_t acc, uint64_t v) noexcept nogil:
    return (acc ^ _round(0, v)) * P1 + P4


cdef uint64_t _xxh64(const unsigned char* p, Py_ssize_t n) noexcept nogil:
    """XXH64 of p[0:n] with seed 0."""
    cdef const unsigned char* end = p + n
    cdef uint64_t v1, v2, v3, v4, h
    if n >= 32:
        v1 = P1 + P2
        v2 = P2
        v3 = 0
        v4 = 0 - P1
        while end - p >= 32:
            v1 = _round(v1, _read64(p))
            v2 = _round(v2, _read64(p + 8))
            v3 = _round(v3, _read64(p + 16))
            v4 = _round(v4, _read64(p + 24))
            p += 32
        h = _rotl(v1, 1) + _rotl(v2, 7) + _rotl(v3, 12) + _rotl(v4, 18)
        h = _merge(_merge(_merge(_merge(h, v1), v2), v3), v4)
    else:
        h = P5
    h += <uint64_t>n
    while end - p >= 8:
        h = _rotl(h ^ _round(0, _read64(p)), 27) * P1 + P4
        p += 8
    if end - p >= 4:
        h = _rotl(h ^ (_read32(p) * P1), 23) * P2 + P3
        p += 4
    while p < end:
        h = _rotl(h ^ (p[0] * P5), 11) * P1
        p += 1
    h ^= h >> 33
    h *= P2
    h ^= h >> 29
    h *= P3
    return h ^ (h >> 32)


cdef uint64_t _hash(const unsigned char* p, Py_ssize_t n) noexcept:
    cdef uint64_t h
    if n < NOGIL_HASH_BYTES:
        return _xxh64(p, n)
    with nogil:
        h = _xxh64(p, n)
    return h


def digest64(data):
    """XXH64 (seed 0) of a bytes-like object, as an int in 0..2**64-1.

    ``str`` and non-contiguous buffers are refused (TypeError, BufferError), as
    ``xxhash.xxh64_intdigest`` does. Large inputs are hashed with the GIL released.
    """
    cdef Py_buffer view
    cdef uint64_t h
    if PyBytes_CheckExact(data):
        return _hash(<const unsigned char*>PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data))
    PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
    try:
        h = _hash(<const unsigned char*>view.buf, view.len)
    finally:
        PyBuffer_Release(&view)
    return h


# ------------------------------------------------------------------ record encoding

cdef struct Buf:
    unsigned char* data   # stack buffer or heap
    Py_ssize_t len
    Py_ssize_t cap
    unsigned char* heap   # NULL while the stack buffer is in use


cdef int _grow(Buf* b, Py_ssize_t n) except -1:
    cdef Py_ssize_t cap = b.cap * 2
    cdef unsigned char* p
    if cap < b.len + n:
        cap = b.len + n
    p = <unsigned char*>realloc(b.heap, cap)
    if p == NULL:
        raise MemoryError()
    if b.heap == NULL:
        memcpy(p, b.data, b.len)
    b.heap = p
    b.data = p
    b.cap = cap
    return 0


cdef inline unsigned char* _take(Buf* b, Py_ssize_t n) except NULL:
    """Reserve n bytes at the end of the buffer and return where they start."""
    cdef unsigned char* p
    if n > b.cap - b.len:
        _grow(b, n)
    p = b.data + b.len
    b.len += n
    return p


cdef inline void _be16(unsigned char* p, uint64_t v) noexcept:
    p[0] = <unsigned char>(v >> 8)
    p[1] = <unsigned char>v


cdef inline void _be32(unsigned char* p, uint64_t v) noexcept:
    _be16(p, v >> 16)
    _be16(p + 2, v)


cdef inline void _be64(unsigned char* p, uint64_t v) noexcept:
    _be32(p, v >> 32)
    _be32(p + 4, v)


cdef int _put_head(Buf* b, Py_ssize_t n, int fix_base, int fix_limit, int c8, int c16,
                   int c32, const char* what) except -1:
    """A length header: fix form when n < fix_limit, else the 8/16/32-bit form.

    c8 < 0 means the family has no 8-bit form (array, map).
    """
    cdef unsigned char* p
    if n < fix_limit:
        _take(b, 1)[0] = <unsigned char>(fix_base | n)
    elif c8 >= 0 and n <= 0xFF:
        p = _take(b, 2)
        p[0] = <unsigned char>c8
        p[1] = <unsigned char>n
    elif n <= 0xFFFF:
        p = _take(b, 3)
        p[0] = <unsigned char>c16
        _be16(p + 1, n)
    elif <uint64_t>n <= 0xFFFFFFFFULL:
        p = _take(b, 5)
        p[0] = <unsigned char>c32
        _be32(p + 1, n)
    else:
        raise ValueError(f"{what.decode()} of {n} items is too large for MessagePack")
    return 0


cdef int _put_uint(Buf* b, uint64_t v) except -1:
    cdef unsigned char* p
    if v < 0x80:
        _take(b, 1)[0] = <unsigned char>v
    elif v <= 0xFF:
        p = _take(b, 2)
        p[0] = 0xCC
        p[1] = <unsigned char>v
    elif v <= 0xFFFF:
        p = _take(b, 3)
        p[0] = 0xCD
        _be16(p + 1, v)
    elif v <= 0xFFFFFFFFULL:
        p = _take(b, 5)
        p[0] = 0xCE
        _be32(p + 1, v)
    else:
        p = _take(b, 9)
        p[0] = 0xCF
        _be64(p + 1, v)
    return 0


cdef int _put_negative(Buf* b, int64_t v) except -1:
    cdef unsigned char* p
    if v >= -32:
        _take(b, 1)[0] = <unsigned char>(v & 0xFF)
    elif v >= -0x80:
        p = _take(b, 2)
        p[0] = 0xD0
        p[1] = <unsigned char>(v & 0xFF)
    elif v >= -0x8000:
        p = _take(b, 3)
        p[0] = 0xD1
        _be16(p + 1, <uint64_t>v)
    elif v >= -0x80000000LL:
        p = _take(b, 5)
        p[0] = 0xD2
        _be32(p + 1, <uint64_t>v)
    else:
        p = _take(b, 9)
        p[0] = 0xD3
        _be64(p + 1, <uint64_t>v)
    return 0


cdef int _put_int(Buf* b, object value) except -1:
    cdef int overflow = 0
    cdef long long v = PyLong_AsLongLongAndOverflow(value, &overflow)
    if overflow == 0:
        if v >= 0:
            return _put_uint(b, <uint64_t>v)
        return _put_negative(b, v)
    if overflow > 0 and value <= _U64_MAX:
        return _put_uint(b, <uint64_t>value)
    raise OverflowError(f"integer {value} is out of range -2**63..2**64-1 for a record")


cdef int _put_float(Buf* b, double value) except -1:
    cdef uint64_t bits
    cdef unsigned char* p = _take(b, 9)
    memcpy(&bits, &value, 8)
    p[0] = 0xCB
    _be64(p + 1, bits)
    return 0


cdef inline int _put_utf8(Buf* b, const char* utf8, Py_ssize_t n) except -1:
    cdef unsigned char* p
    if n < 32:  # fixstr, the usual case: one reservation
        p = _take(b, n + 1)
        p[0] = <unsigned char>(0xA0 | n)
        memcpy(p + 1, utf8, n)
        return 0
    _put_head(b, n, 0xA0, 32, 0xD9, 0xDA, 0xDB, b"str")
    memcpy(_take(b, n), utf8, n)
    return 0


cdef int _put_str(Buf* b, object text) except -1:
    cdef Py_ssize_t n
    cdef const char* utf8 = PyUnicode_AsUTF8AndSize(text, &n)  # UnicodeEncodeError
    return _put_utf8(b, utf8, n)


cdef int _put_bin(Buf* b, object data) except -1:
    cdef Py_ssize_t n = PyBytes_GET_SIZE(data)
    _put_head(b, n, 0, 0, 0xC4, 0xC5, 0xC6, b"bytes")
    memcpy(_take(b, n), PyBytes_AS_STRING(data), n)
    return 0


cdef int _check_depth(int depth) except -1:
    if depth > DEPTH_LIMIT:
        raise ValueError(f"record nesting is deeper than MAX_DEPTH={DEPTH_LIMIT}")
    return 0


cdef int _put_array(Buf* b, object items, int depth) except -1:
    cdef Py_ssize_t i, n
    _check_depth(depth)
    if not (PyList_CheckExact(items) or PyTuple_CheckExact(items)):
        items = list(items)  # subclass: honour its __iter__, as the twin does
    n = len(items)
    _put_head(b, n, 0x90, 16, -1, 0xDC, 0xDD, b"array")
    for i in range(n):  # items[i] is bounds-checked: n items or an error
        _put_value(b, items[i], depth + 1)
    return 0


cdef struct Entry:
    PyObject* key      # strong reference
    PyObject* value    # strong reference; NULL for a non-dict mapping (looked up later)
    const char* utf8   # the key's UTF-8, owned by the key
    Py_ssize_t size


cdef inline int _entry_cmp(const Entry* x, const Entry* y) noexcept nogil:
    """UTF-8 byte order of the keys, which is their code point order."""
    cdef const unsigned char* p = <const unsigned char*>x.utf8
    cdef const unsigned char* q = <const unsigned char*>y.utf8
    cdef Py_ssize_t i
    for i in range(min(x.size, y.size)):
        if p[i] != q[i]:
            return <int>p[i] - <int>q[i]
    return (x.size > y.size) - (x.size < y.size)


cdef int _entry_qsort_cmp(const void* x, const void* y) noexcept nogil:
    return _entry_cmp(<const Entry*>x, <const Entry*>y)


cdef void _sort_entries(Entry* entries, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t i, j
    cdef Entry entry
    if n > SMALL_MAP:
        qsort(entries, n, sizeof(Entry), _entry_qsort_cmp)
        return
    for i in range(1, n):  # insertion sort: records have few keys per map
        entry = entries[i]
        j = i
        while j > 0 and _entry_cmp(&entries[j - 1], &entry) > 0:
            entries[j] = entries[j - 1]
            j -= 1
        entries[j] = entry


cdef int _put_map(Buf* b, object mapping, int depth) except -1:
    """Keys are checked (str, encodable) in iteration order, then written sorted.

    A dict is read with PyDict_Next (no lookups); other mappings are iterated and
    then indexed in key order, as the twin does.
    """
    cdef Entry small[SMALL_MAP]
    cdef Entry* entries = small
    cdef Py_ssize_t i, count, n = 0, pos = 0
    cdef PyObject* key
    cdef PyObject* value
    cdef bint is_dict
    _check_depth(depth)
    if type(mapping) is MappingProxyType:  # a read-only view: read the dict it wraps
        try:
            copied = mapping.copy()  # (the view's own copy() of a dict is a dict)
        except Exception:  # a view of a mapping without copy(): read it as the twin does
            copied = None
        if PyDict_CheckExact(copied):
            mapping = copied
    is_dict = PyDict_CheckExact(mapping)
    keys = None if is_dict else list(mapping)
    count = len(mapping) if is_dict else len(keys)
    if count > SMALL_MAP:
        entries = <Entry*>malloc(count * sizeof(Entry))
        if entries == NULL:
            raise MemoryError()
    try:
        if is_dict:  # no Python code runs in this loop, so the dict cannot change
            while n < count and PyDict_Next(mapping, &pos, &key, &value):
                Py_XINCREF(key)
                Py_XINCREF(value)
                entries[n].key = key
                entries[n].value = value
                n += 1
        else:
            for item in keys:
                Py_XINCREF(<PyObject*>item)
                entries[n].key = <PyObject*>item
                entries[n].value = NULL
                n += 1
        for i in range(n):
            if not isinstance(<object>entries[i].key, str):
                raise TypeError(
                    f"record map keys must be str, not {type(<object>entries[i].key).__name__}"
                )
            entries[i].utf8 = PyUnicode_AsUTF8AndSize(<object>entries[i].key, &entries[i].size)
        _sort_entries(entries, n)
        _put_head(b, n, 0x80, 16, -1, 0xDE, 0xDF, b"map")
        for i in range(n):
            _put_utf8(b, entries[i].utf8, entries[i].size)
            if entries[i].value == NULL:
                _put_value(b, mapping[<object>entries[i].key], depth + 1)
            else:
                _put_value(b, <object>entries[i].value, depth + 1)
    finally:
        for i in range(n):
            Py_XDECREF(entries[i].key)
            Py_XDECREF(entries[i].value)
        if entries != small:
            free(entries)
    return 0


cdef int _put_value(Buf* b, object value, int depth) except -1:
    """Append value; depth is the depth value would have if it is a container."""
    # Exact types first (the common case), then subclasses in the twin's order.
    if value is None:
        _take(b, 1)[0] = 0xC0
    elif value is True:
        _take(b, 1)[0] = 0xC3
    elif value is False:
        _take(b, 1)[0] = 0xC2
    elif PyUnicode_CheckExact(value):
        _put_str(b, value)
    elif PyLong_CheckExact(value):
        _put_int(b, value)
    elif PyFloat_CheckExact(value):
        _put_float(b, PyFloat_AS_DOUBLE(value))
    elif PyDict_CheckExact(value):
        _put_map(b, value, depth)
    elif PyList_CheckExact(value) or PyTuple_CheckExact(value):
        _put_array(b, value, depth)
    elif PyBytes_CheckExact(value):
        _put_bin(b, value)
    elif type(value) is MappingProxyType:  # an Instance's properties: no ABC check
        _put_map(b, value, depth)
    elif isinstance(value, int):
        _put_int(b, value)
    elif isinstance(value, float):
        _put_float(b, PyFloat_AS_DOUBLE(value))
    elif isinstance(value, str):
        _put_str(b, value)
    elif isinstance(value, bytes):
        _put_bin(b, value)
    elif isinstance(value, (list, tuple)):
        _put_array(b, value, depth)
    elif isinstance(value, Mapping):
        _put_map(b, value, depth)
    else:
        raise TypeError(f"cannot encode {type(value).__name__} in a record")
    return 0


cdef int _encode(Buf* b, object service_key, object fields) except -1:
    cdef unsigned char* p = _take(b, 2)
    p[0] = 0x93  # fixarray of 3
    p[1] = FORMAT_VERSION
    if not isinstance(service_key, str):
        raise TypeError(f"service_key must be str, not {type(service_key).__name__}")
    _put_str(b, service_key)
    if not (PyDict_CheckExact(fields) or isinstance(fields, Mapping)):
        raise TypeError(f"fields must be a mapping, not {type(fields).__name__}")
    return _put_map(b, fields, 1)


def encode_record(service_key, fields):
    """Canonical MessagePack bytes of ``[RECORD_FORMAT_VERSION, service_key, fields]``.

    Maps have their (str) keys sorted; ints use their smallest form, floats float64,
    str the str family, bytes the bin family, lists and tuples arrays.
    Errors: TypeError (non-str key, unsupported value), OverflowError (int outside
    -2**63..2**64-1), ValueError (nesting deeper than MAX_DEPTH), UnicodeEncodeError
    (lone surrogate).
    """
    cdef unsigned char stack[STACK_BYTES]
    cdef Buf b
    b.data = stack
    b.len = 0
    b.cap = STACK_BYTES
    b.heap = NULL
    try:
        _encode(&b, service_key, fields)
        return PyBytes_FromStringAndSize(<char*>b.data, b.len)
    finally:
        free(b.heap)


def record_digest(service_key, fields):
    """``digest64(encode_record(service_key, fields))``, without the bytes object."""
    cdef unsigned char stack[STACK_BYTES]
    cdef Buf b
    b.data = stack
    b.len = 0
    b.cap = STACK_BYTES
    b.heap = NULL
    try:
        _encode(&b, service_key, fields)
        return _xxh64(b.data, b.len)
    finally:
        free(b.heap)


def instance_digest(service_key, instance_id, host, endpoints, status, properties, interval,
                    times):
    """``record_digest(service_key, fields)`` of an instance's canonical fields, without
    building them: ``{"id": instance_id, "host": host, "endpoints": list(endpoints),
    "status": status, "properties": properties, "health": [interval, times]}`` (what
    :meth:`pysyncer.model.Instance.fields` gives), written in their keys' order."""
    cdef unsigned char stack[STACK_BYTES]
    cdef Buf b
    cdef unsigned char* p
    b.data = stack
    b.len = 0
    b.cap = STACK_BYTES
    b.heap = NULL
    try:
        p = _take(&b, 2)
        p[0] = 0x93  # fixarray of 3
        p[1] = FORMAT_VERSION
        if not isinstance(service_key, str):
            raise TypeError(f"service_key must be str, not {type(service_key).__name__}")
        _put_str(&b, service_key)
        p = _take(&b, 1)
        p[0] = 0x86  # fixmap of 6, each key below in UTF-8 byte order, as _put_map sorts
        _put_utf8(&b, b"endpoints", 9)
        _put_value(&b, endpoints if PyTuple_CheckExact(endpoints) else list(endpoints), 2)
        _put_utf8(&b, b"health", 6)
        _put_value(&b, (interval, times), 2)
        _put_utf8(&b, b"host", 4)
        _put_value(&b, host, 2)
        _put_utf8(&b, b"id", 2)
        _put_value(&b, instance_id, 2)
        _put_utf8(&b, b"properties", 10)
        _put_value(&b, properties, 2)
        _put_utf8(&b, b"status", 6)
        _put_value(&b, status, 2)
        return _xxh64(b.data, b.len)
    finally:
        free(b.heap)


# ------------------------------------------------------------------ argument checks

cdef Py_ssize_t _slot(object slot) except -1:
    cdef Py_ssize_t s
    try:
        s = slot  # __index__; TypeError for floats and other non-integers
    except OverflowError:
        s = -1
    if s < 0 or s >= N_SLOTS:
        raise ValueError(f"slot {slot} is outside 0..{N_SLOTS - 1}")
    return s


cdef uint64_t _u64(object value) except? 0xFFFFFFFFFFFFFFFF:
    """An int (or __index__ object) in 0..2**64-1; else TypeError or OverflowError."""
    if not PyLong_CheckExact(value):
        value = PyNumber_Index(value)  # Cython alone would also take floats
    try:
        return value
    except OverflowError:
        raise OverflowError(f"{value} is outside the uint64 range 0..2**64-1") from None


cdef const uint16_t[::1] _slots_view(object slots) except *:
    """slots as validated uint16: zero-copy for a uint16 buffer, else converted."""
    cdef const uint16_t[::1] view
    cdef const uint16_t* p
    cdef array converted
    cdef uint16_t* out
    cdef Py_ssize_t i
    try:
        if slots is None:  # a typed memoryview accepts None
            raise TypeError
        view = slots
    except (TypeError, ValueError, BufferError):
        items = PySequence_Fast(slots, b"slots must be a sequence of ints")
        converted = clone(_U16, len(items), False)
        out = _u16p(converted)
        for i in range(len(converted)):
            out[i] = <uint16_t>_slot(items[i])  # items[i] is bounds-checked
        return converted
    p = &view[0] if view.shape[0] else NULL
    for i in range(view.shape[0]):
        if p[i] >= N_SLOTS:
            raise ValueError(f"slot {p[i]} is outside 0..{N_SLOTS - 1}")
    return view


cdef const uint64_t[::1] _u64_view(object values) except *:
    """values as uint64: zero-copy for a uint64 buffer, else converted item by item."""
    cdef const uint64_t[::1] view
    cdef array converted
    cdef uint64_t* out
    cdef Py_ssize_t i
    try:
        if values is None:  # a typed memoryview accepts None
            raise TypeError
        view = values
    except (TypeError, ValueError, BufferError):
        items = PySequence_Fast(values, b"expected a sequence of ints or a uint64 buffer")
        converted = clone(_U64, len(items), False)
        out = _u64p(converted)
        for i in range(len(converted)):
            out[i] = _u64(items[i])  # items[i] is bounds-checked
        return converted
    return view


cdef array _dict_u64(dict mapping, bint keys):
    """The keys (or values) of a dict as array('Q'), in iteration order."""
    cdef Py_ssize_t pos = 0, i = 0, n = len(mapping)
    cdef PyObject* key
    cdef PyObject* value
    cdef array converted = clone(_U64, n, False)
    cdef uint64_t* out = _u64p(converted)
    while PyDict_Next(mapping, &pos, &key, &value):
        if i == n:
            break
        out[i] = _u64(<object>(key if keys else value))
        i += 1
    if i != n or len(mapping) != n:
        raise RuntimeError("dictionary changed size during iteration")
    return converted


# --------------------------------------------------------------------- slot tables

cdef class SlotDigestTable:
    """Per hash slot, the sum mod 2**64 of the digests of the slot's records.

    New tables are all zero. Slots outside 0..16383 raise ValueError, digests
    outside 0..2**64-1 OverflowError. Batch operations validate everything before
    changing anything.
    """

    cdef uint64_t v[N_SLOTS]

    def add(self, slot, digest):
        """Count a record of digest ``digest`` in ``slot``."""
        cdef Py_ssize_t s = _slot(slot)
        self.v[s] += _u64(digest)

    def remove(self, slot, digest):
        """Uncount a record of digest ``digest`` from ``slot``."""
        cdef Py_ssize_t s = _slot(slot)
        self.v[s] -= _u64(digest)

    def replace(self, slot, old_digest, new_digest):
        """A record of ``slot`` changed from ``old_digest`` to ``new_digest``."""
        cdef Py_ssize_t s = _slot(slot)
        cdef uint64_t old = _u64(old_digest)
        self.v[s] += _u64(new_digest) - old

    def add_many(self, slots, digests):
        """``add`` for each pair; array('H') slots and array('Q') digests are fastest."""
        self._apply(slots, digests, False)

    def remove_many(self, slots, digests):
        """``remove`` for each pair; array('H') slots and array('Q') digests are fastest."""
        self._apply(slots, digests, True)

    cdef int _apply(self, object slots, object digests, bint subtract) except -1:
        cdef const uint16_t[::1] sv = _slots_view(slots)
        cdef const uint64_t[::1] dv = _u64_view(digests)
        cdef Py_ssize_t i, n = sv.shape[0]
        cdef const uint16_t* s
        cdef const uint64_t* d
        cdef uint64_t* v = self.v
        if dv.shape[0] != n:
            raise ValueError(f"{n} slots but {dv.shape[0]} digests")
        if n == 0:
            return 0
        s = &sv[0]
        d = &dv[0]
        with nogil:  # slots were checked; the mask guards against a racing writer
            if subtract:
                for i in range(n):
                    v[s[i] & SLOT_MASK] -= d[i]
            else:
                for i in range(n):
                    v[s[i] & SLOT_MASK] += d[i]
        return 0

    def __getitem__(self, slot):
        return self.v[_slot(slot)]

    def __len__(self):
        return N_SLOTS

    def __iter__(self):
        cdef Py_ssize_t i
        for i in range(N_SLOTS):
            yield self.v[i]

    def __eq__(self, other):
        if not isinstance(other, SlotDigestTable):
            return NotImplemented
        return memcmp(self.v, (<SlotDigestTable>other).v, sizeof(self.v)) == 0

    __hash__ = None

    def __repr__(self):
        return f"<SlotDigestTable: {self.nonzero_slots()} non-zero slots>"

    def __reduce__(self):
        return (type(self).from_bytes, (self.to_bytes(),))

    def nonzero_slots(self):
        """Number of slots whose digest is not 0."""
        cdef Py_ssize_t i, count = 0
        for i in range(N_SLOTS):
            count += self.v[i] != 0
        return count

    def copy(self):
        """An independent copy."""
        cdef SlotDigestTable twin = type(self)()
        memcpy(twin.v, self.v, sizeof(self.v))
        return twin

    def to_bytes(self):
        """TABLE_BYTES bytes: the digests as little-endian uint64, slot 0 first."""
        cdef bytes out = PyBytes_FromStringAndSize(NULL, sizeof(self.v))
        cdef unsigned char* p = <unsigned char*>PyBytes_AS_STRING(out)
        cdef Py_ssize_t i, k
        if _LITTLE_ENDIAN:
            memcpy(p, self.v, sizeof(self.v))
        else:
            for i in range(N_SLOTS):
                for k in range(8):
                    p[8 * i + k] = <unsigned char>(self.v[i] >> (8 * k))
        return out

    @classmethod
    def from_bytes(cls, data):
        """Table from to_bytes() output (any C-contiguous bytes-like object).

        Raises MalformedDataError (a ValueError) unless it is TABLE_BYTES long.
        """
        cdef const unsigned char[::1] raw = memoryview(data).cast("B")
        cdef SlotDigestTable table
        cdef Py_ssize_t i
        if raw.shape[0] != N_SLOTS * 8:
            raise MalformedDataError(
                f"a slot digest table is {N_SLOTS * 8} bytes, not {raw.shape[0]}"
            )
        table = cls()
        for i in range(N_SLOTS):
            table.v[i] = _read64(&raw[8 * i])
        return table


def diff_slots(SlotDigestTable a not None, SlotDigestTable b not None):
    """array('H') of the slots, ascending, whose digests differ between a and b."""
    cdef Py_ssize_t i, n = 0
    cdef array out
    for i in range(N_SLOTS):
        n += a.v[i] != b.v[i]
    out = clone(_U16, n, False)
    n = 0
    for i in range(N_SLOTS):
        if a.v[i] != b.v[i]:
            _u16p(out)[n] = <uint16_t>i
            n += 1
    return out


# ------------------------------------------------------------------------ snapshots

cdef void _insertion_sort(uint64_t* k, uint64_t* v, Py_ssize_t m) noexcept nogil:
    cdef Py_ssize_t i, j
    cdef uint64_t key, val
    for i in range(1, m):
        key = k[i]
        val = v[i]
        j = i
        while j > 0 and k[j - 1] > key:
            k[j] = k[j - 1]
            v[j] = v[j - 1]
            j -= 1
        k[j] = key
        v[j] = val


cdef void _msd_sort(uint64_t* k, uint64_t* v, Py_ssize_t m, int shift,
                    uint64_t* tmp_k, uint64_t* tmp_v) noexcept nogil:
    """Sort (k, v)[:m] by key; the keys agree above bit shift + 8; tmp_* hold m."""
    cdef Py_ssize_t count[256]
    cdef Py_ssize_t fill[256]
    cdef Py_ssize_t i, pos = 0
    cdef int b
    if m <= INSERTION_MAX:
        _insertion_sort(k, v, m)
        return
    while True:  # skip bytes that every key shares
        for b in range(256):
            count[b] = 0
        for i in range(m):
            count[(k[i] >> shift) & 0xFF] += 1
        if count[(k[0] >> shift) & 0xFF] != m:
            break
        if shift == 0:
            return  # all keys equal (duplicates; the caller reports them)
        shift -= 8
    for b in range(256):
        fill[b] = pos
        pos += count[b]
    for i in range(m):
        b = (k[i] >> shift) & 0xFF
        tmp_k[fill[b]] = k[i]
        tmp_v[fill[b]] = v[i]
        fill[b] += 1
    memcpy(k, tmp_k, m * 8)
    memcpy(v, tmp_v, m * 8)
    if shift == 0:
        return
    pos = 0
    for b in range(256):
        if count[b] > 1:
            _msd_sort(k + pos, v + pos, count[b], shift - 8, tmp_k, tmp_v)
        pos += count[b]


cdef int _sort_pairs(const uint64_t* keys, const uint64_t* vals, uint64_t* out_k,
                     uint64_t* out_v, Py_ssize_t n) noexcept nogil:
    """out = (keys, vals) sorted by key; -1 when out of memory.

    MSD radix sort: one pass on the top byte straight from the input into out, then
    each bucket (about n/256 records for hashes: cache-sized) is sorted in place by
    byte, down to insertion sort for small buckets. Scratch memory is one bucket,
    not n. Already sorted input (a reloaded snapshot) is just copied.
    """
    cdef Py_ssize_t count[256]
    cdef Py_ssize_t fill[256]
    cdef Py_ssize_t end[256]
    cdef Py_ssize_t i, pos = 0, biggest = 0
    cdef uint64_t* tmp
    cdef int b
    for i in range(1, n):
        if keys[i - 1] > keys[i]:
            break
    else:
        memcpy(out_k, keys, n * 8)
        memcpy(out_v, vals, n * 8)
        return 0
    for b in range(256):
        count[b] = 0
    for i in range(n):
        count[keys[i] >> 56] += 1
    for b in range(256):
        fill[b] = pos
        pos += count[b]
        end[b] = pos
        if count[b] > biggest:
            biggest = count[b]
    for i in range(n):
        b = keys[i] >> 56
        if fill[b] < end[b]:  # always, unless another thread rewrites the input now
            out_k[fill[b]] = keys[i]
            out_v[fill[b]] = vals[i]
            fill[b] += 1
    tmp = <uint64_t*>malloc(biggest * 16)
    if tmp == NULL:
        return -1
    pos = 0
    for b in range(256):
        if count[b] > 1:
            _msd_sort(out_k + pos, out_v + pos, count[b], 48, tmp, tmp + biggest)
        pos += count[b]
    free(tmp)
    return 0


cdef class DigestSnapshot:
    """An immutable set of (key hash -> record digest), both uint64.

    Stored as two parallel arrays, keys ascending (see the module docstring).
    ``DigestSnapshot(keys, digests)`` takes equal-length sequences of ints or uint64
    buffers (array('Q'), read without conversion); a key given twice raises
    ValueError.
    """

    cdef array _keys
    cdef array _digests
    cdef const uint64_t* k
    cdef const uint64_t* d
    cdef Py_ssize_t n

    def __cinit__(self, keys, digests):
        cdef const uint64_t[::1] kv = _u64_view(keys)
        cdef const uint64_t[::1] dv = _u64_view(digests)
        cdef Py_ssize_t i, n = kv.shape[0]
        cdef uint64_t* k
        cdef uint64_t* d
        cdef const uint64_t* src_k
        cdef const uint64_t* src_d
        cdef int status = 0
        if dv.shape[0] != n:
            raise ValueError(f"{n} keys but {dv.shape[0]} digests")
        self._keys = clone(_U64, n, False)
        self._digests = clone(_U64, n, False)
        k = _u64p(self._keys)
        d = _u64p(self._digests)
        self.k = k
        self.d = d
        self.n = n
        if n:
            src_k = &kv[0]
            src_d = &dv[0]
            with nogil:
                status = _sort_pairs(src_k, src_d, k, d, n)
            if status < 0:
                raise MemoryError()
        for i in range(1, n):
            if k[i - 1] == k[i]:
                raise ValueError(f"duplicate key {k[i]}")

    @classmethod
    def from_mapping(cls, mapping):
        """The snapshot of a {key hash: record digest} mapping."""
        if PyDict_CheckExact(mapping):  # no intermediate lists
            return cls(_dict_u64(mapping, True), _dict_u64(mapping, False))
        return cls(list(mapping.keys()), list(mapping.values()))

    def __len__(self):
        return self.n

    cdef Py_ssize_t _find(self, object key) except -2:
        """Index of key, or -1 when absent (or not an int in 0..2**64-1)."""
        cdef uint64_t k
        cdef Py_ssize_t lo = 0, hi = self.n, mid
        try:
            key = PyNumber_Index(key)
        except TypeError:
            return -1
        if key < 0 or key > _U64_MAX:
            return -1
        k = key
        while lo < hi:
            mid = (lo + hi) >> 1
            if self.k[mid] < k:
                lo = mid + 1
            else:
                hi = mid
        return lo if lo < self.n and self.k[lo] == k else -1

    def __contains__(self, key):
        return self._find(key) >= 0

    def get(self, key):
        """The record digest of key, or None."""
        cdef Py_ssize_t i = self._find(key)
        return None if i < 0 else self.d[i]

    def keys(self):
        """array('Q') of the key hashes, ascending."""
        return array("Q", self._keys)

    def digests(self):
        """array('Q') of the record digests, aligned with keys()."""
        return array("Q", self._digests)

    def __eq__(self, other):
        cdef DigestSnapshot that
        if not isinstance(other, DigestSnapshot):
            return NotImplemented
        that = other
        return self.n == that.n and (
            self.n == 0
            or (memcmp(self.k, that.k, self.n * 8) == 0
                and memcmp(self.d, that.d, self.n * 8) == 0)
        )

    __hash__ = None

    def __repr__(self):
        return f"<DigestSnapshot: {self.n} records>"

    def __reduce__(self):
        return (type(self), (self.keys(), self.digests()))


def snapshot_diff(DigestSnapshot old not None, DigestSnapshot new not None):
    """SnapshotDiff(added, changed, removed) from old to new: one merge pass, no GIL.

    added: keys only in new; removed: keys only in old; changed: keys in both whose
    digests differ. Each is an ascending array('Q').
    """
    cdef Py_ssize_t i = 0, j = 0, na = 0, nc = 0, nr = 0
    cdef Py_ssize_t n_old = old.n, n_new = new.n
    cdef const uint64_t* ok = old.k
    cdef const uint64_t* od = old.d
    cdef const uint64_t* nk = new.k
    cdef const uint64_t* nd = new.d
    # Worst-case capacities, shrunk at the end: the OS does not back unwritten pages.
    cdef array added = clone(_U64, n_new, False)
    cdef array changed = clone(_U64, min(n_old, n_new), False)
    cdef array removed = clone(_U64, n_old, False)
    cdef uint64_t* a = _u64p(added)
    cdef uint64_t* c = _u64p(changed)
    cdef uint64_t* r = _u64p(removed)
    with nogil:
        while i < n_old and j < n_new:
            if ok[i] == nk[j]:
                if od[i] != nd[j]:
                    c[nc] = ok[i]
                    nc += 1
                i += 1
                j += 1
            elif ok[i] < nk[j]:
                r[nr] = ok[i]
                nr += 1
                i += 1
            else:
                a[na] = nk[j]
                na += 1
                j += 1
        if i < n_old:
            memcpy(r + nr, ok + i, (n_old - i) * 8)
            nr += n_old - i
        if j < n_new:
            memcpy(a + na, nk + j, (n_new - j) * 8)
            na += n_new - j
    resize(added, na)
    resize(changed, nc)
    resize(removed, nr)
    return SnapshotDiff(added, changed, removed)
