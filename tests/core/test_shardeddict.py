"""ShardedDict answers as a dict does, spreads str and tuple keys over every shard, and no
insert grows a table of the whole mapping's size."""

from __future__ import annotations

import resource

from hypothesis import given
from hypothesis import strategies as st

from pysyncer.shardeddict import SHARDS, ShardedDict

keys = st.one_of(st.text(max_size=8), st.tuples(st.text(max_size=4), st.integers()))
steps = st.lists(
    st.tuples(st.sampled_from(["set", "del", "pop", "get"]), keys, st.integers()), max_size=80
)


@given(steps)
def test_it_answers_as_a_dict_does(operations: list[tuple[str, object, int]]) -> None:
    plain: dict[object, int] = {}
    sharded: ShardedDict[object, int] = ShardedDict()
    for operation, key, value in operations:
        if operation == "set":
            plain[key] = sharded[key] = value
        elif operation == "del" and key in plain:
            del plain[key]
            del sharded[key]
        elif operation == "pop":
            assert sharded.pop(key, None) == plain.pop(key, None)
        assert sharded.get(key) == plain.get(key)
        assert sharded.get(key, -1) == plain.get(key, -1)
        assert (key in sharded) == (key in plain)
    assert len(sharded) == len(plain)
    assert sorted(map(repr, sharded)) == sorted(map(repr, plain))
    assert dict(sharded.items()) == plain
    sharded.clear()
    assert len(sharded) == 0 and not list(sharded)


def test_missing_keys_raise_key_error() -> None:
    sharded: ShardedDict[str, int] = ShardedDict()
    for action in (lambda: sharded["x"], lambda: sharded.__delitem__("x")):
        try:
            action()
        except KeyError:
            continue
        raise AssertionError("no KeyError")


def test_keys_spread_over_every_shard() -> None:
    sharded: ShardedDict[tuple[str, str], int] = ShardedDict()
    for n in range(64_000):
        sharded[("dc2", f"service-{n}")] = n
    sizes = [len(shard) for shard in sharded._shards]
    assert len(sizes) == SHARDS
    assert min(sizes) > 1_000 / 2 and max(sizes) < 1_000 * 2


def test_no_insert_touches_a_table_of_the_whole_size() -> None:
    """A plain dict of 200,000 str keys touches ~1,900 new pages when it grows past
    174,762 keys; the sharded one never more than a few hundred in one insert."""
    sharded: ShardedDict[str, int] = ShardedDict()
    worst = 0
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for n in range(200_000):
        sharded[f"id-{n}"] = n
        now = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        worst, before = max(worst, now - before), now
    assert worst < 500
