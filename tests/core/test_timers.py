"""pysyncer._core timers: the TimerQueue of the failure detector, compiled and twin.

Every behaviour test runs against both implementations (the ``timers`` fixture). The
property tests drive both with the same random operations and compare them with each
other and with :class:`Oracle`, a dict sorted on demand.
"""

from __future__ import annotations

import contextlib
import gc
import math
import random
import sys
import weakref
from collections.abc import Hashable
from types import ModuleType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import load_core_module

FAST = settings(max_examples=300, deadline=None)


@pytest.fixture(params=["py", "c"], ids=["py", "c"], scope="module")
def timers(request: pytest.FixtureRequest) -> ModuleType:
    """The timers module, once per implementation."""
    return load_core_module("timers", request.param)


class Oracle:
    """The specification: a dict key -> (deadline, stamp), sorted when popping."""

    def __init__(self) -> None:
        self.entries: dict[Hashable, tuple[float, int]] = {}
        self.stamp = 0

    def schedule(self, key: Hashable, deadline: float) -> None:
        self.stamp += 1
        self.entries[key] = (float(deadline), self.stamp)

    def cancel(self, key: Hashable) -> bool:
        return self.entries.pop(key, None) is not None

    def deadline_of(self, key: Hashable) -> float | None:
        entry = self.entries.get(key)
        return None if entry is None else entry[0]

    def pop_due(self, now: float, limit: int | None = None) -> list[Hashable]:
        due = sorted((e, k) for k, e in self.entries.items() if e[0] <= now)
        due = due[:limit] if limit is not None else due
        for _, key in due:
            del self.entries[key]
        return [key for _, key in due]

    def next_deadline(self) -> float | None:
        return min((e[0] for e in self.entries.values()), default=None)

    def clear(self) -> None:
        self.entries.clear()

    def __len__(self) -> int:
        return len(self.entries)

    def __contains__(self, key: Hashable) -> bool:
        return key in self.entries


# --- behaviour -----------------------------------------------------------------------


def test_empty(timers: ModuleType) -> None:
    queue = timers.TimerQueue()
    assert len(queue) == 0
    assert queue.next_deadline() is None
    assert queue.pop_due(math.inf) == []
    assert queue.deadline_of("a") is None
    assert "a" not in queue
    assert queue.cancel("a") is False


def test_pops_due_keys_in_deadline_order(timers: ModuleType) -> None:
    queue = timers.TimerQueue()
    for key, deadline in [("c", 3.0), ("a", 1.0), ("d", 4.0), ("b", 2.0)]:
        queue.schedule(key, deadline)
    assert len(queue) == 4
    assert queue.next_deadline() == 1.0
    assert queue.pop_due(0.5) == []
    assert queue.pop_due(2.0) == ["a", "b"]  # deadline == now is due
    assert queue.next_deadline() == 3.0
    assert queue.pop_due(10.0) == ["c", "d"]
    assert len(queue) == 0


def test_ties_pop_in_scheduling_order(timers: ModuleType) -> None:
    queue = timers.TimerQueue()
    for key in ["x", "y", "z", "w"]:
        queue.schedule(key, 5.0)
    queue.schedule("y", 5.0)  # re-scheduling stamps again: y goes last among equals
    queue.schedule("v", 4.0)
    assert queue.pop_due(5.0) == ["v", "x", "z", "w", "y"]


def test_reschedule_replaces_the_deadline(timers: ModuleType) -> None:
    queue = timers.TimerQueue()
    queue.schedule("a", 1.0)
    queue.schedule("b", 2.0)
    queue.schedule("a", 3.0)
    assert len(queue) == 2
    assert queue.deadline_of("a") == 3.0
    assert queue.pop_due(2.5) == ["b"]
    queue.schedule("a", 0.5)  # earlier again
    assert queue.next_deadline() == 0.5
    assert queue.pop_due(2.5) == ["a"]


def test_cancel(timers: ModuleType) -> None:
    queue = timers.TimerQueue()
    for i in range(10):
        queue.schedule(i, float(i))
    assert queue.cancel(0) is True
    assert queue.cancel(0) is False
    assert queue.cancel(5) is True
    assert 5 not in queue and 6 in queue
    assert queue.next_deadline() == 1.0
    assert queue.pop_due(100.0) == [1, 2, 3, 4, 6, 7, 8, 9]


