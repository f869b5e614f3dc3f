"""Tests of pysyncer.gossip.transport over real loopback sockets, and stream interop with
a real Serf agent (``/usr/bin/serf``): push/pull join and TCP ping, plain and encrypted.

Every wait is bounded; the agent is started per test and killed by pid in teardown.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pysyncer._core import wire
from pysyncer.gossip import lzw
from pysyncer.gossip.keyring import Keyring, encode_key
from pysyncer.gossip.messages import (
    AckResp,
    Compress,
    ErrResp,
    MessageType,
    NodeStatus,
    Ping,
    PushNodeState,
    PushPull,
    decode_push_pull,
    encode_push_pull,
)
from pysyncer.gossip.serf_messages import SerfPushPull
from pysyncer.gossip.stream import frame_stream_message, read_stream_message
from pysyncer.gossip.transport import NetTransport
from pysyncer.supervisor import Supervisor
from tests.conftest import require_program
from tests.support.gossip import free_port

HOST = "127.0.0.1"
KEY = bytes(range(100, 132))
VSN = bytes((1, 5, 2, 2, 5, 4))  # memberlist 1..5 speaking 2; Serf 2..5 speaking 4


@pytest.fixture
async def pair() -> AsyncIterator[tuple[NetTransport, NetTransport]]:
    a, b = NetTransport(close_grace=0.2), NetTransport(close_grace=0.2)
    await a.start(HOST, 0)
    await b.start(HOST, 0)
    try:
        yield a, b
    finally:
        await a.close()
        await b.close()


# ---------------------------------------------------------------------- packets


async def test_packets_both_ways(pair: tuple[NetTransport, NetTransport]) -> None:
    a, b = pair
    loop = asyncio.get_running_loop()
    got: asyncio.Queue[tuple[str, bytes, tuple[str, int], float]] = asyncio.Queue()
    a.on_packet = lambda data, addr, ts: got.put_nowait(("a", data, addr, ts))
    b.on_packet = lambda data, addr, ts: got.put_nowait(("b", data, addr, ts))
    before = loop.time()
    assert a.send_packet(b.address, b"hello")
    who, data, addr, ts = await asyncio.wait_for(got.get(), 5)
    assert (who, data, addr) == ("b", b"hello", a.address)
    assert before <= ts <= loop.time()
    big = bytes(range(256)) * 250  # 64000 bytes: one datagram, well above the MTU
    assert b.send_packet(a.address, big)
    who, data, addr, _ = await asyncio.wait_for(got.get(), 5)
    assert (who, data, addr) == ("a", big, b.address)
    assert a.stats["packets_sent"] == 1 and b.stats["packets_received"] == 1
    assert a.stats["packets_received"] == 1 and b.stats["packets_sent"] == 1


async def test_send_errors_are_counted_not_raised(
    pair: tuple[NetTransport, NetTransport],
) -> None:
    a, b = pair
    assert not a.send_packet(b.address, b"x" * 65537)
    assert not a.send_packet(("not-an-ip", 1), b"x")
    assert not a.send_packet((HOST, 70000), b"x")
    assert a.stats["send_errors"] == 3
    assert a.stats["packets_sent"] == 0
    await a.close()
    assert not a.send_packet(b.address, b"x")
    assert a.stats["send_errors"] == 4


async def test_packet_handler_errors_do_not_stop_the_transport(
    pair: tuple[NetTransport, NetTransport],
) -> None:
    a, b = pair
    got: asyncio.Queue[bytes] = asyncio.Queue()

    def handler(data: bytes, addr: tuple[str, int], ts: float) -> None:
        if data == b"boom":
            raise RuntimeError("handler bug")
        got.put_nowait(data)

    b.on_packet = handler
    a.send_packet(b.address, b"boom")
    a.send_packet(b.address, b"fine")
    assert await asyncio.wait_for(got.get(), 5) == b"fine"
    assert b.stats["handler_errors"] == 1


async def test_a_packet_handler_error_is_counted_by_the_supervisor_of_the_transport() -> None:
    supervisor = Supervisor()
    sender, receiver = NetTransport(close_grace=0.2), NetTransport(close_grace=0.2)
    await sender.start(HOST, 0)
    with supervisor.bound():  # as the daemon starts its gossip stack
        await receiver.start(HOST, 0)
    got: asyncio.Queue[bytes] = asyncio.Queue()

    def handler(data: bytes, addr: tuple[str, int], ts: float) -> None:
        if data == b"boom":
            raise RuntimeError("handler bug")
        got.put_nowait(data)

    receiver.on_packet = handler
    try:
        for packet in (b"boom", b"boom", b"fine"):
            sender.send_packet(receiver.address, packet)
        assert await asyncio.wait_for(got.get(), 5) == b"fine"
    finally:
        await sender.close()
        await receiver.close()
    assert supervisor.swallowed() == {("gossip-packet-handler", "RuntimeError"): 2}


# ---------------------------------------------------------------------- streams


async def test_stream_request_and_reply(pair: tuple[NetTransport, NetTransport]) -> None:
    a, b = pair
    keyring = Keyring(KEY)
    request = Ping(seq_no=9, node="b").to_bytes()

    async def on_stream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        message = await read_stream_message(reader, keyring=keyring, label="L", timeout=5)
        seq = Ping.from_bytes(message).seq_no
        reply = AckResp(seq_no=seq, payload=None).to_bytes()
        writer.write(
            frame_stream_message(
                reply, keyring=keyring, label="L", compress=True, label_header=False
            )
        )
        await writer.drain()

    b.on_stream = on_stream
    reader, writer = await a.open_stream(b.address, timeout=5)
    try:
        writer.write(frame_stream_message(request, keyring=keyring, label="L"))
        await writer.drain()
        reply = await read_stream_message(
            reader, keyring=keyring, label="L", timeout=5, label_header=False
        )
        assert AckResp.from_bytes(reply) == AckResp(seq_no=9, payload=None)
        # The transport closes the accepted connection once the handler returns.
        assert await asyncio.wait_for(reader.read(), 5) == b""
    finally:
        writer.close()
        await writer.wait_closed()
    assert a.stats["streams_opened"] == 1
    assert b.stats["streams_accepted"] == 1
    assert b.stats["stream_errors"] == 0


async def test_stream_handler_error_is_counted(pair: tuple[NetTransport, NetTransport]) -> None:
    a, b = pair

    async def on_stream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_stream_message(reader, keyring=None, timeout=5)

    b.on_stream = on_stream
    reader, writer = await a.open_stream(b.address, timeout=5)
    writer.write(b"\x63garbage")
    await writer.drain()
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()
    await writer.wait_closed()
    for _ in range(100):
        if b.stats["stream_errors"]:
            break
        await asyncio.sleep(0.01)
    assert b.stats["stream_errors"] == 1


async def test_open_stream_refused_is_counted(pair: tuple[NetTransport, NetTransport]) -> None:
    a, _ = pair
    with socket.socket() as probe:  # a port with no listener
        probe.bind((HOST, 0))
        port = probe.getsockname()[1]
    with pytest.raises(OSError):
        await a.open_stream((HOST, port), timeout=5)
    assert a.stats["stream_errors"] == 1


async def test_concurrent_inbound_stream_limit() -> None:
    release = asyncio.Event()
    entered: asyncio.Queue[None] = asyncio.Queue()

    async def on_stream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        entered.put_nowait(None)
        await release.wait()
        writer.write(b"ok")
        await writer.drain()

    server = NetTransport(on_stream=on_stream, max_inbound_streams=2, close_grace=0.5)
    client = NetTransport()
    await server.start(HOST, 0)
    await client.start(HOST, 0)
    streams = []
    try:
        for _ in range(2):
            streams.append(await client.open_stream(server.address, timeout=5))
            await asyncio.wait_for(entered.get(), 5)
        extra = [await client.open_stream(server.address, timeout=5) for _ in range(3)]
        for reader, _ in extra:  # closed at once by the server
            with _eof_or_reset():
                assert await asyncio.wait_for(reader.read(), 5) == b""
        assert server.stats["streams_rejected"] == 3
        assert server.stats["streams_accepted"] == 2
        release.set()
        for reader, _ in streams:
            assert await asyncio.wait_for(reader.read(), 5) == b"ok"
        # Slots are free again.
        for _ in range(100):
            if not server._handlers:
                break
            await asyncio.sleep(0.01)
        reader, writer = await client.open_stream(server.address, timeout=5)
        assert await asyncio.wait_for(reader.read(), 5) == b"ok"
        streams.extend(extra)
        streams.append((reader, writer))
    finally:
        for _, writer in streams:
            writer.close()
        await server.close()
        await client.close()


def _eof_or_reset() -> contextlib.suppress:
    """Tolerate a reset: an aborted connection can surface as EOF or ECONNRESET."""
    return contextlib.suppress(ConnectionResetError)


# -------------------------------------------------------------------- lifecycle


def _port_taken(kind: int, port: int) -> bool:
    with socket.socket(socket.AF_INET, kind) as probe:
        try:
            probe.bind((HOST, port))
        except OSError as exc:
            assert exc.errno == errno.EADDRINUSE
            return True
        return False


async def test_port_zero_binds_one_port_for_udp_and_tcp() -> None:
    transport = NetTransport()
    await transport.start(HOST, 0)
    try:
        host, port = transport.address
        assert host == HOST and port != 0
        assert _port_taken(socket.SOCK_DGRAM, port)
        assert _port_taken(socket.SOCK_STREAM, port)
        assert transport.udp_recv_buffer > 0
        # The same fixed port cannot be bound twice.
        other = NetTransport()
        with pytest.raises(OSError):
            await other.start(HOST, port)
    finally:
        await transport.close()
    # Released on close: the port can be bound again, by both protocols.
    again = NetTransport()
    await again.start(HOST, port)
    assert again.address == (HOST, port)
    await again.close()


async def test_start_rejects_bad_arguments() -> None:
    transport = NetTransport()
    with pytest.raises(ValueError):
        await transport.start("localhost", 0)
    with pytest.raises(ValueError):
        await transport.start(HOST, 65536)
    with pytest.raises(RuntimeError):
        _ = transport.address


async def test_close_cancels_stuck_handlers_and_is_idempotent() -> None:
    cancelled = asyncio.Event()
    entered = asyncio.Event()

    async def stuck(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        entered.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    server = NetTransport(on_stream=stuck, close_grace=0.1)
    client = NetTransport()
    await server.start(HOST, 0)
    await client.start(HOST, 0)
    reader, writer = await client.open_stream(server.address, timeout=5)
    await asyncio.wait_for(entered.wait(), 5)
    await asyncio.wait_for(server.close(), 5)  # the stuck handler is cancelled, not awaited
    assert cancelled.is_set()
    assert not server._handlers
    with _eof_or_reset():
        assert await asyncio.wait_for(reader.read(), 5) == b""
    await server.close()  # again: no-op
    with pytest.raises(OSError):
        await client.open_stream(server.address, timeout=5)
    await client.close()  # closes the stream it opened
    assert writer.is_closing()


# ------------------------------------------------------------------ Serf interop


@dataclass
class SerfAgent:
    name: str
    port: int
    rpc_port: int
    keyring: Keyring | None
    process: subprocess.Popen[bytes]
    log: Path

    def members(self) -> str:
        result = subprocess.run(
            ["serf", "members", f"-rpc-addr={HOST}:{self.rpc_port}"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
        return result.stdout


@pytest.fixture(params=[False, True], ids=["plain", "encrypted"])
def serf_agent(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SerfAgent]:
    serf = require_program("serf", "serf")
    keyring = Keyring(KEY) if request.param else None
    port, rpc_port = free_port(HOST), free_port(HOST)
    args = [
        serf,
        "agent",
        "-node=s1",
        f"-bind={HOST}:{port}",
        f"-rpc-addr={HOST}:{rpc_port}",
        "-log-level=debug",
    ]
    if keyring is not None:
        args.append(f"-encrypt={encode_key(keyring.primary)}")
    log = tmp_path / "serf.log"
    with log.open("wb") as out:
        process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield SerfAgent("s1", port, rpc_port, keyring, process, log)
    finally:
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


async def _connect(
    transport: NetTransport, agent: SerfAgent
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Open a stream to the agent, retrying while it starts (at most ~10 s)."""
    for _ in range(200):
        if agent.process.poll() is not None:
            raise AssertionError(f"serf agent exited: {agent.log.read_text()}")
        try:
            return await transport.open_stream((HOST, agent.port), timeout=2)
        except OSError:
            await asyncio.sleep(0.05)
    raise AssertionError("serf agent did not accept TCP connections in time")


