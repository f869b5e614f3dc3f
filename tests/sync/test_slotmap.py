"""Slot-table rule: exactly one live owner per slot, even shares, minimal moves."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pysyncer.store.base import SLOT_COUNT
from pysyncer.sync.slotmap import UNASSIGNED, moved_slots, rebalance, shares, slots_of

EMPTY = (UNASSIGNED,) * SLOT_COUNT


def table_for(*members: str) -> tuple[str, ...]:
    return rebalance(EMPTY, members)


@pytest.mark.parametrize(
    ("members", "expected"),
    [
        (["a"], {"a": 16384}),
        (["a", "b"], {"a": 8192, "b": 8192}),
        (["a", "b", "c"], {"a": 5462, "b": 5461, "c": 5461}),
        (["c", "b", "a"], {"a": 5462, "b": 5461, "c": 5461}),
        (["a", "b", "c", "d", "e"], {"a": 3277, "b": 3277, "c": 3277, "d": 3277, "e": 3276}),
    ],
)
def test_even_shares_from_an_empty_table(members: list[str], expected: dict[str, int]) -> None:
    assert Counter(table_for(*members)) == expected


def test_first_table_is_contiguous_ranges_in_name_order() -> None:
    table = table_for("b", "a")
    assert slots_of(table, "a") == frozenset(range(0, 8192))
    assert slots_of(table, "b") == frozenset(range(8192, 16384))


@pytest.mark.parametrize(
    ("before", "after", "moves"),
    [
        # (members before, members after, slots that must move)
        (["a", "b", "c"], ["a", "b", "c"], 0),
        (["a", "b", "c"], ["a", "b"], 5461),  # c's share is handed out, nothing else
        (["a", "b"], ["a", "b", "c"], 5461),  # c takes exactly its share
        (["a", "b", "c"], ["a", "b", "d"], 5461),  # replacing a member moves one share
        (["a"], ["a", "b"], 8192),
        (["a", "b"], [], 16384),
        ([], ["a"], 16384),
    ],
)
def test_membership_changes_move_only_what_they_must(
    before: list[str], after: list[str], moves: int
) -> None:
    old = table_for(*before)
    new = rebalance(old, after)
    assert len(moved_slots(old, new)) == moves
    if after:
        assert set(new) == set(after)
    else:
        assert set(new) == {UNASSIGNED}


def test_ceil_shares_stay_with_members_already_holding_them() -> None:
    assert shares(["a", "b", "c"], {"c": 5462, "a": 5461, "b": 5461}) == {
        "c": 5462,
        "a": 5461,
        "b": 5461,
    }


def test_a_stable_membership_keeps_its_table_exactly() -> None:
    table = rebalance(table_for("a", "b"), ["a", "b", "c"])
    assert rebalance(table, ["c", "a", "b"]) == table


def test_bad_table_length() -> None:
    with pytest.raises(ValueError, match="16384"):
        rebalance(("a",) * 10, ["a"])


names = st.sets(st.sampled_from("abcdefgh"), max_size=6)


@settings(max_examples=40, deadline=None)
@given(first=names, second=names)
def test_properties(first: set[str], second: set[str]) -> None:
    old = table_for(*first)
    new = rebalance(old, second)
    if not second:
        assert set(new) == {UNASSIGNED}
        return
    counts = Counter(new)
    assert set(counts) == second  # every slot has a live owner
    assert max(counts.values()) - min(counts.values()) <= 1
    # a slot whose owner stays live and is not over its share never moves
    lower = SLOT_COUNT // len(second)
    kept = Counter(o for o, n in zip(old, new, strict=True) if o == n)
    for member in second & first:
        assert kept[member] >= min(Counter(old)[member], lower)
