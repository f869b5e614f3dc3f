"""The dispatcher loads the expected implementation, and both expose the same API."""

from __future__ import annotations

import subprocess
import sys

import pytest

from pysyncer import _core
from pysyncer._core._compat import ENV_VAR, no_extensions_requested
from tests.conftest import COMPILED_EXPECTED, load_core_module

CORE_MODULES = ["slots", "digest", "timers", "wire"]


def test_compiled_core_loaded_when_expected() -> None:
    """Guard: a build that silently fell back to the twins fails the compiled run."""
    if COMPILED_EXPECTED:
        assert _core.EXTENSION_LOAD_ERROR is None, _core.EXTENSION_LOAD_ERROR
        assert _core.IMPLEMENTATION == "cython"
        assert _core.slots.__name__.endswith("_c")
        assert _core.digest.__name__.endswith("_c")
    else:
        assert _core.IMPLEMENTATION == "python"
        assert _core.slots.__name__.endswith("_py")
        assert _core.digest.__name__.endswith("_py")


@pytest.mark.parametrize("name", CORE_MODULES)
def test_twin_has_the_compiled_public_names(name: str) -> None:
    twin = load_core_module(name, "py")
    compiled = load_core_module(name, "c")
    public: list[str] = twin.__all__
    missing = sorted(n for n in public if not hasattr(compiled, n))
    assert not missing, f"_{name}_c lacks {missing}"
    assert sorted(getattr(compiled, "__all__", public)) == sorted(public)


@pytest.mark.parametrize(
    ("value", "expected"),
    [("1", True), ("true", True), ("YES", True), (" on ", True), ("0", False), ("", False)],
)
def test_switch_words(value: str, expected: bool) -> None:
    assert no_extensions_requested({ENV_VAR: value}) is expected


def test_switch_is_honoured_at_import() -> None:
    code = "from pysyncer import _core; print(_core.IMPLEMENTATION)"
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={ENV_VAR: "1", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "python"
