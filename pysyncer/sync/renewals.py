"""Keeping the importer's copies alive: the renew loop, its pace, and lost-copy detection.

Owns when copies are renewed (every ``interval`` when given, else a quarter of the
shortest TTL held, re-checked each second, with a first round right after start so
copies known only from the store are checked at once), the TTLs that pace it (read back
from the registry for copies loaded from the mapping table, which stores none), and the
renewal rounds themselves: every held copy, in batches of :data:`RENEW_BATCH`, through
the adapter, skipping the origins gone past origin-grace. The loop's rounds also skip
the copies written since the previous round began (their leases are younger than a
round; see :meth:`CopyIndex.mark`): during a long full sync most copies are.

With an adapter that renews copies per origin data center
(:class:`~pysyncer.adapters.base.RenewsByHolder`), the rounds after the first renew one
holder per origin instead of every copy, and compare the count the registry holds with
the index's. A count that differs is asked again a few times a moment apart (a batch of
the importer may be between its registry writes and its index update), then the origins
whose counts still differ get a round of their copies one by one: the lost ones are
found as without the capability, and the holder holds the index's copies again (started
afresh when it held more than the index: copies this syncer no longer holds lapse). Given
the importer's lock (``writes_lock``), the second looks are taken holding it, so no batch
is between its registry writes and its index update: under steady churn some batch always
was, and every round fell back to renewing every copy of every origin one by one (a
700,000-copy syncer importing 3,500 changes/s spent half its CPU there).

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
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterable, Iterator
from itertools import islice
from typing import Protocol, TypeVar

from pysyncer.adapters.base import Adapter, LocalRef, RenewResult, RenewsByHolder
from pysyncer.errors import PysyncerError
from pysyncer.model import Instance
from pysyncer.supervisor import Supervised, spawn
from pysyncer.sync.copyindex import CopyIndex

__all__ = [
    "DEFAULT_TTL",
    "HOLDER_RECHECKS",
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
# Times an origin whose holder's count differs from the index's is asked again (each after
# an eighth of the period, at most RENEW_TICK) before its copies are renewed one by one.
HOLDER_RECHECKS = 3

# Copies the registry did not know: (key hash, copy-index entry when renewed).
LostCopies = list[tuple[int, int]]


class RenewalStats(Protocol):
    """The counters renewals update (the importer's stats)."""

    renewals: int

    def error(self, kind: str) -> None: ...


class Renewals:
    """Heartbeats for every copy in ``index``, at the pace of the shortest TTL held.

    ``expired_origins`` is the live set of origins whose copies are no longer renewed;
    ``on_lost`` receives the copies a round found lost, after the round. ``writes_lock``,
    when given, is held by whoever writes copies to the registry or the index (the
    importer): a holder's count is compared with the index's holding it.
    """

    def __init__(
        self,
        adapter: Adapter,
        index: CopyIndex,
        stats: RenewalStats,
        expired_origins: Collection[str],
        on_lost: Callable[[LostCopies], Awaitable[None]],
        writes_lock: asyncio.Lock | None = None,
    ) -> None:
        self.adapter = adapter
        self._writes_lock = writes_lock
        self.index = index
        self.stats = stats
        self.expired_origins = expired_origins
        self._on_lost = on_lost
        self._min_ttl = float("inf")
        self._task: Supervised | None = None
        self._lost: LostCopies = []  # found by the loop, not handed to on_lost yet
        self._handing: asyncio.Task[None] | None = None
        # Whether a round of every copy ran through the adapter's holders (the loop's
        # rounds then renew the holders only).
        self._held = False

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
                await self.round(self.index.mark(), period)
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

    async def round(self, keys: Iterable[int], period: float) -> int:
        """One round of the loop: the copies of ``keys`` one by one (the first round, or
        without holders), else every origin's holder; how many copies were renewed."""
        if not isinstance(self.adapter, RenewsByHolder) or not self._held:
            renewed = await self.renew_all(wait=False, keys=keys)
            self._held = True
            return renewed
        return await self._renew_holders(self.adapter, keys, period)

    async def _renew_holders(
        self, adapter: RenewsByHolder, keys: Iterable[int], period: float
    ) -> int:
        """Renew each origin's holder; the origins whose holder's count still differs from
        the index's after :data:`HOLDER_RECHECKS` looks get their copies of ``keys``
        renewed one by one (the holder started afresh when it held more)."""
        renewed = 0
        counts = self.index.counts()
        differ: dict[str, int] = {}  # origin -> the holder's count
        for origin_dc, count in counts.items():
            if origin_dc not in self.expired_origins:
                held = await adapter.renew_origin(origin_dc)
                renewed += held
                if held != count:
                    differ[origin_dc] = held
        self.stats.renewals += renewed
        for _ in range(HOLDER_RECHECKS):
            if not differ:
                return renewed
            pause = min(RENEW_TICK, period / 8)
            await asyncio.sleep(pause)
            async with self._quiet(pause):
                counts = self.index.counts()
                for origin_dc in list(differ):
                    held = 0
                    if origin_dc in counts and origin_dc not in self.expired_origins:
                        held = await adapter.renew_origin(origin_dc)
                    if held == counts.get(origin_dc, 0):
                        del differ[origin_dc]
                    else:
                        differ[origin_dc] = held
        counts = self.index.counts()
        anew = {dc for dc, held in differ.items() if held > counts.get(dc, 0)}
        return renewed + await self._renew_each(keys, wait=False, origins=differ.keys(), anew=anew)

    @contextlib.asynccontextmanager
    async def _quiet(self, wait: float) -> AsyncIterator[None]:
        """The block holding ``writes_lock`` when it is had within ``wait`` s; else (or
        without one) the block runs as it is: a batch in flight may then make a count
        differ, and it is asked again."""
        lock = self._writes_lock
        if lock is None:
            yield
            return
        try:
            async with asyncio.timeout(wait):  # not wait_for: on 3.11 it can swallow a cancel
                await lock.acquire()
        except TimeoutError:
            yield
            return
        try:
            yield
        finally:
            lock.release()

    async def renew_all(self, *, wait: bool = True, keys: Iterable[int] | None = None) -> int:
        """Heartbeat every copy (or those of ``keys``) except expired origins'; how many
        were renewed (with holders, each is held by its origin's holder from now on).

        The copies the registry says it does not know go to ``on_lost`` after the round
        (``wait``: before this returns; else in the background, as the loop does).
        """
        return await self._renew_each(self.index.key_hashes() if keys is None else keys, wait=wait)

    async def _renew_each(
        self,
        keys: Iterable[int],
        *,
        wait: bool,
        origins: Collection[str] | None = None,
        anew: Collection[str] = (),
    ) -> int:
        """:meth:`renew_all` of the copies of ``keys`` of ``origins`` (None: of any); the
        holders of the ``anew`` origins are started afresh."""
        holding = self.adapter if isinstance(self.adapter, RenewsByHolder) else None
        started: set[str] = set()
        renewed = 0
        lost: LostCopies = []
        for batch in chunks(keys, RENEW_BATCH):
            by_origin: dict[str, tuple[list[LocalRef], list[tuple[int, int]]]] = {}
            for key_hash in batch:
                found = self.index.renewable(key_hash, self.expired_origins)
                if found is None or (origins is not None and found[2] not in origins):
                    continue
                refs, entries = by_origin.setdefault(found[2] if holding else "", ([], []))
                refs.append(found[0])
                entries.append((key_hash, found[1]))
            for origin_dc, (refs, entries) in by_origin.items():
                results: list[RenewResult]
                if holding is None:
                    results = await self.adapter.renew(refs)
                else:
                    first = origin_dc in anew and origin_dc not in started
                    started.add(origin_dc)
                    results = await holding.renew_held(origin_dc, refs, anew=first)
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


def chunks(values: Iterable[_T], size: int) -> Iterator[list[_T]]:
    """``values`` in consecutive lists of at most ``size``."""
    rest = iter(values)
    while batch := list(islice(rest, size)):
        yield batch
