"""Instance leases of the embedded Service-Center and the queue that expires them.

Owns the lease of one instance (its record, TTL = ``healthCheck.interval x (times + 1)``
unless overridden, and when it runs out) and the expiry queue. The queue holds each lease
once, however often it is renewed: a heartbeat only moves ``expires_at``; when the queue
reaches a lease's ``due`` time the lease is either expired or queued again at its new
expiry (lazy rescheduling).

Layout: a timing wheel of one-second buckets, ``{second: [leases]}`` keyed by the whole
second at or before ``due``, and a heap of the bucket seconds (ints: one push per bucket,
not per lease). Granting or re-queuing a lease appends one reference to its bucket, O(1)
and the 8 bytes a heap slot took. The oldest bucket is sorted by ``due`` (in C, usually
almost in order already) when its second begins, then walked in that order, a cursor
marking how far; a lease landing at or before the bucket being walked (a lease shorter
than a second) is inserted in order after the cursor. That sort is the one piece of work
a step does not bound (about 10 ms CPU for a bucket of 33,000 shuffled leases).

A lease may also be held by a *holder* (:class:`Holder`, an opaque name the registering
caller chose, per tenant): renewing the holder, O(1), renews every lease it holds, as
ZooKeeper's session renews its ephemeral nodes or an etcd lease the keys sharing it. A
held lease runs until ``max(expires_at, holder.renewed_at + ttl)`` (:meth:`Lease.until`);
the holder's extension is folded into ``expires_at`` only when the queue reaches the
lease, like a heartbeat's. Each holder counts the current leases it holds, so its renewer
can tell when some were removed behind its back (unregistered, expired, replaced).

Invariant: a lease is yielded only when :meth:`Lease.until` ``<= now``, never early, and
by the first :meth:`LeaseQueue.expired` call at or after that time that is not stopped
by its step. Service-Center itself is coarser: its leases are etcd leases of whole
seconds, which etcd revokes from a check every 500 ms.

It decides when a lease has run out, not what expiring means: the caller removes the
instance and records the change. It must not import the other servicecenter modules or
touch the event loop; time comes from the clock it is given (monotonic seconds).
"""

from __future__ import annotations

import math
from bisect import insort
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from heapq import heappop, heappush
from operator import attrgetter
from typing import Any

__all__ = ["EXPIRY_STEP", "Holder", "Lease", "LeaseQueue"]

# Queue entries one expired() call looks at, at most: a wave of leases coming due together
# (a million copies registered at 17,000/s come due 17,000 a second) is taken in steps of
# a few milliseconds each instead of one stall of tens of milliseconds (issue 17).
EXPIRY_STEP = 2_000


@dataclass(slots=True, eq=False)
class Holder:
    """Leases renewed together: ``name`` (the caller's) in tenant ``scope``, last renewed at
    ``renewed_at`` (monotonic seconds; never, until the first renewal), holding ``count``
    current leases."""

    name: str
    scope: tuple[str, str]
    renewed_at: float = -math.inf
    count: int = 0


@dataclass(slots=True, eq=False)
class Lease:
    """An instance's lease: ``instance`` (the stored record) lives until ``expires_at``.

    ``due`` is where the lease sits in the expiry queue (never later than
    ``expires_at``); ``scope`` is the tenant key (domain, project) and ``service_id`` the
    service, so an expired lease names the instance to remove; ``holder`` renews it too.
    """

    instance: dict[str, Any]
    ttl: float
    expires_at: float
    due: float
    scope: tuple[str, str]
    service_id: str
    holder: Holder | None = None

    def until(self) -> float:
        """When the lease runs out: its own expiry, or its holder's renewal plus its TTL."""
        holder = self.holder
        if holder is None:
            return self.expires_at
        return max(self.expires_at, holder.renewed_at + self.ttl)


_due = attrgetter("due")


