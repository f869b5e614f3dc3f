"""The shared adapter contract for the ``zookeeper`` adapter, against a real ZooKeeper.

One ZooKeeper (Debian's ``zookeeper`` package, small tickTime) serves the module; each
test gets its own Dubbo root and its own TCP proxy in front of the server
(:class:`tests.support.zk.ZookeeperHarness`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from pysyncer.testing import AdapterContract, RegistryHarness
from tests.support.zk import ZkServer, ZookeeperHarness, zk_server

__all__ = ["zk_server"]

pytestmark = pytest.mark.needs_server("zookeeper")


class TestZookeeperContract(AdapterContract):
    @pytest.fixture
    async def harness(self, zk_server: ZkServer) -> AsyncIterator[RegistryHarness]:
        h = ZookeeperHarness(zk_server)
        await h.start()
        yield h
        await h.stop()
