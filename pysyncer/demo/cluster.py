"""The demo's data centers: one ``pysyncer daemon`` each, and their admin API.

Owns what a data center is to the demo (its name, loopback address, ports, data and log
paths, the daemon command) and the admin API look-ups over all of them (health, members,
sync links). Starting, signalling and reaping processes is :mod:`pysyncer.procs`'s
(every process stopped by its pid, every wait bounded); this module must not start or
signal a process any other way, and must not talk to the registries.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from pysyncer import procs
from pysyncer.demo.plan import STOP_ALL_TIMEOUT

__all__ = ["Cluster", "DataCenter", "stop_all"]


@dataclass
class DataCenter:
    """One data center: one syncer daemon with its embedded registry, all on ``host``."""

    name: str
    host: str
    workdir: Path
    gossip_port: int = 0
    rpc_port: int = 0
    admin_port: int = 0
    registry_port: int = 0
    process: subprocess.Popen[bytes] | None = None
    pids: list[int] = field(default_factory=list)
    security: list[str] = field(default_factory=list)  # gossip key and TLS flags

    def __post_init__(self) -> None:
        self.gossip_port = procs.free_port(self.host)
        self.rpc_port = procs.free_port(self.host)
        self.admin_port = procs.free_port(self.host)
        self.registry_port = procs.free_port(self.host)

    @property
    def node(self) -> str:
        return f"{self.name}-syncer"

    @property
    def bind(self) -> str:
        return f"{self.host}:{self.gossip_port}"

    @property
    def admin(self) -> str:
        return f"http://{self.host}:{self.admin_port}"

    @property
    def dashboard(self) -> str:
        """The live dashboard this data center's syncer serves."""
        return f"{self.admin}/ui/"

    @property
    def registry(self) -> str:
        return f"http://{self.host}:{self.registry_port}"

    @property
    def data_dir(self) -> Path:
        return self.workdir / "data" / self.name

    @property
    def log_path(self) -> Path:
        return self.workdir / "logs" / f"{self.name}.log"

    @property
    def pid(self) -> int:
        return self.process.pid if self.process is not None else 0

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def exited(self) -> int | None:
        """The exit status once the daemon started and exited, else None."""
        return None if self.process is None else self.process.poll()

    def start(self, join: str | None) -> None:
        """Start the daemon (again: same ports, same data dir), without ``PYSYNCER_*``
        variables so a developer's settings do not change the demo."""
        command = [
            sys.executable, "-m", "pysyncer", "daemon",
            "--node", self.node, "--dc", self.name,
            "--bind", self.bind, "--rpc-addr", f"{self.host}:{self.rpc_port}",
            "--admin-addr", f"{self.host}:{self.admin_port}",
            "--registry-addr", f"{self.host}:{self.registry_port}",
            "--data-dir", str(self.data_dir), *self.security,
        ]  # fmt: skip
        if join:
            command += ["--join", join]
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYSYNCER_")}
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            log.write(f"--- demo: starting {' '.join(command)}\n".encode())
        self.process = procs.spawn(command, self.log_path, env=env)
        self.pids.append(self.process.pid)

    def terminate(self) -> None:
        """SIGTERM, by pid, if it runs."""
        if self.process is not None:
            procs.terminate(self.process)

    def reap(self, timeout: float) -> int | None:
        """Wait for the process to exit (SIGKILL after ``timeout``); its exit status."""
        return None if self.process is None else procs.reap(self.process, timeout)

    def log_tail(self, lines: int = 15) -> str:
        text = procs.log_tail(self.log_path, lines)
        return "\n".join(f"    {line}" for line in text.splitlines())


def stop_all(dcs: Sequence[DataCenter], timeout: float = STOP_ALL_TIMEOUT) -> None:
    """SIGTERM every running daemon, wait (SIGKILL after ``timeout``), by pid only."""
    procs.stop_all((dc.process for dc in dcs if dc.process is not None), timeout)


class Cluster:
    """Admin API look-ups over all daemons."""

    def __init__(self, session: aiohttp.ClientSession, dcs: Sequence[DataCenter]) -> None:
        self.session = session
        self.dcs = dcs
        self.links: dict[str, dict[str, str]] = {}  # dc -> remote dc -> link state
        self.seen: dict[str, tuple[bool, int, int]] = {}  # dc -> its last readiness

    async def _get(self, dc: DataCenter, path: str) -> Any:
        try:
            async with self.session.get(dc.admin + path) as response:
                if response.status != 200:
                    return None
                return await response.json()
        except (TimeoutError, aiohttp.ClientError, ValueError):
            return None

    async def readiness(self, dc: DataCenter) -> tuple[bool, int, int]:
        """(healthy, members alive, links streaming) of one daemon."""
        self.seen[dc.name] = await self._readiness(dc)
        return self.seen[dc.name]

    async def _readiness(self, dc: DataCenter) -> tuple[bool, int, int]:
        health = await self._get(dc, "/v1/health")
        if not isinstance(health, dict):
            return False, 0, 0
        members = await self._get(dc, "/v1/members") or {}
        wanted = {d.node for d in self.dcs}
        alive = sum(
            1
            for m in members.get("members", ())
            if m.get("name") in wanted and m.get("status") == "alive"
        )
        status = await self._get(dc, "/v1/sync/status") or {}
        remote = status.get("remote") or {}
        self.links[dc.name] = {k: str(v.get("state")) for k, v in remote.items()}
        others = [d.name for d in self.dcs if d is not dc]
        streaming = sum(1 for name in others if remote.get(name, {}).get("state") == "streaming")
        return True, alive, streaming

    async def all_ready(self) -> bool:
        """Every daemon healthy, sees all members alive and streams from every other."""
        n = len(self.dcs)
        states = [await self.readiness(dc) for dc in self.dcs]
        return all(s == (True, n, n - 1) for s in states)

    async def refresh_links(self) -> None:
        for dc in self.dcs:
            if dc.running():
                await self.readiness(dc)
            else:
                self.links[dc.name] = {}
