"""procs.pause / resume: a paused process has every thread stopped when pause returns."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from pysyncer import procs

BUSY_THREADS = """
import threading
def spin():
    while True:
        pass
for _ in range(4):
    threading.Thread(target=spin, daemon=True).start()
print("spinning", flush=True)
spin()
"""


def _states(pid: int) -> list[str]:
    return [
        Path(f"/proc/{pid}/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        for tid in sorted(p.name for p in Path(f"/proc/{pid}/task").iterdir())
    ]


def test_pause_returns_once_every_thread_is_stopped() -> None:
    if not Path("/proc/self/task").is_dir():
        pytest.skip("no /proc to read thread states from")
    child = subprocess.Popen([sys.executable, "-c", BUSY_THREADS], stdout=subprocess.PIPE)
    try:
        assert child.stdout is not None and child.stdout.readline() == b"spinning\n"
        for _ in range(20):  # five busy threads on a smaller machine: each pause is a race
            procs.pause(child.pid)
            states = _states(child.pid)
            assert len(states) == 5 and set(states) <= {"T", "t"}, states
            procs.resume(child.pid)
        procs.eventually(lambda: "R" in _states(child.pid), 10, "running again")
    finally:
        procs.kill_process(child, 10)
        assert child.stdout is not None
        child.stdout.close()
