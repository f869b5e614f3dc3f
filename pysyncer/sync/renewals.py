"""Keeping the importer's copies alive: the renew loop, its pace, and lost-copy detection.

Owns when copies are renewed (every ``interval`` when given, else a quarter of the
shortest TTL held, re-checked each second, with a first round right after start so
copies known only from the store are checked at once), the TTLs that pace it (read back
from the registry for copies loaded from the mapping table, which stores none), and the
renewal rounds themselves: every held copy, in batches of :data:`RENEW_BATCH`, through
the adapter, skipping the origins gone past origin-grace. The loop's rounds also skip
the copies written since the previous round began (their leases are younger than a
round; see :meth:`CopyIndex.mark`): during a long full sync most copies are.

A copy the registry no longer knows is handed to the importer's ``on_lost`` callback:
forgetting it and having it repaired is the importer's job. The loop hands them over in
the background: ``on_lost`` waits for the importer's lock, which a batch paced by the
write budget may hold for seconds, and the next round must not wait with it (copies
would lapse). Renewals are never charged to the write budget. This module must not write
the store or the registry (beyond heartbeats), and must not import the importer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Collection, Iterable, Iterator, Sequence
from typing import Protocol, TypeVar

from pysyncer.adapters.base import Adapter, LocalRef
from pysyncer.errors import PysyncerError
from pysyncer.model import Instance
from pysyncer.supervisor import Supervised, spawn
from pysyncer.sync.copyindex import CopyIndex

__all__ = [
    "DEFAULT_TTL",
    "LOST_STEP",
    "RENEW_BATCH",
    "LostCopies",
    "RenewalStats",
    "Renewals",
    "chunks",
]

log = logging.getLogger(__name__)

_T = TypeVar("_T")

RENEW_BATCH = 500
# Lost copies handed to ``on_lost`` per call, the event loop free in between: a round under
# load once found 186,000 lost, and forgetting them in one call held the loop 200 ms of CPU.
LOST_STEP = 2_000
DEFAULT_TTL = 120  # Service-Center's default lease: 30 s x (3 + 1)
RENEW_TICK = 1.0  # how often the renewal period is re-checked (copies with short TTLs arrive)
RENEW_STARTUP_DELAY = 1.0

# Copies the registry did not know: (key hash, copy-index entry when renewed).
LostCopies = list[tuple[int, int]]


class RenewalStats(Protocol):
    """The counters renewals update (the importer's stats)."""

    renewals: int

    def error(self, kind: str) -> None: ...


class Renewals:
    """Heartbeats for every copy in ``index``, at the pace of the shortest TTL held.

    ``expired_origins`` is the live set of origins whose copies are no longer renewed;
    ``on_lost`` receives the copies a round found lost, after the round.
    """

    def __init__(
        self,
        adapter: Adapter,
        index: CopyIndex,
        stats: RenewalStats,
        expired_origins: Collection[str],
        on_lost: Callable[[LostCopies], Awaitable[None]],
    ) -> None:
        self.adapter = adapter
        self.index = index
        self.stats = stats
        self.expired_origins = expired_origins
        self._on_lost = on_lost
        self._min_ttl = float("inf")
        self._task: Supervised | None = None
        self._lost: LostCopies = []  # found by the loop, not handed to on_lost yet
        self._handing: asyncio.Task[None] | None = None

    # -- pace --------------------------------------------------------------------------

    def note_ttl(self, ttl: float) -> None:
        """A copy with this TTL is held (the pace follows the shortest ever seen)."""
        self._min_ttl = min(self._min_ttl, float(ttl))

    def note_default_ttl(self) -> None:
        """A copy of unknown TTL is held (loaded from the store): assume the default."""
        self.note_ttl(DEFAULT_TTL)

    def learn_ttls(self, copies: Iterable[Instance]) -> None:
        """Pace by the leases of the copies in a registry listing (the importer lists the
        registry once after loading copies): the mapping table has no TTL, and renewing
        copies loaded or adopted from it at the default pace would let short-lived ones
        lapse."""
        ttls = [copy.ttl for copy in copies]
        if ttls:
            self.note_ttl(min(ttls))

    def period(self) -> float:
        """Seconds between rounds when no interval is given: a quarter of the shortest TTL."""
        # The shortest TTL ever held (kept as copies arrive; never raised when one goes):
        # renewing a little too often is harmless, too rarely lets copies expire.
        ttl = self._min_ttl if self._min_ttl != float("inf") else DEFAULT_TTL
        return max(1.0, ttl / 4)

    # -- the loop ----------------------------------------------------------------------

    def start(self, interval: float | None = None) -> None:
        """Run rounds every ``interval`` seconds (None: :meth:`period`) until :meth:`close`."""
        self._task = spawn("importer-renew", lambda: self._loop(interval))

    async def close(self) -> None:
        if self._task is not None:
            await self._task.stop()
        if self._handing is not None:
            self._handing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._handing

    async def _loop(self, interval: float | None) -> None:
        """Renew every ``interval`` (or :meth:`period`, re-read each second).

        The first round runs right after start: copies known only from the store (after a
        restart) are checked at once, and the ones the registry lost are repaired. A
        round that fails (the registry down or answering 5xx) is retried at the next tick:
        waiting a whole period let copies lapse after a few failures in a row.
        """
        last = float("-inf")
        first = True
        while True:
            await asyncio.sleep(RENEW_STARTUP_DELAY if first else RENEW_TICK)
            period = interval or self.period()
            now = asyncio.get_running_loop().time()
            if not first and now - last < period:
                continue
            first = False
            last = now
            try:
                await self.renew_all(wait=False, keys=self.index.mark())
            except asyncio.CancelledError:
                raise
            except PysyncerError as exc:
                self.stats.error(type(exc).__name__)
                log.warning("renewing copies failed: %s", exc)
                last = float("-inf")  # retry at the next tick, not a whole period later
            except Exception:
                self.stats.error("internal")
                log.exception("renewing copies failed")
                last = float("-inf")

    async def renew_all(self, *, wait: bool = True, keys: Sequence[int] | None = None) -> int:
        """Heartbeat every copy (or those of ``keys``) except expired origins'; how many
        were renewed.

        The copies the registry says it does not know go to ``on_lost`` after the round
        (``wait``: before this returns; else in the background, as the loop does).
        """
        renewed = 0
        lost: LostCopies = []
        for batch in chunks(self.index.keys() if keys is None else keys, RENEW_BATCH):
            refs: list[LocalRef] = []
            entries: list[tuple[int, int]] = []
            for key_hash in batch:
                found = self.index.renewable(key_hash, self.expired_origins)
                if found is not None:
                    refs.append(found[0])
                    entries.append((key_hash, found[1]))
            if not refs:
                continue
            results = await self.adapter.renew(refs)
            for result, entry in zip(results, entries, strict=True):
                if result.not_found:
                    lost.append(entry)
                elif not result.ok:
                    self.stats.error("renew")
            self.stats.renewals += len(results)
            renewed += len(refs)
            await asyncio.sleep(0)  # an in-process registry never suspends: let others run
        if lost and wait:
            await self._give(lost)
        elif lost:
            self._hand_off(lost)
        return renewed

    async def _give(self, lost: LostCopies) -> None:
        """``lost`` to ``on_lost`` in steps of :data:`LOST_STEP`, letting others run between."""
        for start in range(0, len(lost), LOST_STEP):
            if start:
                await asyncio.sleep(0)
            await self._on_lost(lost[start : start + LOST_STEP])

    def _hand_off(self, lost: LostCopies) -> None:
        """Give ``lost`` to ``on_lost`` in a background task (one at a time, in order)."""
        self._lost.extend(lost)
        if self._handing is None or self._handing.done():
            self._handing = asyncio.get_running_loop().create_task(
                self._hand_over(), name="importer-lost"
            )

    async def _hand_over(self) -> None:
        while self._lost:
            lost, self._lost = self._lost, []
            try:
                await self._give(lost)
            except Exception:  # in-memory bookkeeping: a bug, never a registry error
                self.stats.error("internal")
                log.exception("forgetting lost copies failed")


def chunks(values: Sequence[_T], size: int) -> Iterator[Sequence[_T]]:
    """``values`` in consecutive slices of at most ``size``."""
    for start in range(0, len(values), size):
        yield values[start : start + size]
