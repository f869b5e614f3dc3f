"""``pysyncer demo`` end to end: two data centers, exit status, summary, no process left.

The demo runs as a subprocess (as a person runs it); it prints the pid of every syncer
it starts, and each must be gone when it returns, also after a Ctrl-C (SIGINT). The
quick run (``--quick``, the wheel smoke test) has the same verdict without the restart.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


SMALL = ("--dcs", "2", "--services", "2", "--instances", "1")


def _demo(workdir: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "pysyncer", "demo", *(args or SMALL), "--workdir", str(workdir)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def _pids(output: str) -> list[int]:
    pids = [int(p) for p in re.findall(r"^\s+dc-\w+\s+pid (\d+)", output, re.MULTILINE)]
    pids += [int(p) for p in re.findall(r"\(SIGTERM, pid (\d+)\)", output)]
    stopped = re.search(r"stopped every syncer \(pids ([\d, ]+)\)", output)
    assert stopped, output
    assert set(pids) <= {int(p) for p in stopped.group(1).split(",")}
    return [int(p) for p in stopped.group(1).split(",")]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _finished(workdir: Path, *args: str, timeout: float) -> tuple[int, str]:
    """Runs the demo to its end: (exit status, output)."""
    demo = _demo(workdir, *args)
    try:
        output, _ = demo.communicate(timeout=timeout)
    finally:
        demo.kill()
    return demo.returncode, output


def _lines_until(demo: subprocess.Popen[str], wanted: Callable[[str], bool]) -> list[str]:
    """The demo's output lines up to the first ``wanted`` one (or any line after 30 s)."""
    assert demo.stdout is not None
    seen: list[str] = []
    deadline = time.monotonic() + 30
    for line in demo.stdout:
        seen.append(line)
        if wanted(line) or time.monotonic() > deadline:
            break
    return seen


def _assert_two_dcs_in_sync(output: str) -> None:
    """The verdict every successful run of two data centers prints."""
    assert "OK: 2 data centers, 3 instances, every registry holds all 3" in output, output
    assert re.search(r"dc-east\s+1 originals, 2 copies \(expected 2\), 0 duplicates: ok", output)
    assert re.search(r"propagation\s+p50 \d+ ms, p99 \d+ ms, max \d+ ms over 4 copies", output)


def test_demo_two_data_centers(tmp_path: Path) -> None:
    returncode, output = _finished(tmp_path, timeout=90)
    assert returncode == 0, output
    _assert_two_dcs_in_sync(output)
    assert re.search(r"dc-west\s+2 originals, 1 copies \(expected 1\), 0 duplicates: ok", output)
    assert "delete              gone everywhere after" in output
    pids = _pids(output)
    assert len(pids) == 3  # two daemons and the restarted one
    assert not [pid for pid in pids if _alive(pid)], output
    assert (tmp_path / "logs" / "dc-east.log").read_text().count("pysyncer.daemon: stopped") == 1


def test_quick_run_has_the_same_verdict_without_the_restart(tmp_path: Path) -> None:
    returncode, output = _finished(tmp_path, "--quick", timeout=60)
    assert returncode == 0, output
    _assert_two_dcs_in_sync(output)
    assert "Stopping the" not in output and "restart " not in output, output
    pids = _pids(output)
    assert len(pids) == 2  # no restart: each daemon started once
    assert not [pid for pid in pids if _alive(pid)], output


def test_quick_run_fails_when_a_syncer_dies(tmp_path: Path) -> None:
    demo = _demo(tmp_path, "--quick")
    west_pid = re.compile(r"^\s+dc-west\s+pid (\d+)")
    try:
        seen = _lines_until(demo, lambda line: west_pid.match(line) is not None)
        found = west_pid.match(seen[-1]) if seen else None
        assert found, "".join(seen)
        os.kill(int(found.group(1)), signal.SIGKILL)
        rest, _ = demo.communicate(timeout=60)
    finally:
        demo.kill()
    output = "".join(seen) + rest
    assert demo.returncode == 1, output
    assert "FAILED: the dc-west syncer exited with status -9" in output, output
    assert not [pid for pid in _pids(output) if _alive(pid)], output


def test_ctrl_c_stops_every_syncer(tmp_path: Path) -> None:
    demo = _demo(tmp_path)
    try:
        seen = _lines_until(demo, lambda line: "all 2 syncers healthy" in line)
        demo.send_signal(signal.SIGINT)
        rest, _ = demo.communicate(timeout=30)
    finally:
        demo.kill()
    output = "".join(seen) + rest
    assert demo.returncode == 130, output
    assert "interrupted: stopping every syncer" in output
    pids = _pids(output)
    assert len(pids) == 2
    assert not [pid for pid in pids if _alive(pid)], output
