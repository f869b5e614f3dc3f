"""Lamport clocks and the event/query dedupe buffers, against Serf's rules."""

from __future__ import annotations

import pytest

from pysyncer.gossip.lamport import EventBuffer, LamportClock, QueryBuffer, UserEvent


@pytest.mark.parametrize(
    ("start", "seen", "after"),
    [(0, 0, 1), (5, 3, 5), (5, 5, 6), (5, 9, 10), (0, 2**64 - 1, 2**64 - 1)],
)
def test_witness(start: int, seen: int, after: int) -> None:
    clock = LamportClock(start)
    clock.witness(seen)
    assert clock.time == after


def test_increment() -> None:
    clock = LamportClock()
    assert [clock.increment() for _ in range(3)] == [1, 2, 3]


def test_events_dedupe_by_ltime_name_and_payload() -> None:
    clock, buffer = LamportClock(), EventBuffer(size=4)
    deploy = UserEvent(1, "deploy", b"v1")
    assert buffer.accept(clock, deploy)
    assert not buffer.accept(clock, deploy)
    assert buffer.accept(clock, UserEvent(1, "deploy", b"v2"))  # same time, other payload
    assert buffer.accept(clock, UserEvent(1, "other", b"v1"))
    assert clock.time == 2
    assert [e.payload for e in buffer.recent()] == [b"v1", b"v2", b"v1"]


def test_events_too_old_or_before_min_time_are_dropped() -> None:
    clock, buffer = LamportClock(), EventBuffer(size=4)
    assert buffer.accept(clock, UserEvent(10, "a", b""))  # clock -> 11
    assert not buffer.accept(clock, UserEvent(6, "b", b""))  # 6 < 11 - 4
    assert buffer.accept(clock, UserEvent(7, "b", b""))
    buffer.min_time = 20
    assert not buffer.accept(clock, UserEvent(19, "c", b""))


def test_ring_slot_reuse_forgets_the_older_time() -> None:
    clock, buffer = LamportClock(), EventBuffer(size=4)
    assert buffer.accept(clock, UserEvent(1, "a", b""))
    assert buffer.accept(clock, UserEvent(5, "a", b""))  # same slot as 1
    assert [e.ltime for e in buffer.recent()] == [5]


def test_queries_dedupe_by_ltime_and_id() -> None:
    clock, buffer = LamportClock(), QueryBuffer(size=8)
    assert buffer.accept(clock, 3, 1001)
    assert not buffer.accept(clock, 3, 1001)
    assert buffer.accept(clock, 3, 1002)
    assert buffer.accept(clock, 4, 1001)
    assert clock.time == 5


def test_buffer_size_must_be_positive() -> None:
    with pytest.raises(ValueError):
        EventBuffer(0)
    with pytest.raises(ValueError):
        QueryBuffer(0)
