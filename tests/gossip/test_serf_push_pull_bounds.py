"""A hostile Serf push/pull: more members or user events than any real pool sends is
refused whole (nothing of it merged) and counted as
``pysyncer_gossip_packets_dropped{reason="push_pull_entries"}``; one at the bounds is
merged. The bytes are built with the wire codec, as an attacker's would be."""

from __future__ import annotations

import random
from collections.abc import Hashable

import pytest

from pysyncer._core import wire
from pysyncer.gossip.clock import VirtualClock
from pysyncer.gossip.node import Address, GossipNode, NodeConfig
from pysyncer.gossip.serf import Serf, SerfEvent, UserEvent
from pysyncer.gossip.serf_delegate import PUSH_PULL_ENTRIES_DROP, PUSH_PULL_USER_EVENTS
from pysyncer.gossip.stream import PUSH_PULL_MEMBERS
from pysyncer.gossip.timing import LAN
from pysyncer.supervisor import Supervisor

SERF_PUSH_PULL = 2  # serf messagePushPullType


class _NoNetwork:
    def send_packet(self, addr: Address, data: bytes) -> None:
        pass

    async def exchange(self, addr: Address, message: bytes, timeout: float) -> bytes | None:
        raise ConnectionRefusedError("no streams here")


def _serf() -> tuple[Serf, GossipNode, list[SerfEvent]]:
    clock: VirtualClock[Hashable] = VirtualClock()
    serf = Serf("a", {"role": "test"}, LAN, clock, random.Random(1))
    events: list[SerfEvent] = []
    serf.subscribe(events.append)
    node = GossipNode(
        NodeConfig("a", ("127.0.0.1", 7946), LAN), clock, _NoNetwork(), serf, random.Random(2)
    )
    serf.attach(node)
    return serf, node, events


def _push_pull(members: int, left: int, slots: int, events_per_slot: int) -> bytes:
    ring = [
        {"LTime": n + 1, "Events": [{"Name": f"e{n}.{k}", "Payload": b""}
                                    for k in range(events_per_slot)]}
        for n in range(slots)
    ]  # fmt: skip
    return wire.encode_message(
        SERF_PUSH_PULL,
        {
            "LTime": 9,
            "StatusLTimes": {f"m{n}": 1 for n in range(members)},
            "LeftMembers": [f"m{n}" for n in range(left)],
            "EventLTime": slots + 1,
            "Events": ring,
            "QueryLTime": 1,
        },
    )


@pytest.mark.parametrize(
    ("members", "left", "slots", "per_slot"),
    [
        (PUSH_PULL_MEMBERS + 1, 0, 0, 0),  # a pool larger than the budget is sized for
        (0, PUSH_PULL_MEMBERS + 1, 0, 0),
        (0, 0, PUSH_PULL_USER_EVENTS + 1, 0),  # a ring of empty slots
        (0, 0, 2, PUSH_PULL_USER_EVENTS // 2 + 1),  # many events at one Lamport time
    ],
)
def test_a_push_pull_past_the_entry_bounds_is_refused_whole_and_counted(
    members: int, left: int, slots: int, per_slot: int
) -> None:
    serf, node, events = _serf()
    supervisor = Supervisor()
    hostile = _push_pull(members, left, slots, per_slot)
    with supervisor.bound():
        serf.merge_remote_state(hostile, join=False)
    assert node.stats.counters[PUSH_PULL_ENTRIES_DROP] == 1
    assert supervisor.swallowed() == {("serf-push-pull", "MalformedDataError"): 1}
    assert serf.member_clock.time < 9  # not even its clocks were witnessed
    assert not [e for e in events if isinstance(e, UserEvent)]


def test_a_push_pull_at_the_bounds_is_merged() -> None:
    serf, node, events = _serf()
    serf.merge_remote_state(_push_pull(8, 2, 4, PUSH_PULL_USER_EVENTS // 4), join=False)
    assert node.stats.counters[PUSH_PULL_ENTRIES_DROP] == 0
    assert len([e for e in events if isinstance(e, UserEvent)]) == PUSH_PULL_USER_EVENTS
    assert serf.member_clock.time >= 8
