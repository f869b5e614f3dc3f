"""The importer applies the batches waiting for its lock together: one store transaction
for several origins' batches, each caller answered with its own batch's outcome."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from pysyncer.adapters.base import AdapterError, LocalRef
from pysyncer.model import ORIGIN_DC_PROPERTY, ORIGIN_ID_PROPERTY, Instance, Record
from pysyncer.store.base import CursorBatch, StoreError
from tests.sync.test_sync_units import Side, make_side, remote_record, tombstone

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def side(tmp_path: Path) -> AsyncIterator[Side]:
    made = await make_side(tmp_path, "dc1")
    yield made
    await made.close()


class Gate:
    """The adapter's register_many, held at chosen origins' copies until opened."""

    def __init__(self, side: Side, *origins: str) -> None:
        self.origins = set(origins)
        self.opened = asyncio.Event()
        self.reached = asyncio.Event()
        self._register_many = side.adapter.register_many
        side.adapter.register_many = self  # type: ignore[method-assign]

    async def __call__(self, instances: Sequence[Instance]) -> list[LocalRef | AdapterError]:
        if {i.properties[ORIGIN_DC_PROPERTY] for i in instances} & self.origins:
            self.reached.set()
            await self.opened.wait()
        return await self._register_many(instances)


class Commits:
    """Every store.apply_batches call's batches (origin, cursor)."""

    def __init__(self, side: Side, fail: Exception | None = None) -> None:
        self.calls: list[list[tuple[str, int]]] = []
        self._fail = fail
        self._apply_batches = side.store.apply_batches
        side.store.apply_batches = self  # type: ignore[method-assign]

    async def __call__(self, batches: Sequence[CursorBatch], **kwargs: Any) -> None:
        self.calls.append([(batch.peer_dc, batch.cursor) for batch in batches])
        if self._fail is not None:
            raise self._fail
        await self._apply_batches(batches, **kwargs)


def record(origin: str, n: int) -> Record:
    return remote_record(origin, f"{origin}-i{n}", f"h{n}", n)


async def cursors(side: Side) -> dict[str, int]:
    return {cursor.peer_dc: cursor.revision for cursor in await side.store.list_cursors()}


async def held(side: Side) -> set[str]:
    return {copy.properties[ORIGIN_ID_PROPERTY] for copy in await side.copies()}


async def started(*calls: Any) -> list[asyncio.Task[None]]:
    tasks = [asyncio.ensure_future(call) for call in calls]
    await asyncio.sleep(0.01)  # each has made its batch and waits for the lock
    return tasks


async def test_batches_of_several_origins_waiting_commit_in_one_transaction(
    side: Side,
) -> None:
    gate, commits = Gate(side, "dc5"), Commits(side)
    importer = side.importer
    (first,) = await started(importer.apply("dc5", [record("dc5", 1)], 1, "e"))
    await gate.reached.wait()
    waiting = await started(
        importer.apply("dc2", [record("dc2", 1), record("dc2", 2)], 2, "e"),
        importer.apply("dc3", [record("dc3", 1)], 7, "e"),
        importer.apply("dc4", [record("dc4", 1)], 9, None),
    )
    gate.opened.set()
    await asyncio.gather(first, *waiting)
    assert commits.calls == [[("dc5", 1)], [("dc2", 2), ("dc3", 7), ("dc4", 9)]]
    assert await cursors(side) == {"dc5": 1, "dc2": 2, "dc3": 7, "dc4": 9}
    assert await held(side) == {"dc5-i1", "dc2-i1", "dc2-i2", "dc3-i1", "dc4-i1"}
    assert importer.copies_by_origin() == {"dc5": 1, "dc2": 2, "dc3": 1, "dc4": 1}
    assert importer.stats.applied == 5


