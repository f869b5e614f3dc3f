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


def no_extensions_requested(environ: Mapping[str, str] | None = None) -> bool:
    """True when the pure-Python twins must be used and nothing compiled.

    Set by ``PYSYNCER_NO_EXTENSIONS`` to a true word (``1``, ``true``, ``yes``,
    ``on``), and always on interpreters other than CPython, where the Cython
    modules are not built.
    """
    env = os.environ if environ is None else environ
    if env.get(ENV_VAR, "").strip().lower() in _TRUE_WORDS:
        return True
    return platform.python_implementation() != "CPython"


NO_EXTENSIONS: bool = no_extensions_requested()
