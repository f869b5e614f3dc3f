"""Processes for the benchmarks: a real etcd, a registry, ``pysyncer daemon``s.

Benchmarks do not import the tests: the ports, processes, REST client and poller are
:mod:`pysyncer.testing.procs`'s (shipped test support, shared with the tests). Every
process is started as a subprocess and stopped by its pid (SIGTERM, then SIGKILL),
every wait is bounded.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # a source checkout

from pysyncer.testing import procs
from pysyncer.testing.procs import (
    Logged,
    RegistryClient,
    free_port,
    ownership,
    split_evenly,
    stop_process,
)

ROOT = Path(__file__).resolve().parent.parent

__all__ = [
    "Daemon",
    "EtcdProcess",
    "RegistryClient",
    "RegistryProcess",
    "find_etcd",
    "free_port",
    "ownership",
    "split_evenly",
    "wait_until",
]


def wait_until(condition: Callable[[], bool], timeout: float, what: str, *procs_: Logged) -> float:
    """Poll ``condition`` (errors count as false) every 50 ms; the seconds it took."""
    return procs.eventually(condition, timeout, what, *procs_, interval=0.05, error=TimeoutError)


def find_etcd() -> str | None:
    return shutil.which("etcd") or shutil.which("etcd", path="/usr/bin:/usr/sbin:/bin:/sbin")


class EtcdProcess:
    """A single-member etcd on loopback with a data dir under ``workdir``."""

    name = "etcd"

    def __init__(self, binary: str, workdir: Path) -> None:
        self.workdir = workdir
        self.client_port = free_port()
        self.peer_port = free_port()
        self.log_path = workdir / "etcd.log"
        client = f"http://127.0.0.1:{self.client_port}"
        peer = f"http://127.0.0.1:{self.peer_port}"
        args = [
            binary, "--name=bench", f"--data-dir={workdir / 'etcd-data'}",
            f"--listen-client-urls={client}", f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}", f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=bench={peer}", "--initial-cluster-state=new",
            "--heartbeat-interval=50", "--election-timeout=500", "--log-level=warn",
            "--logger=zap",
        ]  # fmt: skip
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        wait_until(self.healthy, 15, "etcd healthy", self)

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.client_port}"

    def healthy(self) -> bool:
        if self.process.poll() is not None:
            raise RuntimeError(f"etcd exited: {self.tail()}")
        url = f"http://{self.endpoint}/health"
        with urllib.request.urlopen(url, timeout=1) as response:
            return bool(json.loads(response.read()).get("health") == "true")

    def stop(self) -> None:
        stop_process(self.process, 10, 5)

    def tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-2000:]


class RegistryProcess(procs.RegistryProcess):
    """``python -m pysyncer registry --listen 127.0.0.1:P``, up when constructed."""

    def __init__(self, workdir: Path, name: str) -> None:
        super().__init__(workdir, name, cwd=ROOT)
        wait_until(self.ready, 20, f"registry {name}", self)

    def stop(self, grace: float = 10.0, kill_wait: float = 5.0) -> None:
        super().stop(grace, kill_wait)

    def tail(self) -> str:
        return self.log()[-2000:]


class Daemon(procs.DaemonProcess):
    """``pysyncer daemon`` on fixed ports (``start`` again restarts it: same node, flags)."""

    def __init__(self, name: str, host: str, workdir: Path, dc: str, *args: str) -> None:
        super().__init__(name, host, workdir, dc, *args, cwd=ROOT)

    @property
    def local_registry(self) -> RegistryClient:
        return RegistryClient(self.registry)

    def ready(self) -> bool:
        if self.process.poll() is not None:
            raise RuntimeError(f"{self.name} exited: {self.tail()}")
        self.status()
        return True

    def stop(self, grace: float = 20.0, kill_wait: float = 5.0) -> None:
        super().stop(grace, kill_wait)

    def log_size(self) -> int:
        try:
            return self.log_path.stat().st_size
        except OSError:
            return 0

    def log_since(self, offset: int) -> str:
        with self.log_path.open("rb") as log:
            log.seek(offset)
            return log.read().decode(errors="replace")

    def tail(self) -> str:
        return self.log()[-3000:]
