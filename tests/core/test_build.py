"""setup.py honours PYSYNCER_NO_EXTENSIONS and fails in one line without a C compiler."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def copy_source_tree(dest: Path) -> Path:
    """A clean copy of the sources, free of build products that could leak into a wheel."""
    tree = dest / "src"
    shutil.copytree(
        ROOT,
        tree,
        ignore=shutil.ignore_patterns(
            ".git", ".venv", "build", "dist", "*.so", "*.c", "*.egg-info", "__pycache__", ".*cache"
        ),
    )
    return tree


def test_pure_wheel_compiles_nothing(tmp_path: Path) -> None:
    tree = copy_source_tree(tmp_path)
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--disable-pip-version-check",
            "-q",
            "-w",
            str(tmp_path / "dist"),
            str(tree),
        ],
        env={**os.environ, "PYSYNCER_NO_EXTENSIONS": "1"},
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    (wheel,) = (tmp_path / "dist").glob("pysyncer-*.whl")
    assert wheel.name.endswith("-py3-none-any.whl"), wheel.name
    names = zipfile.ZipFile(wheel).namelist()
    assert "pysyncer/py.typed" in names
    assert "pysyncer/_core/_slots_py.py" in names
    assert not [n for n in names if n.endswith((".so", ".pyd", ".c", ".pyx"))]


def test_build_without_compiler_fails_in_one_line(tmp_path: Path) -> None:
    tree = copy_source_tree(tmp_path)
    out = subprocess.run(
        [
            sys.executable,
            "setup.py",
            "-q",
            "build_ext",
            "--build-temp",
            str(tmp_path / "t"),
            "--build-lib",
            str(tmp_path / "l"),
        ],
        cwd=tree,
        env={**os.environ, "CC": str(tmp_path / "no-such-cc"), "PYSYNCER_NO_EXTENSIONS": ""},
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert out.returncode != 0
    last_line = out.stderr.strip().splitlines()[-1]
    assert last_line.startswith("pysyncer: cannot compile the Cython core"), out.stderr
    assert "PYSYNCER_NO_EXTENSIONS=1" in last_line
