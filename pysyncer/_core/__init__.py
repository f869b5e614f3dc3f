"""Compiled hot paths of pysyncer, each with a pure-Python twin of the same API.

This module is the only dispatcher: it loads every compiled module (``_*_c``) or every
twin (``_*_py``), never a mix, and says which in :data:`IMPLEMENTATION`. Use the
modules through it::

    from pysyncer._core import slots, digest
    slots.key_slot("foo")  # 12182

The ``_core`` modules are pure: no asyncio, sockets or logging. They take and return
bytes, buffers and arrays; scheduling and I/O live above them.

``PYSYNCER_NO_EXTENSIONS=1`` selects the twins (see :mod:`pysyncer._core._compat`).
Without it, a compiled module that fails to import also selects the twins, and
:data:`EXTENSION_LOAD_ERROR` keeps the reason so the daemon can log it at start.
Type checkers always see the twins, which type the compiled API.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pysyncer._core._compat import NO_EXTENSIONS

__all__ = [
    "EXTENSION_LOAD_ERROR",
    "IMPLEMENTATION",
    "NO_EXTENSIONS",
    "digest",
    "slots",
    "timers",
    "wire",
]

IMPLEMENTATION: Literal["cython", "python"]
EXTENSION_LOAD_ERROR: str | None = None

if TYPE_CHECKING or NO_EXTENSIONS:
    from pysyncer._core import _digest_py as digest
    from pysyncer._core import _slots_py as slots
    from pysyncer._core import _timers_py as timers
    from pysyncer._core import _wire_py as wire

    IMPLEMENTATION = "python"
else:
    try:
        from pysyncer._core import _digest_c as digest
        from pysyncer._core import _slots_c as slots
        from pysyncer._core import _timers_c as timers
        from pysyncer._core import _wire_c as wire

        IMPLEMENTATION = "cython"
    except ImportError as exc:  # not built (pure install) or built for another ABI
        EXTENSION_LOAD_ERROR = f"{type(exc).__name__}: {exc}"
        from pysyncer._core import _digest_py as digest
        from pysyncer._core import _slots_py as slots
        from pysyncer._core import _timers_py as timers
        from pysyncer._core import _wire_py as wire

        IMPLEMENTATION = "python"
