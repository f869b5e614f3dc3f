"""Processes for the benchmarks: a real etcd, a registry, ``pysyncer daemon``s.

Standalone (benchmarks do not import the tests). Every process is started here as a
subprocess and stopped by its pid (SIGTERM, then SIGKILL), every wait is bounded.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

__all__ = [
    "Daemon",
    "EtcdProcess",
    "RegistryProcess",
    "RestClient",
    "find_etcd",
    "free_port",
    "wait_until",
]

ROOT = Path(__file__).resolve().parent.parent


def free_port(host: str = "127.0.0.1") -> int:
    """A port free for both TCP and UDP on ``host``."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind((host, 0))
            port = int(tcp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind((host, port))
                except OSError:
                    continue
            return port
    raise RuntimeError("no free port")


class _Logged(Protocol):
    name: str

    def tail(self) -> str: ...


def wait_until(condition: Callable[[], bool], timeout: float, what: str, *procs: _Logged) -> float:
    """Poll ``condition`` (errors count as false) every 50 ms; the seconds it took."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        try:
            if condition():
                return time.monotonic() - start
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.05)
    logs = "\n".join(f"--- {p.name}\n{p.tail()}" for p in procs)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}\n{logs}")


def _stop(process: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after ``grace`` seconds; by pid."""
    if process.poll() is None:
        os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(5)


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
        _stop(self.process)

    def tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-2000:]


class RestClient:
    """The few Service-Center v4 REST calls the benchmarks make (project ``default``)."""

    def __init__(self, address: str) -> None:
        self.base = address if address.startswith("http") else f"http://{address}"

    def call(self, method: str, path: str, body: Any = None, timeout: float = 10) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            f"{self.base}/v4/default{path}",
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=timeout) as response:
            raw = response.read()
        return json.loads(raw) if raw else None

    def create_service(self, app: str, name: str) -> str:
        service = {"appId": app, "serviceName": name, "version": "1.0.0"}
        return str(self.call("POST", "/registry/microservices", {"service": service})["serviceId"])

    def register(self, sid: str, host: str, interval: int, times: int) -> str:
        instance = {
            "hostName": host,
            "endpoints": [f"rest://{host}:80"],
            "healthCheck": {"mode": "push", "interval": interval, "times": times},
        }
        path = f"/registry/microservices/{sid}/instances"
        return str(self.call("POST", path, {"instance": instance})["instanceId"])

    def heartbeat_set(self, targets: list[dict[str, str]]) -> None:
        self.call("PUT", "/registry/heartbeats", {"Instances": targets}, timeout=30)

    def copies(self) -> list[str]:
        """``origin dc/origin id`` of every copy (one entry per copy: duplicates repeat)."""
        answer = self.call("GET", "/govern/microservices?options=instances", timeout=30)
        found = []
        for detail in answer.get("allServicesDetail") or []:
            for instance in detail.get("instances") or []:
                props = instance.get("properties") or {}
                if "pysyncer.origin.dc" in props:
                    found.append(f"{props['pysyncer.origin.dc']}/{props['pysyncer.origin.id']}")
        return found


class RegistryProcess:
    """``python -m pysyncer registry --listen 127.0.0.1:P``."""

    def __init__(self, workdir: Path, name: str) -> None:
        self.name = name
        self.address = f"127.0.0.1:{free_port()}"
        self.url = f"http://{self.address}"
        self.client = RestClient(self.address)
        self.log_path = workdir / f"{name}.log"
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "pysyncer", "registry", "--listen", self.address],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
            )
        wait_until(self.ready, 20, f"registry {name}", self)

    def ready(self) -> bool:
        self.client.call("GET", "/registry/version", timeout=2)
        return True

    def stop(self) -> None:
        _stop(self.process)

    def tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-2000:]


class Daemon:
    """``pysyncer daemon`` on fixed ports (kept across a restart: same node, same flags)."""

    def __init__(self, name: str, host: str, workdir: Path, dc: str, *args: str) -> None:
        self.name = name
        self.dc = dc
        self.args = args
        self.workdir = workdir
        self.bind = f"{host}:{free_port(host)}"
        self.admin = f"127.0.0.1:{free_port()}"
        self.rpc = f"127.0.0.1:{free_port()}"
        self.registry = f"127.0.0.1:{free_port()}"
        self.log_path = workdir / f"{name}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        command = [
            sys.executable, "-m", "pysyncer", "daemon", "--node", self.name, "--dc", self.dc,
            "--bind", self.bind, "--admin-addr", self.admin, "--rpc-addr", self.rpc,
            "--registry-addr", self.registry, "--data-dir", str(self.workdir / self.name),
            *self.args,
        ]  # fmt: skip
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)

    @property
    def local_registry(self) -> RestClient:
        return RestClient(self.registry)

    def status(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"http://{self.admin}/v1/sync/status", timeout=5) as resp:
            answer: dict[str, Any] = json.loads(resp.read())
        return answer

    def ready(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise RuntimeError(f"{self.name} exited: {self.tail()}")
        self.status()
        return True

    def kill(self) -> None:
        """kill -9, by pid."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None:
            _stop(self.process, 20)

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
        return self.log_path.read_text(errors="replace")[-3000:]
