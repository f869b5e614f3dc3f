"""pysyncer.gossip.timing: memberlist/Serf timing formulas and default profiles.

Tables come from memberlist's own tests (util_test.go, suspicion_test.go), serf's
query_test.go, the memberlist/serf default configs, and the derived table of
/work/shared/research/gossip.md section 2.3.
"""

from __future__ import annotations

import dataclasses
import math

import pytest

from pysyncer.gossip import timing
from pysyncer.gossip.timing import LAN, LOCAL, WAN, Awareness, GossipProfile


@pytest.mark.parametrize(
    ("n", "low", "high", "after_one", "retransmits", "push_pull", "query_timeout"),
    [
        (10, 4.0, 24.0, 11.4, 8, 30.0, 6.4),
        (100, 8.0, 48.0, 22.8, 12, 90.0, 9.6),
        (1_000, 12.0, 72.0, 34.1, 16, 180.0, 12.8),
        (10_000, 16.0, 96.0, 45.5, 20, 300.0, 16.0),
    ],
)
def test_lan_derived_table_of_gossip_md(
    n: int,
    low: float,
    high: float,
    after_one: float,
    retransmits: int,
    push_pull: float,
    query_timeout: float,
) -> None:
    derived = LAN.derived(n)
    assert derived.suspicion_min == pytest.approx(low)
    assert derived.suspicion_max == pytest.approx(high)
    assert derived.confirmations == 2
    assert derived.suspicion_after_one == pytest.approx(after_one, abs=0.05)
    assert derived.retransmits == retransmits
    assert derived.push_pull_interval == pytest.approx(push_pull)
    assert derived.query_timeout == pytest.approx(query_timeout)


@pytest.mark.parametrize(
    ("n", "expected"),
    [(5, 1.000), (10, 1.000), (50, 1.698), (100, 2.000), (500, 2.698), (1000, 3.000)],
)
def test_suspicion_timeout_memberlist_table(n: int, expected: float) -> None:
    """memberlist TestSuspicionTimeout: suspicionTimeout(3, n, 1s) / 3, exact to the ms."""
    assert timing.suspicion_min_timeout(3, n, 1.0) / 3 == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize(
    ("mult", "n", "interval", "expected"),
    [(4, 0, 1.0, 4.0), (4, 1, 1.0, 4.0), (6, 100, 5.0, 60.0), (3, 10, 1.0, 3.0)],
)
def test_suspicion_min_timeout_edges(mult: int, n: int, interval: float, expected: float) -> None:
    assert timing.suspicion_min_timeout(mult, n, interval) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("confirmations", "k", "elapsed", "expected"),
    [
        (0, 3, 0.0, 30.0),
        (1, 3, 2.0, 14.0),
        (2, 3, 3.0, 4.81),
        (3, 3, 4.0, -2.0),
        (4, 3, 5.0, -3.0),
        (5, 3, 10.0, -8.0),
    ],
)
def test_remaining_suspicion_time_memberlist_table(
    confirmations: int, k: int, elapsed: float, expected: float
) -> None:
    """memberlist TestSuspicion_remainingSuspicionTime (min 2 s, max 30 s)."""
    remaining = timing.remaining_suspicion_time(confirmations, k, elapsed, 2.0, 30.0)
    assert remaining == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize(
    ("k", "elapsed", "expected"), [(0, 0.0, 4.0), (0, 1.5, 2.5), (-1, 0.0, 4.0)]
)
def test_remaining_suspicion_time_without_expected_confirmations(
    k: int, elapsed: float, expected: float
) -> None:
    assert timing.remaining_suspicion_time(0, k, elapsed, 4.0, 24.0) == expected


def test_remaining_suspicion_time_floors_to_milliseconds() -> None:
    # 24 - 20 * log(2)/log(3) = 11.3814...: floored to 11.381
    assert timing.remaining_suspicion_time(1, 2, 0.0, 4.0, 24.0) == pytest.approx(11.381)


@pytest.mark.parametrize(
    ("k", "low", "high", "expected"), [(2, 4.0, 24.0, 24.0), (0, 4.0, 24.0, 4.0)]
)
def test_initial_suspicion_timeout(k: int, low: float, high: float, expected: float) -> None:
    assert timing.initial_suspicion_timeout(k, low, high) == expected


