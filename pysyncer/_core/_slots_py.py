"""Redis Cluster hash-slot routing, pure Python (twin of :mod:`pysyncer._core._slots_c`).

Owns the slot function of Redis Cluster: CRC16/XMODEM of the key, or of its hash tag
(the bytes between the first ``{`` and the first ``}`` after it, when not empty),
modulo :data:`SLOT_COUNT`. Keys are ``str`` (hashed as UTF-8) or ``bytes``; anything
else raises :class:`TypeError`, and a ``str`` that cannot be encoded (lone surrogates)
raises :class:`UnicodeEncodeError`, exactly as the compiled module does.
"""

from __future__ import annotations

from array import array
from binascii import crc_hqx  # CRC-CCITT, MSB first: CRC16/XMODEM when started at 0
from collections.abc import Iterable, Sequence

__all__ = ["SLOT_COUNT", "crc16", "key_slot", "key_slots"]

SLOT_COUNT: int = 16384
"""Number of hash slots of a Redis Cluster."""

_SLOT_MASK = SLOT_COUNT - 1
_OPEN = ord("{")  # an int: `int in bytes` is a plain byte search, `bytes in bytes` is slower
_CLOSE = ord("}")
_str_encode = str.encode


def crc16(data: bytes) -> int:
    """CRC16/XMODEM of ``data`` (poly 0x1021, init 0): ``crc16(b"123456789") == 0x31C3``.

    Only ``bytes`` (or a subclass) is accepted; anything else raises :class:`TypeError`.
    """
    if not isinstance(data, bytes):
        raise TypeError(f"crc16() expects bytes, not {type(data).__name__}")
    return crc_hqx(data, 0)


def _key_bytes(key: object) -> bytes:
    """The bytes hashed for ``key``: UTF-8 for ``str``, as is for ``bytes``."""
    if isinstance(key, str):
        return _str_encode(key)  # not key.encode(): a subclass cannot change the bytes
    if isinstance(key, bytes):
        return key if type(key) is bytes else bytes(memoryview(key))
    raise TypeError(f"a Redis key must be str or bytes, not {type(key).__name__}")


def key_slot(key: str | bytes) -> int:
    """Redis Cluster slot (0..16383) of ``key``, as ``CLUSTER KEYSLOT`` computes it."""
    data = key.encode() if type(key) is str else key if type(key) is bytes else _key_bytes(key)
    if _OPEN in data:
        start = data.find(_OPEN)
        end = data.find(_CLOSE, start + 1)
        if end > start + 1:
            data = data[start + 1 : end]
    return crc_hqx(data, 0) & _SLOT_MASK


def _slots_of(encoded: Iterable[bytes]) -> array[int]:
    # key_slot() inlined: a call per key would cost more than the hashing.
    return array(
        "H",
        [
            crc_hqx(
                data
                if _OPEN not in data
                else data[start + 1 : end]
                if (end := data.find(_CLOSE, (start := data.find(_OPEN)) + 1)) > start + 1
                else data,
                0,
            )
            & _SLOT_MASK
            for data in encoded
        ],
    )


def key_slots(keys: Sequence[str | bytes]) -> array[int]:
    """Slots of many keys at once, as a compact ``array('H')``.

    Equal to ``array('H', [key_slot(k) for k in keys])``. ``keys`` may be any iterable
    of keys except a single ``str`` or ``bytes`` (a likely mistake: TypeError).
    """
    if isinstance(keys, (str, bytes)):
        raise TypeError("key_slots() expects a sequence of keys, not a single key")
    if type(keys) is not list and type(keys) is not tuple:
        keys = tuple(keys)  # may be read twice below
    try:
        return _slots_of(map(_str_encode, keys))  # the common case: every key is a str
    except TypeError:
        pass  # a bytes key, or a bad one: the general path sorts them out
    return _slots_of(map(_key_bytes, keys))
