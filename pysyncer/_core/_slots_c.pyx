# cython: language_level=3, embedsignature=True, freethreading_compatible=True
"""Redis Cluster hash-slot routing, compiled (twin: :mod:`pysyncer._core._slots_py`).

Owns the slot function of Redis Cluster: CRC16/XMODEM (slicing-by-8 tables) of the
key, or of its hash tag (the bytes between the first ``{`` and the first ``}`` after
it, when not empty), modulo :data:`SLOT_COUNT`. :func:`key_slots` hashes with the GIL
released.
"""

cimport cython
from cpython.array cimport array, clone
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_Check, PyBytes_GET_SIZE
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from cpython.object cimport PyObject
from cpython.sequence cimport (
    PySequence_Fast_GET_SIZE,
    PySequence_Fast_ITEMS,
    PySequence_GetSlice,
)
from cpython.unicode cimport PyUnicode_AsUTF8AndSize, PyUnicode_Check
from libc.stdint cimport uint8_t, uint16_t
from libc.string cimport memchr, memcpy

cdef extern from *:
    """
    #if defined(__GNUC__) || defined(__clang__)
    #define PYSYNCER_PREFETCH(address) __builtin_prefetch(address)
    #else
    #define PYSYNCER_PREFETCH(address) ((void)(address))
    #endif
    """
    void PYSYNCER_PREFETCH(const void* address) noexcept nogil

__all__ = ["SLOT_COUNT", "crc16", "key_slot", "key_slots"]

SLOT_COUNT = 16384

cdef enum:
    SLOT_MASK = 16383
    CHUNK = 4096      # keys gathered (GIL held) then hashed (GIL released) per round
    NOGIL_MIN = 256   # fewer keys than this are hashed without releasing the GIL

# CRC_TABLE[k][b]: CRC16/XMODEM of byte b followed by k zero bytes.
cdef uint16_t CRC_TABLE[8][256]
cdef array _USHORT_ARRAY = array("H")


cdef void _fill_crc_table() noexcept:
    cdef unsigned int byte, _bit, crc, k
    for byte in range(256):
        crc = byte << 8
        for _bit in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
        CRC_TABLE[0][byte] = crc & 0xFFFF
    for k in range(1, 8):
        for byte in range(256):
            crc = CRC_TABLE[k - 1][byte]
            CRC_TABLE[k][byte] = ((crc << 8) ^ CRC_TABLE[0][crc >> 8]) & 0xFFFF


_fill_crc_table()


cdef inline unsigned int _crc16_step8(unsigned int crc, const uint8_t* p) noexcept nogil:
    """CRC after the 8 message bytes at p (slicing-by-8)."""
    return (CRC_TABLE[7][p[0] ^ (crc >> 8)] ^ CRC_TABLE[6][p[1] ^ (crc & 0xFF)]
            ^ CRC_TABLE[5][p[2]] ^ CRC_TABLE[4][p[3]] ^ CRC_TABLE[3][p[4]]
            ^ CRC_TABLE[2][p[5]] ^ CRC_TABLE[1][p[6]] ^ CRC_TABLE[0][p[7]])


cdef inline unsigned int _crc16_update(unsigned int crc, const uint8_t* p,
                                       Py_ssize_t n) noexcept nogil:
    """CRC after n more bytes at p: 8 per step, then one step each of 4, 2, 1."""
    while n >= 8:
        crc = _crc16_step8(crc, p)
        p += 8
        n -= 8
    if n & 4:
        crc = (CRC_TABLE[3][p[0] ^ (crc >> 8)] ^ CRC_TABLE[2][p[1] ^ (crc & 0xFF)]
               ^ CRC_TABLE[1][p[2]] ^ CRC_TABLE[0][p[3]])
        p += 4
    if n & 2:
        crc = CRC_TABLE[1][p[0] ^ (crc >> 8)] ^ CRC_TABLE[0][p[1] ^ (crc & 0xFF)]
        p += 2
    if n & 1:
        crc = ((crc << 8) & 0xFFFF) ^ CRC_TABLE[0][p[0] ^ (crc >> 8)]
    return crc


cdef inline Py_ssize_t _hashed_part(const char* key, Py_ssize_t n,
                                    const uint8_t** part) noexcept nogil:
    """Point part at the bytes Redis hashes, the non-empty hash tag or else the whole
    key, and return their length."""
    cdef const char* tag = <const char*>memchr(key, ord("{"), n)
    cdef const char* close
    if tag != NULL:
        tag += 1
        close = <const char*>memchr(tag, ord("}"), n - (tag - key))
        if close != NULL and close != tag:
            part[0] = <const uint8_t*>tag
            return close - tag
    part[0] = <const uint8_t*>key
    return n


cdef inline unsigned int _slot(const char* key, Py_ssize_t n) noexcept nogil:
    """Redis Cluster slot of the n bytes at key."""
    cdef const uint8_t* part
    n = _hashed_part(key, n, &part)
    return _crc16_update(0, part, n) & SLOT_MASK


