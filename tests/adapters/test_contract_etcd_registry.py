"""The shared adapter contract for the ``etcd`` adapter, in each of its key layouts.

Runs against the session's real etcd (:func:`tests.support.etcd.etcd_server`); every
test has its own key prefix and TCP proxy
(:class:`tests.support.etcd_registry.EtcdRegistryHarness`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from pysyncer.testing import AdapterContract, RegistryHarness
from tests.support.etcd import EtcdServer, etcd_server
from tests.support.etcd_registry import EtcdRegistryHarness

__all__ = ["etcd_server"]

pytestmark = pytest.mark.needs_server("etcd")


class TestEtcdKratosContract(AdapterContract):
    @pytest.fixture
    async def harness(self, etcd_server: EtcdServer) -> AsyncIterator[RegistryHarness]:
        h = EtcdRegistryHarness(etcd_server, "kratos")
        await h.start()
        yield h
        await h.stop()


class TestEtcdGrpcContract(AdapterContract):
    @pytest.fixture
    async def harness(self, etcd_server: EtcdServer) -> AsyncIterator[RegistryHarness]:
        h = EtcdRegistryHarness(etcd_server, "grpc")
        await h.start()
        yield h
        await h.stop()


class TestEtcdGomicroContract(AdapterContract):
    @pytest.fixture
    async def harness(self, etcd_server: EtcdServer) -> AsyncIterator[RegistryHarness]:
        h = EtcdRegistryHarness(etcd_server, "gomicro")
        await h.start()
        yield h
        await h.stop()
