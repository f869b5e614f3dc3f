"""Compiled hot paths of pysyncer, each with a pure-Python twin of the same API.

This module is the only dispatcher: it loads every compiled module (``_*_c``) or every
twin (``_*_py``), never a mix, and says which in :data:`IMPLEMENTATION`. Use the
modules through it::

    from pysyncer._core import slots, digest
    slots.key_slot("foo")  # 12182

The ``_core`` modules are pure: no asyncio, sockets or logging. They take and return
bytes, buffers and arrays; scheduling and I/O live above them.

``PYSYNCER_NO_EXTENSIONS=1`` selects the twins on purpose (see
:mod:`pysyncer._core._compat`); :data:`NO_EXTENSIONS_REASON` says so, for an INFO line.
Without it, a compiled module that fails to import also selects the twins, and
:data:`EXTENSION_LOAD_ERROR` names the module and the reason, for the daemon's WARNING at
start. The compiled modules are imported by their full names: ``from pysyncer._core import
_x_c`` inside this package's own import would report a missing module as "most likely due
to a circular import", which it never is here.
Type checkers always see the twins, which type the compiled API.

Imports: errors.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pysyncer._core._compat import ENV_VAR, NO_EXTENSIONS, NO_EXTENSIONS_REASON

__all__ = [
    "EXTENSION_LOAD_ERROR",
    "IMPLEMENTATION",
    "NO_EXTENSIONS",
    "NO_EXTENSIONS_REASON",
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
        import pysyncer._core._digest_c as digest
        import pysyncer._core._slots_c as slots
        import pysyncer._core._timers_c as timers
        import pysyncer._core._wire_c as wire

        IMPLEMENTATION = "cython"
    except ImportError as exc:
        if isinstance(exc, ModuleNotFoundError) and (exc.name or "").startswith(__name__):
            # a pure-Python wheel or build: nothing was compiled
            EXTENSION_LOAD_ERROR = (
                f"{exc.name} is not installed (a pure-Python wheel or build); "
                f"set {ENV_VAR}=1 to choose the twins on purpose"
            )
        else:  # built for another Python or ABI, or a broken build
            EXTENSION_LOAD_ERROR = f"the compiled core failed to load: {type(exc).__name__}: {exc}"
    if EXTENSION_LOAD_ERROR is not None:
        from pysyncer._core import _digest_py as digest
        from pysyncer._core import _slots_py as slots
        from pysyncer._core import _timers_py as timers
        from pysyncer._core import _wire_py as wire

        IMPLEMENTATION = "python"