async def _tee(source: asyncio.StreamReader, sink: asyncio.StreamReader, raw: bytearray) -> None:
    """Copy ``source`` into ``sink`` and keep the raw bytes (to see the agent's framing)."""
    while chunk := await source.read(65536):
        raw += chunk
        sink.feed_data(chunk)
    sink.feed_eof()


async def _exchange(
    transport: NetTransport, agent: SerfAgent, message: bytes, *, keyring: Keyring | None
) -> tuple[bytes, bytes]:
    """Send one framed message to the agent; ``(plaintext reply, raw reply bytes)``."""
    reader, writer = await _connect(transport, agent)
    raw = bytearray()
    sink = asyncio.StreamReader()
    tee = asyncio.create_task(_tee(reader, sink, raw))
    try:
        writer.write(frame_stream_message(message, keyring=keyring))
        await writer.drain()
        reply = await read_stream_message(sink, keyring=keyring, timeout=5, label_header=False)
    finally:
        writer.close()
        await writer.wait_closed()
        await asyncio.wait_for(tee, 5)
    return reply, bytes(raw)


async def test_serf_push_pull_join(serf_agent: SerfAgent) -> None:
    agent = serf_agent
    async with NetTransport() as transport:
        await transport.start(HOST, 0)
        fake = PushNodeState(
            name="pysyncer-fake",
            addr=bytes((127, 0, 0, 1)),
            port=transport.address[1],
            meta=wire.encode_tags({"role": "pysyncer"}),
            incarnation=1,
            state=NodeStatus.ALIVE,
            vsn=VSN,
        )
        user_state = SerfPushPull(
            ltime=1,
            status_ltimes={fake.name: 1},
            left_members=(),
            event_ltime=0,
            events=(),
            query_ltime=0,
        ).to_bytes()
        request = encode_push_pull(PushPull(join=True, nodes=(fake,), user_state=user_state))
        reply, raw = await _exchange(transport, agent, request, keyring=agent.keyring)

    # Plaintext: Serf compresses every stream message (EnableCompression); encrypted:
    # the first byte is encryptMsg and the compress wrapper is inside.
    assert raw[0] == (MessageType.ENCRYPT if agent.keyring else MessageType.COMPRESS)
    state = decode_push_pull(reply)
    assert state.join  # memberlist echoes the Join flag of the request
    own = {node.name: node for node in state.nodes}[agent.name]
    assert own.addr == bytes((127, 0, 0, 1))
    assert own.port == agent.port
    assert own.state == NodeStatus.ALIVE
    assert own.vsn[:3] == bytes((1, 5, 2))
    assert wire.decode_tags(own.meta or b"") == {}
    serf_state = SerfPushPull.from_bytes(state.user_state)
    assert agent.name in serf_state.status_ltimes
    # The agent merged our state: our fake node is now a member.
    for _ in range(50):
        if "pysyncer-fake" in agent.members():
            break
        await asyncio.sleep(0.1)
    assert "pysyncer-fake" in agent.members()


