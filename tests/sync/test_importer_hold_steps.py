"""After a commit the importer holds its copies in the index HOLD_STEP at a time, letting
the event loop run in between, and a cancellation between two steps still holds every
committed copy (the registry and the store have them: the index must too). Before the
commit it builds the mapping entries HOLD_STEP at a time too."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from pysyncer.model import Record
from pysyncer.store.base import MappingEntry
from pysyncer.sync import importer as importer_module
from pysyncer.sync.copies import PendingCopy
from tests.sync.test_sync_units import Side, make_side, remote_record

pytestmark = pytest.mark.timeout(60)
STEP = 50
COPIES = 5 * STEP + 7


@pytest.fixture
async def side(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Side]:
    monkeypatch.setattr(importer_module, "HOLD_STEP", STEP)
    made = await make_side(tmp_path, "dc1")
    yield made
    await made.close()


def records() -> list[Record]:
    return [remote_record("dc2", f"r{n}", f"h{n}", n + 1) for n in range(COPIES)]


class IndexWatch:
    """How many copies the index held at each turn of the loop another task got."""

    def __init__(self, side: Side) -> None:
        self.seen: list[int] = []
        self._index = side.importer.index
        self._task = asyncio.ensure_future(self._watch())

    async def _watch(self) -> None:
        while True:
            self.seen.append(len(self._index))
            await asyncio.sleep(0)

    def stop(self) -> None:
        self._task.cancel()


async def test_the_loop_runs_between_steps_of_a_large_hold(side: Side) -> None:
    watch = IndexWatch(side)
    await side.importer.apply("dc2", records(), COPIES, "e")
    watch.stop()
    assert len(side.importer.index) == COPIES
    partial = sorted({n for n in watch.seen if 0 < n < COPIES})
    assert partial, "the index filled in one turn of the loop"
    assert all(n % STEP == 0 for n in partial)  # whole steps between two turns
    assert len(await side.copies()) == COPIES


async def test_a_cancellation_between_steps_holds_every_committed_copy(side: Side) -> None:
    index = side.importer.index
    applying = asyncio.ensure_future(side.importer.apply("dc2", records(), COPIES, "e"))
    while not 0 < len(index) < COPIES:  # the commit is done, the hold has begun
        await asyncio.sleep(0)
        assert not applying.done()
    applying.cancel()
    with pytest.raises(asyncio.CancelledError):
        await applying
    assert len(index) == COPIES
    assert {c.key_hash for c in records()} == set(index.key_hashes())
    assert len(await side.copies()) == COPIES
    # the lock is free again: the next apply goes through
    await side.importer.apply(
        "dc2", [remote_record("dc2", "late", "h", COPIES + 1)], COPIES + 1, "e"
    )
    assert len(index) == COPIES + 1


async def test_the_loop_runs_between_steps_of_the_mapping_entries(
    side: Side, monkeypatch: pytest.MonkeyPatch
) -> None:
    built: list[int] = [0]
    entry = PendingCopy.entry

    def counted(self: PendingCopy, now: float) -> MappingEntry:
        built[0] += 1
        return entry(self, now)

    monkeypatch.setattr(PendingCopy, "entry", counted)
    seen: list[int] = []

    async def watch() -> None:
        while True:
            seen.append(built[0])
            await asyncio.sleep(0)

    watching = asyncio.ensure_future(watch())
    await side.importer.apply("dc2", records(), COPIES, "e")
    watching.cancel()
    assert built[0] == COPIES
    partial = sorted({n for n in seen if 0 < n < COPIES})
    assert partial, "every entry was built in one turn of the loop"
    assert all(n % STEP == 0 for n in partial)  # whole steps between two turns
    assert len(await side.copies()) == COPIES


async def test_the_collection_before_a_freeze_gets_a_turn_of_its_own(
    side: Side, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The young generations' collection (before each freeze) and the hold step that made
    it due ran in one turn: 65 ms on a slow host at 1,000,000 copies. Another task must
    run between the two: it sees the index as the step left it before the collection."""
    monkeypatch.setattr(importer_module, "FREEZE_EVERY", STEP)
    index = side.importer.index
    seen: set[int] = set()  # the index's sizes another task saw
    looked_before: list[bool] = []  # per collection: that task saw the index as it is

    class Collector:
        @staticmethod
        def collect(generation: int) -> int:
            looked_before.append(len(index) in seen)
            return 0

        @staticmethod
        def freeze() -> None:
            pass

    async def look() -> None:
        while True:
            seen.add(len(index))
            await asyncio.sleep(0)

    monkeypatch.setattr(importer_module, "gc", Collector)
    looking = asyncio.ensure_future(look())
    await side.importer.apply("dc2", records(), COPIES, "e")
    looking.cancel()
    assert len(looked_before) == COPIES // STEP  # one per step of STEP copies
    assert all(looked_before), looked_before
