"""The shared adapter contract for the Consul adapter, on the Consul fake (both modes)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from pysyncer.testing import AdapterContract, RegistryHarness
from tests.support.fakes.consul import ConsulHarness


class TestConsulAgentContract(AdapterContract):
    @pytest.fixture
    async def harness(self) -> AsyncIterator[RegistryHarness]:
        h = ConsulHarness(mode="agent", token="s3cr3t")
        await h.start()
        yield h
        await h.stop()


class TestConsulCatalogContract(AdapterContract):
    @pytest.fixture
    async def harness(self) -> AsyncIterator[RegistryHarness]:
        h = ConsulHarness(mode="catalog")
        await h.start()
        yield h
        await h.stop()
