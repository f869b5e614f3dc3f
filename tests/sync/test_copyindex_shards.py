"""CopyIndex splits its copies into SHARDS dicts by the key hash's top bits: lookups,
counts and renewal marks answer as for one dict, and a shard's lost mark costs only that
shard a full round."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from pysyncer.adapters.base import LocalRef
from pysyncer.model import ServiceKey
from pysyncer.sync.copyindex import SHARDS, CopyIndex

SERVICE = ServiceKey("shop", "cart", "1.0.0")
SHARD_SHIFT = 64 - (SHARDS.bit_length() - 1)


def _hold(index: CopyIndex, key_hash: int, generation: int = -1) -> int:
    ref = LocalRef("svc", f"px{key_hash:016x}")
    index.add(key_hash, "dc2", SERVICE, 5, key_hash | 1, ref, generation)
    return key_hash


def _spread(count: int, seed: int = 7) -> list[int]:
    rng = random.Random(seed)
    keys: dict[int, None] = {}
    while len(keys) < count:
        keys[rng.getrandbits(64)] = None
    return list(keys)


def test_copies_spread_over_the_shards_answer_as_one_index() -> None:
    index = CopyIndex()
    keys = [_hold(index, key) for key in _spread(2_000)]
    assert len({key >> SHARD_SHIFT for key in keys}) == SHARDS
    assert len(index) == 2_000
    assert sorted(index.key_hashes()) == sorted(keys)
    assert all(key in index and index.digest(key) == key | 1 for key in keys)
    assert f"px{keys[0]:016x}" in index.local_ids
    assert len(index.local_ids) == 2_000
    assert -1 not in index and (1 << 64) not in index and "x" not in index
    for key in keys[:500]:
        index.remove(key)
    assert len(index) == 1_500 and keys[0] not in index
    assert sum(index.counts().values()) == 1_500


def test_every_shard_skips_its_copies_written_since_the_round_began() -> None:
    index = CopyIndex()
    old = {_hold(index, key) for key in _spread(1_000, seed=1)}
    assert set(index.mark()) == old
    new = {_hold(index, key, index.generation) for key in _spread(1_000, seed=2)}
    assert set(index.mark()) == old
    assert set(index.mark()) == old | new


def test_a_lost_mark_renews_only_its_own_shard_in_full() -> None:
    index = CopyIndex()
    old = [_hold(index, key) for key in _spread(1_000, seed=3)]
    index.mark()
    newest_of_shard_0 = [key for key in old if key >> SHARD_SHIFT == 0][-1]
    _hold(index, newest_of_shard_0, index.generation)  # the shard's mark rewritten
    new = [_hold(index, key, index.generation) for key in _spread(1_000, seed=4)]
    renewed = set(index.mark())
    in_shard_0 = {key for key in [*old, *new] if key >> SHARD_SHIFT == 0}
    assert renewed == (set(old) - {newest_of_shard_0}) | in_shard_0


keys_ = st.integers(min_value=0, max_value=(1 << 64) - 1)
operations = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.sampled_from(range(40)), st.booleans()),
        st.tuples(st.just("remove"), st.sampled_from(range(40)), st.just(False)),
        st.tuples(st.just("mark"), st.just(0), st.just(False)),
    ),
    max_size=120,
)


@given(st.lists(keys_, min_size=40, max_size=40, unique=True), operations)
def test_a_round_renews_every_copy_whose_lease_predates_it(
    pool: list[int], steps: list[tuple[str, int, bool]]
) -> None:
    """Whatever the writes, removals and rounds, a round renews only copies held, and
    every copy whose lease was not set since the previous round began."""
    index = CopyIndex()
    leased_in: dict[int, int] = {}  # key -> generation its lease was set in (-1: unknown)
    for operation, which, current in steps:
        key = pool[which]
        if operation == "add":
            generation = index.generation if current else -1
            _hold(index, key, generation)
            leased_in[key] = generation
        elif operation == "remove":
            index.remove(key)
            leased_in.pop(key, None)
        else:
            generation = index.generation
            renewed = list(index.mark())
            assert len(renewed) == len(set(renewed))
            assert set(renewed) <= set(leased_in)
            due = {key for key, leased in leased_in.items() if leased != generation}
            assert due <= set(renewed)
            for key in renewed:
                leased_in[key] = index.generation
    assert len(index) == len(leased_in)


def test_a_round_lists_the_copies_still_held_as_it_walks_them() -> None:
    """A round's keys are listed a shard at a time as it walks them: a copy removed
    meanwhile is left out, one written meanwhile too (its lease is fresh); the split
    itself is the one at the round's start."""
    index = CopyIndex()
    old = [_hold(index, key) for key in _spread(500, seed=5)]
    index.mark()
    mid = [_hold(index, key, index.generation) for key in _spread(500, seed=6)]
    keys = index.mark()
    index.remove(old[0])
    late = [_hold(index, key, index.generation) for key in _spread(500, seed=7)]
    assert sorted(keys) == sorted(old[1:])
    assert set(index.mark()) == set(old[1:]) | set(mid)
    assert set(index.mark()) == set(old[1:]) | set(mid) | set(late)


def test_a_round_whose_boundary_copy_goes_meanwhile_renews_that_shard_whole() -> None:
    index = CopyIndex()
    old = [_hold(index, key) for key in _spread(1_000, seed=8)]
    index.mark()
    new = [_hold(index, key, index.generation) for key in _spread(1_000, seed=9)]
    keys = index.mark()
    boundary = [key for key in old if key >> SHARD_SHIFT == 0][-1]
    index.remove(boundary)
    in_shard_0 = {key for key in old + new if key >> SHARD_SHIFT == 0} - {boundary}
    assert set(keys) == (set(old) - {boundary}) | in_shard_0
