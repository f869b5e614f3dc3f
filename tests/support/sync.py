"""Helpers for end-to-end sync tests: syncer daemons, a registry process, a REST client.

The processes, the REST client and ``eventually`` are :mod:`pysyncer.procs`'s
(shared with the benchmarks): every process is a subprocess stopped by its pid, every
wait is bounded, registries are driven through the documented Service-Center REST API.
:class:`Cluster` (and its fixture :func:`cluster`) holds the daemons and registry
processes one test starts and stops them all at the end; :func:`stop_daemons` is how
every pool of daemons here is stopped.
"""

from __future__ import annotations

import contextlib
import json
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pysyncer.procs import (
    DaemonProcess,
    RegistryClient,
    RegistryProcess,
    eventually,
)

__all__ = [
    "ORIGIN_DC",
    "ORIGIN_ID",
    "Cluster",
    "RegistryClient",
    "RegistryProcess",
    "SyncDaemon",
    "cluster",
    "eventually",
    "stop_daemons",
    "view",
]

ORIGIN_DC = "pysyncer.origin.dc"
ORIGIN_ID = "pysyncer.origin.id"
REGISTRY_START = 60  # seconds a registry process may take to answer, on a loaded CI machine


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


class SyncDaemon(DaemonProcess):
    """A ``pysyncer daemon`` with the sync engine; dc ``dc-<name>``.

    ``like`` restarts a daemon: same node, host, ports, data dir and flags.
    """

    def __init__(
        self, name: str, host: str, workdir: Path, *args: str, like: SyncDaemon | None = None
    ) -> None:
        super().__init__(name, host, workdir, f"dc-{name}", *args, like=like)
        self.sc_addr = args[args.index("--sc-addr") + 1] if "--sc-addr" in args else ""
        self.client = RegistryClient(self.sc_addr or self.registry)

    def members(self) -> dict[str, str]:
        try:
            return {m["name"]: m["status"] for m in self.get("/v1/members")["members"]}
        except OSError:
            return {}

    def full_sync(self) -> Any:
        request = urllib.request.Request(
            f"http://{self.admin}/v1/sync/full", data=b"{}", method="POST",
            headers={"Content-Type": "application/json"},
        )  # fmt: skip
        with urllib.request.urlopen(request, timeout=5) as response:
            return json.loads(response.read() or b"null")

    def ready(self) -> bool:
        try:
            self.status()
            self.client.call("GET", "/registry/version", timeout=2)
        except (OSError, ValueError):
            return False
        return self.process.poll() is None


def http_error_body(exc: urllib.error.HTTPError) -> Any:
    return json.loads(exc.read() or b"null")


def stop_daemons(daemons: Iterable[DaemonProcess]) -> None:
    """Stop every daemon by its pid; one that fails to stop is killed, the rest still stop."""
    for daemon in daemons:
        try:
            daemon.stop()
        except Exception:  # keep stopping the others
            daemon.kill()


class Cluster:
    """Daemons (and external registries) started by one test; all stopped at the end."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.daemons: list[SyncDaemon] = []
        self.registries: list[RegistryProcess] = []

    def daemon(self, name: str, host: str, *args: str) -> SyncDaemon:
        daemon = SyncDaemon(name, host, self.workdir, *args)
        self.daemons.append(daemon)
        return daemon

    def restart(self, daemon: SyncDaemon) -> SyncDaemon:
        """The same node, data dir, ports and flags, as a new process."""
        daemon.kill()
        fresh = SyncDaemon(daemon.name, daemon.host, self.workdir, *daemon.args, like=daemon)
        self.daemons.append(fresh)
        return fresh

    def registry(self, name: str, port: int | None = None) -> RegistryProcess:
        """A registry process of its own: it keeps its state while a syncer restarts."""
        registry = RegistryProcess(self.workdir, name, port)
        self.registries.append(registry)
        eventually(registry.ready, REGISTRY_START, f"registry {name} up", registry)
        return registry

    def close(self) -> None:
        stop_daemons(self.daemons)
        for registry in self.registries:
            registry.kill()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    with contextlib.closing(Cluster(tmp_path)) as made:
        yield made
