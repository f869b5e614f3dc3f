"""Processes for tests and benchmarks: ports, ``pysyncer`` subprocesses, a REST client.

Free loopback ports (TCP and UDP), ``pysyncer daemon`` and ``pysyncer registry`` started
as subprocesses and stopped by their pid (SIGTERM, then SIGKILL; every wait bounded), a
tiny Service-Center v4 REST client (project ``default``, the documented API of
docs/registry.md, with urllib: what a client sees) and an ``eventually`` poller. Shared
by pysyncer's tests and its benchmarks; standard library only, nothing here runs in a
daemon.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

from pysyncer.model import ORIGIN_DC_PROPERTY, ORIGIN_ID_PROPERTY

__all__ = [
    "DaemonProcess",
    "Logged",
    "RegistryClient",
    "RegistryProcess",
    "eventually",
    "free_port",
    "kill_process",
    "ownership",
    "split_evenly",
    "stop_process",
]

SLOTS = 16384


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


class Logged(Protocol):
    """A process whose log tail is shown when a wait times out."""

    @property
    def name(self) -> str: ...

    def tail(self) -> str: ...


def eventually(
    condition: Callable[[], bool],
    timeout: float,
    what: str,
    *procs: Logged,
    interval: float = 0.2,
    error: type[Exception] = AssertionError,
) -> float:
    """Poll ``condition`` every ``interval`` s (errors count as false) until true; the
    seconds it took. ``error`` (with the procs' log tails) after ``timeout`` s."""
    start = time.monotonic()
    last_error: BaseException | None = None
    while time.monotonic() - start < timeout:
        try:
            if condition():
                return time.monotonic() - start
        except (OSError, ValueError, KeyError, AssertionError) as exc:
            last_error = exc
        time.sleep(interval)
    details = "\n".join(f"--- {p.name}\n{p.tail()}" for p in procs)
    raise error(f"timed out after {timeout} s waiting for {what} ({last_error!r})\n{details}")


def kill_process(process: subprocess.Popen[bytes], wait: float = 10.0) -> None:
    """kill -9, by pid; waits at most ``wait`` s."""
    if process.poll() is None:
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=wait)


def stop_process(
    process: subprocess.Popen[bytes], grace: float = 10.0, kill_wait: float = 10.0
) -> None:
    """SIGTERM, then SIGKILL after ``grace`` seconds; by pid."""
    if process.poll() is None:
        os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            kill_process(process, kill_wait)


def _spawn(command: list[str], log_path: Path, cwd: Path | None) -> subprocess.Popen[bytes]:
    with log_path.open("ab") as log:
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=cwd)


def _is_copy(instance: dict[str, Any]) -> bool:
    return ORIGIN_DC_PROPERTY in (instance.get("properties") or {})


class RegistryClient:
    """A tiny Service-Center v4 REST client (project ``default``)."""

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

    def create_service(self, app: str, name: str, version: str = "1.0.0") -> str:
        service = {"appId": app, "serviceName": name, "version": version}
        answer = self.call("POST", "/registry/microservices", {"service": service})
        return str(answer["serviceId"])

    def register(
        self,
        sid: str,
        host: str,
        endpoints: list[str],
        *,
        instance_id: str | None = None,
        properties: dict[str, str] | None = None,
        interval: int = 30,
        times: int = 3,
    ) -> str:
        instance: dict[str, Any] = {
            "hostName": host,
            "endpoints": endpoints,
            "properties": properties or {},
            "healthCheck": {"mode": "push", "interval": interval, "times": times},
        }
        if instance_id is not None:
            instance["instanceId"] = instance_id
        path = f"/registry/microservices/{sid}/instances"
        return str(self.call("POST", path, {"instance": instance})["instanceId"])

    def set_status(self, sid: str, iid: str, status: str) -> None:
        path = f"/registry/microservices/{sid}/instances/{iid}/status?value={status}"
        self.call("PUT", path)

    def set_properties(self, sid: str, iid: str, properties: dict[str, str]) -> None:
        path = f"/registry/microservices/{sid}/instances/{iid}/properties"
        self.call("PUT", path, {"properties": properties})

    def unregister(self, sid: str, iid: str) -> None:
        self.call("DELETE", f"/registry/microservices/{sid}/instances/{iid}")

    def heartbeat(self, sid: str, iid: str) -> None:
        self.call("PUT", f"/registry/microservices/{sid}/instances/{iid}/heartbeat")

    def heartbeat_set(self, targets: list[dict[str, str]], timeout: float = 10) -> None:
        """One heartbeat for each ``{"serviceId": .., "instanceId": ..}``."""
        self.call("PUT", "/registry/heartbeats", {"Instances": targets}, timeout=timeout)

    def instances(self, timeout: float = 10) -> list[dict[str, Any]]:
        """Every instance, each with ``_service`` = "app/name/version" and ``_sid``."""
        answer = self.call("GET", "/govern/microservices?options=instances", timeout=timeout)
        found = []
        for detail in answer.get("allServicesDetail") or []:
            service = detail["microService"]
            key = f"{service['appId']}/{service['serviceName']}/{service['version']}"
            for instance in detail.get("instances") or []:
                found.append({**instance, "_service": key, "_sid": service["serviceId"]})
        return found

    def originals(self) -> list[dict[str, Any]]:
        return [i for i in self.instances() if not _is_copy(i)]

    def copies(self, timeout: float = 10) -> list[dict[str, Any]]:
        return [i for i in self.instances(timeout) if _is_copy(i)]

    def copy_origins(self, timeout: float = 10) -> list[str]:
        """``origin dc/origin id`` of every copy (one entry per copy: duplicates repeat)."""
        return [
            f"{i['properties'][ORIGIN_DC_PROPERTY]}/{i['properties'][ORIGIN_ID_PROPERTY]}"
            for i in self.copies(timeout)
        ]


