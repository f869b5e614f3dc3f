"""bench_sync's full-sync figures: the importing process's CPU split into its own and the
kernel's with its page faults, and the tripwire's stacks in the printed report."""

from __future__ import annotations

import mmap
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from benchmarks import bench_sync


def test_the_cpu_split_adds_up_and_fresh_pages_count_as_faults() -> None:
    user, system, faults = bench_sync.proc_usage(os.getpid())
    assert user > 0 and system >= 0
    assert bench_sync.proc_cpu(os.getpid()) >= user + system
    # an anonymous mapping of its own: fresh pages (a bytearray may reuse memory malloc
    # had already touched, after other tests in the same worker freed it)
    with mmap.mmap(-1, 16 << 20) as fresh:
        for page in range(0, 16 << 20, 4096):  # every page written once
            fresh[page] = 1
        after = bench_sync.proc_usage(os.getpid())[2]
    assert after - faults >= (16 << 20) // 4096 // 2  # at least half its pages (huge pages aside)


def test_the_report_prints_the_stacks_the_tripwire_caught(
    capsys: pytest.CaptureFixture[str],
) -> None:
    stack = ["pysyncer/sync/importer.py:42 _hold", "events.py:80 _run"]
    full = {
        "loop": {
            "max_stall_ms": 74.0,
            "stalls_over_100ms": 0,
            "watch": {
                "threshold_ms": 50.0,
                "trips": 1,
                "trip_stacks": [{"count": 1, "frames": stack}],
            },
        }
    }
    bench_sync.print_loop(full)
    out = capsys.readouterr().out
    assert "tripwire: 1 tick(s) over 50 ms late" in out
    assert "1x pysyncer/sync/importer.py:42 _hold < events.py:80 _run" in out


def test_the_host_probe_measures_the_work_it_does(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bench_sync, "PROBE_KEYS", 20_000)
    small = bench_sync.host_probe()
    monkeypatch.setattr(bench_sync, "PROBE_KEYS", 400_000)
    large = bench_sync.host_probe()
    assert 0 < small < large  # twenty times the work


def test_a_daemon_that_ended_is_named_with_how_it_ended(tmp_path: Path) -> None:
    """A daemon killed mid-run (a segfault) used to surface as ``KeyError: 'VmRSS'``."""
    log = tmp_path / "fb.log"
    log.write_text("last words\n")
    crash = "import os, signal; os.kill(os.getpid(), signal.SIGSEGV)"
    process = subprocess.Popen([sys.executable, "-c", crash])
    node: Any = SimpleNamespace(name="fb", process=process, log_path=log)
    node.tail = lambda: bench_sync.Node.tail(node)
    process.wait(30)
    with pytest.raises(RuntimeError, match=r"fb ended \(signal SIGSEGV\) during the renewal phase"):
        bench_sync.Node.check_running(node, "the renewal phase")
    running = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        node.process = running
        bench_sync.Node.check_running(node, "the renewal phase")  # still running: nothing
    finally:
        running.kill()
        running.wait()