@pytest.mark.parametrize(
    ("mult", "n", "expected"),
    [(4, 1, 0), (4, 3, 0), (4, 4, 2), (4, 100, 2), (6, 5, 0), (6, 6, 4), (3, 3, 1), (1, 50, 0)],
)
def test_expected_confirmations(mult: int, n: int, expected: int) -> None:
    assert timing.expected_confirmations(mult, n) == expected


@pytest.mark.parametrize(
    ("mult", "n", "expected"),
    [
        (3, 0, 0),
        (3, 1, 3),
        (3, 99, 6),
        (4, 10, 8),
        (4, 100, 12),
        (4, 1000, 16),
        (4, 9999, 16),
        (4, 10_000, 20),
        (2, 5, 2),
    ],
)
def test_retransmit_limit(mult: int, n: int, expected: int) -> None:
    """memberlist TestRetransmitLimit plus the LAN column of gossip.md 1.5."""
    assert timing.retransmit_limit(mult, n) == expected


@pytest.mark.parametrize(
    ("first", "last", "multiplier"), [(0, 32, 1), (33, 64, 2), (65, 128, 3), (129, 256, 4)]
)
def test_push_pull_scale_memberlist_table(first: int, last: int, multiplier: int) -> None:
    """memberlist TestPushPullScale, every n of each band."""
    for n in range(first, last + 1):
        assert timing.push_pull_scale(1.0, n) == multiplier, n


@pytest.mark.parametrize(
    ("gossip_interval", "n", "expected"),
    [(0.2, 1, 3.2), (0.2, 9, 3.2), (0.2, 10, 6.4), (0.2, 100, 9.6), (0.5, 100, 24.0)],
)
def test_default_query_timeout(gossip_interval: float, n: int, expected: float) -> None:
    """serf TestSerf_DefaultQueryTimeout (one member: GossipInterval * 16) and beyond."""
    assert timing.default_query_timeout(gossip_interval, n) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("failed", "alive", "expected"),
    [(0, 10, 0.0), (1, 10, 0.1), (5, 10, 0.5), (3, 0, 1.0), (20, 10, 1.0), (1, 1, 1.0)],
)
def test_reconnect_probability(failed: int, alive: int, expected: float) -> None:
    assert timing.reconnect_probability(failed, alive) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("max_depth", "min_depth", "members", "expected"),
    [(4096, 0, 10_000, 4096), (4096, 1024, 10, 1024), (4096, 1024, 5000, 10_000)],
)
def test_queue_max_depth(max_depth: int, min_depth: int, members: int, expected: int) -> None:
    assert timing.queue_max_depth(max_depth, min_depth, members) == expected


# --- awareness -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("score", "delta", "expected"),
    [(0, -1, 0), (0, 1, 1), (3, 2, 5), (6, 1, 7), (7, 1, 7), (7, 100, 7), (5, -9, 0)],
)
def test_apply_awareness_delta(score: int, delta: int, expected: int) -> None:
    assert timing.apply_awareness_delta(score, delta, 8) == expected


@pytest.mark.parametrize(("score", "expected"), [(0, 1.0), (1, 2.0), (7, 8.0)])
def test_scaled_probe_interval(score: int, expected: float) -> None:
    assert timing.scale_by_awareness(1.0, score) == expected
    assert timing.scale_by_awareness(LAN.probe_interval, score) == expected


@pytest.mark.parametrize(
    ("expected_nacks", "nacks", "delta"), [(3, 0, 3), (3, 1, 2), (3, 3, 0), (0, 0, 1)]
)
def test_failed_probe_awareness_delta(expected_nacks: int, nacks: int, delta: int) -> None:
    assert timing.failed_probe_awareness_delta(expected_nacks, nacks) == delta


def test_awareness_object() -> None:
    awareness = Awareness(LAN.awareness_max_multiplier)
    assert awareness.score == 0
    assert awareness.apply_delta(-1) == 0
    assert awareness.apply_delta(3) == 3
    assert awareness.scale_timeout(1.0) == 4.0
    assert awareness.apply_delta(10) == 7
    assert awareness.scale_timeout(LAN.probe_interval) == 8.0  # "backs off to 8 seconds"
    assert "score=7" in repr(awareness)
    with pytest.raises(ValueError):
        Awareness(0)


