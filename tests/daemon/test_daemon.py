"""`pysyncer daemon` as real subprocesses, in one pool with a real Serf agent.

Covers the gossip daemon end to end through its CLI and admin API: join, members,
user events and queries both ways, kill -9 detected as failed, SIGTERM as left.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from pysyncer.gossip.snapshot import read_snapshot
from tests.conftest import require_program
from tests.support.gossip import SerfAgent, free_port

pytestmark = pytest.mark.slow


class Daemon:
    def __init__(
        self, name: str, host: str, workdir: Path, *args: str, port: int | None = None
    ) -> None:
        self.name = name
        self.port = free_port(host) if port is None else port
        self.bind = f"{host}:{self.port}"
        self.admin = f"127.0.0.1:{free_port()}"
        self.log_path = workdir / f"{name}.log"
        self._log = self.log_path.open("wb")
        if "--data-dir" not in args:  # never the default ./pysyncer-data of the checkout
            args = (*args, "--data-dir", str(workdir / name))
        self.rpc = f"127.0.0.1:{free_port()}"
        self.registry = f"127.0.0.1:{free_port()}"
        args = (*args, "--rpc-addr", self.rpc, "--registry-addr", self.registry)
        command = [
            sys.executable, "-m", "pysyncer", "daemon", "--node", name, "--dc", f"dc-{name}",
            "--bind", self.bind, "--admin-addr", self.admin, *args,
        ]  # fmt: skip
        self.process = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT)

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(f"http://{self.admin}{path}", timeout=5) as response:
            return json.loads(response.read())

    def cli(self, *args: str) -> str:
        out = subprocess.run(
            [sys.executable, "-m", "pysyncer", *args, "--admin-addr", self.admin],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert out.returncode == 0, out.stderr
        return out.stdout

    def members(self) -> dict[str, str]:
        try:
            return {m["name"]: m["status"] for m in self.get("/v1/members")["members"]}
        except OSError:
            return {}

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.process.poll() is None:
            os.kill(self.process.pid, sig)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=5)
        self._log.close()
        return self.process.returncode

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def wait_until(condition: Callable[[], bool], timeout: float, what: str, *logs: Daemon) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    details = "\n".join(f"--- {d.name}\n{d.log()[-3000:]}" for d in logs)
    raise AssertionError(f"timed out waiting for {what}\n{details}")


@pytest.fixture
def pool(tmp_path: Path) -> Iterator[tuple[Daemon, Daemon, SerfAgent]]:
    serf = require_program("serf", "serf")
    agent = SerfAgent(serf, "serf-a", tmp_path, profile="lan")
    first = Daemon("py-a", "127.0.0.31", tmp_path)
    second = Daemon("py-b", "127.0.0.32", tmp_path, "--join", first.bind)  # retries until up
    try:
        agent.wait_ready()
        wait_until(lambda: first.members().get("py-b") == "alive", 15, "py-b joined", first)
        agent.cli("join", first.bind)
        wait_until(
            lambda: len(first.members()) == len(second.members()) == 3,
            15, "serf-a joined, seen by both daemons", first, second,
        )  # fmt: skip
        yield first, second, agent
    finally:
        for daemon in (first, second):
            daemon.stop()
        agent.stop()


def test_members_events_queries_with_serf(pool: tuple[Daemon, Daemon, SerfAgent]) -> None:
    first, second, agent = pool
    wait_until(
        lambda: agent.members() == {"serf-a": "alive", "py-a": "alive", "py-b": "alive"},
        15, "serf sees both daemons alive", first, second,
    )  # fmt: skip
    table = second.cli("members")
    assert "serf-a" in table and "py-a" in table and "dc=dc-py-a" in table
    health = first.get("/v1/health")
    assert health["node"] == "py-a" and health["status"] == "ok"

    # A user event from us reaches the real agent, and one from the agent reaches us.
    first.cli("event", "deploy", "v1.2.3")
    wait_until(lambda: "user-event: deploy" in agent.log_text(), 10, "serf got the event", first)
    agent.cli("event", "rollback", "v1.2.2")
    wait_until(
        lambda: any(e["name"] == "rollback" for e in second.get("/v1/events")["events"]),
        10, "py-b got serf's event", second,
    )  # fmt: skip
    events = second.get("/v1/events")["events"]
    assert any(e["name"] == "deploy" and e["payload"] == "v1.2.3" for e in events)

    # Queries: ours is acked by the Serf agent; the agent's is acked by our daemons.
    answer = json.loads(first.cli("query", "ping-all", "x", "--timeout-ms", "1500", "--json"))
    assert set(answer["acks"]) == {"py-a", "py-b", "serf-a"}
    output = agent.cli("query", "-timeout=1500ms", "hello", "world")
    assert "Ack from 'py-a'" in output and "Ack from 'py-b'" in output

    # The agent's graceful leave reads as "left" on our side too.
    agent.cli("leave")
    wait_until(
        lambda: first.members().get("serf-a") == second.members().get("serf-a") == "left",
        15, "both daemons see serf-a left", first, second,
    )  # fmt: skip


def test_kill_is_failed_and_sigterm_is_left(pool: tuple[Daemon, Daemon, SerfAgent]) -> None:
    first, second, agent = pool
    second.stop(signal.SIGKILL)
    wait_until(lambda: agent.members().get("py-b") == "failed", 30, "serf: py-b failed", first)
    wait_until(lambda: first.members().get("py-b") == "failed", 30, "py-a: py-b failed", first)
    assert first.stop(signal.SIGTERM) == 0
    wait_until(lambda: agent.members().get("py-a") == "left", 15, "serf: py-a left", first)
    assert "stopped" in first.log()


def test_restart_rejoins_from_the_snapshot_without_replaying_events(tmp_path: Path) -> None:
    first = Daemon("py-s1", "127.0.0.33", tmp_path)
    data = str(tmp_path / "py-s2")
    second = Daemon("py-s2", "127.0.0.34", tmp_path, "--join", first.bind, "--data-dir", data)
    try:
        wait_until(lambda: second.members().get("py-s1") == "alive", 15, "joined", second)
        first.cli("event", "before-crash", "x")
        wait_until(
            lambda: any(e["name"] == "before-crash" for e in second.get("/v1/events")["events"]),
            10, "event seen", second,
        )  # fmt: skip
        snapshot_path = tmp_path / "py-s2" / "serf.snapshot"
        wait_until(  # the snapshot is flushed and records clocks every 0.5 s
            lambda: (state := read_snapshot(snapshot_path)).event_clock > 0
            and "py-s1" in state.alive,
            10, "member and event clock snapshotted", second,
        )  # fmt: skip
        second.stop(signal.SIGKILL)
        snapshot = snapshot_path.read_text()
        assert "alive: py-s1 127.0.0.33:" in snapshot
        # Same node, no --join: it finds the pool again through its snapshot. A restart
        # binds the configured address again: another port under the same name is a name
        # conflict, as in Serf, until the pool has reaped the old address.
        second = Daemon("py-s2", "127.0.0.34", tmp_path, "--data-dir", data, port=second.port)
        wait_until(lambda: second.members().get("py-s1") == "alive", 15, "rejoined", second)
        wait_until(lambda: first.members().get("py-s2") == "alive", 15, "back at s1", first)
        time.sleep(1.0)  # a push/pull carrying the old event buffer has happened by now
        names = [e["name"] for e in second.get("/v1/events")["events"]]
        assert "before-crash" not in names  # handled before the crash: not replayed
        assert "member(s) to rejoin" in second.log()
        # After a graceful leave the next start does not rejoin.
        assert second.stop(signal.SIGTERM) == 0
        assert (tmp_path / "py-s2" / "serf.snapshot").read_text().rstrip().endswith("leave")
        second = Daemon("py-s2", "127.0.0.34", tmp_path, "--data-dir", data)
        wait_until(lambda: "not rejoining" in second.log(), 10, "no rejoin", second)
        wait_until(lambda: "py-s2" in second.members(), 15, "admin API up", second)
        time.sleep(1.0)
        assert set(second.members()) == {"py-s2"}
    finally:
        second.stop()
        first.stop()


def test_gossip_label_isolates_pools(tmp_path: Path) -> None:
    blue = Daemon("py-l1", "127.0.0.35", tmp_path, "--gossip-label", "blue")
    also_blue = Daemon(
        "py-l2", "127.0.0.36", tmp_path, "--gossip-label", "blue", "--join", blue.bind
    )
    red = Daemon("py-l3", "127.0.0.37", tmp_path, "--gossip-label", "red", "--join", blue.bind)
    try:
        wait_until(lambda: blue.members().get("py-l2") == "alive", 15, "same label", blue)
        wait_until(lambda: "could not join" in red.log(), 15, "red refused", red)
        wait_until(lambda: "py-l3" in red.members(), 15, "red's admin API up", red)
        time.sleep(2.0)  # the red node has retried to join by now
        assert "py-l3" not in blue.members()
        assert set(red.members()) == {"py-l3"}
    finally:
        for daemon in (red, also_blue, blue):
            daemon.stop()
