"""Shared fixtures: both implementations of every _core module, and real servers."""

from __future__ import annotations

import importlib
import os
import shutil
from types import ModuleType

import pytest
from hypothesis import settings

from pysyncer._core._compat import no_extensions_requested

# Property tests check behaviour, not timings: no per-example deadline (the default 200 ms
# failed an example that compiled its first glob regex on a loaded machine).
settings.register_profile("pysyncer", deadline=None)
settings.load_profile("pysyncer")

IN_CI = os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}
COMPILED_EXPECTED = not no_extensions_requested()


def load_core_module(name: str, kind: str) -> ModuleType:
    """Import ``pysyncer._core._{name}_{kind}`` (kind ``py`` or ``c``) for a parity test.

    A missing compiled module fails the test when compiled code is expected (the
    suite's compiled run) and skips it in the pure-Python run.
    """
    module_name = f"pysyncer._core._{name}_{kind}"
    try:
        return importlib.import_module(module_name)
    except ImportError as exc:
        if kind == "c" and not COMPILED_EXPECTED:
            pytest.skip(f"{module_name} is not built (PYSYNCER_NO_EXTENSIONS run)")
        raise AssertionError(f"{module_name} was expected but did not load: {exc}") from exc


def require_program(program: str, debian_package: str) -> str:
    """Path of a server binary; skip (or fail under CI=true) when it is missing."""
    path = shutil.which(program) or shutil.which(program, path="/usr/sbin:/usr/bin:/sbin:/bin")
    if path is None:
        message = (
            f"{program} is not installed: run 'apt-get install {debian_package}' "
            "(ci/test.sh does this when run as root)"
        )
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return path


E2E_DIR = os.path.join(os.path.dirname(__file__), "e2e")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Everything under ``tests/e2e`` is marked ``e2e``: ``-m 'not e2e'`` is the fast set."""
    for item in items:
        if str(item.path).startswith(E2E_DIR + os.sep):
            item.add_marker(pytest.mark.e2e)
