"""Gossip nodes on real sockets (127.0.0.x), and in one pool with real Serf agents."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from pysyncer.gossip.agent import GossipAgent
from pysyncer.gossip.keyring import Keyring
from pysyncer.gossip.membership import NodeStatus
from pysyncer.gossip.simulator import SilentDelegate
from tests.conftest import require_program
from tests.support.gossip import FAST, serf_agents, wait_for

AgentFactory = Callable[..., Awaitable[GossipAgent]]


@pytest.fixture
async def make_agent() -> AsyncIterator[AgentFactory]:
    started: list[GossipAgent] = []

    async def make(name: str, host: str, keyring: Keyring | None = None) -> GossipAgent:
        agent = GossipAgent(name, lambda _: SilentDelegate(), profile=FAST, keyring=keyring)
        await agent.start((host, 0))
        started.append(agent)
        return agent

    yield make
    for agent in started:
        await agent.stop()


def status(agent: GossipAgent, name: str) -> NodeStatus | None:
    state = agent.node.membership.node_map.get(name)
    return None if state is None else state.status


async def test_two_nodes_join_detect_failure_and_leave(make_agent: AgentFactory) -> None:
    a = await make_agent("a", "127.0.0.2")
    b = await make_agent("b", "127.0.0.3")
    c = await make_agent("c", "127.0.0.4")
    assert await b.join([a.address]) == 1
    assert await c.join([a.address]) == 1
    await wait_for(
        lambda: all(status(x, y) == NodeStatus.ALIVE for x in (a, b, c) for y in "abc"),
        5,
        "three nodes alive everywhere",
    )
    await c.stop()  # c vanishes without a word (no leave), as after kill -9
    await wait_for(lambda: status(a, "c") == NodeStatus.DEAD, 10, "a declares c dead")
    assert await b.leave(timeout=5)
    await wait_for(lambda: status(a, "b") == NodeStatus.LEFT, 5, "a sees b left")


async def test_encrypted_pool_rejects_other_keys(make_agent: AgentFactory) -> None:
    key = Keyring(bytes(range(32)))
    a = await make_agent("a", "127.0.0.5", key)
    b = await make_agent("b", "127.0.0.6", Keyring(bytes(range(32))))
    stranger = await make_agent("x", "127.0.0.7", Keyring(bytes(32)))
    plain = await make_agent("p", "127.0.0.8")
    assert await b.join([a.address]) == 1
    assert await stranger.join([a.address]) == 0
    assert await plain.join([a.address]) == 0
    await wait_for(lambda: status(a, "b") == NodeStatus.ALIVE, 5, "b alive at a")
    assert status(a, "x") is None and status(a, "p") is None


async def test_joins_a_real_serf_agent_and_is_seen_by_it(
    make_agent: AgentFactory, tmp_path: Path
) -> None:
    serf = require_program("serf", "serf")
    with serf_agents(serf, tmp_path, "serf1") as (agent,):
        ours = await make_agent("py1", "127.0.0.9")
        assert await ours.join([agent.address]) == 1
        await wait_for(lambda: status(ours, "serf1") == NodeStatus.ALIVE, 5, "serf1 alive")
        await wait_for(lambda: agent.members().get("py1") == "alive", 5, "serf sees py1")
        # The agent keeps probing us: after a few probe rounds we are still alive there.
        await wait_for(lambda: ours.node.stats.counters["packets_in"] > 20, 10, "probes")
        assert agent.members().get("py1") == "alive"
        agent.kill()
        await wait_for(lambda: status(ours, "serf1") == NodeStatus.DEAD, 15, "serf1 failed")


async def test_serf_agent_joins_our_pool_and_sees_our_leave(
    make_agent: AgentFactory, tmp_path: Path
) -> None:
    serf = require_program("serf", "serf")
    ours = await make_agent("py2", "127.0.0.10")
    # The WAN profile's failure detector needs 30 s or more to call py2 failed (5 s probes,
    # 3 s probe timeout, 6 x 5 s suspicion), so seeing py2 go within 15 s can only come
    # from our own broadcast, however loaded the machine is.
    with serf_agents(serf, tmp_path, "serf2", profile="wan") as (agent,):
        # In a thread: the agent dials us back, and our event loop must answer.
        await asyncio.to_thread(agent.cli, "join", f"{ours.address[0]}:{ours.address[1]}")
        await wait_for(lambda: status(ours, "serf2") == NodeStatus.ALIVE, 5, "serf2 alive")
        await wait_for(lambda: agent.members().get("py2") == "alive", 5, "serf sees py2")
        assert await ours.leave(timeout=5)
        # Without the Serf layer's leave intent, Serf reports a memberlist leave as
        # "failed"; it learns it from our dead-from-self broadcast.
        await wait_for(
            lambda: agent.members().get("py2") in ("failed", "left"), 15, "serf sees py2 go"
        )


async def test_encrypted_pool_with_serf(make_agent: AgentFactory, tmp_path: Path) -> None:
    serf = require_program("serf", "serf")
    key = Keyring(bytes(range(32)))
    encrypt = base64.b64encode(key.keys[0]).decode()
    with serf_agents(serf, tmp_path, "serf3", encrypt=encrypt) as (agent,):
        ours = await make_agent("py3", "127.0.0.11", key)
        wrong = await make_agent("py4", "127.0.0.12", Keyring(bytes(32)))
        assert await ours.join([agent.address]) == 1
        assert await wrong.join([agent.address]) == 0
        await wait_for(lambda: agent.members().get("py3") == "alive", 5, "serf sees py3")
        assert "py4" not in agent.members()
