"""free_port: ports a test or benchmark binds later, picked so nothing else takes them first;
listens: whose socket answers on a port."""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

import pytest

from pysyncer import procs
from tests.conftest import require_program


def test_ports_come_from_below_the_ephemeral_range_and_never_twice() -> None:
    pickable = procs._pickable_ports()
    if not pickable:
        pytest.skip("no ephemeral port range known on this system")
    ports = [procs.free_port() for _ in range(300)]
    assert len(set(ports)) == len(ports)
    assert all(port in pickable for port in ports)
    low = int(procs.EPHEMERAL_RANGE_FILE.read_text().split()[0])
    assert max(ports) < low


def test_a_port_in_use_is_never_picked(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        monkeypatch.setattr(procs, "_pickable_ports", lambda: range(port, port + 2))
        procs._picked.discard(("127.0.0.1", port + 1))
        if not procs._bindable("127.0.0.1", port + 1):
            pytest.skip("the neighbouring port is taken too")
        assert procs.free_port() == port + 1
        with pytest.raises(procs.NoFreePortError):
            procs.free_port()  # port is taken, port + 1 was handed out already


def test_without_a_known_range_the_kernel_picks(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(procs, "EPHEMERAL_RANGE_FILE", tmp_path / "missing")
    assert procs._pickable_ports() == range(0)
    port = procs.free_port()
    assert procs._bindable("127.0.0.1", port)


def test_listens_tells_the_socket_s_owner() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind(("127.0.0.1", 0))
        port = server.getsockname()[1]
        if procs.listens(os.getpid(), "127.0.0.1", port) is None:
            pytest.skip("no /proc to read sockets from")
        assert procs.listens(os.getpid(), "127.0.0.1", port) is False  # bound, not listening
        server.listen()
        assert procs.listens(os.getpid(), "127.0.0.1", port) is True
        assert procs.listens(os.getppid(), "127.0.0.1", port) is False


@pytest.mark.needs_server("etcd")
def test_an_etcd_that_cannot_have_its_port_is_refused_not_taken_for_another() -> None:
    binary = shutil.which("etcd") or require_program("etcd", "etcd-server")
    with procs.EtcdServer(binary) as first:
        second = procs.EtcdServer(binary)
        second.client_port = first.client_port  # two picks of one port: first's etcd answers
        try:
            with pytest.raises(RuntimeError, match=f"127.0.0.1:{first.client_port}"):
                second.start()
            assert second.process is None  # stopped, by its pid
        finally:
            second.close()
        assert first.healthy()
