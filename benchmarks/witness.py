"""The machine's own pauses, witnessed from outside the process a benchmark watches.

Owns the witness: one small process per core that does nothing but sleep
:data:`PERIOD` seconds over and over, at the highest scheduling priority it is allowed
(``SCHED_FIFO`` at its top priority, else ``nice -20``, else as started), pinned to its
core where the affinity can be set, and writes every wake later than :data:`GAP_MS`
beyond its sleep as one line ``[start, end]`` of ``CLOCK_MONOTONIC`` seconds (a clock
shared by every process of the machine). Nothing of the machine's own runs ahead of it,
so a gap in it is the core (or the whole virtual machine) not being run: the host's
doing, not the watched process's. :func:`classify` takes a benchmark's loop stalls and
these gaps and splits the stalls into the machine's and the process's.

A witness stops by itself after ``--bound`` seconds, when its parent goes (its parent
pid changes) or on SIGTERM; :class:`Witnesses` starts one per core and stops each by
its pid. It must not import pysyncer at module level (the process stays small).

    python -m benchmarks.witness --out F --bound S [--core N]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

__all__ = ["GAP_MS", "PERIOD", "Witnesses", "classify", "covered", "paused"]

PERIOD = 0.002  # the witness's sleep, seconds
GAP_MS = 50.0  # wakes later than this beyond the sleep are recorded
KEEP_GAPS = 100_000  # lines one witness writes at most (a bounded file)

# A gap or a stall: (start, end) in CLOCK_MONOTONIC seconds, and the core (None: any).
Interval = tuple[float, float, int | None]


def _raise_priority() -> str:
    """The highest priority this process may take, taken; which one, as words."""
    try:
        top = os.sched_get_priority_max(os.SCHED_FIFO)
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(top))
        return f"SCHED_FIFO {top}"
    except (AttributeError, OSError):
        pass
    try:
        os.nice(-20 - os.nice(0))
    except OSError:
        return f"nice {os.nice(0)} (could not raise it)"
    return f"nice {os.nice(0)}"


def _pin(core: int | None) -> int | None:
    """Pin this process to ``core``; the core it is pinned to (None: not pinned)."""
    if core is None:
        return None
    try:
        os.sched_setaffinity(0, {core})
    except (AttributeError, OSError):
        return None
    return core


def watch(out: Path, bound: float, core: int | None) -> int:
    """The witness's life: sleep, note the late wakes, until the bound or the parent goes."""
    parent = os.getppid()
    pinned = _pin(core)
    header = {"pid": os.getpid(), "core": pinned, "priority": _raise_priority()}
    gap = GAP_MS / 1000
    with out.open("w") as log:
        log.write(json.dumps(header) + "\n")
        log.flush()
        written = 0
        last = time.monotonic()
        end = last + bound
        while last < end and os.getppid() == parent and written < KEEP_GAPS:
            time.sleep(PERIOD)
            now = time.monotonic()
            if now - last - PERIOD > gap:
                log.write(json.dumps([round(last, 6), round(now, 6)]) + "\n")
                log.flush()
                written += 1
            last = now
    return 0


def read_gaps(path: Path) -> tuple[dict[str, Any], list[Interval]]:
    """One witness's header and gaps, as far as written (a line being written is skipped)."""
    header: dict[str, Any] = {}
    gaps: list[Interval] = []
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return header, gaps
    for number, line in enumerate(lines):
        try:
            item = json.loads(line)
        except ValueError:
            continue
        if number == 0 and isinstance(item, dict):
            header = item
        elif isinstance(item, list) and len(item) == 2:
            gaps.append((float(item[0]), float(item[1]), header.get("core")))
    return header, gaps


class Witnesses:
    """One witness per core, started and stopped (by pid) by a benchmark."""

    def __init__(self, workdir: Path, bound: float) -> None:
        self.paths = [workdir / f"witness-{core}.jsonl" for core in range(os.cpu_count() or 1)]
        self.bound = bound
        self._processes: list[Any] = []

    def start(self) -> None:
        from pysyncer import procs

        for core, path in enumerate(self.paths):
            command = [sys.executable, "-m", __spec__.name, "--out", str(path)]
            command += ["--bound", str(self.bound), "--core", str(core)]
            self._processes.append(
                procs.spawn(command, path.with_suffix(".log"), cwd=Path(__file__).parent.parent)
            )

    def stop(self) -> None:
        from pysyncer import procs

        for process in self._processes:
            procs.stop_process(process, grace=2, kill_wait=2)
        self._processes.clear()

    def read(self) -> tuple[list[dict[str, Any]], list[Interval]]:
        """Each witness's header (pid, core, priority) and all their gaps so far."""
        headers: list[dict[str, Any]] = []
        gaps: list[Interval] = []
        for path in self.paths:
            header, found = read_gaps(path)
            if header:
                headers.append(header)
            gaps += found
        return headers, gaps


# -- classification (pure) ------------------------------------------------------------------


def covered(start: float, end: float, gaps: Iterable[tuple[float, float]]) -> float:
    """Seconds of [start, end] inside the union of ``gaps`` (each counted once)."""
    spans = sorted((max(start, a), min(end, b)) for a, b in gaps if b > start and a < end)
    total = 0.0
    reach = start
    for a, b in spans:
        if b <= reach:
            continue
        total += b - max(a, reach)
        reach = b
    return total


def paused(start: float, end: float, cores: Iterable[int], gaps: Sequence[Interval]) -> float:
    """Seconds of [start, end] in which a witness of one of ``cores`` (none given: of any
    core) was not run."""
    seen = set(cores)
    mine = [(a, b) for a, b, core in gaps if not seen or core is None or core in seen]
    return covered(start, end, mine)


def classify(
    stalls: Sequence[tuple[float, float, Iterable[int]]],
    gaps: Sequence[Interval],
    limit_ms: float,
) -> dict[str, Any]:
    """Split loop stalls into the machine's pauses and the process's own.

    A stall is ``(start, end, cores)``: the cores its thread was seen on (empty: unknown,
    every core's gaps count). The machine's share of a stall is the time inside it that a
    witness of one of those cores was not run; what is left is the process's. A stall is
    the machine's when what is left is within ``limit_ms`` (without the pause it would not
    have counted), else the process's; the process's worst is what is left, at most.
    """
    machine = process = 0
    worst_machine = worst_process = worst_left = 0.0
    for start, end, cores in stalls:
        lasted = 1000 * (end - start)
        left = lasted - 1000 * paused(start, end, cores, gaps)
        worst_left = max(worst_left, left)
        if left <= limit_ms:
            machine += 1
            worst_machine = max(worst_machine, lasted)
        else:
            process += 1
            worst_process = max(worst_process, lasted)
    return {
        "stalls_machine": machine,
        "stalls_process": process,
        "worst_machine_ms": round(worst_machine, 1),
        "worst_process_ms": round(worst_process, 1),
        # the longest stall less the machine's pauses inside it
        "worst_process_share_ms": round(worst_left, 1),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--out", type=Path, required=True, help="the gaps file (JSON lines)")
    parser.add_argument("--bound", type=float, required=True, help="seconds to run at most")
    parser.add_argument("--core", type=int, default=None, help="the core to pin to")
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        return watch(args.out, args.bound, args.core)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
