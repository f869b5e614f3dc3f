"""A PullSlots answer reads the store one part ahead: the next part's read runs while this
part's slots go out (the importing side waited on the origin's reads between two parts),
never more than one part ahead, and a pull stopped early leaves no read behind."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest

from pysyncer.sync.exporter import SLOTS_PER_READ, Exporter

pytestmark = pytest.mark.timeout(30)


class Slotted:
    """A record as ``slot_records`` sees it: its slot."""

    def __init__(self, slot: int) -> None:
        self.slot = slot


class Store:
    """The store's exported records, one per slot; each read takes a few turns."""

    def __init__(self) -> None:
        self.started: list[int] = []  # the first slot of each read, as it starts
        self.cancelled: list[int] = []

    async def exported_records(self, slots: Sequence[int]) -> list[Any]:
        self.started.append(slots[0])
        try:
            for _ in range(3):
                await asyncio.sleep(0)
        except asyncio.CancelledError:
            self.cancelled.append(slots[0])
            raise
        return [Slotted(slot) for slot in slots]


def exporter_with(store: Store) -> Exporter:
    fake: Any = store
    return Exporter("dc1", "n1", fake, fake, change_log_size=10)


async def test_the_next_part_is_read_while_this_one_goes_out() -> None:
    store = Store()
    slots = list(range(3 * SLOTS_PER_READ))
    got: list[int] = []
    parts_started_at: list[int] = []
    async for slot, records in exporter_with(store).slot_records(slots):
        assert [record.slot for record in records] == [slot]
        got.append(slot)
        parts_started_at.append(len(store.started))
        await asyncio.sleep(0)  # sending it
    assert got == slots  # every slot once, in order
    part = SLOTS_PER_READ
    # Before the last slot of the first part went out, the second part's read had begun.
    assert parts_started_at[part - 1] == 2
    # Never more than one part ahead of what goes out.
    for sent, started in enumerate(parts_started_at):
        assert started <= sent // part + 2
    assert store.started == [0, part, 2 * part]


async def test_a_pull_stopped_early_cancels_the_read_ahead() -> None:
    store = Store()
    pulling: Any = exporter_with(store).slot_records(list(range(3 * SLOTS_PER_READ)))
    async for _ in pulling:
        await asyncio.sleep(0)  # the read ahead starts
        break
    await pulling.aclose()
    await asyncio.sleep(0)
    assert store.started == [0, SLOTS_PER_READ]
    assert store.cancelled == [SLOTS_PER_READ]
