"""Log output: ``--log-format json`` gives one JSON object per line with structured fields,
and SIGHUP re-reads the config file: the log level changes live, the rest is named as
needing a restart."""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import socket
from pathlib import Path

import pytest

from pysyncer import logs
from pysyncer.procs import DaemonProcess, eventually

GARBAGE = b""  # no message type byte: dropped, logged at debug


def test_json_lines_carry_time_level_logger_message_fields_and_traceback() -> None:
    stream = io.StringIO()
    logs.configure("debug", "json", stream=stream)
    try:
        log = logging.getLogger("pysyncer.test")
        log.info("link to %s broke", "dc-b", extra={"dc": "dc-b", "peer": "b-1", "slot": 42})
        try:
            raise RuntimeError("boom at http://user:secret@registry:30100")
        except RuntimeError:
            log.exception("failed")
        log.debug("quiet")
        logs.set_level("info")
        log.debug("not shown")
    finally:
        logs.configure("warning", "text")
    first, second, third = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["time"].endswith("Z") and first["level"] == "info"
    assert first["logger"] == "pysyncer.test" and first["message"] == "link to dc-b broke"
    assert (first["dc"], first["peer"], first["slot"]) == ("dc-b", "b-1", 42)
    assert second["level"] == "error" and "RuntimeError" in second["exception"]
    assert "secret" not in stream.getvalue()  # redacted, traceback included
    assert third["message"] == "quiet"


def test_an_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="text, json"):
        logs.configure("info", "xml")


def daemon_with_config(tmp_path: Path, text: str, *args: str) -> tuple[DaemonProcess, Path]:
    config = tmp_path / "pysyncer.toml"
    config.write_text(text)
    daemon = DaemonProcess("logs-a", "127.0.0.1", tmp_path, "dc-logs", "--config", str(config))
    eventually(daemon.ready, 30, "admin API up", daemon)
    return daemon, config


def test_a_daemon_logs_json_lines(tmp_path: Path) -> None:
    daemon, _ = daemon_with_config(tmp_path, 'log-format = "json"\n')
    try:
        eventually(lambda: "sync engine up" in daemon.log(), 30, "engine up", daemon)
    finally:
        daemon.stop()
    lines = daemon.log().splitlines()
    assert len(lines) > 3
    entries = [json.loads(line) for line in lines]  # every line is one JSON object
    assert all({"time", "level", "logger", "message"} <= set(e) for e in entries)
    assert any(e["logger"] == "pysyncer.daemon" and "starting" in e["message"] for e in entries)


def send_garbage(daemon: DaemonProcess) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.sendto(GARBAGE, (daemon.host, daemon.port))
    return False


def test_sighup_changes_the_log_level_and_names_what_needs_a_restart(tmp_path: Path) -> None:
    daemon, config = daemon_with_config(tmp_path, 'log-level = "info"\nchange-log-size = 1000\n')
    try:
        send_garbage(daemon)  # dropped packets are logged at debug only
        offset = daemon.log_size()
        config.write_text('log-level = "debug"\nchange-log-size = 2000\n')
        os.kill(daemon.process.pid, signal.SIGHUP)
        eventually(lambda: "SIGHUP: applied" in daemon.log_since(offset), 20, "reload", daemon)
        reloaded = daemon.log_since(offset)
        assert "log-level=DEBUG" in reloaded
        assert "change-log-size cannot change live: restart to apply" in reloaded
        assert "dropped packet" not in daemon.log()[:offset].lower()
        eventually(
            lambda: send_garbage(daemon) or "dropped packet" in daemon.log_since(offset),
            20, "a debug line", daemon,
        )  # fmt: skip
        config.write_text("log-level = [\n")  # broken: the running settings stay
        offset = daemon.log_size()
        os.kill(daemon.process.pid, signal.SIGHUP)
        eventually(
            lambda: "configuration not reloaded" in daemon.log_since(offset), 20, "refused", daemon
        )
        assert daemon.ready()
    finally:
        daemon.stop()
    assert daemon.process.returncode == 0
