"""A real etcd server for tests and benchmarks: started on loopback, stopped by pid.

:class:`EtcdServer` runs the Debian ``etcd-server`` binary (etcd 3.4) with free client
and peer ports on 127.0.0.1 and a temporary data dir, waits for ``/health``, and stops
exactly the process it started (SIGTERM, then SIGKILL), each step bounded in time. It
can be stopped and started again on the same ports and data (an outage). The pytest
fixture :func:`etcd_server` gives one server per session; tests use a fresh key prefix
each (:func:`unique_prefix`), so they never see each other's keys.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import require_program
from tests.support.gossip import free_port

START_TIMEOUT = 15.0
STOP_TIMEOUT = 5.0


def find_etcd() -> str | None:
    """Path of the etcd binary, or None."""
    return shutil.which("etcd") or shutil.which("etcd", path="/usr/bin:/usr/sbin:/bin:/sbin")


class EtcdServer:
    """One single-member etcd cluster on loopback (see the module docstring)."""

    def __init__(self, binary: str, data_dir: Path | None = None) -> None:
        self.binary = binary
        self._own_dir = data_dir is None
        self.workdir = (
            Path(tempfile.mkdtemp(prefix="pysyncer-etcd-")) if data_dir is None else data_dir
        )
        self.client_port = free_port()
        self.peer_port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = self.workdir / "etcd.log"

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.client_port}"

    @property
    def url(self) -> str:
        return f"etcd://{self.endpoint}"

    def start(self, timeout: float = START_TIMEOUT) -> None:
        """Start (or restart on the same ports and data) and wait until healthy."""
        if self.process is not None:
            raise RuntimeError("etcd is already running")
        client = f"http://127.0.0.1:{self.client_port}"
        peer = f"http://127.0.0.1:{self.peer_port}"
        args = [
            self.binary,
            "--name=test",
            f"--data-dir={self.workdir / 'data'}",
            f"--listen-client-urls={client}",
            f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=test={peer}",
            "--initial-cluster-state=new",
            "--heartbeat-interval=50",
            "--election-timeout=500",
            "--log-level=warn",
            "--logger=zap",
        ]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.process = None
                raise RuntimeError(f"etcd exited at start: {self.log_tail()}")
            if self.healthy():
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"etcd not healthy within {timeout} s: {self.log_tail()}")

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.client_port}/health", timeout=1
            ) as response:
                return bool(json.loads(response.read()).get("health") == "true")
        except (OSError, ValueError):
            return False

    def stop(self) -> None:
        """Stop the process this object started (by its pid), bounded in time."""
        process, self.process = self.process, None
        if process is None:
            return
        process.terminate()
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(STOP_TIMEOUT)

    def close(self) -> None:
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def __enter__(self) -> EtcdServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def unique_prefix() -> str:
    """A key prefix no other test uses."""
    return f"/pysyncer-test/{uuid.uuid4().hex[:12]}/"


@pytest.fixture(scope="session")
def etcd_server() -> Iterator[EtcdServer]:
    """One etcd for the whole session (skips, or fails under CI=true, without etcd)."""
    binary = require_program("etcd", "etcd-server")
    server = EtcdServer(binary)
    try:
        server.start()
        yield server
    finally:
        server.close()
