"""What the adapter contract suite needs from a registry under test: :class:`RegistryHarness`.

Owns the interface between :mod:`pysyncer.testing.contract` and one registry server (a
real one started on loopback, or a fake written from the registry's documented API).
A harness plays two roles the adapter must not be able to tell apart from production:
the server the adapter talks to, and an ordinary application of that registry that
registers and removes its own instances through the registry's native API (never
through the adapter). It must not import pytest, so a third-party package can ship one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from pysyncer.adapters.base import LocalRef
from pysyncer.model import ServiceKey

__all__ = ["AppInstance", "RegistryHarness"]


@dataclass(frozen=True, slots=True)
class AppInstance:
    """An instance an application registered natively, as the adapter should report it.

    ``instance_id`` is the id the adapter's listing and change events use for it (for
    kinds whose ids are derived, e.g. Nacos ``ip#port#cluster#group@@service`` or a
    Dubbo provider URL, the harness computes it the way the adapter does).
    """

    service: ServiceKey
    instance_id: str
    host: str
    port: int
    properties: Mapping[str, str] = field(default_factory=dict)


@runtime_checkable
class RegistryHarness(Protocol):
    """One registry server for the contract suite, plus a native application client."""

    @property
    def kind(self) -> str:
        """The adapter name :func:`pysyncer.adapters.load_adapter` knows it by."""
        ...

    @property
    def change_bound(self) -> float:
        """Seconds within which the adapter must report a native change (feed or poll)."""
        ...

    @property
    def features(self) -> frozenset[str]:
        """Optional behaviours the registry has: ``status`` (an instance status the
        application can change), ``health`` (per-instance TTL/heartbeat settings are
        kept), ``batch_renew`` (several leases renewed in one call), ``in_process``
        (the adapter calls the registry in process: it cannot become unreachable, so
        the "server stopped" test is skipped)."""
        ...

    def addresses(self) -> list[str]:
        """The server addresses as ``--sc-addr`` would hold them (the kind's natural form)."""
        ...

    def settings(self) -> dict[str, Any]:
        """Adapter settings for this server (short poll intervals for tests are fine)."""
        ...

    async def start(self) -> None:
        """Start the server (or fake) on loopback; ready to answer when this returns."""
        ...

    async def stop(self) -> None:
        """Stop the server and release everything; idempotent."""
        ...

    def service(self, name: str) -> ServiceKey:
        """A service key this registry can represent exactly (e.g. Eureka and Consul
        keep no app/version/environment natively: the harness says what the adapter
        reads a native service of that name as)."""
        ...

    async def app_register(
        self,
        service: ServiceKey,
        host: str,
        port: int,
        *,
        properties: Mapping[str, str] | None = None,
    ) -> AppInstance:
        """Register an instance as an ordinary application of the registry would."""
        ...

    async def app_set_status(self, instance: AppInstance, up: bool) -> None:
        """Mark a native instance up or down (only called with the ``status`` feature)."""
        ...

    async def app_unregister(self, instance: AppInstance) -> None:
        """Remove a native instance as its application would on shutdown."""
        ...

    async def lose(self, ref: LocalRef) -> None:
        """Make the registry forget an instance behind the adapter's back (lease
        expiry, session loss, an operator's delete), so renewing it reports
        ``not_found``."""
        ...
