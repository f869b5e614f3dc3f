"""The fuzz targets of fuzz/: the committed corpus replays cleanly, and each target fuzzes.

Replaying needs nothing but the targets: every seed (and every crash input added to the
corpus after a fix) goes through its decoder again, which must refuse it only with the
documented error. The smoke run starts ``fuzz/run.py TARGET --seconds 2`` with atheris
(skipped when atheris is not installed: ``pip install -e .[fuzz]``); longer runs are
``python fuzz/run.py all --seconds N`` (docs/security.md).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fuzz.targets import TARGETS

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT / "fuzz" / "corpus"
SMOKE_SECONDS = 2


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_the_committed_corpus_replays_cleanly(name: str) -> None:
    seeds = sorted((CORPUS / name).iterdir())
    assert seeds, f"fuzz/corpus/{name} has no seeds (python fuzz/run.py --make-seeds)"
    for seed in seeds:
        TARGETS[name].test_one_input(seed.read_bytes())


@pytest.mark.skipif(
    importlib.util.find_spec("atheris") is None, reason="atheris is not installed (.[fuzz])"
)
@pytest.mark.parametrize("name", sorted(TARGETS))
def test_each_target_fuzzes_for_a_few_seconds_without_a_crash(name: str) -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "fuzz" / "run.py"), name, f"--seconds={SMOKE_SECONDS}"],
        cwd=ROOT,
        env={**os.environ, "PYSYNCER_NO_EXTENSIONS": "1"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    assert "DONE" in done.stderr
