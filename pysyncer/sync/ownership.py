"""Slot ownership of one syncer among the live syncers of its data center.

Owns this member's view of the slot table: which slots it owns, the table's epoch (the
fence every store write carries), who leads, and the hand-over steps when the table
changes: a gained slot is *pending* until its playback (reconcile mapping, local
registry and the origin's records) has run, a lost slot is released at once. The leader
(the live member with the oldest store lease) recomputes the table with
:func:`pysyncer.sync.slotmap.rebalance` whenever membership changes and writes it with
compare-and-swap; everyone else only follows. Gossip failure signals only trigger an
early re-read: store leases decide who is live.

Without a coordinating store (the embedded SQLite store: one syncer per data center)
the member owns every slot at epoch 0 and leads. It must not touch the registry or the
RPC layer: the engine passes in what playback and release do.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from pysyncer.errors import PysyncerError
from pysyncer.store.base import SLOT_COUNT, Coordinator, Fence, FencedError, SlotTable, StoreError
from pysyncer.supervisor import Supervised, spawn
from pysyncer.sync.slotmap import moved_slots, rebalance

__all__ = ["OwnershipStats", "SlotOwnership"]

log = logging.getLogger(__name__)

NOT_OWNED, PENDING, OWNED = 0, 1, 2
RETRY_DELAY = 1.0

Playback = Callable[[frozenset[int]], Awaitable[None]]
Release = Callable[[frozenset[int]], Awaitable[None]]
LeaderChange = Callable[[bool], Awaitable[None]]


@dataclass
class OwnershipStats:
    epoch: int = 0
    leader: str = ""
    slots_owned: int = 0
    slots_pending: int = 0
    tables_written: int = 0
    slots_gained: int = 0
    slots_lost: int = 0
    playbacks: int = 0
    playback_seconds: float = 0.0
    last_playback_slots: int = 0
    members: dict[str, int] = field(default_factory=dict)  # member -> slots in the table
    errors: dict[str, int] = field(default_factory=dict)

    def error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1


class SlotOwnership:
    """This member's slots, kept current from the store's slot table."""

    def __init__(
        self,
        node: str,
        coordinator: Coordinator | None,
        *,
        info: Mapping[str, str] | None = None,
        member_ttl: float,
        playback: Playback | None = None,
        release: Release | None = None,
        on_leader: LeaderChange | None = None,
    ) -> None:
        self.node = node
        self.coordinator = coordinator
        self._info = dict(info or {})
        self._member_ttl = member_ttl
        self._playback = playback
        self._release = release
        self._on_leader = on_leader
        self._state = bytearray(SLOT_COUNT)
        self._owners: tuple[str, ...] | None = None
        self.epoch = 0
        self.leader: str | None = None
        self.stats = OwnershipStats()
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self._task: Supervised | None = None

    # -- queries (hot: called per record) ---------------------------------------------

    @property
    def coordinated(self) -> bool:
        return self.coordinator is not None

    def owns(self, slot: int) -> bool:
        """True when this member owns ``slot`` and its playback is done."""
        return self._state[slot] == OWNED

    def pending(self, slot: int) -> bool:
        """True while a gained slot waits for its playback."""
        return self._state[slot] == PENDING

    def is_leader(self) -> bool:
        return self.leader == self.node

    def fence(self) -> Fence | None:
        """What store writes carry so a stale owner's writes are refused."""
        return Fence(self.node, self.epoch) if self.coordinator is not None else None

    async def check_fence(self) -> None:
        """FencedError (and a re-read soon) unless this member's ownership is current in
        the store; StoreError when the store cannot be asked. No-op when alone."""
        fence = self.fence()
        if self.coordinator is None or fence is None:
            return
        try:
            await self.coordinator.check_fence(fence)
        except FencedError:
            self.nudge()
            raise

    def owned_slots(self) -> frozenset[int]:
        return frozenset(i for i, s in enumerate(self._state) if s == OWNED)

    def slot_runs(self) -> list[tuple[int, int, str, bool]]:
        """The slot table as runs ``(first, count, owner, pending)``: consecutive slots of
        one owner ("" = unassigned), ``pending`` for this member's slots awaiting their
        playback. Alone (no shared store), this member owns every slot."""
        owners = self._owners
        runs: list[tuple[int, int, str, bool]] = []
        for slot in range(SLOT_COUNT):
            owner = self.node if owners is None else owners[slot]
            pending = self._state[slot] == PENDING
            last = runs[-1] if runs else None
            if last is not None and last[2] == owner and last[3] == pending:
                runs[-1] = (last[0], last[1] + 1, owner, pending)
            else:
                runs.append((slot, 1, owner, pending))
        return runs

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        """Join the member list and take the current table (all slots when alone)."""
        if self.coordinator is None:
            self._state[:] = bytes([OWNED]) * SLOT_COUNT
            self.leader = self.node
            self.stats.leader = self.node
            self.stats.slots_owned = SLOT_COUNT
            self.stats.members = {self.node: SLOT_COUNT}
            return
        await self.coordinator.join(self.node, self._info, self._member_ttl)
        self._task = spawn(f"slot-ownership-{self.node}", self._run)
        await self.refresh()

    async def close(self) -> None:
        if self._task is not None:
            await self._task.stop()
            self._task = None
        if self.coordinator is not None:
            with contextlib.suppress(StoreError):
                await self.coordinator.leave()

    def nudge(self) -> None:
        """Re-read membership and the table soon (a gossip failure or join signal)."""
        self._wake.set()

    async def _run(self) -> None:
        """Re-read the table when woken or every half lease. A store error is retried
        here; anything else ends the run and the supervisor restarts it (logged, counted)."""
        assert self.coordinator is not None
        watcher = spawn(f"slot-watch-{self.node}", self._watch)
        try:
            while True:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._member_ttl / 2):
                        await self._wake.wait()
                self._wake.clear()
                try:
                    await self.refresh()
                except StoreError as exc:
                    self.stats.error("store")
                    log.warning("slot ownership: cannot read the slot table: %s", exc)
                    await asyncio.sleep(RETRY_DELAY)
        finally:
            await watcher.stop()

    async def _watch(self) -> None:
        assert self.coordinator is not None
        while True:
            try:
                async for _ in self.coordinator.watch():
                    self._wake.set()
            except StoreError as exc:
                self.stats.error("watch")
                log.debug("slot ownership: watch ended: %s", exc)
            await asyncio.sleep(RETRY_DELAY)

    # -- the hand-over -------------------------------------------------------------------

    async def refresh(self) -> None:
        """Lead a rebalance when leader, then follow the table in the store."""
        assert self.coordinator is not None
        async with self._lock:
            leader = await self.coordinator.leader()
            if leader != self.leader:
                leading = leader == self.node
                if leading != self.is_leader() and self._on_leader is not None:
                    # before the new leader is taken: if the switch fails (an RPC rebind),
                    # the next refresh tries it again
                    await self._on_leader(leading)
                self.leader = leader
                self.stats.leader = leader or ""
            table = await self.coordinator.read_slot_table()
            if self.is_leader():
                table = await self._lead(table)
            await self._follow(table)

    async def _lead(self, table: SlotTable) -> SlotTable:
        assert self.coordinator is not None
        members = await self.coordinator.live_members()
        wanted = rebalance(table.owners, members)
        if wanted == table.owners:
            return table
        written = await self.coordinator.write_slot_table(wanted, table.revision)
        if written is None:  # someone wrote first: follow whatever is there now
            return await self.coordinator.read_slot_table()
        self.stats.tables_written += 1
        log.info(
            "slot table epoch %d: %d members, %d slots moved",
            written.epoch,
            len(members),
            len(moved_slots(table.owners, written.owners)),
        )
        return written

    async def _follow(self, table: SlotTable) -> None:
        if (
            self._owners == table.owners
            and self.epoch == table.epoch
            and PENDING not in self._state
        ):
            return
        mine = frozenset(i for i, owner in enumerate(table.owners) if owner == self.node)
        had = frozenset(i for i, s in enumerate(self._state) if s != NOT_OWNED)
        gained, lost = mine - had, had - mine
        self._owners = table.owners
        self.epoch = table.epoch
        self.stats.epoch = table.epoch
        counts: dict[str, int] = {}
        for owner in table.owners:
            counts[owner] = counts.get(owner, 0) + 1
        self.stats.members = counts
        for slot in lost:
            self._state[slot] = NOT_OWNED
        self.stats.slots_lost += len(lost)
        if lost and self._release is not None:
            await self._release(lost)
        for slot in gained:
            self._state[slot] = PENDING
        self.stats.slots_gained += len(gained)
        self._count()
        waiting = frozenset(i for i, s in enumerate(self._state) if s == PENDING)
        if waiting:
            await self._play_back(waiting)

    async def _play_back(self, gained: frozenset[int]) -> None:
        """Reconcile gained slots, then own them; on failure they stay pending (retried)."""
        started = time.monotonic()
        if self._playback is not None:
            try:
                await self._playback(gained)
            except (PysyncerError, OSError, ValueError) as exc:  # StoreError, NotFoundError...
                self.stats.error("playback")
                log.warning("playback of %d slots failed (retried): %s", len(gained), exc)
                return
        for slot in gained:
            if self._state[slot] == PENDING:
                self._state[slot] = OWNED
        self.stats.playbacks += 1
        self.stats.last_playback_slots = len(gained)
        self.stats.playback_seconds += time.monotonic() - started
        self._count()

    def _count(self) -> None:
        self.stats.slots_owned = self._state.count(OWNED)
        self.stats.slots_pending = self._state.count(PENDING)
