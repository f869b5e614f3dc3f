"""Slot ownership among the syncers of one data center, on a real etcd.

Three members share one etcd prefix: the leader writes the table, every member follows
it, gained slots are played back before they count as owned, a member that leaves
hands its slots to the others, and a write fenced with a stale epoch is refused.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import pytest

from pysyncer.store.base import SLOT_COUNT, FencedError
from pysyncer.store.etcd import EtcdStore
from pysyncer.sync.ownership import SlotOwnership
from tests.store.test_store import entry
from tests.support.etcd import EtcdServer, etcd_server, unique_prefix
from tests.support.waits import eventually

__all__ = ["etcd_server"]

pytestmark = [pytest.mark.needs_server("etcd"), pytest.mark.timeout(60)]

MEMBER_TTL = 4.0


class Member:
    """One syncer's store + ownership, recording what it played back and released."""

    def __init__(self, endpoint: str, prefix: str, node: str) -> None:
        self.store = EtcdStore(endpoint, prefix=prefix, member=node)
        self.played: list[frozenset[int]] = []
        self.released: list[frozenset[int]] = []
        self.ownership = SlotOwnership(
            node,
            self.store,
            member_ttl=MEMBER_TTL,
            playback=self._playback,
            release=self._release,
        )

    async def _playback(self, slots: frozenset[int]) -> None:
        assert not any(self.ownership.owns(s) for s in slots)  # pending until played back
        self.played.append(slots)

    async def _release(self, slots: frozenset[int]) -> None:
        self.released.append(slots)

    async def start(self) -> None:
        await self.store.open()
        await self.ownership.start()

    async def stop(self) -> None:
        await self.ownership.close()
        await self.store.close()


@contextlib.asynccontextmanager
async def members(endpoint: str, *names: str) -> AsyncIterator[dict[str, Member]]:
    prefix = unique_prefix()
    started = {name: Member(endpoint, prefix, name) for name in names}
    try:
        for member in started.values():
            await member.start()
        yield started
    finally:
        for member in started.values():
            with contextlib.suppress(Exception):
                await member.stop()


def converged(group: dict[str, Member]) -> bool:
    """Every slot owned by exactly one member, evenly, at one epoch."""
    owned = [m.ownership.owned_slots() for m in group.values()]
    epochs = {m.ownership.epoch for m in group.values()}
    total = sum(len(o) for o in owned)
    union = frozenset().union(*owned)
    sizes = [len(o) for o in owned]
    return (
        len(epochs) == 1
        and total == SLOT_COUNT
        and len(union) == SLOT_COUNT
        and max(sizes) - min(sizes) <= 1
    )


async def test_without_coordinator_one_member_owns_everything() -> None:
    ownership = SlotOwnership("solo", None, member_ttl=MEMBER_TTL)
    await ownership.start()
    assert ownership.owns(0) and ownership.owns(SLOT_COUNT - 1)
    assert ownership.is_leader() and ownership.fence() is None
    await ownership.close()


async def test_three_members_split_the_slots(etcd_server: EtcdServer) -> None:
    async with members(etcd_server.endpoint, "b1", "b2", "b3") as group:
        for member in group.values():
            member.ownership.nudge()
        await eventually(lambda: converged(group), 20, "three members share the slots")
        leaders = {m.ownership.leader for m in group.values()}
        assert leaders == {"b1"}  # the oldest lease leads
        for member in group.values():
            played = frozenset().union(*member.played)
            assert played >= member.ownership.owned_slots()
        stats = group["b1"].ownership.stats
        assert sorted(stats.members.values()) == [5461, 5461, 5462]


async def test_a_leaving_member_hands_its_slots_over(etcd_server: EtcdServer) -> None:
    async with members(etcd_server.endpoint, "b1", "b2", "b3") as group:
        for member in group.values():
            member.ownership.nudge()
        await eventually(lambda: converged(group), 20, "three members share the slots")
        epoch = group["b1"].ownership.epoch
        for member in group.values():
            member.released.clear()
        gone = group.pop("b3")
        its_slots = gone.ownership.owned_slots()
        await gone.stop()
        await eventually(lambda: converged(group), 20, "two members take over")
        assert group["b1"].ownership.epoch > epoch
        taken = group["b1"].ownership.owned_slots() | group["b2"].ownership.owned_slots()
        assert taken >= its_slots
        # only b3's slots moved: b1 and b2 kept every slot they had
        for member in group.values():
            assert not member.released


async def test_the_leader_leaving_elects_the_next(etcd_server: EtcdServer) -> None:
    async with members(etcd_server.endpoint, "b1", "b2") as group:
        for member in group.values():
            member.ownership.nudge()
        await eventually(lambda: converged(group), 20, "two members share the slots")
        leader = group.pop("b1")
        await leader.stop()
        await eventually(
            lambda: group["b2"].ownership.is_leader() and converged(group), 20, "b2 leads"
        )
        assert len(group["b2"].ownership.owned_slots()) == SLOT_COUNT


async def test_a_stale_epoch_is_fenced(etcd_server: EtcdServer) -> None:
    async with members(etcd_server.endpoint, "b1", "b2") as group:
        for member in group.values():
            member.ownership.nudge()
        await eventually(lambda: converged(group), 20, "two members share the slots")
        b2 = group["b2"]
        stale = b2.ownership.fence()
        assert stale is not None
        await b2.store.put_mappings([entry(1, "dc-a")], fence=stale)
        third = Member(etcd_server.endpoint, b2.store.prefix, "b3")
        await third.start()
        group["b3"] = third
        for member in group.values():
            member.ownership.nudge()
        await eventually(lambda: converged(group), 20, "three members share the slots")
        assert b2.ownership.epoch > stale.epoch
        with pytest.raises(FencedError):
            await b2.store.put_mappings([entry(2, "dc-a")], fence=stale)
        assert await b2.store.get_mapping("dc-a", "o-000002") is None
        await b2.store.put_mappings([entry(2, "dc-a")], fence=b2.ownership.fence())
        assert await b2.store.get_mapping("dc-a", "o-000002") is not None


async def test_playback_failure_keeps_slots_pending_until_it_works(
    etcd_server: EtcdServer,
) -> None:
    prefix = unique_prefix()
    store = EtcdStore(etcd_server.endpoint, prefix=prefix, member="b1")
    attempts: list[int] = []

    async def flaky(slots: frozenset[int]) -> None:
        attempts.append(len(slots))
        if len(attempts) == 1:
            raise OSError("registry down")

    ownership = SlotOwnership("b1", store, member_ttl=MEMBER_TTL, playback=flaky)
    await store.open()
    try:
        await ownership.start()
        assert ownership.pending(0) and not ownership.owns(0)
        await eventually(lambda: ownership.owns(0), 10, "playback retried")
        assert attempts == [SLOT_COUNT, SLOT_COUNT]
        assert ownership.stats.errors == {"playback": 1}
    finally:
        await ownership.close()
        await store.close()