async def test_serf_tcp_ping(serf_agent: SerfAgent) -> None:
    agent = serf_agent
    async with NetTransport() as transport:
        await transport.start(HOST, 0)
        ping = Ping(seq_no=4242, node=agent.name).to_bytes()
        reply, _ = await _exchange(transport, agent, ping, keyring=agent.keyring)
    assert AckResp.from_bytes(reply) == AckResp(seq_no=4242, payload=None)


@pytest.mark.parametrize("serf_agent", [True], ids=["encrypted"], indirect=True)
async def test_serf_answers_plaintext_with_encrypted_error(serf_agent: SerfAgent) -> None:
    """To an encrypted agent a plaintext stream is an error; the errResp is encrypted."""
    agent = serf_agent
    assert agent.keyring is not None
    async with NetTransport() as transport:
        await transport.start(HOST, 0)
        reader, writer = await _connect(transport, agent)
        try:
            writer.write(frame_stream_message(Ping(seq_no=1, node="s1").to_bytes(), keyring=None))
            await writer.drain()
            reply = await read_stream_message(
                reader, keyring=agent.keyring, timeout=5, label_header=False
            )
        finally:
            writer.close()
            await writer.wait_closed()
    assert "not encrypted" in ErrResp.from_bytes(reply).error


@pytest.mark.parametrize("serf_agent", [False], ids=["plain"], indirect=True)
async def test_serf_udp_ping_ack(serf_agent: SerfAgent) -> None:
    """The transport's UDP path against the agent: a plaintext ping gets an ack.

    (Encrypted UDP belongs to the packet layer, not to the transport.)"""
    agent = serf_agent
    got: asyncio.Queue[bytes] = asyncio.Queue()
    async with NetTransport(on_packet=lambda data, addr, ts: got.put_nowait(data)) as transport:
        await transport.start(HOST, 0)
        _, writer = await _connect(transport, agent)  # waits until the agent is up
        writer.close()
        await writer.wait_closed()
        assert transport.send_packet((HOST, agent.port), Ping(seq_no=77, node="s1").to_bytes())
        acks: list[AckResp] = []
        while not acks:
            acks = [
                AckResp.from_bytes(part)
                for part in _flatten(await asyncio.wait_for(got.get(), 5))
                if part[0] == MessageType.ACK_RESP
            ]
    assert acks[0].seq_no == 77


def _flatten(packet: bytes) -> list[bytes]:
    """Messages of a plaintext packet through compound and compress wrappers."""
    packet = wire.verify_crc(packet)
    if packet[0] == MessageType.COMPOUND:
        parts, _ = wire.split_compound(packet)
        return [message for part in parts for message in _flatten(part)]
    if packet[0] == MessageType.COMPRESS:
        return _flatten(lzw.decompress(Compress.from_bytes(packet).buf))
    return [packet]
