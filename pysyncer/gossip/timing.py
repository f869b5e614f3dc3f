"""Timing of the failure detector and of Serf, as pure functions of numbers (no clock).

Every function mirrors one function of hashicorp/memberlist or hashicorp/serf, named in
its docstring, with the same rounding (memberlist computes in integer nanoseconds or
floors to milliseconds in places; so do these), so a pysyncer node and a Go node of
the same cluster size agree on every timeout. Durations are float seconds.

Also here: :class:`Awareness` (Lifeguard's local health score), a pysyncer extension
that feeds event-loop lag into it (:func:`loop_lag_awareness_delta`), and the profiles:
:data:`PYSYNCER` (the default: a faster detector, tuned in the simulator, that stays
wire-compatible), :data:`LAN`, :data:`WAN` and :data:`LOCAL` (memberlist
``DefaultLANConfig`` / ``DefaultWANConfig`` / ``DefaultLocalConfig`` plus Serf
``DefaultConfig``), by name in :data:`PROFILES`.
Imports nothing from pysyncer: a leaf every gossip module may use.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

__all__ = [
    "DEFAULT_PROFILE",
    "LAN",
    "LOCAL",
    "PROFILES",
    "PUSH_PULL_SCALE_THRESHOLD",
    "PYSYNCER",
    "USER_EVENT_SIZE_LIMIT_MAX",
    "WAN",
    "Awareness",
    "DerivedTiming",
    "GossipProfile",
    "apply_awareness_delta",
    "default_query_timeout",
    "expected_confirmations",
    "failed_probe_awareness_delta",
    "initial_suspicion_timeout",
    "loop_lag_awareness_delta",
    "profile_named",
    "push_pull_scale",
    "queue_max_depth",
    "reconnect_probability",
    "remaining_suspicion_time",
    "retransmit_limit",
    "scale_by_awareness",
    "suspicion_max_timeout",
    "suspicion_min_timeout",
]

PUSH_PULL_SCALE_THRESHOLD = 32
"""Cluster size above which push/pull slows down (memberlist ``pushPullScaleThreshold``)."""

USER_EVENT_SIZE_LIMIT_MAX = 9 * 1024
"""Hard cap of a Serf user event, whatever the configured limit (serf ``UserEventSizeLimit``)."""

_NS = 1_000_000_000


def _ns(seconds: float) -> int:
    """Seconds as whole nanoseconds, the unit of Go's ``time.Duration``."""
    return round(seconds * _NS)


def retransmit_limit(retransmit_mult: int, n: int) -> int:
    """Sends of each broadcast: ``mult * ceil(log10(n + 1))``.

    Mirrors memberlist ``retransmitLimit`` (util.go). LAN (mult 4): n=10 -> 8,
    n=100 -> 12, n=1000 -> 16, n=10000 -> 20.
    """
    return retransmit_mult * math.ceil(math.log10(n + 1))


def suspicion_min_timeout(suspicion_mult: int, n: int, probe_interval: float) -> float:
    """Shortest suspicion timeout: ``mult * max(1, log10(max(1, n))) * probe_interval``.

    Mirrors memberlist ``suspicionTimeout`` (util.go), including its rounding: the node
    scale is truncated to thousandths and the product computed in integer nanoseconds.
    """
    node_scale = max(1.0, math.log10(max(1.0, float(n))))
    return suspicion_mult * int(node_scale * 1000) * _ns(probe_interval) // 1000 / _NS


def suspicion_max_timeout(suspicion_max_timeout_mult: int, min_timeout: float) -> float:
    """Longest suspicion timeout: ``SuspicionMaxTimeoutMult * min``.

    Mirrors the ``max`` of memberlist ``Memberlist.suspectNode`` (state.go).
    """
    return suspicion_max_timeout_mult * _ns(min_timeout) / _NS


def expected_confirmations(suspicion_mult: int, n: int) -> int:
    """Independent confirmations ``k`` that drive a suspicion to its minimum timeout.

    Mirrors memberlist ``Memberlist.suspectNode`` (state.go): ``SuspicionMult - 2``, or 0
    when the cluster has fewer than that many other members (``n - 2 < k``: ``n``
    counts this node and the suspect). Never negative (memberlist treats k < 1 as 0).
    """
    k = suspicion_mult - 2
    return 0 if n - 2 < k else max(k, 0)


def initial_suspicion_timeout(k: int, min_timeout: float, max_timeout: float) -> float:
    """Timeout a new suspicion starts with: ``max``, or ``min`` when ``k < 1``.

    Mirrors memberlist ``newSuspicion`` (suspicion.go).
    """
    return max_timeout if k >= 1 else min_timeout


