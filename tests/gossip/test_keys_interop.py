"""Key rotation across a pool of a real Serf agent and two ``pysyncer daemon`` processes.

``pysyncer keys`` rotates K1 -> K2 (install, use, remove) on all three; the agent's own
``serf keys -install`` reaches our daemons; a daemon restarted after the rotation comes
back with K2 from its keyring file. Every process is started here and stopped by pid.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import urllib.error
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pysyncer.admin.app import key_fingerprint
from tests.conftest import require_program
from tests.daemon.test_daemon import Daemon, wait_until
from tests.support.gossip import SerfAgent, free_port

pytestmark = pytest.mark.slow


def new_key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


class KeyringSerfAgent(SerfAgent):
    """``serf agent -keyring-file=...`` (the agent refuses -encrypt with a keyring file,
    and the file must exist: it holds the initial keys)."""

    def __init__(self, serf: str, name: str, workdir: Path, keyring_file: Path) -> None:
        self.serf = serf
        self.name = name
        self.port = free_port("127.0.0.1")
        self.rpc = f"127.0.0.1:{free_port()}"
        self.address = ("127.0.0.1", self.port)
        self.log_path = workdir / f"{name}.log"
        args = [
            serf, "agent", f"-node={name}", f"-bind=127.0.0.1:{self.port}",
            f"-rpc-addr={self.rpc}", "-profile=lan", "-log-level=debug",
            f"-keyring-file={keyring_file}",
        ]  # fmt: skip
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT)


def keys_cli(daemon: Daemon, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pysyncer", "keys", *args, "--admin-addr", daemon.admin],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def keys_of(daemon: Daemon) -> dict[str, Any]:
    """``GET /v1/keys`` (keys by fingerprint, see :func:`fp`); an error answer fails the test."""
    try:
        answer: dict[str, Any] = daemon.get("/v1/keys")
    except urllib.error.HTTPError as exc:
        raise AssertionError(f"GET /v1/keys: {exc.code} {exc.read()!r}") from None
    return answer


def fp(key: str) -> str:
    """How the admin API and ``pysyncer keys --list`` name a key (never the key itself)."""
    return key_fingerprint(key)


def read_keys(path: Path) -> list[str]:
    keys: list[str] = json.loads(path.read_text())
    return keys


Pool = tuple[Daemon, Daemon, KeyringSerfAgent, dict[str, str], Path]


@pytest.fixture
def pool(tmp_path: Path) -> Iterator[Pool]:
    serf = require_program("serf", "serf")
    keys = {"K1": new_key(), "K2": new_key(), "K3": new_key()}
    serf_keyring = tmp_path / "serf.keyring"
    serf_keyring.write_text(json.dumps([keys["K1"]]))
    agent = KeyringSerfAgent(serf, "serf-a", tmp_path, serf_keyring)
    common = ("--encrypt", keys["K1"])
    first = Daemon("py-a", "127.0.0.41", tmp_path, *common, "--data-dir", str(tmp_path / "py-a"))
    second = Daemon(
        "py-b", "127.0.0.42", tmp_path, *common, "--data-dir", str(tmp_path / "py-b"),
        "--join", first.bind,
    )  # fmt: skip
    daemons = [first, second]
    try:
        agent.wait_ready()
        wait_until(lambda: first.members().get("py-b") == "alive", 20, "py-b joined", first)
        agent.cli("join", first.bind)
        everyone = {"serf-a": "alive", "py-a": "alive", "py-b": "alive"}
        wait_until(
            lambda: agent.members() == first.members() == second.members() == everyone,
            20, "all three see each other", first, second,
        )  # fmt: skip
        yield first, second, agent, keys, tmp_path
    finally:
        for daemon in daemons:
            daemon.stop()
        agent.stop()


def test_rotation_with_serf_agent(pool: Pool) -> None:
    first, second, agent, keys, tmp = pool
    k1, k2, k3 = keys["K1"], keys["K2"], keys["K3"]
    assert read_keys(tmp / "py-a" / "keyring.json") == [k1]
    assert (tmp / "py-a").stat().st_mode & 0o777 == 0o700

    listed = keys_of(second)
    assert listed["num_nodes"] == 3 and listed["num_resp"] == 3 and listed["num_err"] == 0
    assert listed["keys"] == {fp(k1): 3} and listed["primary_keys"] == {fp(k1): 3}

    # Rotation from our side: install, use, remove, each applied by all three members.
    out = keys_cli(first, "--install", k2)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Successfully installed key!" in out.stdout
    assert keys_of(second)["keys"] == {fp(k1): 3, fp(k2): 3}
    out = keys_cli(first, "--use", k2)
    assert out.returncode == 0, out.stdout + out.stderr
    assert keys_of(second)["primary_keys"] == {fp(k2): 3}
    out = keys_cli(second, "--remove", k1)
    assert out.returncode == 0, out.stdout + out.stderr
    listing = keys_cli(first, "--list")
    assert listing.returncode == 0 and f"{fp(k2)}  [3/3]" in listing.stdout, listing.stdout
    assert k2 not in listing.stdout

    serf_list = agent.cli("keys", "-list")
    assert k2 in serf_list and k1 not in serf_list
    assert read_keys(tmp / "serf.keyring") == [k2]
    for name in ("py-a", "py-b"):
        assert read_keys(tmp / name / "keyring.json") == [k2]

    # Removing the primary key is refused by every member: exit 1, failures listed.
    out = keys_cli(first, "--remove", k2)
    assert out.returncode == 1
    assert "failed:" in out.stderr and "serf-a" in out.stderr and "py-b" in out.stderr
    assert "Error removing key: 3/3 nodes reported failure" in out.stderr

    # The pool keeps working on K2 alone: members alive, user events both ways.
    first.cli("event", "after-rotation", "k2")
    wait_until(
        lambda: "user-event: after-rotation" in agent.log_text(), 10, "serf got the event", first
    )
    agent.cli("event", "from-serf", "k2")
    wait_until(
        lambda: any(e["name"] == "from-serf" for e in second.get("/v1/events")["events"]),
        10, "py-b got serf's event", second,
    )  # fmt: skip
    assert agent.members() == {"serf-a": "alive", "py-a": "alive", "py-b": "alive"}
    assert first.members() == {"serf-a": "alive", "py-a": "alive", "py-b": "alive"}

    # The agent's own rotation command is applied by our daemons.
    agent.cli("keys", "-install", k3)
    listed = keys_of(first)
    assert listed["keys"] == {fp(k2): 3, fp(k3): 3} and listed["primary_keys"] == {fp(k2): 3}
    assert read_keys(tmp / "py-b" / "keyring.json") == [k2, k3]


def test_restart_after_rotation_keeps_the_new_key(pool: Pool) -> None:
    first, second, agent, keys, tmp = pool
    k1, k2 = keys["K1"], keys["K2"]
    for args in (("--install", k2), ("--use", k2), ("--remove", k1)):
        out = keys_cli(first, *args)
        assert out.returncode == 0, out.stdout + out.stderr

    assert second.stop(signal.SIGTERM) == 0
    wait_until(lambda: agent.members().get("py-b") == "left", 15, "py-b left", first)
    # Same command line as before (--encrypt K1): the keyring file decides the primary.
    again = Daemon(
        "py-b", "127.0.0.42", tmp, "--encrypt", k1, "--data-dir", str(tmp / "py-b"),
        "--join", first.bind,
    )  # fmt: skip
    try:
        wait_until(lambda: agent.members().get("py-b") == "alive", 20, "py-b back", again)
        listed = keys_of(again)
        assert listed["primary_keys"] == {fp(k2): 3}
        assert listed["keys"] == {fp(k2): 3}  # the rotated-away --encrypt key stays away
        assert "ignoring --encrypt" in again.log()
        assert read_keys(tmp / "py-b" / "keyring.json") == [k2]
    finally:
        again.stop()