def test_limit(timers: ModuleType) -> None:
    queue = timers.TimerQueue()
    for i in range(5):
        queue.schedule(i, 1.0)
    assert queue.pop_due(1.0, 0) == []
    assert queue.pop_due(1.0, 2) == [0, 1]
    assert queue.pop_due(1.0, limit=10) == [2, 3, 4]
    with pytest.raises(ValueError):
        queue.pop_due(1.0, -1)


def test_deadline_types(timers: ModuleType) -> None:
    queue = timers.TimerQueue()
    queue.schedule("int", 3)
    assert type(queue.deadline_of("int")) is float
    queue.schedule("inf", math.inf)
    queue.schedule("-inf", -math.inf)
    assert queue.next_deadline() == -math.inf
    assert queue.pop_due(1e308) == ["-inf", "int"]
    with pytest.raises(ValueError):
        queue.schedule("nan", math.nan)
    for bad in ["1.5", b"1", None, object()]:
        with pytest.raises(TypeError):
            queue.schedule("bad", bad)
    assert queue.pop_due(math.inf) == ["inf"]
    assert len(queue) == 0


def test_unhashable_key_leaves_the_queue_unchanged(timers: ModuleType) -> None:
    queue = timers.TimerQueue()
    queue.schedule("a", 1.0)
    with pytest.raises(TypeError):
        queue.schedule(["list"], 1.0)
    with pytest.raises(TypeError):
        queue.cancel(["list"])
    with pytest.raises(TypeError):
        queue.deadline_of({})
    assert len(queue) == 1
    assert queue.pop_due(2.0) == ["a"]


def test_keys_are_compared_by_equality(timers: ModuleType) -> None:
    queue = timers.TimerQueue()
    queue.schedule(1, 5.0)
    queue.schedule(1.0, 2.0)  # equal to 1: re-schedules it, keeps the first key object
    queue.schedule(("suspect", "n1"), 3.0)
    assert len(queue) == 2
    assert ("suspect", "n1") in queue
    popped = queue.pop_due(10.0)
    assert popped == [1, ("suspect", "n1")]
    assert type(popped[0]) is int


def test_clear_and_reuse(timers: ModuleType) -> None:
    queue = timers.TimerQueue()
    for i in range(100):
        queue.schedule(i, float(-i))
    queue.clear()
    assert len(queue) == 0 and queue.next_deadline() is None and 3 not in queue
    for i in range(50):
        queue.schedule(i, float(i % 7))
    expected = sorted(range(50), key=lambda i: (i % 7, i))
    assert queue.pop_due(10.0) == expected


def test_many_timers_pop_sorted(timers: ModuleType) -> None:
    rng = random.Random(7)
    queue = timers.TimerQueue()
    deadlines = {f"node-{i}": rng.uniform(0.0, 1000.0) for i in range(20_000)}
    for key, deadline in deadlines.items():
        queue.schedule(key, deadline)
    cancelled = set(rng.sample(sorted(deadlines), 5_000))
    for key in cancelled:
        assert queue.cancel(key)
    out: list[str] = []
    for now in range(0, 1001, 10):
        out += queue.pop_due(float(now), limit=rng.choice([None, 50]))
    out += queue.pop_due(math.inf)
    live = [k for k in deadlines if k not in cancelled]
    assert out == sorted(live, key=lambda k: deadlines[k])


def test_subscriptable_like_a_generic(timers: ModuleType) -> None:
    queue = timers.TimerQueue[str]()
    queue.schedule("a", 1.0)
    assert queue.pop_due(1.0) == ["a"]


def test_repr(timers: ModuleType) -> None:
    queue = timers.TimerQueue()
    queue.schedule("a", 1.0)
    assert "1 timers" in repr(queue)


def test_cycles_through_keys_are_collected(timers: ModuleType) -> None:
    class Member:
        def __init__(self, queue: Any) -> None:
            self.queue = queue

    queue = timers.TimerQueue()
    member = Member(queue)
    queue.schedule(member, 1.0)
    ref = weakref.ref(member)
    del queue, member
    gc.collect()
    assert ref() is None


def test_compiled_keeps_no_extra_references() -> None:
    compiled = load_core_module("timers", "c")
    key = "refcount-probe-" + str(random.random())
    base = sys.getrefcount(key)
    queue = compiled.TimerQueue()
    for deadline in (1.0, 2.0, 0.5):
        queue.schedule(key, deadline)
    assert sys.getrefcount(key) == base + 1  # the queue's one reference
    assert queue.pop_due(1.0) == [key]
    assert sys.getrefcount(key) == base
    queue.schedule(key, 1.0)
    queue.cancel(key)
    assert sys.getrefcount(key) == base
    queue.schedule(key, 1.0)
    queue.clear()
    assert sys.getrefcount(key) == base
    queue.schedule(key, 1.0)
    del queue
    assert sys.getrefcount(key) == base


