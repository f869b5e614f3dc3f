"""The importer's write budget: how fast it may write into the local registry.

Owns the token bucket that paces the importer's registry writes (a registration, an
update, an unregistration: one token each) and the choice between its two rates: the
*bootstrap* rate while some remote data center is being caught up, the *steady* rate
otherwise. A rate of 0 means unlimited. So a new data center, or a heal after a long
partition, fills a production registry at a pace it was sized for, never as fast as the
syncer can go.

Caught up, precisely (:func:`catching_up`): a link to a remote data center that is
pulling or streaming (state ``repairing`` or ``streaming``) and either has not finished
its first sync since the daemon started (the link's ``synced``: resumed from a valid
cursor, at once, or digest-repaired once) or is more than :data:`CATCH_UP_LAG` revisions
behind the origin (a heal that resumes a long backlog, a digest repair after the origin's
log moved past the cursor).

Not charged: heartbeats (renewals) and a service's creation. A renewal keeps a copy
alive; throttling it behind a backlog of registrations would let copies lapse, and a
lapsed copy costs the registry a registration again. Renewals are already paced (every
copy once per quarter of its TTL, in batches) by :mod:`pysyncer.sync.renewals`.

Pure state over an injected clock (and sleep, for :meth:`WriteBudget.spend`): imports
only the admin payload declarations (its mode, the link states); no registry, store or
importer; deterministic under a fake clock.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from pysyncer.admin.payloads import BudgetMode, LinkState

__all__ = [
    "BURST_SECONDS",
    "CATCH_UP_LAG",
    "MIN_WAIT",
    "TokenBucket",
    "WriteBudget",
    "catching_up",
]

BURST_SECONDS = 1.0  # the bucket holds one second of writes at the current rate
MIN_WAIT = 0.005  # shortest sleep: at high rates a wake-up takes several tokens at once
MODE_CHECK = 0.25  # seconds between two looks at whether a data center is caught up
CATCH_UP_LAG = 1_000  # revisions behind an origin beyond which its link is catching up
_EPSILON = 1e-9
_WRITING_STATES: frozenset[LinkState] = frozenset({"repairing", "streaming"})


def catching_up(synced: bool, state: str, lag: int) -> bool:
    """Whether a link to a remote data center is being caught up (the bootstrap rate):
    it is pulling or streaming, and its first sync is not done or it is more than
    :data:`CATCH_UP_LAG` revisions behind. A link waiting to reconnect writes nothing."""
    return state in _WRITING_STATES and (not synced or lag > CATCH_UP_LAG)


class TokenBucket:
    """At most ``burst + rate * T`` tokens taken in any ``T`` seconds; 0 = unlimited.

    Invariant: ``0 <= tokens <= burst`` after every call (a take never borrows), where
    ``burst = max(1, rate * BURST_SECONDS)``; tokens accrue at ``rate`` per second of the
    clock passed in, up to ``burst``. A new bucket is full: the first second's writes go
    at once.
    """

    def __init__(self, rate: float, now: float) -> None:
        self.rate = 0.0
        self.burst = 0.0
        self.tokens = 0.0
        self._last = now
        self.set_rate(rate, now, fill=True)

    def set_rate(self, rate: float, now: float, *, fill: bool = False) -> None:
        """Change the rate from ``now`` on (tokens accrued so far at the old one); the
        bucket's size follows, and the tokens held are kept up to it (all of it: ``fill``)."""
        if rate < 0:
            raise ValueError(f"a write rate must not be negative, not {rate}")
        self.refill(now)
        self.rate = float(rate)
        self.burst = max(1.0, self.rate * BURST_SECONDS)
        self.tokens = self.burst if fill else min(self.tokens, self.burst)

    def refill(self, now: float) -> None:
        """Add what accrued since the last call (a clock going back adds nothing)."""
        if now > self._last:
            self.tokens = min(self.burst, self.tokens + (now - self._last) * self.rate)
        self._last = max(self._last, now)

    def take(self, now: float) -> float:
        """Take one token: 0.0 when taken, else the seconds until one is there (not taken)."""
        if self.rate == 0:
            return 0.0
        self.refill(now)
        if self.tokens >= 1.0 - _EPSILON:  # a token accrued in float steps may read 0.99...
            self.tokens = max(0.0, self.tokens - 1.0)
            return 0.0
        return (1.0 - self.tokens) / self.rate

    def level(self, now: float) -> float:
        """The tokens held at ``now`` (read-only: the bucket is not changed)."""
        if now <= self._last:
            return self.tokens
        return min(self.burst, self.tokens + (now - self._last) * self.rate)


class WriteBudget:
    """The importer's registry writes, paced by a :class:`TokenBucket` whose rate is
    ``bootstrap`` while ``caught_up()`` says some data center is catching up, else
    ``steady`` (writes per second; 0 = unlimited).

    :meth:`spend` before each write; it sleeps until a token is there, and looks at most
    every :data:`MODE_CHECK` seconds whether the mode changed (:meth:`mode` reads it now).
    ``delayed`` counts the writes that had to wait and ``waited`` the seconds they waited.
    """

    def __init__(
        self,
        bootstrap: float,
        steady: float,
        *,
        catching_up: Callable[[], bool] = lambda: False,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if bootstrap < 0 or steady < 0:
            raise ValueError(f"write rates must not be negative, not {bootstrap}/{steady}")
        self.bootstrap = float(bootstrap)
        self.steady = float(steady)
        self._catching_up = catching_up
        self._clock = clock
        self._sleep = sleep
        self.unlimited = bootstrap == 0 and steady == 0
        self._mode: BudgetMode = "steady"  # the mode the bucket's rate is set for
        self._checked = float("-inf")  # the first write looks at once
        self.bucket = TokenBucket(self.steady, clock())
        self.delayed = 0  # writes that waited for a token
        self.waited = 0.0  # seconds those writes waited, in all

    @classmethod
    def unlimited_budget(cls) -> WriteBudget:
        """No limit: every write goes at once (the default of a bare importer)."""
        return cls(0.0, 0.0)

    def mode(self) -> BudgetMode:
        """``bootstrap`` while some data center is being caught up now, else ``steady``."""
        return "bootstrap" if self._catching_up() else "steady"

    def rate_of(self, mode: BudgetMode) -> float:
        """The rate of ``mode`` (writes per second; 0 = unlimited)."""
        return self.bootstrap if mode == "bootstrap" else self.steady

    def tokens(self) -> float:
        """The tokens held now (writes that may go at once)."""
        return self.bucket.level(self._clock())

    def update_mode(self) -> BudgetMode:
        """Look at whether a data center is catching up now; switch rates if that changed."""
        now = self._clock()
        self._checked = now
        mode = self.mode()
        if mode != self._mode:
            self._mode = mode
            self.bucket.set_rate(self.rate_of(mode), now)
        return mode

    async def spend(self) -> None:
        """Wait until one write may go, and take its token."""
        if self.unlimited:
            return
        if self._clock() - self._checked >= MODE_CHECK:
            self.update_mode()
        wait = self.bucket.take(self._clock())
        if not wait:
            return
        self.delayed += 1
        while wait:
            pause = max(wait, MIN_WAIT)
            started = self._clock()
            await self._sleep(pause)
            self.waited += max(0.0, self._clock() - started)
            if self._clock() - self._checked >= MODE_CHECK:
                self.update_mode()
            wait = self.bucket.take(self._clock())
