"""Every benchmark imports as ``benchmarks.<name>`` from the repository root, without the tests.

Each module is imported in a fresh interpreter (``python -c "import benchmarks.x"``), as
``python -m benchmarks.x`` does before it runs, and must leave no ``tests`` module loaded
and ``sys.path`` as the interpreter set it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MODULES = sorted(p.stem for p in (ROOT / "benchmarks").glob("*.py") if p.stem != "__init__")

PROBE = """
import json, sys
before = list(sys.path)
import benchmarks.{name}
print(json.dumps({{
    "tests": sorted(m for m in sys.modules if m == "tests" or m.startswith("tests.")),
    "path_changed": sys.path != before,
}}))
"""


def test_the_benchmarks_are_found() -> None:
    assert "bench_sync" in MODULES and "bench_slots" in MODULES, MODULES


@pytest.mark.parametrize("name", MODULES)
def test_benchmark_imports_without_the_tests(name: str) -> None:
    out = subprocess.run(
        [sys.executable, "-c", PROBE.format(name=name)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["tests"] == [], f"benchmarks.{name} imported {result['tests']}"
    assert not result["path_changed"], f"benchmarks.{name} edited sys.path"
