"""A pysyncer Serf + GossipNode on real sockets in one pool with a real ``serf agent``.

The node runs on :class:`~pysyncer.gossip.transport.NetTransport` and a ``LoopClock``
(a small Network adapter below frames stream messages with
:mod:`pysyncer.gossip.stream`). Checked against the agent's own CLI: membership both
ways with tags, a user event from the agent, a query from the agent answered by our
responder, our query acked by the agent, and our graceful leave seen as ``left``.
Only the agent started here is stopped, by pid; every wait is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pysyncer.gossip.clock import LoopClock
from pysyncer.gossip.node import GossipNode, NodeConfig
from pysyncer.gossip.serf import MemberStatus, Serf, SerfEvent, UserEvent
from pysyncer.gossip.stream import frame_stream_message, read_stream_message
from pysyncer.gossip.timing import LAN
from pysyncer.gossip.transport import NetTransport
from tests.conftest import require_program
from tests.support.gossip import free_port

pytestmark = [pytest.mark.needs_server("serf"), pytest.mark.timeout(90)]

HOST = "127.0.0.1"


@dataclass
class Agent:
    serf: str
    port: int
    rpc: str
    process: subprocess.Popen[bytes]
    log: Path

    def cli(self, command: str, *args: str) -> str:
        done = subprocess.run(
            [self.serf, command, f"-rpc-addr={self.rpc}", *args],  # flags before arguments
            capture_output=True,
            timeout=20,
            check=True,
        )
        return done.stdout.decode()

    def members(self) -> dict[str, dict[str, object]]:
        data = json.loads(self.cli("members", "-format=json"))
        return {m["name"]: m for m in data["members"]}


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[Agent]:
    serf = require_program("serf", "serf")
    port, rpc_port = free_port(HOST), free_port(HOST)
    log = tmp_path / "agent.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                serf,
                "agent",
                "-node=agent1",
                f"-bind={HOST}:{port}",
                f"-rpc-addr={HOST}:{rpc_port}",
                "-tag",
                "role=agent",
                "-log-level=debug",
            ],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    found = Agent(serf, port, f"{HOST}:{rpc_port}", process, log)
    try:
        deadline = time.monotonic() + 8.0
        while True:
            assert process.poll() is None, log.read_text()
            with contextlib.suppress(OSError), socket.create_connection((HOST, rpc_port), 0.2):
                break
            assert time.monotonic() < deadline, "serf agent did not start"
            time.sleep(0.05)
        yield found
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)


class SocketNetwork:
    """GossipNode's Network over a NetTransport (no keyring, no label)."""

    def __init__(self, transport: NetTransport) -> None:
        self.transport = transport

    def send_packet(self, addr: tuple[str, int], data: bytes) -> None:
        self.transport.send_packet(addr, data)

    async def exchange(self, addr: tuple[str, int], message: bytes, timeout: float) -> bytes | None:
        reader, writer = await self.transport.open_stream(addr, timeout)
        try:
            writer.write(frame_stream_message(message, keyring=None))
            await writer.drain()
            return await read_stream_message(
                reader, keyring=None, timeout=timeout, label_header=False
            )
        finally:
            writer.close()


@dataclass
class Local:
    serf: Serf
    node: GossipNode
    transport: NetTransport
    events: list[SerfEvent]


@pytest.fixture
async def local() -> AsyncIterator[Local]:
    transport = NetTransport()
    await transport.start(HOST, 0)
    clock: LoopClock[object] = LoopClock()
    events: list[SerfEvent] = []
    serf = Serf("py1", {"role": "python"}, LAN, clock, random.Random())
    serf.responder = lambda name, payload: b"py-answer:" + payload
    serf.subscribe(events.append)
    config = NodeConfig("py1", transport.address, LAN)
    node = GossipNode(config, clock, SocketNetwork(transport), serf)
    serf.attach(node)

    def on_packet(data: bytes, addr: tuple[str, int], _: float) -> None:
        node.handle_packet(data, addr)

    async def on_stream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        message = await read_stream_message(reader, keyring=None, timeout=10)
        reply = node.handle_stream_message(message)
        if reply is not None:
            writer.write(frame_stream_message(reply, keyring=None, label_header=False))
            await writer.drain()

    transport.on_packet = on_packet
    transport.on_stream = on_stream
    node.start()
    serf.start()
    try:
        yield Local(serf, node, transport, events)
    finally:
        await serf.stop()
        await node.stop()
        await transport.close()
        clock.close()


async def until(condition: Callable[[], bool], limit: float = 15.0) -> None:
    deadline = time.monotonic() + limit
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


async def test_one_pool_with_a_real_agent(agent: Agent, local: Local) -> None:
    assert await local.serf.join([(HOST, agent.port)]) == 1

    def agent_known() -> bool:
        member = local.serf.member("agent1")
        return member is not None and member.status == MemberStatus.ALIVE

    await until(agent_known)
    member = local.serf.member("agent1")
    assert member is not None and member.tags == {"role": "agent"}

    members = await asyncio.to_thread(agent.members)
    assert members["py1"]["status"] == "alive"
    assert members["py1"]["tags"] == {"role": "python"}

    # a user event fired at the agent reaches us, once
    await asyncio.to_thread(agent.cli, "event", "deploy", "v1")
    await until(lambda: any(isinstance(e, UserEvent) for e in local.events))
    await asyncio.sleep(1.0)
    received = [(e.name, e.payload) for e in local.events if isinstance(e, UserEvent)]
    assert received == [("deploy", b"v1")]

    # a query from the agent is answered by our responder, directly over UDP
    output = await asyncio.to_thread(agent.cli, "query", "-timeout=6s", "-format=json", "q", "hi")
    responses = json.loads(output)["Responses"]
    assert responses.get("py1") == "py-answer:hi"

    # our query: the agent acks it (it has no handler, so no response)
    result = await local.serf.query("q2", b"", timeout=5.0, request_ack=True)
    assert {"agent1", "py1"} <= result.acks
    assert result.responses.get("py1") == b"py-answer:"

    await local.serf.leave()

    def left() -> bool:
        return agent.members().get("py1", {}).get("status") == "left"

    deadline = time.monotonic() + 15
    while not await asyncio.to_thread(left):
        assert time.monotonic() < deadline, agent.log.read_text()[-3000:]
        await asyncio.sleep(0.2)
    assert "[ERR]" not in agent.log.read_text()