class RegistryProcess:
    """``python -m pysyncer registry --listen 127.0.0.1:P`` as a subprocess."""

    def __init__(
        self,
        workdir: Path,
        name: str = "registry",
        port: int | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.port = port or free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.url = f"http://{self.address}"
        self.log_path = workdir / f"{name}.log"
        self.client = RegistryClient(self.address)
        command = [sys.executable, "-m", "pysyncer", "registry", "--listen", self.address]
        self.process = _spawn(command, self.log_path, cwd)

    def ready(self) -> bool:
        try:
            self.client.call("GET", "/registry/version", timeout=2)
        except (OSError, ValueError):
            return False
        return True

    def kill(self) -> None:
        kill_process(self.process)

    def stop(self, grace: float = 10.0, kill_wait: float = 10.0) -> None:
        stop_process(self.process, grace, kill_wait)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def tail(self) -> str:
        return self.log()[-4000:]


class DaemonProcess:
    """``pysyncer daemon`` on free loopback ports (gossip on ``host``).

    ``start`` again after a stop or kill restarts it: same node, ports, data dir, flags.
    """

    def __init__(
        self,
        name: str,
        host: str,
        workdir: Path,
        dc: str,
        *args: str,
        like: DaemonProcess | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.name = name
        self.host = host
        self.dc = dc
        self.args = args
        self.workdir = workdir
        self.cwd = cwd
        self.port: int = like.port if like else free_port(host)
        self.bind = f"{host}:{self.port}"
        self.admin: str = like.admin if like else f"127.0.0.1:{free_port()}"
        self.rpc: str = like.rpc if like else f"127.0.0.1:{free_port()}"
        self.registry: str = like.registry if like else f"127.0.0.1:{free_port()}"
        self.log_path = workdir / f"{name}.log"
        self.process: subprocess.Popen[bytes] = self.start()

    def start(self) -> subprocess.Popen[bytes]:
        command = [
            sys.executable, "-m", "pysyncer", "daemon", "--node", self.name, "--dc", self.dc,
            "--bind", self.bind, "--admin-addr", self.admin, "--rpc-addr", self.rpc,
            "--registry-addr", self.registry, "--data-dir", str(self.workdir / self.name),
            *self.args,
        ]  # fmt: skip
        self.process = _spawn(command, self.log_path, self.cwd)
        return self.process

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(f"http://{self.admin}{path}", timeout=5) as response:
            return json.loads(response.read())

    def status(self) -> dict[str, Any]:
        answer: dict[str, Any] = self.get("/v1/sync/status")
        return answer

    def kill(self) -> None:
        """kill -9, by pid."""
        kill_process(self.process)

    def stop(self, grace: float = 20.0, kill_wait: float = 10.0) -> None:
        """SIGTERM (SIGKILL after ``grace`` s), by pid."""
        stop_process(self.process, grace, kill_wait)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def tail(self) -> str:
        return self.log()[-4000:]


class _HasStatus(Protocol):
    def status(self) -> dict[str, Any]: ...


def ownership(daemon: _HasStatus) -> dict[str, Any]:
    """The ``ownership`` section of a daemon's sync status."""
    return dict(daemon.status()["ownership"])


def split_evenly(members: Sequence[_HasStatus], slots: int = SLOTS) -> bool:
    """Every slot owned, evenly, under one epoch, nothing pending, by ``members``."""
    views = [ownership(d) for d in members]
    owned = [v["slots_owned"] for v in views]
    return (
        len({v["epoch"] for v in views}) == 1
        and sum(owned) == slots
        and max(owned) - min(owned) <= 1
        and not any(v["slots_pending"] for v in views)
    )
