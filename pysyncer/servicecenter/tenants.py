"""The tenants (domain/project pairs) of the embedded Service-Center: :class:`Tenants`.

Owns which tenants exist and what one holds (:class:`Tenant`: its services, their keys,
its instance leases and its change log), the rule that only writes create a tenant
(within the tenant quota, else 400100) while a read of an unknown one gets an empty
tenant that is not kept, the revision every tenant starts at, and waking the feed
waiters of unknown tenants when a tenant is created.

It decides nothing about services or instances (that is ``core``) and must not import
``core`` or ``app``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass, field

from pysyncer.aiowait import wait_event
from pysyncer.servicecenter.errors import no_quota
from pysyncer.servicecenter.feed import ChangeLog
from pysyncer.servicecenter.leases import Lease
from pysyncer.servicecenter.validation import JSON, validate_tenant
from pysyncer.shardeddict import ShardedDict

__all__ = ["Tenant", "Tenants"]


@dataclass(slots=True)
class Tenant:
    """One domain/project: services by id, their keys, instance leases by service."""

    domain: str
    project: str
    feed: ChangeLog
    services: ShardedDict[str, JSON] = field(default_factory=ShardedDict)
    keys: ShardedDict[tuple[str, str, str, str], str] = field(default_factory=ShardedDict)
    instances: ShardedDict[str, dict[str, Lease]] = field(default_factory=ShardedDict)


class Tenants:
    """The tenants of one registry, at most ``max_tenants``, each starting at
    ``start_revision`` with a change log of ``log_size`` entries."""

    def __init__(self, start_revision: int, log_size: int, max_tenants: int) -> None:
        self.start_revision = start_revision
        self._log_size = log_size
        self._max = max_tenants
        self._known: dict[tuple[str, str], Tenant] = {}
        self._created: asyncio.Event | None = None  # made by the first waiter

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self._known)

    def __contains__(self, scope: object) -> bool:
        return scope in self._known

    def __getitem__(self, scope: tuple[str, str]) -> Tenant:
        return self._known[scope]

    def values(self) -> Iterator[Tenant]:
        return iter(self._known.values())

    def read(self, domain: str, project: str) -> Tenant:
        """The tenant, or (unknown) an empty one at the start revision, not kept."""
        tenant = self._known.get((domain, project))
        if tenant is None:
            validate_tenant(domain, project)
            tenant = Tenant(domain, project, ChangeLog(self.start_revision, 1))
        return tenant

    def write(self, domain: str, project: str) -> Tenant:
        """The tenant a write goes to, created when unknown (400100 beyond the quota)."""
        tenant = self._known.get((domain, project))
        if tenant is not None:
            return tenant
        validate_tenant(domain, project)
        if len(self._known) >= self._max:
            raise no_quota(
                f"the registry holds {len(self._known)} domain/project pairs, the most "
                f"allowed; {domain}/{project} cannot be created"
            )
        tenant = Tenant(domain, project, ChangeLog(self.start_revision, self._log_size))
        self._known[(domain, project)] = tenant
        self.wake()
        return tenant

    async def wait_for_new(self, timeout: float) -> None:
        """Sleep until a tenant is created (or :meth:`wake`), at most ``timeout`` s."""
        event = self._created
        if event is None:
            event = self._created = asyncio.Event()
        await wait_event(event, timeout)

    def wake(self) -> None:
        """Wake whoever waits for a new tenant; the next waiter makes a new event."""
        if self._created is not None:
            self._created.set()
            self._created = None
