"""Build script: compiles the Cython hot paths unless PYSYNCER_NO_EXTENSIONS is set.

Metadata lives in pyproject.toml; this file only decides which extension modules to
build. ``PYSYNCER_NO_EXTENSIONS=1`` (read by pysyncer/_core/_compat.py, the one place
the switch is interpreted) builds a pure-Python package and compiles nothing.

The extensions name their ``.pyx`` sources, which the sdist ships (MANIFEST.in); Cython
turns them into C only when ``build_ext`` runs, so making an sdist needs no Cython and the
generated C never lands in it.
"""

from __future__ import annotations

import os
import runpy
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = Path(__file__).resolve().parent
_compat = runpy.run_path(str(HERE / "pysyncer" / "_core" / "_compat.py"))
NO_EXTENSIONS: bool = _compat["NO_EXTENSIONS"]
SWITCH: str = _compat["ENV_VAR"]

# One entry per compiled module; each has a pure-Python twin named *_py.py.
CORE_MODULES = ["_slots_c", "_digest_c", "_timers_c", "_wire_c"]

FAILURE_HINT = (
    f"pysyncer: cannot compile the Cython core ({{reason}}); install a C compiler and "
    f"Python headers, or set {SWITCH}=1 to install the pure-Python implementation"
)


class StrictBuildExt(build_ext):
    """build_ext that cythonizes first, compiles the modules in parallel, and fails in one
    line that names the pure-Python switch."""

    def finalize_options(self) -> None:
        super().finalize_options()
        if not self.parallel:
            self.parallel = os.cpu_count() or 1

    def run(self) -> None:
        # Only the sources change: the Extension objects keep what finalize_options set up.
        generated = {ext.name: ext.sources for ext in _cythonize(self.extensions)}
        for ext in self.extensions:
            ext.sources = generated[ext.name]
        try:
            super().run()
        except Exception as exc:  # CompileError, DistutilsPlatformError, ...
            raise SystemExit(FAILURE_HINT.format(reason=_one_line(exc))) from None

    def build_extension(self, ext: Extension) -> None:
        try:
            super().build_extension(ext)
        except Exception as exc:
            raise SystemExit(FAILURE_HINT.format(reason=_one_line(exc))) from None


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[-1] if text else 'no details'}"


def _extensions() -> list[Extension]:
    if NO_EXTENSIONS:
        return []
    compile_args = [] if sys.platform == "win32" else ["-O3"]
    return [
        Extension(
            f"pysyncer._core.{name}",
            [f"pysyncer/_core/{name}.pyx"],
            extra_compile_args=compile_args,
        )
        for name in CORE_MODULES
    ]


def _cythonize(extensions: list[Extension]) -> list[Extension]:
    """Copies of the extensions whose .pyx sources are turned into C (next to the .pyx)."""
    if not extensions:
        return []
    try:
        from Cython.Build import cythonize
    except ImportError:
        raise SystemExit(FAILURE_HINT.format(reason="Cython is not installed")) from None
    try:
        cythonized: list[Extension] = cythonize(
            extensions,
            compiler_directives={
                "language_level": 3,
                "embedsignature": True,
                "freethreading_compatible": True,
            },
            quiet=True,
        )
    except Exception as exc:  # Cython.Compiler.Errors.CompileError and friends
        raise SystemExit(FAILURE_HINT.format(reason=_one_line(exc))) from None
    return cythonized


setup(ext_modules=_extensions(), cmdclass={"build_ext": StrictBuildExt})
