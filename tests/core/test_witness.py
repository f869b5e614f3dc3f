"""The witness splits a benchmark's loop stalls into the machine's pauses and the process's
own: a stall is the machine's when, less the time a witness of its core was not run, it
would not have counted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import witness
from benchmarks.witness import classify, covered, paused

ROOT = Path(__file__).resolve().parent.parent.parent


def test_covered_counts_overlapping_gaps_once() -> None:
    assert covered(10.0, 11.0, []) == 0.0
    assert covered(10.0, 11.0, [(9.0, 10.2)]) == pytest.approx(0.2)
    # two gaps overlapping each other inside the stall, one outside
    assert covered(10.0, 11.0, [(10.1, 10.5), (10.3, 10.6), (12.0, 13.0)]) == pytest.approx(0.5)
    assert covered(10.0, 11.0, [(9.0, 12.0)]) == pytest.approx(1.0)


def test_only_the_witness_of_the_loop_threads_core_counts() -> None:
    gaps = [(10.0, 10.4, 1)]
    assert paused(10.0, 10.5, [0], gaps) == 0.0
    assert paused(10.0, 10.5, [1], gaps) == pytest.approx(0.4)
    assert paused(10.0, 10.5, [], gaps) == pytest.approx(0.4)  # cores unknown: any
    assert paused(10.0, 10.5, [0], [(10.0, 10.4, None)]) == pytest.approx(0.4)  # unpinned


def test_a_stall_the_witness_also_saw_is_the_machines() -> None:
    stalls = [
        (100.0, 100.300, [0]),  # the witness of core 0 not run for 290 ms of it
        (200.0, 200.150, [0]),  # no gap: the process's own
        (300.0, 300.400, [1]),  # a gap of 150 ms: 250 ms left, the process's
        (400.0, 400.200, [1]),  # a gap on the other core only: the process's
    ]
    gaps = [
        (100.005, 100.295, 0),
        (300.100, 300.250, 1),
        (400.000, 400.200, 0),
    ]
    result = classify(stalls, gaps, limit_ms=100.0)
    assert result["stalls_machine"] == 1
    assert result["stalls_process"] == 3
    assert result["worst_machine_ms"] == pytest.approx(300.0)
    assert result["worst_process_ms"] == pytest.approx(400.0)
    assert result["worst_process_share_ms"] == pytest.approx(250.0)


def test_without_gaps_every_stall_is_the_processs() -> None:
    result = classify([(1.0, 1.2, [0]), (2.0, 2.5, [])], [], limit_ms=100.0)
    assert result == {
        "stalls_machine": 0,
        "stalls_process": 2,
        "worst_machine_ms": 0.0,
        "worst_process_ms": 500.0,
        "worst_process_share_ms": 500.0,
    }


def test_a_witness_writes_its_priority_and_stops_at_its_bound(tmp_path: Path) -> None:
    out = tmp_path / "w.jsonl"
    # its own process: the priority it takes must not stay with the test's
    command = [sys.executable, "-m", "benchmarks.witness", "--out", str(out), "--bound", "0.3"]
    done = subprocess.run([*command, "--core", "0"], cwd=ROOT, timeout=60, check=False)
    assert done.returncode == 0
    header, gaps = witness.read_gaps(out)
    assert header["pid"] != os.getpid() and header["core"] in (0, None)
    assert header["priority"].startswith(("SCHED_FIFO", "nice"))
    for start, end, core in gaps:  # a loaded machine may not run it: gaps are real ones
        assert end - start > witness.GAP_MS / 1000 and core == header["core"]
    # a gap line half written is skipped, not an error
    with out.open("a") as log:
        log.write(json.dumps([1.0, 2.0]) + "\n" + "[3.0, ")
    assert witness.read_gaps(out)[1][-1] == (1.0, 2.0, header["core"])
