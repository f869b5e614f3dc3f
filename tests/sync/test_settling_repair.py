"""Periodic anti-entropy while a watch stream runs pulls only slots that stay still at the
origin: a slot whose change is on its way down the stream differs too, and pulling it
re-reads its whole service while the stream waits (bench_host: every peer's export
stalled in the first phase after the sync). A repair asked for still pulls every slot
that differs at once, and a slot that never settles is pulled one round later."""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection, Mapping, Sequence
from typing import Any

import pytest

from pysyncer._core import digest as core_digest
from pysyncer.sync.peers import PeerLink

pytestmark = pytest.mark.timeout(30)

STILL, MOVING, AGREED = 11, 22, 33  # slots: diverged and quiet, busy at the origin, equal


class Importer:
    """What a link asks of the importer: this data center's digests, and the slots pulled."""

    def __init__(self) -> None:
        self.needs_repair: set[str] = set()
        self.local = core_digest.SlotDigestTable()
        self.reconciled: list[int] = []
        self.cursors: list[int] = []  # the cursor each reconcile (or the store) was given

    def digest_table(self, origin_dc: str) -> Any:
        return self.local.copy()

    def wants(self, slot: int) -> bool:
        return True

    async def reconcile_slots(
        self, origin_dc: str, slots: Mapping[int, Sequence[Any]], cursor: int, epoch: str
    ) -> None:
        self.reconciled += sorted(slots)
        self.cursors.append(cursor)


class Store:
    def __init__(self, importer: Importer) -> None:
        self.importer = importer

    async def set_cursor(self, dc: str, revision: int, epoch: str) -> None:
        self.importer.cursors.append(revision)


class Origin:
    """The origin's digest table, served as a syncer serves it; the slots pulled."""

    def __init__(self) -> None:
        self.table = core_digest.SlotDigestTable()
        self.revision = 100
        self.pulled: list[int] = []

    async def get_digests(self) -> tuple[int, str, bytes]:
        return self.revision, "e1", self.table.to_bytes()

    async def pull_slots(
        self, slots: Collection[int]
    ) -> AsyncIterator[tuple[int, list[Any], bool]]:
        for slot in slots:
            self.pulled.append(slot)
            yield slot, [], True


def sides() -> tuple[PeerLink, Importer, Origin]:
    importer, origin = Importer(), Origin()
    for slot, digest in ((STILL, 5), (MOVING, 6), (AGREED, 7)):
        origin.table.add(slot, digest)
    importer.local.add(AGREED, 7)  # STILL and MOVING differ
    factory: Any = lambda _syncer: origin  # noqa: E731
    fake_importer: Any = importer
    store: Any = Store(importer)
    link = PeerLink("dc2", lambda: [], fake_importer, store, factory, anti_entropy_interval=60.0)
    return link, importer, origin


async def look(link: PeerLink, origin: Origin, *, streaming: bool = True) -> None:
    await link.repair(origin, "e1", streaming=streaming)  # type: ignore[arg-type]


async def test_a_streaming_round_pulls_only_the_slots_still_at_the_origin() -> None:
    link, importer, origin = sides()
    await look(link, origin)  # the first look pulls nothing
    assert origin.pulled == []
    origin.table.add(MOVING, 99)  # a change of that slot committed meanwhile
    await look(link, origin)  # the second look
    assert origin.pulled == [STILL]
    assert importer.reconciled == [STILL]
    assert link.status.slots_settling == 1


async def test_a_slot_left_moving_is_pulled_by_the_next_round() -> None:
    link, _, origin = sides()
    await look(link, origin)
    origin.table.add(MOVING, 99)
    await look(link, origin)
    origin.pulled.clear()
    await look(link, origin)  # the next round: still moving at its second look
    origin.table.add(MOVING, 98)
    await look(link, origin)
    assert sorted(origin.pulled) == [STILL, MOVING]


async def test_a_repair_asked_for_pulls_every_slot_that_differs_at_once() -> None:
    link, importer, origin = sides()
    importer.needs_repair.add("dc2")
    await look(link, origin, streaming=False)  # asked: the streaming loop says so
    assert sorted(origin.pulled) == [STILL, MOVING]
    assert importer.needs_repair == set()


async def test_a_slot_that_settles_between_the_looks_is_not_pulled() -> None:
    """A change on its way down the stream: applied here before the second look."""
    link, importer, origin = sides()
    await look(link, origin)
    importer.local.add(MOVING, 6)  # the stream delivered it
    await look(link, origin)
    assert origin.pulled == [STILL]
    assert link.status.slots_settling == 0


async def test_a_round_that_leaves_slots_moving_keeps_the_cursor_to_the_stream() -> None:
    """The moving slots' changes are still on their way: the cursor stays where the stream
    applied (a restart replays from there), not at the origin's revision of the digests."""
    link, importer, origin = sides()
    link.status.applied_revision = 60  # the stream applied up to here
    await look(link, origin)
    origin.table.add(MOVING, 99)
    await look(link, origin)
    assert importer.reconciled == [STILL] and importer.cursors == [60]
    assert link.status.applied_revision == 60


async def test_a_round_with_nothing_left_moving_sets_the_origin_revision() -> None:
    link, importer, origin = sides()
    link.status.applied_revision = 60
    importer.local.add(STILL, 5)
    importer.local.add(MOVING, 6)  # all equal: nothing differs
    await look(link, origin)
    assert importer.cursors == [origin.revision] and origin.pulled == []