cdef void _slots_into(uint16_t* slots, const char** datas, const Py_ssize_t* sizes,
                      Py_ssize_t count, PyObject** upcoming,
                      Py_ssize_t n_upcoming) noexcept nogil:
    """Slots of count keys, prefetching the n_upcoming keys of the next chunk."""
    # Two keys per round: their CRC chains are independent, so the CPU overlaps them.
    cdef const uint8_t* a
    cdef const uint8_t* b
    cdef Py_ssize_t i = 0, size_a, size_b
    cdef unsigned int crc_a, crc_b
    while i + 1 < count:
        size_a = _hashed_part(datas[i], sizes[i], &a)
        size_b = _hashed_part(datas[i + 1], sizes[i + 1], &b)
        if i + 1 < n_upcoming:
            PYSYNCER_PREFETCH(upcoming[i])
            PYSYNCER_PREFETCH(upcoming[i + 1])
        crc_a = crc_b = 0
        while size_a >= 8 and size_b >= 8:
            crc_a = _crc16_step8(crc_a, a)
            crc_b = _crc16_step8(crc_b, b)
            a += 8
            b += 8
            size_a -= 8
            size_b -= 8
        slots[i] = _crc16_update(crc_a, a, size_a) & SLOT_MASK
        slots[i + 1] = _crc16_update(crc_b, b, size_b) & SLOT_MASK
        i += 2
    if i < count:
        slots[i] = _slot(datas[i], sizes[i])


cdef inline const char* _key_data(object key, Py_ssize_t* size) except NULL:
    """Bytes hashed for key (UTF-8 of a str, zero-copy for ASCII); valid while key lives."""
    if PyUnicode_Check(key):
        return PyUnicode_AsUTF8AndSize(key, size)
    if PyBytes_Check(key):
        size[0] = PyBytes_GET_SIZE(key)
        return PyBytes_AS_STRING(key)
    raise TypeError(f"a Redis key must be str or bytes, not {type(key).__name__}")


cdef Py_ssize_t _upcoming_keys(object keys, Py_ssize_t start, Py_ssize_t stop,
                               PyObject** upcoming):
    """Copy the addresses of keys[start:stop] (at most CHUNK of them) to prefetch while
    the current chunk is hashed, so that copying them next round finds them in cache.
    Addresses only, not references: a prefetch never dereferences, so a key another
    thread drops meanwhile costs nothing."""
    cdef Py_ssize_t count
    with cython.critical_section(keys):
        count = min(stop, PySequence_Fast_GET_SIZE(keys), start + CHUNK) - start
        if count > 0:
            memcpy(upcoming, PySequence_Fast_ITEMS(keys) + start, count * sizeof(PyObject*))
    return max(count, 0)


def crc16(data):
    """CRC16/XMODEM of ``data`` (poly 0x1021, init 0): ``crc16(b"123456789") == 0x31C3``.

    Only ``bytes`` (or a subclass) is accepted; anything else raises TypeError.
    """
    if not PyBytes_Check(data):
        raise TypeError(f"crc16() expects bytes, not {type(data).__name__}")
    return _crc16_update(0, <const uint8_t*>PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data))


def key_slot(key):
    """Redis Cluster slot (0..16383) of ``key``, as ``CLUSTER KEYSLOT`` computes it."""
    cdef Py_ssize_t size
    cdef const char* data = _key_data(key, &size)
    return _slot(data, size)


def key_slots(keys):
    """Slots of many keys at once, as a compact ``array('H')``.

    Equal to ``array('H', [key_slot(k) for k in keys])``. ``keys`` may be any iterable
    of keys except a single ``str`` or ``bytes`` (a likely mistake: TypeError).
    """
    if isinstance(keys, (str, bytes)):
        raise TypeError("key_slots() expects a sequence of keys, not a single key")
    if type(keys) is not list and type(keys) is not tuple:
        keys = tuple(keys)
    cdef Py_ssize_t n = len(keys)
    cdef array out = clone(_USHORT_ARRAY, n, False)
    cdef uint16_t* slots = out.data.as_ushorts
    cdef Py_ssize_t start, count, i
    cdef object chunk
    cdef PyObject** items
    cdef const char** datas = NULL
    cdef Py_ssize_t* sizes = NULL
    cdef PyObject** upcoming = NULL
    cdef Py_ssize_t n_upcoming
    if n == 0:
        return out
    try:
        datas = <const char**>PyMem_Malloc(min(n, CHUNK) * sizeof(const char*))
        sizes = <Py_ssize_t*>PyMem_Malloc(min(n, CHUNK) * sizeof(Py_ssize_t))
        upcoming = <PyObject**>PyMem_Malloc(min(n, CHUNK) * sizeof(PyObject*))
        if datas == NULL or sizes == NULL or upcoming == NULL:
            raise MemoryError()
        for start in range(0, n, CHUNK):
            # This private copy owns the chunk's keys while they are hashed without
            # the GIL, whatever other threads do to a list meanwhile. Copying a chunk at
            # a time (not the whole input) keeps the keys in cache from copy to hash.
            chunk = PySequence_GetSlice(keys, start, start + CHUNK)
            count = PySequence_Fast_GET_SIZE(chunk)
            if count != min(CHUNK, n - start):
                raise RuntimeError("keys changed size during key_slots()")
            items = PySequence_Fast_ITEMS(chunk)
            for i in range(count):
                datas[i] = _key_data(<object>items[i], &sizes[i])
            n_upcoming = _upcoming_keys(keys, start + CHUNK, n, upcoming)
            if count >= NOGIL_MIN:
                with nogil:
                    _slots_into(slots + start, datas, sizes, count, upcoming, n_upcoming)
            else:
                _slots_into(slots + start, datas, sizes, count, upcoming, n_upcoming)
    finally:
        PyMem_Free(datas)
        PyMem_Free(sizes)
        PyMem_Free(upcoming)
    return out
