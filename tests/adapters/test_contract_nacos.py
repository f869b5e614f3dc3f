"""The shared adapter contract for the Nacos adapter, on the Nacos fake (v1 and v3 APIs)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from pysyncer.testing import AdapterContract, RegistryHarness
from tests.support.fakes.nacos import NacosHarness


class TestNacosV1Contract(AdapterContract):
    @pytest.fixture
    async def harness(self) -> AsyncIterator[RegistryHarness]:
        h = NacosHarness(api="v1")
        await h.start()
        yield h
        await h.stop()


class TestNacosV3Contract(AdapterContract):
    @pytest.fixture
    async def harness(self) -> AsyncIterator[RegistryHarness]:
        h = NacosHarness(api="v3", users={"nacos": "secret"})
        await h.start()
        yield h
        await h.stop()
