"""The member state machine: incarnations, refutation, Lifeguard suspicion, leave, merge."""

from __future__ import annotations

import random
from collections.abc import Hashable
from dataclasses import dataclass, field

import pytest

from pysyncer.gossip import timing
from pysyncer.gossip.clock import VirtualClock
from pysyncer.gossip.membership import (
    Membership,
    NodeState,
    NodeStatus,
    RemoteNodeState,
)

IP = bytes([127, 0, 0, 1])
LAN = timing.LAN


@dataclass
class Recorder:
    events: list[tuple[str, str]] = field(default_factory=list)
    broadcasts: list[tuple[str, str, int]] = field(default_factory=list)
    conflicts: list[tuple[NodeState, NodeState]] = field(default_factory=list)

    def broadcast_alive(self, state: NodeState) -> None:
        self.broadcasts.append(("alive", state.name, state.incarnation))

    def broadcast_suspect(self, node: str, incarnation: int, accuser: str) -> None:
        self.broadcasts.append(("suspect", node, incarnation))

    def broadcast_dead(self, node: str, incarnation: int, accuser: str) -> None:
        self.broadcasts.append(("dead", node, incarnation))

    def notify_join(self, state: NodeState) -> None:
        self.events.append(("join", state.name))

    def notify_leave(self, state: NodeState) -> None:
        self.events.append((state.status.name.lower(), state.name))

    def notify_update(self, state: NodeState) -> None:
        self.events.append(("update", state.name))

    def notify_conflict(self, existing: NodeState, other: NodeState) -> None:
        self.conflicts.append((existing, other))


def news(name: str, incarnation: int = 1, port: int = 7946, meta: bytes = b"") -> RemoteNodeState:
    return RemoteNodeState(
        name, IP, port, meta, incarnation, NodeStatus.ALIVE, bytes([1, 5, 2, 2, 5, 4])
    )


def make(members: int = 0) -> tuple[Membership, VirtualClock[Hashable], Recorder]:
    timers, recorder = VirtualClock[Hashable](), Recorder()
    local = NodeState("me", IP, 7946, vsn=bytes([1, 5, 2, 2, 5, 4]))
    membership = Membership(local, LAN, timers, recorder, random.Random(7))
    for i in range(members):
        membership.alive(news(f"n{i}"))
    recorder.events.clear()
    recorder.broadcasts.clear()
    return membership, timers, recorder


def test_bootstrap_makes_us_alive_and_joined() -> None:
    timers, recorder = VirtualClock[Hashable](), Recorder()
    membership = Membership(NodeState("me", IP, 7946), LAN, timers, recorder)
    assert membership.local.status == NodeStatus.ALIVE
    assert membership.local.incarnation == 1
    assert recorder.events == [("join", "me")]
    assert recorder.broadcasts == [("alive", "me", 1)]


def test_new_member_joins_and_old_news_is_ignored() -> None:
    membership, _, recorder = make()
    membership.alive(news("a", incarnation=5))
    membership.alive(news("a", incarnation=5))
    membership.alive(news("a", incarnation=4))
    assert recorder.events == [("join", "a")]
    assert recorder.broadcasts == [("alive", "a", 5)]
    membership.alive(news("a", incarnation=6, meta=b"tags"))
    assert recorder.events[-1] == ("update", "a")
    assert membership.node_map["a"].meta == b"tags"


def test_nonsense_protocol_versions_are_ignored() -> None:
    membership, _, _ = make()
    bad = RemoteNodeState("x", IP, 1, b"", 1, NodeStatus.ALIVE, bytes([3, 2, 2, 2, 5, 4]))
    membership.alive(bad)
    assert "x" not in membership.node_map


@pytest.mark.parametrize(
    ("members", "confirmations", "expected_timeout"),
    [
        # n counts us too. LAN: min = 4 * max(1, log10(n)) s, max = 6 * min, k = 2.
        (9, 0, 24.0),  # n = 10
        (9, 1, 11.381),  # Lifeguard: max - (max - min) * log(2) / log(3), floored to ms
        (9, 2, 4.0),  # k confirmations reach min
        (99, 0, 48.0),  # n = 100
        (99, 1, 22.762),
        (1, 0, 4.0),  # n = 2: too few members to expect confirmations (k = 0): min
    ],
)
def test_suspicion_timeout_shrinks_with_confirmations(
    members: int, confirmations: int, expected_timeout: float
) -> None:
    membership, timers, recorder = make(members)
    membership.suspect("n0", 1, accuser="n1")
    assert membership.node_map["n0"].status == NodeStatus.SUSPECT
    for i in range(confirmations):
        membership.suspect("n0", 1, accuser=f"n{i + 2}")
    assert timers.deadline_of(("suspicion", "n0")) == pytest.approx(expected_timeout)
    # Duplicate and surplus confirmations change nothing and are not re-gossiped.
    before = len(recorder.broadcasts)
    membership.suspect("n0", 1, accuser="n1")
    assert len(recorder.broadcasts) == before


