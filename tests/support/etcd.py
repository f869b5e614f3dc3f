"""A real etcd for the tests: one server per session, a fresh key prefix per test.

The server itself (Debian ``etcd-server`` on free loopback ports, stopped by pid) is
:class:`pysyncer.procs.EtcdServer`, shared with the benchmarks. The pytest fixture
:func:`etcd_server` gives one per session; tests use a fresh key prefix each
(:func:`unique_prefix`), so they never see each other's keys.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from pysyncer.procs import EtcdServer, find_etcd
from tests.conftest import require_program

__all__ = ["TEST_PREFIX", "EtcdServer", "etcd_server", "find_etcd", "unique_prefix"]

TEST_PREFIX = "/pysyncer-test/"  # every test key lives below it (the secure etcd's role covers it)


def unique_prefix() -> str:
    """A key prefix below :data:`TEST_PREFIX` that no other test uses."""
    return f"{TEST_PREFIX}{uuid.uuid4().hex[:12]}/"


@pytest.fixture(scope="session")
def etcd_server() -> Iterator[EtcdServer]:
    """One etcd for the whole session (skips, or fails under CI=true, without etcd)."""
    binary = require_program("etcd", "etcd-server")
    server = EtcdServer(binary)
    try:
        server.start()
        yield server
    finally:
        server.close()
