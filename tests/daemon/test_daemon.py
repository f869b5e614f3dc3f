"""`pysyncer daemon` as real subprocesses, in one pool with a real Serf agent.

Covers the gossip daemon end to end through its CLI and admin API: join, members,
user events and queries both ways, kill -9 detected as failed, SIGTERM as left.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import require_program
from tests.support.gossip import SerfAgent
from tests.support.sync import SyncDaemon, eventually, stop_daemons

pytestmark = pytest.mark.slow


def cli(daemon: SyncDaemon, *args: str) -> str:
    """``pysyncer <args>`` against ``daemon``'s admin API; its stdout (exit 0 asserted)."""
    out = subprocess.run(
        [sys.executable, "-m", "pysyncer", *args, "--admin-addr", daemon.admin],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    return out.stdout


def terminated(daemon: SyncDaemon) -> int | None:
    """SIGTERM (SIGKILL after a grace), by pid; the exit status."""
    daemon.stop()
    return daemon.process.returncode


@pytest.fixture
def pool(tmp_path: Path) -> Iterator[tuple[SyncDaemon, SyncDaemon, SerfAgent]]:
    serf = require_program("serf", "serf")
    agent = SerfAgent(serf, "serf-a", tmp_path, profile="lan")
    first = SyncDaemon("py-a", "127.0.0.31", tmp_path)
    second = SyncDaemon("py-b", "127.0.0.32", tmp_path, "--join", first.bind)  # retries until up
    try:
        agent.wait_ready()
        eventually(lambda: first.members().get("py-b") == "alive", 15, "py-b joined", first)
        agent.cli("join", first.bind)
        eventually(
            lambda: len(first.members()) == len(second.members()) == 3,
            15, "serf-a joined, seen by both daemons", first, second,
        )  # fmt: skip
        yield first, second, agent
    finally:
        stop_daemons((first, second))
        agent.stop()


def test_members_events_queries_with_serf(pool: tuple[SyncDaemon, SyncDaemon, SerfAgent]) -> None:
    first, second, agent = pool
    eventually(
        lambda: agent.members() == {"serf-a": "alive", "py-a": "alive", "py-b": "alive"},
        15, "serf sees both daemons alive", first, second,
    )  # fmt: skip
    table = cli(second, "members")
    assert "serf-a" in table and "py-a" in table and "dc=dc-py-a" in table
    health = first.get("/v1/health")
    assert health["node"] == "py-a" and health["status"] == "ok"

    # A user event from us reaches the real agent, and one from the agent reaches us.
    cli(first, "event", "deploy", "v1.2.3")
    eventually(lambda: "user-event: deploy" in agent.log_text(), 10, "serf got the event", first)
    agent.cli("event", "rollback", "v1.2.2")
    eventually(
        lambda: any(e["name"] == "rollback" for e in second.get("/v1/events")["events"]),
        10, "py-b got serf's event", second,
    )  # fmt: skip
    events = second.get("/v1/events")["events"]
    assert any(e["name"] == "deploy" and e["payload"] == "v1.2.3" for e in events)

    # Queries: ours is acked by the Serf agent; the agent's is acked by our daemons.
    answer = json.loads(cli(first, "query", "ping-all", "x", "--timeout-ms", "1500", "--json"))
    assert set(answer["acks"]) == {"py-a", "py-b", "serf-a"}
    output = agent.cli("query", "-timeout=1500ms", "hello", "world")
    assert "Ack from 'py-a'" in output and "Ack from 'py-b'" in output

    # The agent's graceful leave reads as "left" on our side too.
    agent.cli("leave")
    eventually(
        lambda: first.members().get("serf-a") == second.members().get("serf-a") == "left",
        15, "both daemons see serf-a left", first, second,
    )  # fmt: skip


def test_kill_is_failed_and_sigterm_is_left(pool: tuple[SyncDaemon, SyncDaemon, SerfAgent]) -> None:
    first, second, agent = pool
    second.kill()
    eventually(lambda: agent.members().get("py-b") == "failed", 30, "serf: py-b failed", first)
    eventually(lambda: first.members().get("py-b") == "failed", 30, "py-a: py-b failed", first)
    assert terminated(first) == 0
    eventually(lambda: agent.members().get("py-a") == "left", 15, "serf: py-a left", first)
    assert "stopped" in first.log()


def test_restart_rejoins_from_the_snapshot_without_replaying_events(tmp_path: Path) -> None:
    first = SyncDaemon("py-s1", "127.0.0.33", tmp_path)
    second = SyncDaemon("py-s2", "127.0.0.34", tmp_path, "--join", first.bind)
    try:
        eventually(lambda: second.members().get("py-s1") == "alive", 15, "joined", second)
        cli(first, "event", "before-crash", "x")
        eventually(
            lambda: any(e["name"] == "before-crash" for e in second.get("/v1/events")["events"]),
            10, "event seen", second,
        )  # fmt: skip
        time.sleep(1.0)  # the snapshot records clocks every 0.5 s
        second.kill()
        snapshot = (tmp_path / "py-s2" / "serf.snapshot").read_text()
        assert "alive: py-s1 127.0.0.33:" in snapshot
        # Same node, no --join: it finds the pool again through its snapshot. A restart
        # binds the configured address again: another port under the same name is a name
        # conflict, as in Serf, until the pool has reaped the old address. The log file is
        # appended to: each run is read from where the previous one ended.
        run_start = second.log_size()
        second = SyncDaemon("py-s2", "127.0.0.34", tmp_path, like=second)
        eventually(lambda: second.members().get("py-s1") == "alive", 15, "rejoined", second)
        eventually(lambda: first.members().get("py-s2") == "alive", 15, "back at s1", first)
        time.sleep(1.0)  # a push/pull carrying the old event buffer has happened by now
        names = [e["name"] for e in second.get("/v1/events")["events"]]
        assert "before-crash" not in names  # handled before the crash: not replayed
        assert "member(s) to rejoin" in second.log_since(run_start)
        # After a graceful leave the next start does not rejoin.
        assert terminated(second) == 0
        assert (tmp_path / "py-s2" / "serf.snapshot").read_text().rstrip().endswith("leave")
        run_start = second.log_size()
        second = SyncDaemon("py-s2", "127.0.0.34", tmp_path)
        eventually(lambda: "not rejoining" in second.log_since(run_start), 10, "no rejoin", second)
        time.sleep(1.0)
        assert set(second.members()) == {"py-s2"}
    finally:
        second.stop()
        first.stop()


def test_gossip_label_isolates_pools(tmp_path: Path) -> None:
    blue = SyncDaemon("py-l1", "127.0.0.35", tmp_path, "--gossip-label", "blue")
    also_blue = SyncDaemon(
        "py-l2", "127.0.0.36", tmp_path, "--gossip-label", "blue", "--join", blue.bind
    )
    red = SyncDaemon("py-l3", "127.0.0.37", tmp_path, "--gossip-label", "red", "--join", blue.bind)
    try:
        eventually(lambda: blue.members().get("py-l2") == "alive", 15, "same label", blue)
        time.sleep(2.0)  # the red node has tried (and retried) to join by now
        assert "py-l3" not in blue.members()
        assert set(red.members()) == {"py-l3"}
        assert "could not join" in red.log()
    finally:
        stop_daemons((red, also_blue, blue))
