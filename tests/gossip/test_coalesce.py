"""User-event coalescing on a virtual clock."""

from __future__ import annotations

from collections.abc import Hashable

import pytest

from pysyncer.gossip.clock import VirtualClock
from pysyncer.gossip.coalesce import UserEventCoalescer
from pysyncer.gossip.lamport import UserEvent


def make() -> tuple[UserEventCoalescer, VirtualClock[Hashable], list[UserEvent]]:
    clock: VirtualClock[Hashable] = VirtualClock()
    out: list[UserEvent] = []
    coalescer = UserEventCoalescer(clock, out.append, coalesce_period=5.0, quiescent_period=1.0)
    return coalescer, clock, out


def test_uncoalesced_events_pass_straight_through() -> None:
    coalescer, _, out = make()
    coalescer(UserEvent(1, "deploy", b"a"))
    assert out == [UserEvent(1, "deploy", b"a")]


def test_a_burst_becomes_its_newest_event_after_quiet() -> None:
    coalescer, clock, out = make()
    coalescer(UserEvent(3, "rev", b"3", coalesce=True))
    clock.advance(0.5)
    coalescer(UserEvent(5, "rev", b"5", coalesce=True))
    coalescer(UserEvent(4, "rev", b"4", coalesce=True))  # late, older: absorbed
    coalescer(UserEvent(2, "other", b"", coalesce=True))
    clock.advance(0.9)
    assert out == []
    clock.advance(0.2)  # 1 s without news
    assert out == [
        UserEvent(2, "other", b"", coalesce=True),
        UserEvent(5, "rev", b"5", coalesce=True),
    ]
    assert coalescer.coalesced == 2


def test_a_never_ending_burst_flushes_at_the_coalesce_period() -> None:
    coalescer, clock, out = make()
    for ltime in range(1, 20):
        coalescer(UserEvent(ltime, "rev", b"", coalesce=True))
        clock.advance(0.4)
        if out:
            break
    assert len(out) == 1
    assert clock.now() == pytest.approx(5.2)
    assert out[0].ltime == 13


def test_flush_on_shutdown() -> None:
    coalescer, clock, out = make()
    coalescer(UserEvent(1, "rev", b"", coalesce=True))
    coalescer.flush()
    assert [e.ltime for e in out] == [1]
    clock.advance(10)
    assert len(out) == 1


def test_periods_must_be_positive() -> None:
    clock: VirtualClock[Hashable] = VirtualClock()
    with pytest.raises(ValueError):
        UserEventCoalescer(clock, print, coalesce_period=0, quiescent_period=1)
