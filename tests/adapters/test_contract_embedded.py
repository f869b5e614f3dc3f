"""The shared adapter contract for the ServiceComb and embedded adapters.

Both run against pysyncer's embedded registry (its real HTTP server on loopback for
``servicecomb``, in process for ``embedded``); applications act through the SC v4 REST
API (:class:`tests.support.embedded.EmbeddedHarness`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from pysyncer.testing import AdapterContract, RegistryHarness
from tests.support.embedded import EmbeddedHarness


class TestServiceCombContract(AdapterContract):
    @pytest.fixture
    async def harness(self) -> AsyncIterator[RegistryHarness]:
        h = EmbeddedHarness("servicecomb")
        await h.start()
        yield h
        await h.stop()


class TestServiceCombPollingContract(AdapterContract):
    """The same registry seen without the change feed: governance-listing polls."""

    @pytest.fixture
    async def harness(self) -> AsyncIterator[RegistryHarness]:
        h = EmbeddedHarness("servicecomb", settings={"feed": "false", "poll-interval": "0.2"})
        await h.start()
        yield h
        await h.stop()


class TestEmbeddedContract(AdapterContract):
    @pytest.fixture
    async def harness(self) -> AsyncIterator[RegistryHarness]:
        h = EmbeddedHarness("embedded")
        await h.start()
        yield h
        await h.stop()
