"""The service center a daemon runs itself when it is given no registry URL.

Owns the daemon's embedded Service-Center: served on ``--registry-addr`` with the
``registry-*`` limits (:class:`~pysyncer.servicecenter.RegistryServer`), started before the
sync engine and closed after it, and the adapter the engine follows it through
(:class:`~pysyncer.adapters.embedded.EmbeddedAdapter`: the registry's Python API and its
native change feed, no HTTP). The sync engine sees it only as a
:class:`~pysyncer.sync.engine.LocalRegistry`. Must not import the sync engine, gossip, the
store or the configuration: the daemon hands it its address and limits.

Imports: adapters, hostport, servicecenter.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pysyncer.adapters.embedded import EmbeddedAdapter
from pysyncer.hostport import HostPort
from pysyncer.servicecenter.app import RegistryServer
from pysyncer.servicecenter.settings import DEFAULT_SETTINGS, ServiceCenterSettings

if TYPE_CHECKING:
    from pysyncer.servicecenter.core import EmbeddedRegistry

__all__ = ["EmbeddedServiceCenter"]


class EmbeddedServiceCenter:
    """An in-process Service-Center on ``address``, and adapters over it for the engine."""

    def __init__(
        self, address: HostPort, settings: ServiceCenterSettings = DEFAULT_SETTINGS
    ) -> None:
        self.address = address
        self.settings = settings
        self.server = RegistryServer(host=address.host, port=address.port, settings=settings)

    @property
    def registry(self) -> EmbeddedRegistry:
        """The registry itself (its Python API: what benchmarks and tests fill it through)."""
        return self.server.registry

    @property
    def url(self) -> str:
        """Its base URL once :meth:`start` returned (the port it really bound)."""
        return self.server.url

    def adapter(self) -> EmbeddedAdapter:
        """A new adapter over the registry, for one start of the sync engine."""
        return EmbeddedAdapter(self.server.registry)

    async def start(self) -> None:
        """Bind and serve (OSError when the address cannot be bound)."""
        await self.server.start()

    async def close(self) -> None:
        """Stop serving: long-polls woken, eviction stopped, socket closed. Idempotent."""
        await self.server.close()
