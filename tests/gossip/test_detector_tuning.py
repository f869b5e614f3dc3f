"""The tuned default detector (``timing.PYSYNCER``): fast, accurate, back fast, compatible.

In the simulator (virtual time, deterministic): a crash is declared by every member
within the issue's bounds at N=100; CPU-starved members in a lossy pool get no healthy
member declared failed; a member that was declared failed and answers again (resumed,
or a partition healed) is alive in every view within seconds. Against a real Serf agent:
a stopped and resumed agent is seen alive again at once (our dead notice makes it
refute), and memberlist's LAN preset keeps memberlist's behaviour.
"""

from __future__ import annotations

import asyncio
import functools
import os
import random
import signal
import statistics
from pathlib import Path

import pytest

from pysyncer.gossip.membership import NodeStatus
from pysyncer.gossip.serf import MemberStatus
from pysyncer.gossip.simulator import Simulation
from pysyncer.gossip.stack import GossipStack
from pysyncer.gossip.timing import (
    DEFAULT_PROFILE,
    LAN,
    LOCAL,
    PROFILES,
    PYSYNCER,
    WAN,
    profile_named,
)
from tests.conftest import require_program
from tests.support.gossip import SerfAgent, wait_for
from tests.support.gossip import gossip_stack as stack


def test_profiles() -> None:
    assert DEFAULT_PROFILE is PYSYNCER and Simulation(2).profile is PYSYNCER
    assert profile_named("lan") is LAN and set(PROFILES) == {"pysyncer", "lan", "wan", "local"}
    with pytest.raises(ValueError, match="unknown gossip profile 'fast'"):
        profile_named("fast")
    lan = LAN.derived(100)  # memberlist's numbers are untouched
    assert (lan.suspicion_min, lan.suspicion_max, lan.confirmations) == (8.0, 48.0, 2)
    ours = PYSYNCER.derived(100)
    assert (ours.suspicion_min, ours.suspicion_max, ours.confirmations) == (1.6, 6.4, 3)
    assert ours.suspicion_at_min == 1.6
    assert PYSYNCER.derived(3).confirmations == 0  # too few members to confirm
    for preset in (LAN, WAN, LOCAL):  # the extensions are off in memberlist's presets
        assert preset.suspicion_confirmations is None and preset.suspicion_probers == 0
        assert not preset.gossip_on_news and not preset.tell_the_dead
        assert preset.dead_probe_interval == 0


async def pool(size: int, seed: int, loss: float = 0.0) -> Simulation:
    sim = Simulation(size, seed=seed, loss=loss)
    sim.seed_full_membership()
    sim.start()
    await sim.run(3.0)
    return sim


async def test_crash_detection_at_a_hundred_members() -> None:
    times = []
    for seed in range(1, 6):
        sim = await pool(100, seed)
        victim = f"n{seed * 17}"
        sim.kill(victim)
        took = await sim.run_until(functools.partial(sim.all_see, victim, NodeStatus.DEAD), 20)
        assert took is not None
        times.append(took)
    assert max(times) <= 5.0, times
    assert statistics.median(times) <= 3.0, times


async def test_starved_members_in_a_lossy_pool_get_no_healthy_member_declared_failed() -> None:
    sim = await pool(40, seed=21, loss=0.05)
    starved = ["n1", "n11", "n21", "n31"]
    rng = random.Random(4)
    wake = dict.fromkeys(starved, sim.clock.now())
    for member in sim.nodes.values():
        member.delegate.events.clear()
    end = sim.clock.now() + 40.0
    while sim.clock.now() < end:
        for name in starved:  # frozen 0.1-1.0 s, then running 0.2-1.0 s, over and over
            if sim.clock.now() >= wake[name]:
                frozen = rng.uniform(0.1, 1.0)
                sim.stall(name, frozen)
                wake[name] = sim.clock.now() + frozen + rng.uniform(0.2, 1.0)
        await sim.run(0.05, 0.05)
    declared = [s for m in sim.nodes.values() for kind, s in m.delegate.events if kind == "dead"]
    assert not [s for s in declared if s not in starved]
    suspected = sum(m.node.stats.counters["suspicions"] for m in sim.nodes.values())
    assert suspected > 0  # the starved members were suspected, and refuted


async def test_a_member_declared_failed_is_alive_everywhere_soon_after_it_resumes() -> None:
    sim = await pool(30, seed=5)
    sim.stall("n9", 8.0)  # long enough to be declared dead by everyone
    assert await sim.run_until(lambda: sim.all_see("n9", NodeStatus.DEAD), 8.0) is not None
    await sim.run_until(lambda: sim.nodes["n9"].stalled_until <= sim.clock.now(), 10.0)
    took = await sim.run_until(lambda: sim.all_see("n9", NodeStatus.ALIVE), 10.0)
    assert took is not None and took <= 5.0, took
    assert sim.nodes["n9"].node.membership.refutations >= 1


async def test_a_healed_partition_is_alive_everywhere_within_seconds() -> None:
    sim = await pool(20, seed=6)
    left, right = [f"n{i}" for i in range(10)], [f"n{i}" for i in range(10, 20)]
    sim.partition(left, right)
    split = await sim.run_until(
        lambda: all(sim.all_see(r, NodeStatus.DEAD, observers=left) for r in right), 30
    )
    assert split is not None
    sim.heal()
    took = await sim.run_until(
        lambda: all(sim.all_see(n, NodeStatus.ALIVE) for n in sim.live_names()), 10
    )
    assert took is not None and took <= 5.0, took


async def test_lan_preset_neither_probes_the_dead_nor_tells_them() -> None:
    sim = Simulation(10, profile=LAN, seed=2)
    sim.seed_full_membership()
    sim.start()
    await sim.run(2)
    sim.stall("n3", 40)
    await sim.run(40)
    counters = [m.node.stats.counters for m in sim.nodes.values()]
    assert sum(c["dead_probes"] + c["dead_notices"] for c in counters) == 0


# -- a real Serf agent --------------------------------------------------------------------


@pytest.mark.needs_server("serf")
@pytest.mark.timeout(120)
async def test_a_resumed_serf_agent_is_alive_again_at_once(tmp_path: Path) -> None:
    serf = require_program("serf", "serf")
    agent = SerfAgent(serf, "agent1", tmp_path, profile="lan")
    try:
        await asyncio.to_thread(agent.wait_ready)
        async with stack("py1", tmp_path) as one, stack("py2", tmp_path) as two:
            assert await one.serf.join([agent.address]) == 1
            assert await two.serf.join([agent.address]) == 1

            def status(gossip: GossipStack) -> MemberStatus | None:
                member = gossip.serf.member("agent1")
                return member.status if member is not None else None

            await wait_for(lambda: status(one) == status(two) == MemberStatus.ALIVE, 15, "pool")
            os.kill(agent.process.pid, signal.SIGSTOP)
            try:
                await wait_for(
                    lambda: status(one) == status(two) == MemberStatus.FAILED, 20, "failed"
                )
            finally:
                os.kill(agent.process.pid, signal.SIGCONT)
            took = await wait_for(
                lambda: status(one) == status(two) == MemberStatus.ALIVE, 15, "alive again"
            )
            assert took <= 5.0, took  # Serf alone waits for its 30 s reconnect or push/pull
            members = await asyncio.to_thread(agent.members)
            assert members.get("py1") == members.get("py2") == "alive"
    finally:
        agent.stop()
