"""Vivaldi network coordinates: the arithmetic, Serf's ack payload, and ``serf rtt``.

The client learns round trips from probe acks as Serf's does; the payload is Serf's
(ping version 1 + the msgpack coordinate), so a real Serf agent caches our coordinate
and ``serf rtt`` between it and a pysyncer member works; ``pysyncer rtt`` reads ours.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import re
from collections.abc import AsyncIterator, Hashable
from pathlib import Path

import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from pysyncer import cli
from pysyncer.admin.app import build_app
from pysyncer.admin.presenter import DaemonPresenter
from pysyncer.errors import MalformedDataError
from pysyncer.gossip.clock import Clock
from pysyncer.gossip.serf import DEFAULT_COORDINATE_PAYLOAD, Serf
from pysyncer.gossip.simulator import Simulation
from pysyncer.gossip.stack import GossipStack
from pysyncer.gossip.timing import GossipProfile
from pysyncer.gossip.vivaldi import (
    Coordinate,
    CoordinateClient,
    decode_ack_payload,
    encode_ack_payload,
)
from tests.conftest import require_program
from tests.support.gossip import SerfAgent, wait_for
from tests.support.gossip import gossip_stack as stack


def test_a_fresh_coordinate_is_serfs_default_payload() -> None:
    assert encode_ack_payload(Coordinate.origin()) == DEFAULT_COORDINATE_PAYLOAD
    assert decode_ack_payload(DEFAULT_COORDINATE_PAYLOAD) == Coordinate.origin()


def test_payload_round_trip_and_refusals() -> None:
    moved = Coordinate((0.001, -0.002, 0.0, 0.0, 0.0, 0.0, 0.0, 0.003), 0.4, 0.0001, 0.00002)
    assert decode_ack_payload(encode_ack_payload(moved)) == moved
    with pytest.raises(MalformedDataError, match="version"):
        decode_ack_payload(b"\x02" + encode_ack_payload(moved)[1:])
    with pytest.raises(MalformedDataError):
        decode_ack_payload(b"\x01\x93\x01\x02\x03")  # a list, not a coordinate
    client = CoordinateClient(random.Random(1))
    nan = Coordinate((math.nan,) * 8)
    with pytest.raises(MalformedDataError):
        client.update("x", nan, 0.01)
    with pytest.raises(MalformedDataError):
        client.update("x", Coordinate((0.0,) * 3), 0.01)  # other dimensions
    with pytest.raises(MalformedDataError, match="out of range"):
        client.update("x", Coordinate.origin(), 11.0)
    assert client.coordinate == Coordinate.origin()  # nothing changed


def test_coordinates_learn_a_line_of_round_trips() -> None:
    """Five nodes 10 ms apart on a line: after gossip-like updates the estimates match."""
    rng = random.Random(7)
    positions = [0.0, 0.010, 0.020, 0.030, 0.040]
    clients = [CoordinateClient(random.Random(i)) for i in range(len(positions))]
    for _ in range(400):
        i, j = rng.sample(range(len(positions)), 2)
        rtt = abs(positions[i] - positions[j]) + 0.0005
        clients[i].update(str(j), clients[j].coordinate, rtt)
    for i, j in ((0, 4), (1, 3), (0, 2), (2, 3)):
        true = abs(positions[i] - positions[j]) + 0.0005
        estimate = clients[i].coordinate.distance(clients[j].coordinate)
        assert abs(estimate - true) / true < 0.35, (i, j, estimate, true)
    assert all(c.coordinate.error < 1.0 for c in clients)  # confidence grew


async def test_simulated_serfs_exchange_coordinates_in_acks() -> None:
    serfs: dict[str, Serf] = {}

    def factory(
        name: str, profile: GossipProfile, clock: Clock[Hashable], rng: random.Random
    ) -> Serf:
        serfs[name] = Serf(name, {}, profile, clock, rng)
        return serfs[name]

    sim = Simulation(6, seed=3, delegate_factory=factory, delay=(0.004, 0.006))
    sim.start()
    await sim.join_all()
    await sim.run(30)
    for name, serf in serfs.items():
        mine = serf.coordinates.local()
        assert mine != Coordinate.origin()
        assert decode_ack_payload(serf.ack_payload() or b"") == mine
        others = [n for n in serfs if n != name]
        cached = [serf.coordinates.cached(n) for n in others]
        assert all(c is not None for c in cached)
        # one-way delay 4-6 ms: every estimated round trip lands near 10 ms
        for other in others:
            estimate = mine.distance(serfs[other].coordinates.local())
            assert 0.004 < estimate < 0.030, (name, other, estimate)


# -- against a real Serf agent -----------------------------------------------------------


@contextlib.asynccontextmanager
async def admin(gossip: GossipStack, name: str) -> AsyncIterator[str]:
    presenter = DaemonPresenter(gossip, node=name, dc="dc1", engine=lambda: None)
    runner = web.AppRunner(build_app(presenter, CollectorRegistry()))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


@pytest.mark.needs_server("serf")
@pytest.mark.timeout(90)
async def test_serf_rtt_between_an_agent_and_a_pysyncer_member(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    serf_binary = require_program("serf", "serf")
    agent = SerfAgent(serf_binary, "agent1", tmp_path)
    try:
        await asyncio.to_thread(agent.wait_ready)
        async with stack("py1", tmp_path) as gossip:
            assert await gossip.serf.join([agent.address]) == 1
            coords = gossip.serf.coordinates

            def measured() -> bool:  # the agent's coordinate moved: it accepted our acks
                theirs = coords.cached("agent1")
                return theirs is not None and theirs != Coordinate.origin()

            await wait_for(measured, 30, "a coordinate from the agent")
            out = await asyncio.to_thread(agent.cli, "rtt", "py1")
            match = re.search(r"Estimated py1 <-> agent1 rtt: ([0-9.]+) ms", out)
            assert match, out
            assert 0.0 < float(match.group(1)) < 1000.0
            async with admin(gossip, "py1") as address:
                status = await asyncio.to_thread(
                    cli.main, ["rtt", "--admin-addr", address, "agent1"]
                )
                assert status == 0
                assert re.search(
                    r"Estimated agent1 <-> py1 rtt: [0-9.]+ ms", capsys.readouterr().out
                )
                status = await asyncio.to_thread(
                    cli.main, ["rtt", "--admin-addr", address, "nobody"]
                )
                assert status == 1
                assert "Could not find a coordinate for node 'nobody'" in capsys.readouterr().err
    finally:
        agent.stop()
