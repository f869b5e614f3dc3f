"""The piggyback queue: ordering, packing, transmit limits, invalidation, pruning."""

from __future__ import annotations

import functools
import math

from hypothesis import given, settings
from hypothesis import strategies as st

from pysyncer.gossip.broadcast import Broadcast, TransmitLimitedQueue


def make_queue(nodes: int = 10, mult: int = 1) -> TransmitLimitedQueue:
    return TransmitLimitedQueue(retransmit_mult=mult, num_nodes=lambda: nodes)


def test_fewest_transmits_first_then_largest_then_newest() -> None:
    queue = make_queue(nodes=10, mult=3)  # limit 3 * ceil(log10(11)) = 6
    queue.queue(Broadcast(b"a" * 10, name="a"))
    queue.queue(Broadcast(b"b" * 30, name="b"))
    queue.queue(Broadcast(b"c" * 20, name="c"))
    queue.queue(Broadcast(b"d" * 20, name="d"))  # same size as c but newer
    assert queue.get_broadcasts(overhead=2, limit=1400) == [
        b"b" * 30,
        b"d" * 20,
        b"c" * 20,
        b"a" * 10,
    ]
    queue.queue(Broadcast(b"e" * 5, name="e"))  # never sent: goes before the others
    assert queue.get_broadcasts(overhead=2, limit=1400)[0] == b"e" * 5


def test_packs_the_largest_message_that_fits() -> None:
    queue = make_queue()
    for size in (100, 60, 40, 10):
        queue.queue(Broadcast(bytes(size)))
    # 80 free bytes with 2 bytes overhead each: 60 (62 used), then 10 (74 used).
    assert [len(m) for m in queue.get_broadcasts(overhead=2, limit=80)] == [60, 10]
    assert len(queue) == 4
    # Unsent ones go first next time (100, 40), then the 10 left space fits from tier 1.
    assert [len(m) for m in queue.get_broadcasts(overhead=0, limit=150)] == [100, 40, 10]


def test_nothing_fits() -> None:
    queue = make_queue()
    queue.queue(Broadcast(bytes(50)))
    assert queue.get_broadcasts(overhead=2, limit=40) == []
    assert queue.get_broadcasts(overhead=2, limit=2) == []
    assert len(queue) == 1


def test_transmit_limit_then_finished() -> None:
    finished: list[str] = []
    queue = make_queue(nodes=10, mult=2)  # limit 2 * ceil(log10(11)) = 4
    assert queue.transmit_limit() == 4
    queue.queue(Broadcast(b"x", name="x", on_finished=lambda: finished.append("x")))
    sends = 0
    while queue.get_broadcasts(overhead=0, limit=100):
        sends += 1
    assert sends == 4
    assert finished == ["x"]
    assert len(queue) == 0


def test_same_name_replaces_and_finishes_the_old() -> None:
    finished: list[bytes] = []
    queue = make_queue()
    queue.queue(Broadcast(b"alive-1", name="n1", on_finished=lambda: finished.append(b"1")))
    queue.queue(Broadcast(b"other", name="n2"))
    queue.queue(Broadcast(b"dead-1", name="n1", on_finished=lambda: finished.append(b"2")))
    assert finished == [b"1"]
    assert sorted(queue.get_broadcasts(overhead=0, limit=100)) == [b"dead-1", b"other"]


def test_unnamed_broadcasts_never_invalidate() -> None:
    queue = make_queue()
    queue.queue(Broadcast(b"same"))
    queue.queue(Broadcast(b"same"))
    assert len(queue) == 2


def test_prune_drops_most_sent_smallest_oldest() -> None:
    finished: list[int] = []
    queue = make_queue(nodes=1000, mult=4)
    for i in range(5):
        queue.queue(Broadcast(bytes(10 + i), on_finished=functools.partial(finished.append, i)))
    queue.get_broadcasts(overhead=0, limit=25)  # sends 14 bytes, then 11 fits
    assert queue.prune(3) == 2
    assert len(queue) == 3
    assert sorted(finished) == [1, 4]  # the two sent ones: most transmits
    queue.reset()
    assert len(queue) == 0
    assert sorted(finished) == [0, 1, 2, 3, 4]


@settings(max_examples=200, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 300), min_size=1, max_size=40),
    nodes=st.integers(1, 5000),
    limit=st.integers(50, 1400),
)
def test_every_message_is_sent_exactly_the_limit(sizes: list[int], nodes: int, limit: int) -> None:
    queue = make_queue(nodes=nodes, mult=2)
    expected = 2 * math.ceil(math.log10(nodes + 1))
    messages = [i.to_bytes(2, "big") + bytes(size) for i, size in enumerate(sizes)]
    for message in messages:
        queue.queue(Broadcast(message))
    counts = dict.fromkeys(messages, 0)
    rounds = 0
    while len(queue):
        batch = queue.get_broadcasts(overhead=3, limit=limit)
        assert sum(len(m) + 3 for m in batch) <= limit
        for message in batch:
            counts[message] += 1
        rounds += 1
        if not batch:  # only messages too large for any packet are left
            assert all(len(m) + 3 > limit for m in messages if counts[m] < expected)
            break
        assert rounds < 10_000
    for message, count in counts.items():
        assert count == (expected if len(message) + 3 <= limit else 0)