def remaining_suspicion_time(
    confirmations: int, k: int, elapsed: float, min_timeout: float, max_timeout: float
) -> float:
    """Time left before a suspect is declared dead, after ``confirmations`` of ``k``.

    Mirrors memberlist ``remainingSuspicionTime`` (suspicion.go), Lifeguard's formula:
    ``max - (max - min) * log(c + 1) / log(k + 1)``, floored to whole milliseconds, never
    below ``min``, minus ``elapsed`` since the suspicion started. Negative means "fire
    now". With ``k < 1`` (no confirmations expected) it is ``min - elapsed``, as the
    timer memberlist starts then.
    """
    if k < 1:
        return min_timeout - elapsed
    fraction = math.log(confirmations + 1.0) / math.log(k + 1.0)
    raw = max_timeout - fraction * (max_timeout - min_timeout)
    timeout = max(math.floor(1000.0 * raw) / 1000.0, min_timeout)
    return timeout - elapsed


def push_pull_scale(interval: float, n: int) -> float:
    """Push/pull period for ``n`` members: ``interval`` up to 32, then multiplied.

    Mirrors memberlist ``pushPullScale`` (util.go): the multiplier is
    ``ceil(log2(n) - log2(32)) + 1`` above the threshold, so 33..64 members -> x2,
    65..128 -> x3, 1000 -> x6, 10000 -> x10.
    """
    if n <= PUSH_PULL_SCALE_THRESHOLD:
        return interval
    multiplier = math.ceil(math.log2(n) - math.log2(PUSH_PULL_SCALE_THRESHOLD)) + 1
    return multiplier * _ns(interval) / _NS


def default_query_timeout(gossip_interval: float, n: int, query_timeout_mult: int = 16) -> float:
    """Serf's default query timeout: ``gossip_interval * mult * ceil(log10(n + 1))``.

    Mirrors serf ``Serf.DefaultQueryTimeout`` (serf/query.go); ``n`` is the member
    count. LAN (200 ms): n=100 -> 9.6 s.
    """
    return _ns(gossip_interval) * query_timeout_mult * math.ceil(math.log10(n + 1)) / _NS


def reconnect_probability(failed: int, alive: int) -> float:
    """Chance that this node tries to reconnect to a failed member this interval.

    Mirrors serf ``Serf.reconnect`` (serf/serf.go): ``failed / alive`` (``alive`` =
    members - failed - left, taken as 1 when 0), so the cluster as a whole retries each
    failed member about once per ``ReconnectInterval``. Clamped to [0, 1] here (serf
    compares a uniform draw against the raw ratio, which is the same thing).
    """
    if failed <= 0:
        return 0.0
    return min(1.0, failed / max(alive, 1))


def queue_max_depth(max_queue_depth: int, min_queue_depth: int, members: int) -> int:
    """Broadcast queue length above which Serf prunes.

    Mirrors serf ``Serf.getQueueMax`` (serf/serf.go): ``MaxQueueDepth``, or when
    ``MinQueueDepth > 0`` the dynamic ``max(MinQueueDepth, 2 * members)``.
    """
    if min_queue_depth > 0:
        return max(min_queue_depth, 2 * members)
    return max_queue_depth


# -- Lifeguard local health ("awareness") --


def apply_awareness_delta(score: int, delta: int, max_multiplier: int) -> int:
    """New health score: ``score + delta`` clamped to ``[0, max_multiplier - 1]``.

    Mirrors memberlist ``awareness.ApplyDelta`` (awareness.go). 0 is healthy.
    """
    return min(max(score + delta, 0), max_multiplier - 1)


def scale_by_awareness(timeout: float, score: int) -> float:
    """``timeout * (score + 1)``: the probe interval of a node with health ``score``.

    Mirrors memberlist ``awareness.ScaleTimeout`` (awareness.go), used by
    ``Memberlist.probeNode`` (state.go) on ``ProbeInterval`` only: the probe timeout is
    deliberately not scaled.
    """
    return (score + 1) * _ns(timeout) / _NS


def failed_probe_awareness_delta(expected_nacks: int, nacks: int) -> int:
    """Score increase after a failed probe (a successful probe is -1).

    Mirrors memberlist ``Memberlist.probeNode`` (state.go): one per expected nack that
    did not arrive from the indirect-probe peers, or 1 when no peer was asked for nacks.
    """
    if expected_nacks > 0:
        return max(expected_nacks - nacks, 0)
    return 1


