"""Credentials in a registry URL never show: not in the daemon's log, its status, its errors.

A real daemon subprocess (:class:`pysyncer.procs.DaemonProcess`, log level debug) syncs
with an embedded registry started beside it through
``--registry-url http://user:secret@127.0.0.1:PORT`` plus a second address with
credentials where nothing listens (so failover errors name it). The password appears
neither in the log nor in ``/v1/sync/status``, which shows ``user:***@``. The function
behind it (:func:`pysyncer.redact.redact`) and the log filter are checked directly too.
"""

from __future__ import annotations

import io
import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pysyncer.procs import DaemonProcess, RegistryProcess, eventually, free_port
from pysyncer.redact import MASK, RedactingFilter, redact

SECRET = "s3cr3t-Pa55"


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[RegistryProcess]:
    process = RegistryProcess(tmp_path)
    try:
        eventually(process.ready, 20, "registry up", process)
        yield process
    finally:
        process.stop()


def test_daemon_never_shows_the_registry_password(
    registry: RegistryProcess, tmp_path: Path
) -> None:
    dead = f"http://user:{SECRET}@127.0.0.1:{free_port()}"
    live = f"http://user:{SECRET}@{registry.address}"
    daemon = DaemonProcess(
        "redact-1",
        "127.0.0.1",
        tmp_path,
        "dc-a",
        "--registry-url",
        f"{dead},{live}",
        "--log-level",
        "debug",
    )
    try:
        eventually(daemon.ready, 40, "daemon up", daemon)
        eventually(lambda: bool(daemon.status().get("registry")), 20, "sync engine", daemon)
        sid = registry.client.create_service("app", "orders")
        registry.client.register(sid, "10.0.0.1", ["rest://10.0.0.1:8080"])
        time.sleep(1.0)  # let it list, export and log at debug level
        status = daemon.status()
        shown = json.dumps(status)
        assert SECRET not in shown
        assert f"user:{MASK}@{registry.address}" in status["registry"]
        assert f"user:{MASK}@127.0.0.1" in daemon.log()
    finally:
        daemon.stop()
    log = daemon.log()
    assert "sync engine up" in log
    assert SECRET not in log


def test_redact_urls_and_secret_parameters() -> None:
    cases = {
        f"http://user:{SECRET}@h:1/p": f"http://user:{MASK}@h:1/p",
        f"a https://u:{SECRET}@h1, http://v:{SECRET}@h2 b": (
            f"a https://u:{MASK}@h1, http://v:{MASK}@h2 b"
        ),
        f"http://u:p@ss{SECRET}@h:1": f"http://u:{MASK}@h:1",
        f"GET /x?accessToken={SECRET}&a=1": f"GET /x?accessToken={MASK}&a=1",
        f"etcd://h:2379?password={SECRET}": f"etcd://h:2379?password={MASK}",
        "http://user@h:1 and http://h:2": "http://user@h:1 and http://h:2",
        "nothing to hide": "nothing to hide",
    }
    for text, expected in cases.items():
        assert redact(text) == expected


def test_log_filter_redacts_messages_and_tracebacks() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactingFilter())
    logger = logging.getLogger("pysyncer.test-redaction")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("registry %s down", f"http://u:{SECRET}@h:1")
        try:
            raise OSError(f"cannot reach http://u:{SECRET}@h:1")
        except OSError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
    text = stream.getvalue()
    assert SECRET not in text
    assert f"registry http://u:{MASK}@h:1 down" in text
    assert f"OSError: cannot reach http://u:{MASK}@h:1" in text