def test_suspicion_expires_into_dead() -> None:
    membership, timers, recorder = make(9)
    membership.suspect("n3", 1, accuser="n1")
    state = membership.node_map["n3"]
    timers.advance(23.9)
    assert membership.is_suspected("n3")
    timers.advance(0.2)
    assert not membership.is_suspected("n3")
    assert state.status == NodeStatus.DEAD
    assert recorder.events == [("dead", "n3")]
    assert recorder.broadcasts == [("suspect", "n3", 1), ("dead", "n3", 1)]


def test_alive_with_higher_incarnation_clears_suspicion() -> None:
    membership, timers, _ = make(9)
    membership.suspect("n3", 1, accuser="n1")
    membership.alive(news("n3", incarnation=2))
    assert membership.node_map["n3"].status == NodeStatus.ALIVE
    assert timers.deadline_of(("suspicion", "n3")) is None
    timers.advance(100)
    assert membership.node_map["n3"].status == NodeStatus.ALIVE


@pytest.mark.parametrize("accusation", ["suspect", "dead"])
def test_accusations_about_us_are_refuted(accusation: str) -> None:
    membership, _, recorder = make(3)
    accused = membership.incarnation + 3
    getattr(membership, accusation)("me", accused, "n1")
    assert membership.local.status == NodeStatus.ALIVE
    assert membership.local.incarnation == accused + 1
    assert recorder.broadcasts == [("alive", "me", accused + 1)]
    assert membership.awareness.score == 1
    assert membership.refutations == 1


def test_stale_alive_about_us_with_other_meta_is_refuted() -> None:
    membership, _, recorder = make()
    membership.alive(news("me", incarnation=membership.incarnation, meta=b"old config"))
    assert recorder.broadcasts == [("alive", "me", 2)]


def test_graceful_leave_and_failure_are_told_apart() -> None:
    membership, _, recorder = make(3)
    membership.dead("n1", 1, accuser="n1")
    membership.dead("n2", 1, accuser="n0")
    assert membership.node_map["n1"].status == NodeStatus.LEFT
    assert membership.node_map["n2"].status == NodeStatus.DEAD
    assert recorder.events == [("left", "n1"), ("dead", "n2")]
    membership.alive(news("n2", incarnation=2))
    assert recorder.events[-1] == ("join", "n2")


def test_our_leave_is_not_refuted() -> None:
    membership, _, recorder = make(3)
    membership.leave()
    assert membership.local.status == NodeStatus.LEFT
    assert recorder.broadcasts == [("dead", "me", 1)]
    membership.alive(news("me", incarnation=9))
    assert membership.local.status == NodeStatus.LEFT


def test_merge_remote_dead_only_suspects() -> None:
    membership, _, _ = make(3)
    membership.merge_remote(
        [
            RemoteNodeState("n0", IP, 7946, b"", 1, NodeStatus.DEAD),
            RemoteNodeState("n1", IP, 7946, b"", 1, NodeStatus.LEFT),
            RemoteNodeState("new", IP, 7947, b"", 4, NodeStatus.ALIVE),
        ]
    )
    assert membership.node_map["n0"].status == NodeStatus.SUSPECT
    assert membership.node_map["n1"].status == NodeStatus.LEFT
    assert membership.node_map["new"].status == NodeStatus.ALIVE


def test_address_conflict_and_reuse_after_leave() -> None:
    membership, _, recorder = make(2)
    membership.alive(news("n0", incarnation=5, port=9999))
    assert len(recorder.conflicts) == 1
    assert membership.node_map["n0"].port == 7946
    membership.dead("n1", 1, accuser="n1")
    membership.alive(news("n1", incarnation=1, port=9999))
    assert membership.node_map["n1"].port == 9999
    assert membership.node_map["n1"].status == NodeStatus.ALIVE


def test_probe_round_robin_visits_every_live_member_and_reaps_the_long_dead() -> None:
    membership, timers, _ = make(20)
    membership.dead("n5", 1, accuser="n1")
    for _ in range(3):
        seen = []
        for _ in range(19):
            target = membership.next_probe_target()
            assert target is not None
            seen.append(target.name)
        assert sorted(seen) == sorted(f"n{i}" for i in range(20) if i != 5)
    assert "n5" in membership.node_map  # within gossip_to_the_dead_time
    timers.advance(LAN.gossip_to_the_dead_time + 1)
    membership.reset_nodes()
    assert "n5" not in membership.node_map
    assert len(membership.nodes) == 20


def test_gossip_targets_exclude_us_and_the_long_dead() -> None:
    membership, timers, _ = make(2)
    membership.dead("n0", 1, accuser="n1")
    names = {n.name for n in membership.gossip_targets()}
    assert names == {"n0", "n1"}  # the recently dead still hear gossip
    timers.advance(LAN.gossip_to_the_dead_time + 1)
    assert {n.name for n in membership.gossip_targets()} == {"n1"}


def test_random_members_are_distinct_in_large_pools() -> None:
    membership, _, _ = make(200)
    for _ in range(50):
        chosen = membership.random_members(3, lambda n: n.name == "me")
        assert len({n.name for n in chosen}) == 3
        assert all(n.name != "me" for n in chosen)