def test_compiled_refuses_reentry_from_key_methods() -> None:
    compiled = load_core_module("timers", "c")
    queue = compiled.TimerQueue()

    class Meddler:
        def __hash__(self) -> int:
            return 1

        def __eq__(self, other: object) -> bool:
            queue.clear()  # re-enters the queue while it looks the key up
            return False

    queue.schedule(1, 1.0)  # int 1 and Meddler share hash 1: Meddler.__eq__ runs
    with pytest.raises(RuntimeError):
        queue.schedule(Meddler(), 2.0)
    assert queue.pop_due(5.0) == [1]
    assert len(queue) == 0


class Collider:
    """A key whose hash is shared with others (``value % buckets``); equal by value."""

    def __init__(self, value: int, buckets: int = 3) -> None:
        self.value = value
        self.buckets = buckets

    def __hash__(self) -> int:
        return self.value % self.buckets

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Collider) and other.value == self.value

    def __repr__(self) -> str:
        return f"Collider({self.value})"


def test_keys_sharing_a_hash_stay_apart(timers: ModuleType) -> None:
    queue = timers.TimerQueue()
    keys = [Collider(i) for i in range(60)]
    for key in keys:
        queue.schedule(key, float(key.value % 7))
    for key in keys[::3]:
        assert queue.cancel(Collider(key.value))  # an equal object, not the same one
    for key in keys[1::3]:
        queue.schedule(Collider(key.value), 10.0)  # re-scheduled through an equal object
    assert len(queue) == 40
    popped = queue.pop_due(100.0)
    assert [k.value for k in popped] == sorted(
        [k.value for k in keys[2::3]], key=lambda v: v % 7
    ) + [k.value for k in keys[1::3]]
    assert all(k is keys[k.value] for k in popped)  # the first key objects come back


def test_clustered_hashes(timers: ModuleType) -> None:
    """Int keys hash to themselves: multiples of a power of two share their low bits."""
    queue = timers.TimerQueue()
    keys = [i << 20 for i in range(3000)]
    for key in keys:
        queue.schedule(key, 1.0)
    assert all(key in queue for key in keys)
    assert (5 << 19) not in queue
    for key in keys[::2]:
        assert queue.cancel(key)
    assert queue.pop_due(1.0) == keys[1::2]


def test_many_keys_come_and_go(timers: ModuleType) -> None:
    """Every key is new and soon gone, as packet timers in the simulator: the queue stays
    small while far more keys than it holds pass through it."""
    queue = timers.TimerQueue()
    out: list[int] = []
    for key in range(20_000):
        queue.schedule(key, float(key) + 5.0)
        if key % 3 == 0:
            queue.cancel(key - 1)
        out += queue.pop_due(float(key))
        assert len(queue) <= 6
    out += queue.pop_due(math.inf)
    assert out == [k for k in range(20_000) if k % 3 != 2 or k == 19_999]


class Grumpy:
    """Equal to nothing: its ``__eq__`` raises (the hash is shared with int 1)."""

    def __hash__(self) -> int:
        return 1

    def __eq__(self, other: object) -> bool:
        raise ArithmeticError("no comparing")


def test_a_raising_eq_leaves_the_queue_unchanged(timers: ModuleType) -> None:
    queue = timers.TimerQueue()
    queue.schedule(1, 3.0)
    queue.schedule("b", 2.0)
    for call in (
        lambda: queue.schedule(Grumpy(), 1.0),
        lambda: queue.cancel(Grumpy()),
        lambda: queue.deadline_of(Grumpy()),
        lambda: Grumpy() in queue,
    ):
        with pytest.raises(ArithmeticError):
            call()
    queue.schedule("c", 2.0)
    assert queue.pop_due(5.0) == ["b", "c", 1]  # no stamp was spent on the failed schedule


def test_compiled_key_del_may_use_the_queue() -> None:
    """Cancel and clear drop the queue's reference last: a key's ``__del__`` finds the
    queue consistent and may schedule. (The twin keeps a cancelled key until its stale
    heap entry surfaces, so when ``__del__`` runs there is unspecified.)"""
    queue = load_core_module("timers", "c").TimerQueue()

    class Phoenix(Collider):
        def __del__(self) -> None:
            queue.schedule(("reborn", self.value), 9.0)

    queue.schedule(Phoenix(1), 1.0)  # the queue holds the only reference
    queue.schedule(Phoenix(2), 2.0)
    assert queue.cancel(Collider(1)) is True  # Collider(1) == Phoenix(1)
    gc.collect()
    assert ("reborn", 1) in queue and len(queue) == 2
    queue.clear()
    gc.collect()
    assert list(queue.pop_due(10.0)) == [("reborn", 2)]