@pytest.mark.parametrize(
    ("expected", "actual", "probe_timeout", "delta"),
    [
        (10.0, 10.0, 0.5, 0),
        (10.0, 9.0, 0.5, 0),  # early
        (10.0, 10.1, 0.5, 0),  # scheduling noise
        (10.0, 10.25, 0.5, 1),
        (10.0, 10.3, 0.5, 1),
        (10.0, 10.5, 0.5, 2),
        (10.0, 11.0, 0.5, 4),
        (10.0, 60.0, 0.5, 7),  # capped at max_multiplier - 1
        (10.0, 11.0, 3.0, 0),  # WAN probe timeout tolerates more
        (10.0, math.nan, 0.5, 0),
        (10.0, 11.0, 0.0, 0),
    ],
)
def test_loop_lag_awareness_delta(
    expected: float, actual: float, probe_timeout: float, delta: int
) -> None:
    assert timing.loop_lag_awareness_delta(expected, actual, probe_timeout) == delta


# --- profiles ------------------------------------------------------------------------

KNOBS = [  # gossip.md 2.5 (memberlist config.go), columns LAN, WAN, LOCAL
    ("bind_port", 7946, 7946, 7946),
    ("advertise_port", 7946, 7946, 7946),
    ("tcp_timeout", 10.0, 30.0, 1.0),
    ("indirect_checks", 3, 3, 1),
    ("retransmit_mult", 4, 4, 2),
    ("suspicion_mult", 4, 6, 3),
    ("suspicion_max_timeout_mult", 6, 6, 6),
    ("push_pull_interval", 30.0, 60.0, 15.0),
    ("probe_interval", 1.0, 5.0, 1.0),
    ("probe_timeout", 0.5, 3.0, 0.2),
    ("awareness_max_multiplier", 8, 8, 8),
    ("gossip_nodes", 3, 4, 3),
    ("gossip_interval", 0.2, 0.5, 0.1),
    ("gossip_to_the_dead_time", 30.0, 60.0, 15.0),
    ("enable_compression", True, True, True),
    ("handoff_queue_depth", 1024, 1024, 1024),
    ("udp_buffer_size", 1400, 1400, 1400),
    ("disable_tcp_pings", False, False, False),
    ("protocol_version", 2, 2, 2),
    ("dead_node_reclaim_time", 0.0, 0.0, 0.0),
    ("queue_check_interval", 30.0, 30.0, 30.0),
]

SERF = [  # serf/config.go DefaultConfig, the same in every profile
    ("reap_interval", 15.0),
    ("reconnect_interval", 30.0),
    ("reconnect_timeout", 86_400.0),
    ("tombstone_timeout", 86_400.0),
    ("broadcast_timeout", 5.0),
    ("leave_propagate_delay", 1.0),
    ("event_buffer", 512),
    ("query_buffer", 512),
    ("user_event_size_limit", 512),
    ("query_size_limit", 1024),
    ("query_response_size_limit", 1024),
    ("queue_depth_warning", 128),
    ("max_queue_depth", 4096),
    ("min_queue_depth", 0),
    ("query_timeout_mult", 16),
    ("recent_intent_timeout", 300.0),
    ("flap_timeout", 60.0),
]


@pytest.mark.parametrize(("knob", "lan", "wan", "local"), KNOBS)
def test_memberlist_profile_knobs(knob: str, lan: object, wan: object, local: object) -> None:
    assert (getattr(LAN, knob), getattr(WAN, knob), getattr(LOCAL, knob)) == (lan, wan, local)


@pytest.mark.parametrize(("knob", "value"), SERF)
def test_serf_knobs(knob: str, value: object) -> None:
    assert getattr(LAN, knob) == getattr(WAN, knob) == getattr(LOCAL, knob) == value


def test_profiles_are_frozen_and_named() -> None:
    assert (LAN.name, WAN.name, LOCAL.name) == ("lan", "wan", "local")
    with pytest.raises(dataclasses.FrozenInstanceError):
        LAN.probe_interval = 2.0  # type: ignore[misc]
    custom = dataclasses.replace(LAN, name="big", suspicion_mult=5)
    assert isinstance(custom, GossipProfile) and LAN.suspicion_mult == 4
    assert timing.USER_EVENT_SIZE_LIMIT_MAX == 9216


@pytest.mark.parametrize(
    ("profile", "n", "low", "high", "k"),
    [(WAN, 100, 60.0, 360.0, 4), (LOCAL, 10, 3.0, 18.0, 1), (LOCAL, 2, 3.0, 18.0, 0)],
)
def test_other_profiles_suspicion(
    profile: GossipProfile, n: int, low: float, high: float, k: int
) -> None:
    derived = profile.derived(n)
    assert (derived.suspicion_min, derived.suspicion_max) == pytest.approx((low, high))
    assert derived.confirmations == k
    if k == 0:
        assert derived.suspicion_after_one == low
