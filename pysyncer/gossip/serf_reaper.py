"""Reaping gone members and reconnecting to failed ones, on the node's clock.

Owns serf/serf.go ``handleReap`` / ``reap`` (left members stay as tombstones until
``tombstone_timeout``, failed ones until ``reconnect_timeout``, then a reap event; old
buffered intents are forgotten after ``recent_intent_timeout``) and ``handleReconnect``
/ ``reconnect`` (now and then, with :func:`~pysyncer.gossip.timing.reconnect_probability`,
a random failed member is joined again in the background). Timer keys start with
``"serf-"``.

Must not import :mod:`pysyncer.gossip.serf` at run time (the Serf composes this part)
nor the other Serf parts except the intents it prunes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Hashable
from typing import TYPE_CHECKING

from pysyncer.gossip.serf_intents import SerfIntents
from pysyncer.gossip.serf_model import MemberStatus, MemberTable, SerfState
from pysyncer.gossip.timing import reconnect_probability

if TYPE_CHECKING:
    from pysyncer.gossip.serf import Serf

__all__ = ["SerfReaper"]

log = logging.getLogger(__name__)

_REAP_KEY = ("serf-reap",)
_RECONNECT_KEY = ("serf-reconnect",)


class SerfReaper:
    """The reap and reconnect timers of one Serf and the rejoins they start."""

    def __init__(self, serf: Serf, table: MemberTable, intents: SerfIntents) -> None:
        self._serf = serf
        self._table = table
        self._intents = intents
        self._tasks: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        profile = self._serf.profile
        self._serf.clock.call_later(_REAP_KEY, profile.reap_interval, self._reap_tick)
        self._serf.clock.call_later(
            _RECONNECT_KEY, profile.reconnect_interval, self._reconnect_tick
        )

    async def stop(self) -> None:
        """Cancel the timers and the background joins."""
        self._serf.clock.cancel(_REAP_KEY)
        self._serf.clock.cancel(_RECONNECT_KEY)
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def reap(self) -> None:
        """Erase tombstones and failed members past their timeouts; forget old intents."""
        serf = self._serf
        now = serf.clock.now()
        for name, record in list(self._table.records.items()):
            status = record.member.status
            if status == MemberStatus.FAILED:
                timeout = serf.profile.reconnect_timeout
            elif status == MemberStatus.LEFT:
                timeout = serf.profile.tombstone_timeout
            else:
                continue
            if now - record.leave_time > timeout:
                log.info("serf %s: EventMemberReap: %s", serf.name, name)
                self._table.erase(name)
        self._intents.forget_stale(now, serf.profile.recent_intent_timeout)

    def _reap_tick(self, _: Hashable) -> None:
        serf = self._serf
        if serf.state == SerfState.SHUTDOWN:
            return
        serf.clock.call_later(_REAP_KEY, serf.profile.reap_interval, self._reap_tick)
        self.reap()

    def _reconnect_tick(self, _: Hashable) -> None:
        serf = self._serf
        if serf.state == SerfState.SHUTDOWN:
            return
        serf.clock.call_later(_RECONNECT_KEY, serf.profile.reconnect_interval, self._reconnect_tick)
        failed = self._table.members(MemberStatus.FAILED)
        if not failed or not serf.attached:
            return
        left = len(self._table.members(MemberStatus.LEFT))
        alive = len(self._table) - len(failed) - left
        if serf.rng.random() > reconnect_probability(len(failed), alive):
            return
        target = serf.rng.choice(failed)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        serf.stats["reconnects"] += 1
        task = loop.create_task(self._quiet_join((target.addr, target.port)))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _quiet_join(self, address: tuple[str, int]) -> None:
        await self._serf.node.join([address])
