"""Helpers for end-to-end sync tests: syncer daemons, a registry process, a REST client.

Every process is started here as a subprocess and stopped by its pid; every wait is
bounded. Registries are driven through the documented Service-Center REST API
(docs/registry.md) with urllib, so the tests see exactly what a client sees.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.gossip_helpers import free_port

__all__ = [
    "ORIGIN_DC",
    "ORIGIN_ID",
    "RegistryClient",
    "RegistryProcess",
    "SyncDaemon",
    "eventually",
    "view",
]

ORIGIN_DC = "pysyncer.origin.dc"
ORIGIN_ID = "pysyncer.origin.id"


def eventually(condition: Callable[[], bool], timeout: float, what: str, *logs: Any) -> None:
    """Poll ``condition`` (errors count as false) until true or ``timeout``."""
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except (OSError, ValueError, KeyError, AssertionError) as exc:
            last_error = exc
        time.sleep(0.2)
    details = "\n".join(f"--- {d.name}\n{d.log()[-4000:]}" for d in logs)
    raise AssertionError(
        f"timed out after {timeout} s waiting for {what} ({last_error!r})\n{details}"
    )


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

    def instances(self) -> list[dict[str, Any]]:
        """Every instance, each with ``_service`` = "app/name/version" and ``_sid``."""
        answer = self.call("GET", "/govern/microservices?options=instances")
        found = []
        for detail in answer.get("allServicesDetail") or []:
            service = detail["microService"]
            key = f"{service['appId']}/{service['serviceName']}/{service['version']}"
            for instance in detail.get("instances") or []:
                found.append({**instance, "_service": key, "_sid": service["serviceId"]})
        return found

    def originals(self) -> list[dict[str, Any]]:
        return [i for i in self.instances() if ORIGIN_DC not in (i.get("properties") or {})]

    def copies(self) -> list[dict[str, Any]]:
        return [i for i in self.instances() if ORIGIN_DC in (i.get("properties") or {})]


def view(instance: dict[str, Any]) -> tuple[Any, ...]:
    """What must travel: service, host, endpoints, status, properties (no markers)."""
    properties = {
        k: v for k, v in (instance.get("properties") or {}).items() if not k.startswith("pysyncer.")
    }
    return (
        instance["_service"],
        instance.get("hostName"),
        tuple(sorted(instance.get("endpoints") or [])),
        instance.get("status"),
        tuple(sorted(properties.items())),
    )


class SyncDaemon:
    """A ``pysyncer daemon`` with the sync engine; dc ``dc-<name>``.

    ``like`` restarts a daemon: same node, host, ports, data dir and flags.
    """

    def __init__(
        self, name: str, host: str, workdir: Path, *args: str, like: SyncDaemon | None = None
    ) -> None:
        self.name = name
        self.host = host
        self.dc = f"dc-{name}"
        self.args = args
        self.workdir = workdir
        self.port: int = like.port if like else free_port(host)
        self.bind = f"{host}:{self.port}"
        self.admin: str = like.admin if like else f"127.0.0.1:{free_port()}"
        self.rpc: str = like.rpc if like else f"127.0.0.1:{free_port()}"
        self.registry: str = like.registry if like else f"127.0.0.1:{free_port()}"
        self.sc_addr = args[args.index("--sc-addr") + 1] if "--sc-addr" in args else ""
        self.client = RegistryClient(self.sc_addr or self.registry)
        self.log_path = workdir / f"{name}.log"
        self._log = self.log_path.open("ab")
        command = [
            sys.executable, "-m", "pysyncer", "daemon", "--node", name, "--dc", self.dc,
            "--bind", self.bind, "--admin-addr", self.admin, "--rpc-addr", self.rpc,
            "--registry-addr", self.registry, "--data-dir", str(workdir / name), *args,
        ]  # fmt: skip
        self.process = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT)

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(f"http://{self.admin}{path}", timeout=5) as response:
            return json.loads(response.read())

    def members(self) -> dict[str, str]:
        try:
            return {m["name"]: m["status"] for m in self.get("/v1/members")["members"]}
        except OSError:
            return {}

    def status(self) -> dict[str, Any]:
        answer: dict[str, Any] = self.get("/v1/sync/status")
        return answer

    def full_sync(self) -> Any:
        request = urllib.request.Request(f"http://{self.admin}/v1/sync/full", method="POST")
        with urllib.request.urlopen(request, timeout=5) as response:
            return json.loads(response.read() or b"null")

    def ready(self) -> bool:
        try:
            self.status()
            self.client.call("GET", "/registry/version", timeout=2)
        except (OSError, ValueError):
            return False
        return self.process.poll() is None

    def kill(self) -> None:
        """kill -9, by pid."""
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        """SIGTERM (SIGKILL after 20 s), by pid."""
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()
        self._log.close()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


class RegistryProcess:
    """``python -m pysyncer registry --listen 127.0.0.1:P`` as a subprocess."""

    def __init__(self, workdir: Path, name: str = "registry", port: int | None = None) -> None:
        self.name = name
        self.port = port or free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.url = f"http://{self.address}"
        self.log_path = workdir / f"{name}.log"
        self.client = RegistryClient(self.address)
        self._log = self.log_path.open("ab")
        command = [sys.executable, "-m", "pysyncer", "registry", "--listen", self.address]
        self.process = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT)

    def ready(self) -> bool:
        try:
            self.client.call("GET", "/registry/version", timeout=2)
        except (OSError, ValueError):
            return False
        return True

    def kill(self) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
        self._log.close()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def http_error_body(exc: urllib.error.HTTPError) -> Any:
    return json.loads(exc.read() or b"null")
