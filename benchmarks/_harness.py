"""Measurements shared by the cost, mesh and host benchmarks, read from outside the processes.

Owns what a benchmark reads about processes it started and about this machine: TCP
bytes of a process's connections to given ports (the kernel's ``tcp_info`` counters, as
``ss -tinp`` prints them), counters from a daemon's Prometheus ``/metrics`` page, a
process's CPU time in nanoseconds, one CPU's busy ticks, the load average, available
memory and a least-squares line. The daemon processes themselves, their CPU and memory
lines come from :mod:`benchmarks.bench_sync` (``Node``, ``proc_cpu``, ``proc_mem``).
Standard library only; must not import the tests or the daemon's packages.
"""

from __future__ import annotations

import os
import re
import statistics
import subprocess
import urllib.request
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

MIB = float(1 << 20)
_SOCKET_LINE = re.compile(r"\S+:(\d+)\s+users:\(\(.*?pid=(\d+),")
_TCP_COUNTER = re.compile(r"\b(bytes_received|bytes_sent):(\d+)")


@dataclass(frozen=True)
class TcpBytes:
    """Payload bytes a process received and sent over some TCP connections."""

    received: int = 0
    sent: int = 0
    connections: int = 0

    @property
    def total(self) -> int:
        return self.received + self.sent


def tcp_bytes(pid: int, peer_ports: Iterable[int]) -> TcpBytes:
    """TCP payload bytes on ``pid``'s established connections to any of ``peer_ports``
    (loopback), from ``ss -tinpH``: what crossed the wire, headers of TCP/IP excluded.
    A connection closed meanwhile takes its counts with it."""
    ports = {int(p) for p in peer_ports}
    out = subprocess.run(
        ["ss", "-tinpH", "state", "established"],
        capture_output=True,
        text=True,
        timeout=20,
        check=True,
    ).stdout
    received = sent = connections = 0
    lines = out.splitlines()
    for head, info in zip(lines[0::2], lines[1::2], strict=False):
        match = _SOCKET_LINE.search(head)
        if match is None or int(match.group(2)) != pid or int(match.group(1)) not in ports:
            continue
        counts = dict(_TCP_COUNTER.findall(info))
        received += int(counts.get("bytes_received", 0))
        sent += int(counts.get("bytes_sent", 0))
        connections += 1
    return TcpBytes(received, sent, connections)


def port_of(address: str) -> int:
    """The port of ``host:port``."""
    return int(address.rsplit(":", 1)[1])


def metric_sum(admin: str, family: str) -> float:
    """The sum of every sample of ``family`` (all labels) on ``http://<admin>/metrics``."""
    with urllib.request.urlopen(f"http://{admin}/metrics", timeout=10) as response:
        text = response.read().decode()
    total = 0.0
    for line in text.splitlines():
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name == family:
            total += float(line.rsplit(" ", 1)[1])
    return total


def proc_cpu_ns(pid: int) -> int:
    """CPU time of ``pid``'s live threads in nanoseconds (``/proc/<pid>/task/*/schedstat``):
    finer than ``utime + stime`` (clock ticks), but a thread that exited is no longer in
    the sum, so use it over short spans."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (OSError, IndexError, ValueError):  # the thread exited meanwhile
            continue
    return total


def load_average() -> float:
    """The one-minute load average."""
    return os.getloadavg()[0]


def mem_available() -> int:
    """``MemAvailable`` of ``/proc/meminfo`` in bytes."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    raise KeyError("MemAvailable")


@dataclass(frozen=True)
class Line:
    """``y = fixed + per_unit * x``, fitted by least squares."""

    fixed: float
    per_unit: float


def fit_line(xs: Sequence[float], ys: Sequence[float]) -> Line:
    """The least-squares line through the points; a flat line through one point."""
    if len(xs) < 2 or len(set(xs)) < 2:
        return Line(statistics.fmean(ys) if ys else 0.0, 0.0)
    slope, intercept = statistics.linear_regression(xs, ys)
    return Line(intercept, slope)


@dataclass(frozen=True)
class CpuTicks:
    """One CPU's clock ticks since boot (``/proc/stat``): busy and in all."""

    busy: int
    total: int

    def busy_share(self, earlier: CpuTicks) -> float:
        """The share of the time since ``earlier`` this CPU was busy (0..1)."""
        total = self.total - earlier.total
        return (self.busy - earlier.busy) / total if total > 0 else 0.0


def cpu_ticks(cpu: int) -> CpuTicks:
    """CPU ``cpu``'s ticks from ``/proc/stat``: idle and iowait are not busy."""
    for line in Path("/proc/stat").read_text().splitlines():
        name, *values = line.split()
        if name == f"cpu{cpu}":
            ticks = [int(v) for v in values[:8]]  # user nice system idle iowait irq softirq steal
            return CpuTicks(sum(ticks) - ticks[3] - ticks[4], sum(ticks))
    raise KeyError(f"cpu{cpu}")
