"""The one place the ``PYSYNCER_NO_EXTENSIONS`` switch is read.

``setup.py`` loads this file by path (before pysyncer is importable) to decide whether
to compile the Cython modules, and :mod:`pysyncer._core` reads it at import time to
decide whether to load them. Keep it free of imports outside the standard library.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Mapping

ENV_VAR = "PYSYNCER_NO_EXTENSIONS"

_TRUE_WORDS = frozenset({"1", "true", "yes", "on", "y"})


def no_extensions_reason(environ: Mapping[str, str] | None = None) -> str | None:
    """Why the pure-Python twins are chosen on purpose, or None when they are not.

    They are chosen by ``PYSYNCER_NO_EXTENSIONS`` set to a true word (``1``, ``true``,
    ``yes``, ``on``), and always on interpreters other than CPython, where the Cython
    modules are not built. The text is what the daemon logs at start.
    """
    env = os.environ if environ is None else environ
    value = env.get(ENV_VAR, "").strip()
    if value.lower() in _TRUE_WORDS:
        return f"{ENV_VAR}={value} is set"
    implementation = platform.python_implementation()
    if implementation != "CPython":
        return f"the compiled core is built for CPython only, this is {implementation}"
    return None


def no_extensions_requested(environ: Mapping[str, str] | None = None) -> bool:
    """True when the pure-Python twins must be used and nothing compiled."""
    return no_extensions_reason(environ) is not None


NO_EXTENSIONS_REASON: str | None = no_extensions_reason()
NO_EXTENSIONS: bool = NO_EXTENSIONS_REASON is not None