async def test_two_batches_of_one_origin_are_not_applied_together(side: Side) -> None:
    """The second batch deletes what the first registers: it must find it held."""
    gate, commits = Gate(side, "dc5"), Commits(side)
    importer = side.importer
    (first,) = await started(importer.apply("dc5", [record("dc5", 1)], 1, "e"))
    await gate.reached.wait()
    waiting = await started(
        importer.apply("dc2", [record("dc2", 1)], 1, "e"),
        importer.apply("dc2", [tombstone("dc2", "dc2-i1", 2)], 2, "e"),
        importer.apply("dc3", [record("dc3", 1)], 1, "e"),
    )
    gate.opened.set()
    await asyncio.gather(first, *waiting)
    assert commits.calls == [[("dc5", 1)], [("dc2", 1)], [("dc2", 2), ("dc3", 1)]]
    assert await held(side) == {"dc5-i1", "dc3-i1"}
    assert await side.store.get_mapping("dc2", "dc2-i1") is None
    assert await cursors(side) == {"dc5": 1, "dc2": 2, "dc3": 1}


async def test_a_batch_whose_registry_writes_fail_fails_alone(side: Side) -> None:
    gate, commits = Gate(side, "dc5"), Commits(side)
    register_many = gate.__call__

    async def refusing(instances: Sequence[Instance]) -> list[LocalRef | AdapterError]:
        if any(i.properties[ORIGIN_DC_PROPERTY] == "dc3" for i in instances):
            raise AdapterError("registry refused dc3")
        return await register_many(instances)

    side.adapter.register_many = refusing  # type: ignore[method-assign]
    importer = side.importer
    (first,) = await started(importer.apply("dc5", [record("dc5", 1)], 1, "e"))
    await gate.reached.wait()
    fine, refused, also_fine = await started(
        importer.apply("dc2", [record("dc2", 1)], 2, "e"),
        importer.apply("dc3", [record("dc3", 1)], 3, "e"),
        importer.apply("dc4", [record("dc4", 1)], 4, "e"),
    )
    gate.opened.set()
    await asyncio.gather(first, fine, also_fine)
    with pytest.raises(AdapterError, match="refused dc3"):
        await refused
    assert commits.calls == [[("dc5", 1)], [("dc2", 2), ("dc4", 4)]]
    assert await cursors(side) == {"dc5": 1, "dc2": 2, "dc4": 4}
    assert importer.copies_by_origin() == {"dc5": 1, "dc2": 1, "dc4": 1}


async def test_a_failed_commit_fails_every_batch_of_its_group(side: Side) -> None:
    gate = Gate(side, "dc5")
    importer = side.importer
    (first,) = await started(importer.apply("dc5", [record("dc5", 1)], 1, "e"))
    await gate.reached.wait()
    commits = Commits(side, fail=StoreError("disk gone"))
    waiting = await started(
        importer.apply("dc2", [record("dc2", 1)], 2, "e"),
        importer.apply("dc3", [record("dc3", 1)], 3, "e"),
    )
    gate.opened.set()
    outcomes = await asyncio.gather(first, *waiting, return_exceptions=True)
    assert all(isinstance(outcome, StoreError) for outcome in outcomes)
    assert commits.calls == [[("dc5", 1)], [("dc2", 2), ("dc3", 3)]]
    assert await cursors(side) == {}
    assert importer.copies_by_origin() == {}  # in the registry, not held: replayed later


async def test_a_cancelled_applier_leaves_the_others_batches_to_their_callers(
    side: Side,
) -> None:
    """The caller applying a group is cancelled mid-way: the batches it had taken and not
    finished are applied by their own callers."""
    gate = Gate(side, "dc5", "dc2")
    importer = side.importer
    (first,) = await started(importer.apply("dc5", [record("dc5", 1)], 1, "e"))
    await gate.reached.wait()
    applier, other = await started(
        importer.apply("dc2", [record("dc2", 1)], 2, "e"),
        importer.apply("dc3", [record("dc3", 1)], 3, "e"),
    )
    release_dc5 = gate.opened
    gate.opened, gate.reached = asyncio.Event(), asyncio.Event()
    gate.origins = {"dc2"}  # the dc5 batch goes through; the group of dc2 and dc3 waits
    release_dc5.set()
    await first
    await gate.reached.wait()  # the dc2 caller applies dc2 and dc3 together, held at dc2
    applier.cancel()
    await asyncio.gather(applier, return_exceptions=True)
    await asyncio.wait_for(other, 5)
    assert applier.cancelled()
    assert await cursors(side) == {"dc5": 1, "dc3": 3}
    assert importer.copies_by_origin() == {"dc5": 1, "dc3": 1}
