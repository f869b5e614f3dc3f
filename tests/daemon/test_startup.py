"""Start in any order, and every start-up error as one line naming the setting.

Real subprocesses (:mod:`pysyncer.procs`): a daemon started 5 s before its registry
reports not ready, retries on its own (one log line, not one per attempt) and becomes
ready; a port in use, an unknown adapter key or plugin and an unreadable file end the
daemon before it binds anything, with one line on stderr; ``pysyncer validate`` checks
without binding; CLI errors and a closed pipe end without a traceback.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pysyncer.procs import (
    DaemonProcess,
    EtcdServer,
    RegistryProcess,
    eventually,
    find_etcd,
    free_port,
)

pytestmark = pytest.mark.slow

ENV = {**os.environ, "PYSYNCER_CONFIG": ""}


def ready_answer(daemon: DaemonProcess) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"http://{daemon.admin}/v1/health/ready", timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def pysyncer(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pysyncer", *args],
        capture_output=True, text=True, timeout=60, env=env or ENV,
    )  # fmt: skip


def one_line(run: subprocess.CompletedProcess[str]) -> str:
    assert run.returncode == 1, (run.returncode, run.stdout, run.stderr)
    assert "Traceback" not in run.stderr
    (line,) = run.stderr.strip().splitlines()
    return line


@pytest.fixture
def listening() -> Iterator[int]:
    """A TCP port some other program listens on."""
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        yield int(other.getsockname()[1])


def test_a_daemon_started_before_its_registry_becomes_ready_by_itself(tmp_path: Path) -> None:
    registry_port = free_port()
    daemon = DaemonProcess(
        "early", "127.0.0.1", tmp_path, "dc-early",
        "--registry-url", f"http://127.0.0.1:{registry_port}",
    )  # fmt: skip
    registry: RegistryProcess | None = None
    try:
        eventually(lambda: ready_answer(daemon)[0] == 503, 30, "not ready", daemon)
        eventually(  # "starting" until its first attempt has failed
            lambda: "waiting to start" in ready_answer(daemon)[1]["reasons"][0], 30, "why", daemon
        )
        answer = ready_answer(daemon)[1]
        assert answer["status"] == "not ready"
        assert f"127.0.0.1:{registry_port}" in answer["reasons"][0]
        assert daemon.get("/v1/health")["status"] == "ok"  # admin and gossip are up
        time.sleep(5)  # the registry comes up 5 s later
        registry = RegistryProcess(tmp_path, port=registry_port)
        eventually(lambda: ready_answer(daemon) == (200, {"status": "ready", "reasons": []}),
                   60, "ready by itself", daemon, registry)  # fmt: skip
        log = daemon.log()
        assert log.count("sync engine cannot start yet") == 1, log  # not one line per retry
        assert "sync engine started after" in log
        assert "Unclosed client session" not in log and "Traceback" not in log
        assert daemon.status()["registry"] == f"http://127.0.0.1:{registry_port}"
    finally:
        daemon.stop()
        if registry is not None:
            registry.stop()
    assert "Unclosed" not in daemon.log()


def test_a_daemon_started_before_its_etcd_store_becomes_ready_by_itself(tmp_path: Path) -> None:
    binary = find_etcd()
    if binary is None:
        pytest.skip("etcd is not installed here")
    etcd = EtcdServer(binary, tmp_path / "etcd")  # its ports chosen, not started yet
    store = f"{etcd.url}?open_timeout=1"
    daemon = DaemonProcess("early-store", "127.0.0.1", tmp_path, "dc-store", "--store", store)
    try:
        eventually(lambda: ready_answer(daemon)[0] == 503, 30, "not ready", daemon)
        eventually(
            lambda: "waiting to start" in ready_answer(daemon)[1]["reasons"][0], 30, "why", daemon
        )
        time.sleep(3)  # a few attempts fail
        etcd.start()
        eventually(lambda: ready_answer(daemon)[0] == 200, 60, "ready by itself", daemon, etcd)
        log = daemon.log()
        assert log.count("sync engine cannot start yet") == 1, log
        assert "Traceback" not in log
    finally:
        daemon.stop()
        etcd.close()


def test_a_port_in_use_is_one_line_naming_the_setting(tmp_path: Path, listening: int) -> None:
    run = pysyncer(
        "daemon", "--node", "n", "--bind", f"127.0.0.1:{free_port()}",
        "--rpc-addr", "127.0.0.1:0", "--registry-addr", "127.0.0.1:0",
        "--admin-addr", f"127.0.0.1:{listening}", "--data-dir", str(tmp_path / "n"),
    )  # fmt: skip
    line = one_line(run)  # nothing logged before it: no port was bound
    assert "'admin-addr'" in line and f"127.0.0.1:{listening}" in line and "in use" in line


@pytest.mark.parametrize(
    ("args", "env", "named"),
    [
        (("--registry-url", "http://127.0.0.1:1", "--registry-kind", "consul"),
         {"PYSYNCER_ADAPTER_BOGUS_KEY": "1"}, "adapter.bogus-key"),
        (("--registry-url", "http://127.0.0.1:1", "--registry-kind", "nosuch"), {},
         "'registry-kind'"),
        (("--admin-token-file", "/nonexistent/token"), {}, "admin-token-file"),
        (("--log-level", "loud"), {}, "'log-level'"),
        (("--log-format", "xml"), {}, "'log-format'"),
        (("--data-dir", f"{__file__}/data"), {}, "'data-dir'"),
    ],
    ids=["adapter-key", "adapter-plugin", "unreadable-file", "log-level", "log-format", "data-dir"],
)  # fmt: skip
def test_start_up_errors_are_one_line_naming_the_setting(
    tmp_path: Path, args: tuple[str, ...], env: dict[str, str], named: str
) -> None:
    gossip = free_port()
    run = pysyncer(
        "daemon", "--node", "n", "--bind", f"127.0.0.1:{gossip}", "--rpc-addr", "127.0.0.1:0",
        "--admin-addr", "127.0.0.1:0", "--registry-addr", "127.0.0.1:0",
        "--data-dir", str(tmp_path / "n"), *args, env={**ENV, **env},
    )  # fmt: skip
    assert named in one_line(run)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", gossip))  # never bound by the daemon


def test_validate_checks_settings_and_adapter_settings_binding_nothing(
    tmp_path: Path, listening: int
) -> None:
    good = tmp_path / "good.toml"
    good.write_text(
        'registry-url = ["http://127.0.0.1:1"]\nregistry-kind = "consul"\n'
        f'admin-addr = "127.0.0.1:{listening}"\n[adapter]\ntimeout = 3\n'
    )
    run = pysyncer("validate", "--config", str(good))
    assert run.returncode == 0, run.stderr
    assert "configuration valid" in run.stdout and str(good) in run.stdout  # port in use: fine
    bad = tmp_path / "bad.toml"
    bad.write_text('registry-url = ["http://127.0.0.1:1"]\nregistry-kind = "consul"\n'
                   "[adapter]\ntimeot = 3\n")  # fmt: skip
    assert "adapter.timeot" in one_line(pysyncer("validate", "--config", str(bad)))
    assert "not found" in one_line(pysyncer("validate", "--config", str(tmp_path / "none")))
    assert "'gossip-protocol'" in one_line(pysyncer("validate", "--gossip-protocol", "9"))


def test_cli_errors_and_a_closed_pipe_end_without_a_traceback() -> None:
    line = one_line(pysyncer("members", "--json", "--admin-addr", f"127.0.0.1:{free_port()}"))
    assert line.startswith("pysyncer members: ")
    run = pysyncer("registry", "--log-level", "bogus")
    assert run.returncode == 2 and "Traceback" not in run.stderr
    assert "invalid choice: 'bogus'" in run.stderr
    keys = [f"service-{i}" for i in range(10_000)]  # more than a pipe holds
    writer = subprocess.Popen(
        [sys.executable, "-m", "pysyncer", "slot", *keys],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV,
    )  # fmt: skip
    assert writer.stdout is not None and writer.stderr is not None
    writer.stdout.close()  # the reader is gone before anything is written (| head -c 0)
    with writer.stderr:
        errors = writer.stderr.read().decode()
    assert writer.wait(timeout=60) == 0
    assert errors == "", errors
