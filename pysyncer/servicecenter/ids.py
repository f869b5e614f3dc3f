"""The random ids the embedded registry gives services and instances.

Owns their shape: 32 lowercase hex digits of a version-4 UUID (what ``uuid.uuid4().hex``
gives, as Service-Center's are 32 hex digits). Made from a buffer of random bytes filled
:data:`IDS_PER_FILL` ids at a time (one ``os.urandom`` call each, not one per id: a full
sync creates a service per ten copies); a forked child starts a buffer of its own. Must
not touch the registry's state.
"""

from __future__ import annotations

import os

__all__ = ["IDS_PER_FILL", "new_id"]

IDS_PER_FILL = 256

_random = bytearray()  # random bytes not used yet, 16 per id


def new_id() -> str:
    """A new random id: 32 hex digits with the version-4 UUID's version and variant bits."""
    if not _random:
        _random.extend(os.urandom(16 * IDS_PER_FILL))
    raw = _random[-16:]
    del _random[-16:]
    raw[6] = raw[6] & 0x0F | 0x40  # version 4
    raw[8] = raw[8] & 0x3F | 0x80  # RFC 4122 variant
    return raw.hex()


def _forget() -> None:
    _random.clear()  # a forked child must not hand out its parent's ids


os.register_at_fork(after_in_child=_forget)
