"""Name conflicts resolved as Serf does: ``_serf_conflict`` answers and a majority vote.

The member that joins with a name the pool already knows at another address asks the
pool where the name lives; the majority answers with the first address, so the newcomer
shuts down. Checked among pysyncer members, and both ways with real Serf agents: our
answers decode in Serf (it counts them in its vote) and Serf's answers decode here.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from pathlib import Path

import pytest

from pysyncer.gossip.membership import NodeStatus
from pysyncer.gossip.serf_conflict import (
    _same_address,
    decode_conflict_answer,
    encode_conflict_answer,
)
from pysyncer.gossip.serf_model import Member, MemberRecord, MemberStatus, MemberTable
from pysyncer.gossip.stack import GossipStack
from tests.conftest import require_program
from tests.support.gossip import SerfAgent, serf_agents, wait_for
from tests.support.gossip import gossip_stack as stack


def test_answer_round_trip_nil_and_mapped_addresses() -> None:
    table = MemberTable("me", Counter())
    member = Member("web", "10.1.2.3", 7946, {"role": "x"}, MemberStatus.ALIVE, 2, 5, 2, 2, 5, 4)
    table.records["web"] = MemberRecord(member)
    assert decode_conflict_answer(encode_conflict_answer(table, "web")) == ("10.1.2.3", 7946)
    assert decode_conflict_answer(encode_conflict_answer(table, "nobody")) is None
    assert _same_address(("::ffff:10.1.2.3", 7946), ("10.1.2.3", 7946))
    assert not _same_address(("10.1.2.3", 7947), ("10.1.2.3", 7946))
    with pytest.raises(ValueError):
        decode_conflict_answer(b"\x05\xc0")


def alive_names(gossip: GossipStack) -> set[str]:
    return {m.name for m in gossip.members() if m.status == MemberStatus.ALIVE}


def knows_at(gossip: GossipStack, name: str, address: tuple[str, int]) -> bool:
    """Whether ``gossip`` holds ``name`` as an alive member at ``address``'s port."""
    member = gossip.serf.member(name)
    if member is None:
        return False
    return member.status == MemberStatus.ALIVE and member.port == address[1]


@pytest.mark.timeout(60)
async def test_pysyncer_pool_votes_the_newcomer_out(tmp_path: Path) -> None:
    async with contextlib.AsyncExitStack() as members:
        pool = [await members.enter_async_context(stack(n, tmp_path)) for n in ("a", "b", "c")]
        first = await members.enter_async_context(stack("dup", tmp_path))
        for gossip in (*pool[1:], first):
            assert await gossip.serf.join([pool[0].address]) == 1
        await wait_for(lambda: alive_names(pool[0]) == {"a", "b", "c", "dup"}, 15, "the pool")
        # Every voter must hold the first "dup" before the second appears: a member that
        # hears of the newcomer first keeps the newcomer's address and votes for it.
        await wait_for(
            lambda: all(knows_at(g, "dup", first.address) for g in pool), 15, "the pool's view"
        )
        second = await members.enter_async_context(stack("dup", tmp_path))
        await second.serf.join([pool[0].address])
        await wait_for(lambda: second.serf.conflicts.lost, 20, "the newcomer losing the vote")
        node = second.current_node()
        assert node is not None and not node.running  # shut down, without a leave
        assert not first.serf.conflicts.lost
        await asyncio.sleep(1.0)
        for gossip in pool:  # the first "dup" stays, at its own address
            assert knows_at(gossip, "dup", first.address), gossip.serf.member("dup")
        state = pool[0].current_node().membership.node_map["dup"]  # type: ignore[union-attr]
        assert state.status == NodeStatus.ALIVE and state.port == first.address[1]


@pytest.mark.needs_server("serf")
@pytest.mark.timeout(90)
async def test_serf_agents_vote_a_pysyncer_newcomer_out(tmp_path: Path) -> None:
    serf = require_program("serf", "serf")
    with serf_agents(serf, tmp_path, "s1", "s2", "dup") as agents:
        for agent in agents[1:]:
            agent.cli("join", f"{agent.address[0]}:{agents[0].address[1]}")
        await wait_for(lambda: len(agents[0].members()) == 3, 20, "the Serf pool")
        async with stack("dup", tmp_path) as newcomer:
            await newcomer.serf.join([agents[0].address])
            await wait_for(lambda: newcomer.serf.conflicts.lost, 30, "the vote lost")
        assert agents[0].members()["dup"] == "alive"


@pytest.mark.needs_server("serf")
@pytest.mark.timeout(90)
async def test_a_serf_newcomer_loses_to_pysyncer_answers(tmp_path: Path) -> None:
    serf = require_program("serf", "serf")
    async with contextlib.AsyncExitStack() as members:
        pool = [await members.enter_async_context(stack(n, tmp_path)) for n in ("p1", "p2", "p3")]
        first = await members.enter_async_context(stack("dup", tmp_path))
        for gossip in (*pool[1:], first):
            assert await gossip.serf.join([pool[0].address]) == 1
        await wait_for(lambda: len(alive_names(pool[0])) == 4, 15, "the pool")
        await wait_for(
            lambda: all(knows_at(g, "dup", first.address) for g in pool), 15, "the pool's view"
        )
        agent = SerfAgent(serf, "dup", tmp_path)
        try:
            await asyncio.to_thread(agent.wait_ready)
            host, port = pool[0].address
            await asyncio.to_thread(agent.cli, "join", f"{host}:{port}")

            def lost() -> bool:
                return "minority in name conflict resolution" in agent.log_text()

            await wait_for(lost, 30, "the Serf agent losing the vote")
            # Serf counted our three answers: they decoded as Members at our address.
            assert "[0 / 3]" in agent.log_text(), agent.log_text()[-2000:]
        finally:
            agent.stop()
        assert not first.serf.conflicts.lost
        dup = pool[1].serf.member("dup")
        assert dup is not None and dup.port == first.address[1]
