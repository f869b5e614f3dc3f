"""Hostile packets at a live node: dropped and counted, never raised, state intact."""

from __future__ import annotations

import random
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from pysyncer.gossip.membership import NodeStatus
from pysyncer.gossip.simulator import Simulation

GOLDEN = sorted((Path(__file__).resolve().parents[1] / "golden" / "gossip").glob("*.bin"))
SAMPLES = [path.read_bytes() for path in GOLDEN]


def mutate(data: bytes, rng: random.Random) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        choice = rng.random()
        if choice < 0.4 and buf:
            buf[rng.randrange(len(buf))] = rng.randrange(256)
        elif choice < 0.7 and buf:
            del buf[rng.randrange(len(buf)) :]
        else:
            buf[rng.randrange(len(buf) + 1) : 0] = rng.randbytes(rng.randint(1, 8))
    return bytes(buf)


@settings(max_examples=400, deadline=None)
@given(seed=st.integers(0, 2**32), index=st.integers(0, len(SAMPLES) - 1))
def test_mutated_real_packets_never_escape(seed: int, index: int) -> None:
    sim = Simulation(3, seed=1)
    sim.seed_full_membership()
    node = sim.nodes["n0"].node
    data = mutate(SAMPLES[index], random.Random(seed))
    node.handle_packet(data, ("10.9.9.9", 7946))  # must not raise
    assert node.membership.local.status == NodeStatus.ALIVE
    assert node.stats.counters["packets_in"] == 1
    assert node.stats.counters["packets_dropped_internal_error"] == 0


def test_random_bytes_are_counted_as_drops() -> None:
    sim = Simulation(2, seed=1)
    node = sim.nodes["n0"].node
    rng = random.Random(5)
    for _ in range(500):
        node.handle_packet(rng.randbytes(rng.randint(0, 200)), ("10.9.9.9", 7946))
    counters = node.stats.counters
    dropped = sum(v for k, v in counters.items() if k.startswith("packets_dropped_"))
    assert dropped > 400
    assert counters["packets_dropped_internal_error"] == 0
