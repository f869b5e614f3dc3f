"""The lease queue on an injected clock: a lease is expired exactly when it has run out
(never early, never later than the first call after), renewals re-queue it, stale entries
are dropped, and one call's work is bounded by its step."""

from __future__ import annotations

import random
from typing import Any

import pytest

from pysyncer.servicecenter.leases import Lease, LeaseQueue
from tests.support.servicecenter import ManualClock

pytestmark = pytest.mark.timeout(30)

SCOPE = ("default", "default")


def record(interval: int, times: int = 0) -> dict[str, Any]:
    return {"healthCheck": {"interval": interval, "times": times}}


def drain(queue: LeaseQueue, is_current: Any = lambda _: True) -> list[Lease]:
    """Everything due now, in as many steps as it takes."""
    out = [*queue.expired(is_current)]
    while queue.behind():
        out += queue.expired(is_current)
    return out


def test_a_lease_expires_when_it_runs_out_and_not_a_moment_before() -> None:
    clock = ManualClock(1000.25)
    queue = LeaseQueue(clock)
    lease = queue.grant(record(2, 1), None, SCOPE, "s")  # TTL 4 s: runs out at 1004.25
    clock.now = 1004.2
    assert drain(queue) == []
    assert not queue.behind()
    clock.now = 1004.25
    assert drain(queue) == [lease]
    assert len(queue) == 0


def test_random_grants_renewals_and_removals_expire_exactly_on_time() -> None:
    rng = random.Random(17)
    clock = ManualClock(500.0)
    queue = LeaseQueue(clock)
    held: dict[int, Lease] = {}  # what the registry holds: instance number -> lease
    for _ in range(3000):
        clock.now += rng.choice([0.0, 0.01, 0.13, 0.5, 1.0, 2.7])
        action = rng.random()
        number = rng.randrange(200)
        if action < 0.45:
            ttl = rng.choice([(1, 0), (2, 0), (3, 1), (5, 2)])
            held[number] = queue.grant(record(*ttl), held.get(number), SCOPE, str(number))
        elif action < 0.8 and number in held:
            queue.renew(held[number])
        elif number in held:
            del held[number]  # unregistered: its queued entry is stale
        gone = drain(queue, lambda lease: held.get(int(lease.service_id)) is lease)
        for lease in gone:
            assert lease.expires_at <= clock.now  # never early
            del held[int(lease.service_id)]
        # never late: nothing held has run out after the drain
        assert all(lease.expires_at > clock.now for lease in held.values())
    assert len(queue) >= len(held)


def test_a_renewed_lease_is_queued_again_not_expired() -> None:
    clock = ManualClock(1000.25)
    queue = LeaseQueue(clock)
    lease = queue.grant(record(10), None, SCOPE, "s")
    for _ in range(5):
        clock.now += 6.0
        queue.renew(lease)
        assert drain(queue) == []
        assert len(queue) == 1  # one entry, however often renewed
    clock.now += 10.0
    assert drain(queue) == [lease]


def test_entries_that_are_no_longer_current_are_dropped() -> None:
    clock = ManualClock(1000.25)
    queue = LeaseQueue(clock)
    kept, dropped = (queue.grant(record(5), None, SCOPE, name) for name in ("kept", "dropped"))
    clock.now += 5.0
    assert drain(queue, lambda lease: lease is kept) == [kept]
    assert len(queue) == 0 and dropped.expires_at <= clock.now


def test_a_shorter_registration_replaces_the_queued_lease() -> None:
    clock = ManualClock(1000.25)
    queue = LeaseQueue(clock)
    long = queue.grant(record(30, 3), None, SCOPE, "s")
    assert queue.grant(record(30, 3), long, SCOPE, "s") is long  # same length: in place
    short = queue.grant(record(2), long, SCOPE, "s")
    assert short is not long and len(queue) == 2
    clock.now += 2.0
    assert drain(queue, lambda lease: lease is short) == [short]


def test_leases_shorter_than_a_second_join_the_bucket_being_walked_in_order() -> None:
    clock = ManualClock(1000.0)
    queue = LeaseQueue(clock, ttl_override=0.4)
    first = [queue.grant(record(1), None, SCOPE, str(n)) for n in range(3)]  # due 1000.4
    clock.now = 1000.5
    # One entry per call: the walk of second 1000 stops part-way through.
    assert [*queue.expired(lambda _: True, limit=1)] == first[:1]
    late = queue.grant(record(1), None, SCOPE, "late")  # due 1000.9, same second
    assert drain(queue) == first[1:]
    clock.now = 1000.9
    assert drain(queue) == [late]
    assert len(queue) == 0


def test_one_call_looks_at_most_limit_entries_and_behind_says_more_are_due() -> None:
    clock = ManualClock(1000.25)
    queue = LeaseQueue(clock)
    leases = [queue.grant(record(5), None, SCOPE, str(n)) for n in range(10)]
    clock.now += 5.0
    looked: list[Lease] = []

    def current(lease: Lease) -> bool:
        looked.append(lease)
        return True

    out: list[Lease] = []
    calls = 0
    while queue.behind():
        before = len(looked)
        out += queue.expired(current, limit=3)
        assert len(looked) - before <= 3
        calls += 1
    assert calls == 4 and not queue.behind()
    assert len(out) == 10 and {id(lease) for lease in out} == {id(lease) for lease in leases}


def test_wake_period_is_the_time_to_the_next_expiry_at_most_a_second() -> None:
    clock = ManualClock(1000.0)
    queue = LeaseQueue(clock)
    assert queue.wake_period() == 1.0  # empty
    queue.grant(record(1), None, SCOPE, "s")  # due 1001.0
    clock.now = 1000.75
    assert queue.wake_period() == pytest.approx(0.251)
    clock.now = 1001.5
    assert queue.wake_period() == pytest.approx(0.001)  # overdue: wake now
    drain(queue)
    assert queue.wake_period() == 1.0
