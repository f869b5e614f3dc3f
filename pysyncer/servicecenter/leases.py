"""Instance leases of the embedded Service-Center and the queue that expires them.

Owns the lease of one instance (its record, TTL = ``healthCheck.interval x (times + 1)``
unless overridden, and when it runs out) and the expiry queue: a heap holding each lease
once, however often it is renewed. A heartbeat only moves ``expires_at``; when the heap
reaches a lease's ``due`` time the lease is either expired or queued again at its new
expiry (lazy rescheduling).

It decides when a lease has run out, not what expiring means: the caller removes the
instance and records the change. It must not import the other servicecenter modules or
touch the event loop; time comes from the clock it is given.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["EXPIRY_STEP", "Lease", "LeaseQueue"]

# Queue entries one expired() call looks at, at most: a wave of leases coming due together
# (a million copies registered at 17,000/s come due 17,000 a second) is taken in steps of
# a few milliseconds each instead of one stall of tens of milliseconds (issue 17).
EXPIRY_STEP = 2_000


@dataclass(slots=True, eq=False)
class Lease:
    """An instance's lease: ``instance`` (the stored record) lives until ``expires_at``.

    ``due`` is where the lease sits in the expiry queue (never later than
    ``expires_at``); ``scope`` is the tenant key (domain, project) and ``service_id`` the
    service, so an expired lease names the instance to remove.
    """

    instance: dict[str, Any]
    ttl: float
    expires_at: float
    due: float
    scope: tuple[str, str]
    service_id: str

    def __lt__(self, other: Lease) -> bool:
        return self.due < other.due


class LeaseQueue:
    """Grants, renews and expires leases on ``clock`` (monotonic seconds).

    ``ttl_override`` replaces every lease's TTL (Service-Center's
    ``registry.instance.ttl``).
    """

    def __init__(self, clock: Callable[[], float], ttl_override: float | None = None) -> None:
        self._clock = clock
        self._ttl_override = ttl_override
        # Leases by ``due`` (a heap of references: one per lease, not one per heartbeat).
        self._heap: list[Lease] = []

    def __len__(self) -> int:
        """How many entries are queued (stale ones included until they come due)."""
        return len(self._heap)

    def ttl(self, instance: Mapping[str, Any]) -> float:
        if self._ttl_override is not None:
            return self._ttl_override
        check = instance["healthCheck"]
        return float(check["interval"] * (check["times"] + 1))

    def grant(
        self,
        instance: dict[str, Any],
        previous: Lease | None,
        scope: tuple[str, str],
        service_id: str,
    ) -> Lease:
        """The lease ``instance`` holds from now on: ``previous`` renewed, or a new one.

        ``previous`` (the instance's current lease) is updated in place when it is still
        queued no later than the new expiry; otherwise a new lease is queued and the old
        entry becomes stale (the caller stores the lease returned).
        """
        ttl = self.ttl(instance)
        expires_at = self._clock() + ttl
        if previous is not None and previous.due <= expires_at:
            previous.instance, previous.ttl, previous.expires_at = instance, ttl, expires_at
            return previous
        lease = Lease(instance, ttl, expires_at, expires_at, scope, service_id)
        heapq.heappush(self._heap, lease)
        return lease

    def renew(self, lease: Lease) -> None:
        """A heartbeat: the lease runs ``ttl`` from now (the queue catches up lazily)."""
        lease.expires_at = self._clock() + lease.ttl

    def expired(
        self, is_current: Callable[[Lease], bool], limit: int = EXPIRY_STEP
    ) -> Iterator[Lease]:
        """The leases that have run out by now, in order of expiry.

        Entries for which ``is_current`` is false (unregistered instances, or leases
        replaced by a registration with a shorter one) are dropped; renewed leases are
        queued again at their new expiry. The caller removes each lease yielded. At most
        ``limit`` queue entries are looked at: :meth:`behind` says whether due ones are
        left for the next call.
        """
        now = self._clock()
        heap = self._heap
        while heap and heap[0].due <= now and limit > 0:
            limit -= 1
            lease = heapq.heappop(heap)
            if not is_current(lease):
                continue
            if lease.expires_at > now:  # renewed since it was queued: queue it again
                lease.due = lease.expires_at
                heapq.heappush(heap, lease)
                continue
            yield lease

    def behind(self) -> bool:
        """Whether entries already due wait in the queue (a call stopped at its limit)."""
        return bool(self._heap) and self._heap[0].due <= self._clock()

    def wake_period(self) -> float:
        """How long a feed waiter may sleep: until the next lease may expire (at most 1 s)."""
        if not self._heap:
            return 1.0
        return min(1.0, max(0.0, self._heap[0].due - self._clock()) + 0.001)
