"""Helpers for real-socket gossip tests: fast timing, a real Serf agent, polling."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import replace
from pathlib import Path

from pysyncer.gossip.settings import GossipSettings
from pysyncer.gossip.stack import GossipStack
from pysyncer.gossip.timing import LOCAL
from pysyncer.hostport import HostPort
from pysyncer.procs import free_port as free_port  # re-exported to the tests

# Loopback-fast timings: failures are noticed within a couple of seconds.
FAST = replace(
    LOCAL,
    name="test-fast",
    probe_interval=0.25,
    probe_timeout=0.1,
    gossip_interval=0.05,
    push_pull_interval=2.0,
    suspicion_mult=2,
    tcp_timeout=2.0,
    gossip_to_the_dead_time=5.0,
)


async def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> float:
    """Poll ``condition`` until true; the seconds it took. AssertionError on timeout."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if condition():
            return time.monotonic() - start
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


class SerfAgent:
    """A real ``serf agent`` subprocess on loopback; stopped by its pid."""

    def __init__(
        self,
        serf: str,
        name: str,
        workdir: Path,
        *,
        host: str = "127.0.0.1",
        encrypt: str | None = None,
        tags: dict[str, str] | None = None,
        profile: str = "local",
    ) -> None:
        self.serf = serf
        self.name = name
        self.port = free_port(host)
        self.rpc = f"127.0.0.1:{free_port()}"
        self.address = (host, self.port)
        self.log_path = workdir / f"{name}.log"
        args = [
            serf,
            "agent",
            f"-node={name}",
            f"-bind={host}:{self.port}",
            f"-rpc-addr={self.rpc}",
            f"-profile={profile}",
            "-log-level=debug",
        ]
        if encrypt:
            args.append(f"-encrypt={encrypt}")
        for key, value in (tags or {}).items():
            args.append(f"-tag={key}={value}")
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT)

    def cli(self, *args: str, timeout: float = 10) -> str:
        out = subprocess.run(
            [self.serf, args[0], f"-rpc-addr={self.rpc}", *args[1:]],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if out.returncode != 0:
            raise RuntimeError(f"serf {' '.join(args)} failed: {out.stderr or out.stdout}")
        return out.stdout

    def members(self) -> dict[str, str]:
        """name -> status (alive, failed, left, leaving) as the agent sees them."""
        try:
            data = json.loads(self.cli("members", "-format=json"))
        except (RuntimeError, json.JSONDecodeError, subprocess.TimeoutExpired):
            return {}
        return {m["name"]: m["status"] for m in data["members"]}

    def wait_ready(self, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"serf agent exited: {self.log_path.read_text()[-2000:]}")
            if self.name in self.members():
                return
            time.sleep(0.1)
        raise RuntimeError(f"serf agent not ready: {self.log_path.read_text()[-2000:]}")

    def kill(self) -> None:
        """kill -9, as a crash."""
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.kill()
        self._log.close()

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")


@contextlib.contextmanager
def serf_agents(
    serf: str, workdir: Path, *names: str, **kwargs: object
) -> Iterator[list[SerfAgent]]:
    agents = [SerfAgent(serf, name, workdir, **kwargs) for name in names]  # type: ignore[arg-type]
    try:
        for agent in agents:
            agent.wait_ready()
        yield agents
    finally:
        for agent in agents:
            agent.stop()


@contextlib.asynccontextmanager
async def gossip_stack(name: str, workdir: Path) -> AsyncIterator[GossipStack]:
    """A running GossipStack on a free loopback port (its own data dir under ``workdir``,
    so one name can run twice); left and stopped on exit."""
    settings = GossipSettings(
        node=name,
        bind=HostPort("127.0.0.1", 0),
        advertise=None,
        join=(),
        label="",
        protocol_version=2,
        profile="pysyncer",
        encryption_key=None,
        data_dir=workdir / f"{name}-{random.getrandbits(32):08x}",
    )
    gossip = GossipStack(settings, {"role": "python"})
    await gossip.start()
    try:
        yield gossip
    finally:
        with contextlib.suppress(Exception):
            await gossip.leave()
        await gossip.stop()