def loop_lag_awareness_delta(
    expected: float, actual: float, probe_timeout: float, max_multiplier: int = 8
) -> int:
    """Score increase for a tick that ran at ``actual`` instead of ``expected``.

    A pysyncer extension of Lifeguard, no memberlist counterpart (its inputs are those of
    memberlist ``awareness.ApplyDelta``). Lifeguard raises the score when the node
    sees evidence that it is slow to process messages; a stalled event loop is that
    evidence, measured directly: acks that sit unread for a large part of the probe
    timeout make this node suspect healthy peers. So: +1 per half ``probe_timeout`` of
    lag (none below half, which is scheduling noise), at most ``max_multiplier - 1``.
    LAN (500 ms): 100 ms late -> 0, 300 ms -> 1, 1 s -> 4. Early or on time -> 0.
    """
    lag = actual - expected
    unit = probe_timeout / 2.0
    if unit <= 0.0 or not lag >= unit:  # `not >=` also catches NaN
        return 0
    return min(int(lag // unit), max_multiplier - 1)


class Awareness:
    """Lifeguard local health of this node, as memberlist ``awareness`` (awareness.go).

    ``score`` is in ``[0, max_multiplier - 1]``; 0 is healthy. Not locked: use it from
    the event loop only.
    """

    __slots__ = ("max_multiplier", "score")

    def __init__(self, max_multiplier: int = 8) -> None:
        if max_multiplier < 1:
            raise ValueError("max_multiplier must be at least 1")
        self.max_multiplier = max_multiplier
        self.score = 0

    def apply_delta(self, delta: int) -> int:
        """Add ``delta`` within bounds (``awareness.ApplyDelta``); return the new score."""
        self.score = apply_awareness_delta(self.score, delta, self.max_multiplier)
        return self.score

    def scale_timeout(self, timeout: float) -> float:
        """``timeout * (score + 1)`` (``awareness.ScaleTimeout``)."""
        return scale_by_awareness(timeout, self.score)

    def __repr__(self) -> str:
        return f"Awareness(score={self.score}, max_multiplier={self.max_multiplier})"


# -- profiles --


@dataclass(frozen=True)
class DerivedTiming:
    """Timings a profile yields for one cluster size (see :meth:`GossipProfile.derived`)."""

    n: int
    suspicion_min: float
    suspicion_max: float
    confirmations: int  # k
    suspicion_after_one: float  # timeout after one confirmation (== initial when k = 0)
    suspicion_at_min: float  # timeout once k confirmations arrived (== suspicion_min)
    retransmits: int
    push_pull_interval: float
    query_timeout: float
    gossip_to_the_dead: float


@dataclass(frozen=True)
class GossipProfile:
    """Every knob of memberlist's default configs and of Serf's ``DefaultConfig``.

    Durations in seconds, sizes in bytes. Field names are memberlist's and Serf's
    ``Config`` fields in snake case; the last group are pysyncer's own knobs, whose
    defaults keep memberlist's behaviour (none changes a byte on the wire).
    """

    name: str
    # memberlist (config.go)
    bind_port: int = 7946
    advertise_port: int = 7946
    protocol_version: int = 2
    tcp_timeout: float = 10.0
    indirect_checks: int = 3
    retransmit_mult: int = 4
    suspicion_mult: int = 4
    suspicion_max_timeout_mult: int = 6
    push_pull_interval: float = 30.0
    probe_interval: float = 1.0
    probe_timeout: float = 0.5
    disable_tcp_pings: bool = False
    awareness_max_multiplier: int = 8
    gossip_nodes: int = 3
    gossip_interval: float = 0.2
    gossip_to_the_dead_time: float = 30.0
    gossip_verify_incoming: bool = True
    gossip_verify_outgoing: bool = True
    enable_compression: bool = True
    handoff_queue_depth: int = 1024
    udp_buffer_size: int = 1400
    dead_node_reclaim_time: float = 0.0
    queue_check_interval: float = 30.0
    # Serf (serf/config.go)
    broadcast_timeout: float = 5.0
    leave_propagate_delay: float = 1.0
    event_buffer: int = 512
    query_buffer: int = 512
    reap_interval: float = 15.0
    recent_intent_timeout: float = 300.0
    reconnect_interval: float = 30.0
    reconnect_timeout: float = 24 * 3600.0
    tombstone_timeout: float = 24 * 3600.0
    flap_timeout: float = 60.0
    queue_depth_warning: int = 128
    max_queue_depth: int = 4096
    min_queue_depth: int = 0
    query_timeout_mult: int = 16
    query_size_limit: int = 1024
    query_response_size_limit: int = 1024
    user_event_size_limit: int = 512
    # pysyncer extensions (defaults: memberlist's behaviour)
    suspicion_confirmations: int | None = None  # k; None: memberlist's suspicion_mult - 2
    gossip_on_news: bool = False  # send new broadcasts at once, not at the next gossip tick
    suspicion_probers: int = 0  # members expected to probe a new suspect out of turn
    dead_probe_interval: float = 0.0  # ping one recently failed member this often (0: never)
    tell_the_dead: bool = False  # a ping from a member we think dead gets a dead notice back

    def confirmations(self, n: int) -> int:
        """Independent confirmations ``k`` a suspicion waits for in a pool of ``n``.

        memberlist ties ``k`` to the multiplier (:func:`expected_confirmations`);
        ``suspicion_confirmations`` sets it on its own, with the same rule that a pool
        with fewer than ``k`` other members waits for none.
        """
        if self.suspicion_confirmations is None:
            return expected_confirmations(self.suspicion_mult, n)
        k = max(self.suspicion_confirmations, 0)
        return 0 if n - 2 < k else k

    def suspicion_timeouts(self, n: int) -> tuple[float, float]:
        """``(min, max)`` suspicion timeouts for ``n`` members."""
        low = suspicion_min_timeout(self.suspicion_mult, n, self.probe_interval)
        return low, suspicion_max_timeout(self.suspicion_max_timeout_mult, low)

    def derived(self, n: int) -> DerivedTiming:
        """Every size-dependent timing for a cluster of ``n`` members."""
        low, high = self.suspicion_timeouts(n)
        k = self.confirmations(n)
        after_one = (
            remaining_suspicion_time(1, k, 0.0, low, high)
            if k >= 1
            else initial_suspicion_timeout(k, low, high)
        )
        return DerivedTiming(
            n=n,
            suspicion_min=low,
            suspicion_max=high,
            confirmations=k,
            suspicion_after_one=after_one,
            suspicion_at_min=(
                remaining_suspicion_time(k, k, 0.0, low, high)
                if k >= 1
                else initial_suspicion_timeout(k, low, high)
            ),
            retransmits=retransmit_limit(self.retransmit_mult, n),
            push_pull_interval=push_pull_scale(self.push_pull_interval, n),
            query_timeout=default_query_timeout(self.gossip_interval, n, self.query_timeout_mult),
            gossip_to_the_dead=self.gossip_to_the_dead_time,
        )


LAN = GossipProfile(name="lan")
"""memberlist ``DefaultLANConfig`` + serf ``DefaultConfig``."""

WAN = replace(
    LAN,
    name="wan",
    tcp_timeout=30.0,
    suspicion_mult=6,
    push_pull_interval=60.0,
    probe_timeout=3.0,
    probe_interval=5.0,
    gossip_nodes=4,
    gossip_interval=0.5,
    gossip_to_the_dead_time=60.0,
)
"""memberlist ``DefaultWANConfig`` + serf ``DefaultConfig``."""

LOCAL = replace(
    LAN,
    name="local",
    tcp_timeout=1.0,
    indirect_checks=1,
    retransmit_mult=2,
    suspicion_mult=3,
    push_pull_interval=15.0,
    probe_timeout=0.2,
    probe_interval=1.0,
    gossip_interval=0.1,
    gossip_to_the_dead_time=15.0,
)
"""memberlist ``DefaultLocalConfig`` + serf ``DefaultConfig``."""

PYSYNCER = replace(
    LAN,
    name="pysyncer",
    probe_interval=0.4,
    probe_timeout=0.2,
    suspicion_mult=2,
    suspicion_max_timeout_mult=4,
    suspicion_confirmations=3,
    suspicion_probers=16,
    gossip_interval=0.1,
    gossip_nodes=4,
    reconnect_interval=10.0,
    gossip_on_news=True,
    dead_probe_interval=1.0,
    tell_the_dead=True,
)
"""pysyncer's default: memberlist's LAN config with a faster detector (docs/gossip.md).

Probes every 0.4 s (timeout 0.2 s); about 16 members check a new suspect themselves at
once, and a suspicion lasts ``2 x log10(n) x 0.4 s`` once three of them confirmed it
(1.6 s at n=100, 2.4 s at n=1000), four times that without confirmations; news is
gossiped at once, then every 0.1 s to 4 members; a failed member is pinged once a second
with its dead notice, so one that answers again refutes at once; Serf reconnects to
failed members every 10 s. Every message on the wire is memberlist's or Serf's: Serf
agents with their own LAN timings share the pool.
"""

PROFILES = {profile.name: profile for profile in (PYSYNCER, LAN, WAN, LOCAL)}
"""Every profile by name (the ``--gossip-profile`` setting)."""

DEFAULT_PROFILE = PYSYNCER
"""The profile a gossip node runs when none is given."""


def profile_named(name: str) -> GossipProfile:
    """The profile called ``name`` (``pysyncer``, ``lan``, ``wan``, ``local``)."""
    try:
        return PROFILES[name]
    except KeyError:
        known = ", ".join(PROFILES)
        raise ValueError(f"unknown gossip profile {name!r} (known: {known})") from None