class LeaseQueue:
    """Grants, renews and expires leases on ``clock`` (monotonic seconds).

    ``ttl_override`` replaces every lease's TTL (Service-Center's
    ``registry.instance.ttl``).
    """

    def __init__(self, clock: Callable[[], float], ttl_override: float | None = None) -> None:
        self._clock = clock
        self._ttl_override = ttl_override
        self._buckets: dict[int, list[Lease]] = {}  # whole second -> leases due in it
        self._seconds: list[int] = []  # heap of the buckets' seconds
        self._walking: int | None = None  # the oldest bucket, once sorted and being walked
        self._cursor = 0  # entries of the walked bucket already looked at
        self._queued = 0
        self._holders: dict[tuple[tuple[str, str], str], Holder] = {}

    def __len__(self) -> int:
        """How many entries are queued (stale ones included until they come due)."""
        return self._queued

    def grant(
        self,
        instance: dict[str, Any],
        previous: Lease | None,
        scope: tuple[str, str],
        service_id: str,
        holder: str | None = None,
    ) -> Lease:
        """The lease ``instance`` holds from now on: ``previous`` renewed, or a new one,
        held by the holder named ``holder`` (None: by none) whatever held ``previous``.

        ``previous`` (the instance's current lease) is updated in place when it is still
        queued no later than the new expiry; otherwise a new lease is queued and the old
        entry becomes stale (the caller stores the lease returned).
        """
        ttl = self._ttl_override
        if ttl is None:
            check = instance["healthCheck"]
            ttl = float(check["interval"] * (check["times"] + 1))
        expires_at = self._clock() + ttl
        if previous is not None and previous.due <= expires_at:
            previous.instance, previous.ttl, previous.expires_at = instance, ttl, expires_at
            self.hold(previous, holder)
            return previous
        if previous is not None:
            self.release(previous)
        lease = Lease(instance, ttl, expires_at, expires_at, scope, service_id)
        self._queue(lease)
        self._queued += 1
        if holder is not None:  # a new lease is held by none yet
            self.hold(lease, holder)
        return lease

    def renew(self, lease: Lease) -> None:
        """A heartbeat: the lease runs ``ttl`` from now (the queue catches up lazily)."""
        lease.expires_at = self._clock() + lease.ttl

    def hold(self, lease: Lease, holder: str | None) -> None:
        """Have the holder named ``holder`` of the lease's tenant hold ``lease`` (a current
        one) from now on, instead of the one that held it (None: no holder)."""
        held = lease.holder
        if held is not None and held.name == holder:
            return
        self.release(lease)
        if holder is None:
            return
        key = (lease.scope, holder)
        found = self._holders.get(key)
        if found is None:
            found = self._holders[key] = Holder(holder, lease.scope)
        found.count += 1
        lease.holder = found

    def release(self, lease: Lease) -> None:
        """``lease`` is no longer current (or held): its holder stops counting it (a holder
        left with none is forgotten; a renewal of its name then finds nothing)."""
        holder = lease.holder
        if holder is None:
            return
        lease.holder = None
        holder.count -= 1
        if not holder.count:
            del self._holders[holder.scope, holder.name]

    def holding(self, scope: tuple[str, str], holder: str) -> int:
        """How many leases the holder named ``holder`` of tenant ``scope`` holds."""
        found = self._holders.get((scope, holder))
        return 0 if found is None else found.count

    def renew_holder(self, scope: tuple[str, str], holder: str) -> int:
        """Renew every lease the holder named ``holder`` of tenant ``scope`` holds (the
        queue catches up lazily); how many it holds (0: none, or no such holder)."""
        found = self._holders.get((scope, holder))
        if found is None:
            return 0
        found.renewed_at = self._clock()
        return found.count

    def expired(
        self, is_current: Callable[[Lease], bool], limit: int = EXPIRY_STEP
    ) -> Iterator[Lease]:
        """The leases that have run out by now, in the order they were queued to come due.

        Entries for which ``is_current`` is false (unregistered instances, or leases
        replaced by a registration with a shorter one) are dropped; renewed leases (or
        leases their holder renewed) are queued again at their new expiry. The caller
        removes each lease yielded (and :meth:`release` s it). At most
        ``limit`` queue entries are looked at: :meth:`behind` says whether due ones are
        left for the next call.
        """
        now = self._clock()
        while limit > 0:
            bucket = self._walk(now)
            if bucket is None:
                return
            cursor = self._cursor
            while cursor < len(bucket) and limit > 0:
                lease = bucket[cursor]
                if lease.due > now:
                    return
                limit -= 1
                cursor = self._cursor = cursor + 1
                if not is_current(lease):
                    self._queued -= 1
                    continue
                holder = lease.holder
                if holder is not None and holder.renewed_at + lease.ttl > lease.expires_at:
                    lease.expires_at = holder.renewed_at + lease.ttl  # the holder's renewal
                if lease.expires_at > now:  # renewed since it was queued: queue it again
                    lease.due = lease.expires_at
                    self._queue(lease)
                else:
                    self._queued -= 1
                    yield lease

    def behind(self) -> bool:
        """Whether entries already due wait in the queue (a call stopped at its limit)."""
        now = self._clock()
        bucket = self._walk(now)
        return bucket is not None and bucket[self._cursor].due <= now

    def wake_period(self) -> float:
        """How long a feed waiter may sleep: until the next lease may expire (at most 1 s)."""
        now = self._clock()
        bucket = self._walk(now)
        if bucket is None and not self._seconds:
            return 1.0
        next_due = self._seconds[0] if bucket is None else bucket[self._cursor].due
        return min(1.0, max(0.0, next_due - now) + 0.001)

    def _walk(self, now: float) -> list[Lease] | None:
        """The bucket being walked, sorted, with entries left at the cursor; the oldest
        bucket is begun once its second has (one walked to its end is dropped)."""
        if self._walking is not None:
            bucket = self._buckets[self._walking]
            if self._cursor < len(bucket):
                return bucket
            del self._buckets[heappop(self._seconds)]
            self._walking, self._cursor = None, 0
        if not self._seconds or self._seconds[0] > now:
            return None
        second = self._walking = self._seconds[0]
        bucket = self._buckets[second]
        bucket.sort(key=_due)
        return bucket

    def _queue(self, lease: Lease) -> None:
        """Put ``lease`` in the bucket of its ``due`` second."""
        second = math.floor(lease.due)
        if self._walking is not None and second <= self._walking:
            insort(self._buckets[self._walking], lease, lo=self._cursor, key=_due)
            return
        bucket = self._buckets.get(second)
        if bucket is None:
            self._buckets[second] = [lease]
            heappush(self._seconds, second)
        else:
            bucket.append(lease)
