"""Liveness and readiness routes, the systemd notify protocol on a real datagram socket,
the hardened unit file (``systemd-analyze verify``) and the generated example config."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import tomllib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from pysyncer.config import SETTINGS, load_config
from pysyncer.configdoc import render_toml
from pysyncer.daemon import Daemon
from pysyncer.procs import DaemonProcess, free_port
from pysyncer.sdnotify import Notifier, notify_loop
from tests.support.docblocks import COMMAND, FILES, ROOT
from tests.support.waits import eventually

DEPLOY = ROOT / "deploy"


def daemon_config(tmp_path: Path, **flags: Any) -> Any:
    base = {
        "node": "ready-a",
        "dc": "dc-ready",
        "bind": "127.0.0.1:0",
        "rpc-addr": "127.0.0.1:0",
        "admin-addr": "127.0.0.1:0",
        "registry-addr": "127.0.0.1:0",
        "data-dir": str(tmp_path / "data"),
    }
    return load_config({**base, **flags}, environ={})


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client:
        yield client


async def probe(session: aiohttp.ClientSession, daemon: Daemon, which: str) -> tuple[int, Any]:
    host, port = daemon.admin_address
    async with session.get(f"http://{host}:{port}/v1/health/{which}") as response:
        return response.status, await response.json()


async def test_ready_once_the_engine_runs_and_live_all_along(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    daemon = Daemon(daemon_config(tmp_path))
    try:
        await daemon.start()
        status, live = await probe(session, daemon, "live")
        assert status == 200 and live["status"] == "live" and live["loop_lag_seconds"] >= 0
        async with asyncio.timeout(20):
            while (await probe(session, daemon, "ready"))[0] != 200:
                await asyncio.sleep(0.05)
        assert (await probe(session, daemon, "ready"))[1] == {"status": "ready", "reasons": []}
        host, port = daemon.admin_address
        async with session.get(f"http://{host}:{port}/v1/health") as response:
            assert response.status == 200 and (await response.json())["status"] == "ok"
        async with session.get(f"http://{host}:{port}/metrics") as response:
            text = await response.text()
        assert re.search(r'pysyncer_build_info\{implementation="\w+",version="[^"]+"\} 1.0', text)
        assert "process_resident_memory_bytes" in text
        assert 'pysyncer_task_restarts_total{task="exporter"} 0.0' in text
    finally:
        await daemon.stop()


async def test_a_failing_task_shows_in_readiness_and_metrics_of_a_running_daemon(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    daemon = Daemon(daemon_config(tmp_path))
    # 3 s between restarts: the probe below must see the task down on a loaded machine
    daemon.supervisor.backoff_min = daemon.supervisor.backoff_max = 3.0
    failures = 0

    async def injected() -> None:
        nonlocal failures
        failures += 1
        if failures <= 2:
            raise RuntimeError("injected failure")
        await asyncio.Event().wait()

    try:
        await daemon.start()
        async with asyncio.timeout(20):
            while (await probe(session, daemon, "ready"))[0] != 200:
                await asyncio.sleep(0.05)
        task = daemon.supervisor.spawn("injected", injected)
        while not daemon.supervisor.down():
            await asyncio.sleep(0.01)
        status, answer = await probe(session, daemon, "ready")
        reason = "task injected: restarting after RuntimeError: injected failure"
        assert (status, answer["reasons"]) == (503, [reason])
        async with asyncio.timeout(20):  # restarted twice, then it runs: ready again
            while (await probe(session, daemon, "ready"))[0] != 200:
                await asyncio.sleep(0.05)
        host, port = daemon.admin_address
        async with session.get(f"http://{host}:{port}/metrics") as response:
            text = await response.text()
        assert 'pysyncer_task_restarts_total{task="injected"} 2.0' in text
        assert 'pysyncer_task_up{task="injected"} 1.0' in text
        await task.stop()
    finally:
        await daemon.stop()


async def test_not_ready_with_the_reason_while_the_registry_does_not_answer(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    daemon = Daemon(daemon_config(tmp_path, **{"registry-url": dead}))
    try:
        await daemon.start()  # the listeners come up all the same
        async with asyncio.timeout(20):
            while not (await probe(session, daemon, "ready"))[1]["reasons"][0].startswith(
                "sync engine: waiting to start"
            ):
                await asyncio.sleep(0.05)
        status, answer = await probe(session, daemon, "ready")
        assert status == 503 and answer["status"] == "not ready"
        assert dead.split("//")[1] in answer["reasons"][0]
        assert (await probe(session, daemon, "live"))[0] == 200
        assert daemon.gossip.started and daemon.engine is not None
        assert daemon.engine.rpc is not None and daemon.engine.rpc.port > 0
    finally:
        await daemon.stop()


async def test_live_reports_a_stalled_loop(tmp_path: Path) -> None:
    daemon = Daemon(daemon_config(tmp_path), with_sync=False)
    daemon.monitor.stalled_after = 0.2
    try:
        await daemon.start()
        # live once it ticks on time (a loaded machine may make one tick late: then stalled
        # until the next); a monitor that never ticks never reads live
        await eventually(lambda: daemon.probes.liveness()["status"] == "live", 10, "live")
        time.sleep(0.8)  # block the loop: no tick can run
        assert daemon.probes.liveness()["status"] == "stalled"
    finally:
        await daemon.stop()


# -- systemd notify ------------------------------------------------------------------------


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    path = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind(path)
        server.settimeout(20)
        yield server, path


def messages(server: socket.socket, count: int) -> list[str]:
    return [server.recv(4096).decode() for _ in range(count)]


def test_notifier_sends_datagrams_to_a_path_and_to_an_abstract_socket(
    notify_socket: tuple[socket.socket, str],
) -> None:
    server, path = notify_socket
    notifier = Notifier({"NOTIFY_SOCKET": path})
    assert notifier.send(READY="1", STATUS="ready")
    assert messages(server, 1) == ["READY=1\nSTATUS=ready"]
    notifier.close()
    name = f"pysyncer-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as abstract:
        abstract.bind("\0" + name)
        abstract.settimeout(10)
        notifier = Notifier({"NOTIFY_SOCKET": "@" + name})
        assert notifier.send(STOPPING="1")
        assert abstract.recv(4096) == b"STOPPING=1"
        notifier.close()
    assert not Notifier({}).send(READY="1")  # not under systemd: nothing to do


async def test_notify_loop_sends_ready_once_and_the_watchdog_while_healthy(
    notify_socket: tuple[socket.socket, str],
) -> None:
    server, path = notify_socket
    environ = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "200000", "WATCHDOG_PID": str(os.getpid())}
    notifier = Notifier(environ)
    assert notifier.watchdog == 0.2
    state = {"ready": False, "healthy": True}
    task = asyncio.create_task(
        notify_loop(notifier, lambda: state["ready"], lambda: state["healthy"])
    )
    try:
        loop = asyncio.get_running_loop()
        got = await loop.run_in_executor(None, messages, server, 2)
        assert got == ["WATCHDOG=1", "WATCHDOG=1"]  # alive, not ready yet: no READY=1
        state["ready"] = True
        seen: list[str] = []
        while "READY=1\nSTATUS=ready" not in seen:
            seen += await loop.run_in_executor(None, messages, server, 1)
        state["healthy"] = False  # a stalled loop: the watchdog stops, systemd restarts us
        await asyncio.sleep(0.3)
        server.settimeout(0.05)
        with pytest.raises(TimeoutError):  # what was sent before the flag was read
            while True:
                server.recv(4096)
        server.settimeout(0.5)  # then nothing: a watchdog still going sends every 0.1 s
        with pytest.raises(TimeoutError):
            server.recv(4096)
    finally:
        task.cancel()
        notifier.close()
    assert seen.count("READY=1\nSTATUS=ready") == 1


def test_the_daemon_tells_systemd_ready_then_stopping(
    tmp_path: Path, notify_socket: tuple[socket.socket, str]
) -> None:
    server, path = notify_socket
    os.environ["NOTIFY_SOCKET"] = path
    try:
        daemon = DaemonProcess("notify-a", "127.0.0.1", tmp_path, "dc-notify")
    finally:
        del os.environ["NOTIFY_SOCKET"]
    try:
        assert server.recv(4096) == b"READY=1\nSTATUS=ready"
        assert daemon.get("/v1/health/ready")["status"] == "ready"
        os.kill(daemon.process.pid, signal.SIGTERM)
        assert server.recv(4096) == b"STOPPING=1\nSTATUS=stopping"
        assert daemon.process.wait(timeout=30) == 0
    finally:
        daemon.stop()


# -- deploy files --------------------------------------------------------------------------


def test_the_unit_file_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed here")
    unit = (DEPLOY / "pysyncer.service").read_text()
    for setting in ("Type=notify", "WatchdogSec=", "DynamicUser=yes", "ProtectSystem=strict",
                    "StateDirectory=pysyncer", "NoNewPrivileges=yes", "CapabilityBoundingSet=\n",
                    "RestrictAddressFamilies=", "SystemCallFilter=@system-service",
                    "ExecReload=/bin/kill -HUP $MAINPID"):  # fmt: skip
        assert setting in unit, setting
    entry = Path(sys.executable).parent / "pysyncer"  # the installed command, not /usr/local
    local = tmp_path / "pysyncer.service"
    local.write_text(unit.replace("/usr/local/bin/pysyncer", str(entry)))
    run = subprocess.run(
        [analyze, "verify", str(local)], capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stderr
    assert "pysyncer.service" not in run.stderr, run.stderr  # no warning about the unit


def test_the_example_config_is_generated_from_the_settings_and_loads(tmp_path: Path) -> None:
    example = DEPLOY / "pysyncer.example.toml"
    assert FILES[example] is render_toml
    text = example.read_text()
    assert text == render_toml(), f"deploy/pysyncer.example.toml: run {COMMAND}"
    assert tomllib.loads(text) == {}  # everything commented out: defaults apply
    defaults = "\n".join(
        line[2:]
        for line in text.splitlines()
        if line.startswith("# ")
        and " = " in line
        and line[2:].split(" = ")[0] in KEYS_WITH_DEFAULTS
    )
    assert len(defaults.splitlines()) == len(KEYS_WITH_DEFAULTS)
    uncommented, empty = tmp_path / "defaults.toml", tmp_path / "empty.toml"
    uncommented.write_text(defaults)
    empty.write_text("")
    config = load_config({"node": "n"}, environ={}, config_file=uncommented)
    baseline = load_config({"node": "n"}, environ={}, config_file=empty)
    assert dataclasses.replace(config, config_file=empty) == baseline  # the defaults, exactly
    for setting in SETTINGS:
        assert f"# {setting.key} = " in text


KEYS_WITH_DEFAULTS = {s.key for s in SETTINGS if s.default is not None}
