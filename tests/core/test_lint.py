"""The suite fails on lint and type errors: ruff, ruff format, mypy, cython-lint."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_lint_and_types_are_clean() -> None:
    out = subprocess.run(
        ["bash", str(ROOT / "ci" / "lint.sh")],
        env={**os.environ, "PYTHON": sys.executable},
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert out.returncode == 0, out.stdout + out.stderr
