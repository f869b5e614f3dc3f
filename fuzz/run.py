"""Run the fuzz targets of fuzz/targets.py with atheris (coverage-guided, libFuzzer).

Usage (from the repository root, with atheris installed: ``pip install -e .[fuzz]``)::

    python fuzz/run.py TARGET [--seconds N]   # one target for N seconds (default 60)
    python fuzz/run.py all [--seconds N]      # every target in turn, N seconds each
    python fuzz/run.py --list                 # the target names
    python fuzz/run.py --make-seeds           # rewrite the seed corpus fuzz/corpus/<target>/

Each run reads the committed seeds in ``fuzz/corpus/<target>/`` and keeps what it finds
in ``build/fuzz/<target>/`` (not committed). A crash (an exception that is not the
decoder's documented error, see each target's docstring) stops the run with a non-zero
exit and leaves the input in ``build/fuzz/crashes/<target>/``; replay it with
``python fuzz/run.py TARGET --replay FILE``. The Python code is instrumented, so the
pure-Python twins of the compiled core are fuzzed (``PYSYNCER_NO_EXTENSIONS=1``); the
``wire`` target also runs the compiled codec and compares the two.

This script owns running the fuzzer; the targets and their seeds live in targets.py.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import os
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "fuzz" / "corpus"
WORK = ROOT / "build" / "fuzz"
RSS_LIMIT_MB = 2048
INPUT_TIMEOUT = 10  # seconds one input may take before libFuzzer calls it a hang
MAX_LEN = 70_000  # a UDP datagram and a bit


def _targets() -> ModuleType:
    sys.path.insert(0, str(ROOT))
    return importlib.import_module("fuzz.targets")


def make_seeds() -> None:
    targets = _targets()
    for name, target in targets.TARGETS.items():
        folder = CORPUS / name
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.iterdir():
            old.unlink()
        seeds = list(target.seeds())
        for seed in seeds:
            (folder / hashlib.sha1(seed).hexdigest()).write_bytes(seed)
        print(f"{name}: {len(seeds)} seeds")


def fuzz_one(name: str, seconds: int, replay: str | None) -> None:
    """Fuzz ``name`` in this process (never returns: libFuzzer exits)."""
    os.environ.setdefault("PYSYNCER_NO_EXTENSIONS", "1")
    atheris = importlib.import_module("atheris")
    with atheris.instrument_imports(include=["pysyncer", "fuzz"]):
        targets = _targets()
    if name not in targets.TARGETS:
        sys.exit(f"no fuzz target {name!r}; targets: {', '.join(targets.TARGETS)}")
    target = targets.TARGETS[name]
    if replay is not None:
        target.test_one_input(Path(replay).read_bytes())
        print(f"{name}: {replay} decoded without a crash")
        sys.exit(0)
    work, crashes = WORK / name, WORK / "crashes" / name
    work.mkdir(parents=True, exist_ok=True)
    crashes.mkdir(parents=True, exist_ok=True)
    args = [
        sys.argv[0],
        f"-max_total_time={seconds}",
        f"-rss_limit_mb={RSS_LIMIT_MB}",
        f"-timeout={INPUT_TIMEOUT}",
        f"-max_len={MAX_LEN}",
        f"-artifact_prefix={crashes}/",
        "-print_final_stats=1",
        str(work),
        str(CORPUS / name),
    ]
    atheris.Setup(args, target.test_one_input)
    atheris.Fuzz()


def fuzz_all(seconds: int) -> int:
    """Each target in a process of its own; the number that crashed."""
    failed = []
    names = list(_targets().TARGETS)  # imported here only: each child instruments its own
    for name in names:
        started = time.monotonic()
        done = subprocess.run(
            [sys.executable, __file__, name, "--seconds", str(seconds)], check=False
        )
        took = time.monotonic() - started
        print(f"== {name}: exit {done.returncode} after {took:.0f} s", flush=True)
        if done.returncode != 0:
            failed.append(name)
    print(f"== {len(names) - len(failed)} targets clean, crashed: {failed or 'none'}")
    return len(failed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("target", nargs="?", help="a target name (see --list) or all")
    parser.add_argument("--seconds", type=int, default=60, help="per target (60)")
    parser.add_argument("--replay", metavar="FILE", help="run one input and stop")
    parser.add_argument("--list", action="store_true", help="print the target names")
    parser.add_argument("--make-seeds", action="store_true", help="rewrite fuzz/corpus")
    args = parser.parse_args()
    if args.list:
        print("\n".join(_targets().TARGETS))
    elif args.make_seeds:
        make_seeds()
    elif args.target == "all":
        sys.exit(1 if fuzz_all(args.seconds) else 0)
    elif args.target:
        fuzz_one(args.target, args.seconds, args.replay)
    else:
        parser.error("name a target, all, --list or --make-seeds")


if __name__ == "__main__":
    main()