def test_compiled_pop_due_keeps_popped_keys_from_a_finalizer() -> None:
    """pop_due creates its list after taking the due timers out: a collection there may
    run a finalizer that uses the queue. It is refused, and the popped keys stay whole
    (a slot reused meanwhile would hand out another key, or None)."""
    queue = load_core_module("timers", "c").TimerQueue()
    seen: list[str] = []

    class Litter:
        def __init__(self) -> None:
            self.me = self  # a cycle: only the collector frees it

        def __del__(self) -> None:
            try:
                queue.schedule("from-finalizer", 0.0)
                seen.append("scheduled")
            except RuntimeError:
                seen.append("refused")

    for i in range(100):
        queue.schedule(i, float(i))
    threshold = gc.get_threshold()
    gc.disable()
    gc.collect()
    gc.set_threshold(1)  # the next tracked allocation, pop_due's list, collects
    Litter()
    gc.enable()
    try:
        due = queue.pop_due(49.0)
    finally:
        gc.set_threshold(*threshold)
    assert seen == ["refused"]  # the finalizer ran inside pop_due
    assert due == list(range(50))
    assert len(queue) == 50 and queue.pop_due(math.inf) == list(range(50, 100))
    queue.schedule("after", 1.0)
    assert queue.pop_due(1.0) == ["after"]


# --- properties: compiled == twin == oracle ------------------------------------------

KEYS = (
    st.integers(0, 40)
    | st.sampled_from(["a", "b", ("s", 1), ("s", 2), b"x"])
    | st.integers(0, 8).map(Collider)  # three hash values among nine keys
    | st.integers(0, 6).map(lambda i: i << 40)  # hashes that differ in high bits only
)
DEADLINES = st.integers(-3, 30).map(float) | st.floats(-5.0, 40.0) | st.just(math.inf)
OPS = st.lists(
    st.one_of(
        st.tuples(st.just("schedule"), KEYS, DEADLINES),
        st.tuples(st.just("cancel"), KEYS),
        st.tuples(st.just("deadline_of"), KEYS),
        st.tuples(st.just("contains"), KEYS),
        st.tuples(st.just("pop_due"), st.floats(-5.0, 45.0), st.none() | st.integers(0, 5)),
        st.tuples(st.just("next_deadline")),
        st.tuples(st.just("len")),
        st.tuples(st.just("clear")),
    ),
    max_size=200,
)


def _apply(queue: Any, op: tuple[Any, ...]) -> object:
    name, *args = op
    if name == "contains":
        return args[0] in queue
    if name == "len":
        return len(queue)
    return getattr(queue, name)(*args)


@FAST
@given(OPS)
def test_random_operations_agree_with_oracle(ops: list[tuple[Any, ...]]) -> None:
    twin = load_core_module("timers", "py").TimerQueue()
    queues = [twin]
    with contextlib.suppress(pytest.skip.Exception):  # the twin alone without the build
        queues.append(load_core_module("timers", "c").TimerQueue())
    oracle = Oracle()
    for op in ops:
        expected = _apply(oracle, op)
        for queue in queues:
            assert _apply(queue, op) == expected, op
    remaining = oracle.pop_due(math.inf)
    for queue in queues:
        assert queue.pop_due(math.inf) == remaining


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32), st.integers(100, 3000))
def test_long_random_runs_give_identical_pop_order(seed: int, size: int) -> None:
    rng = random.Random(seed)
    twin = load_core_module("timers", "py").TimerQueue()
    compiled = load_core_module("timers", "c").TimerQueue()
    now = 0.0
    for _ in range(size):
        choice = rng.random()
        key = rng.randrange(size // 4 + 1)
        if choice < 0.6:
            deadline = now + rng.choice([0.0, 1.0, rng.uniform(0.0, 50.0)])
            twin.schedule(key, deadline)
            compiled.schedule(key, deadline)
        elif choice < 0.8:
            assert twin.cancel(key) == compiled.cancel(key)
        else:
            now += rng.uniform(0.0, 5.0)
            assert twin.pop_due(now) == compiled.pop_due(now)
            assert twin.next_deadline() == compiled.next_deadline()
    assert twin.pop_due(math.inf) == compiled.pop_due(math.inf)
