"""free_port: ports a test or benchmark binds later, picked so nothing else takes them first."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from pysyncer import procs


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
