"""Slot-table arithmetic: who owns which of the 16384 hash slots, moving as few as possible.

Owns the pure rule that turns (current owners, live members) into the next slot table:
every slot gets exactly one live owner, members hold ``floor`` or ``ceil`` of
16384 / members slots, and a slot only moves when its owner left or holds more than
its share. Every member computing it from the same inputs gets the same table; the
leader writes it to the store with a new epoch. No I/O, no clocks.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from pysyncer.store.base import SLOT_COUNT

__all__ = ["UNASSIGNED", "moved_slots", "rebalance", "shares", "slots_of"]

UNASSIGNED = ""


def shares(members: Sequence[str], current: dict[str, int]) -> dict[str, int]:
    """How many slots each member should hold: ``floor`` or ``ceil`` of the even split.

    The ``ceil`` shares go to the members already holding the most slots (ties broken
    by name), so a stable membership keeps its table exactly.
    """
    count = len(members)
    base, extra = divmod(SLOT_COUNT, count)
    ranked = sorted(members, key=lambda m: (-current.get(m, 0), m))
    return {member: base + (1 if rank < extra else 0) for rank, member in enumerate(ranked)}


def rebalance(owners: Sequence[str], members: Iterable[str]) -> tuple[str, ...]:
    """The next slot table for ``members`` starting from ``owners`` (one name per slot).

    Slots of members that are gone (or unassigned) are handed out first; members over
    their share give up their highest slots. With no members every slot is unassigned.
    """
    if len(owners) != SLOT_COUNT:
        raise ValueError(f"a slot table has {SLOT_COUNT} entries, not {len(owners)}")
    live = sorted(set(members) - {UNASSIGNED})
    if not live:
        return (UNASSIGNED,) * SLOT_COUNT
    live_set = set(live)
    held: dict[str, list[int]] = {member: [] for member in live}
    free: list[int] = []
    for slot, owner in enumerate(owners):
        if owner in live_set:
            held[owner].append(slot)
        else:
            free.append(slot)
    target = shares(live, {member: len(slots) for member, slots in held.items()})
    for member in live:
        surplus = len(held[member]) - target[member]
        if surplus > 0:
            free.extend(held[member][-surplus:])
            del held[member][-surplus:]
    free.sort()
    table = list(owners)
    position = 0
    for member in live:
        need = target[member] - len(held[member])
        for slot in free[position : position + need]:
            table[slot] = member
        position += need
    return tuple(table)


def moved_slots(before: Sequence[str], after: Sequence[str]) -> list[int]:
    """Slots whose owner differs between two tables."""
    return [slot for slot, (a, b) in enumerate(zip(before, after, strict=True)) if a != b]


def slots_of(owners: Sequence[str], member: str) -> frozenset[int]:
    """The slots ``member`` owns in a table."""
    return frozenset(slot for slot, owner in enumerate(owners) if owner == member)
