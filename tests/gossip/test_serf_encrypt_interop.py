"""Keyring and LZW interop with the real HashiCorp Serf agent (``serf agent -encrypt``).

Talks memberlist's wire protocol to a running agent from raw sockets: an encrypted UDP
ping must come back as an encrypted (and usually LZW-compressed) ack, a ping under the
wrong key must be ignored, and an encrypted TCP push/pull must be answered with the
agent's state, which is LZW-compressed by Go's writer (we re-compress it byte for byte).
A keyring file written by :meth:`Keyring.save` must start an agent, and the file the
agent rewrites after ``serf keys`` must load back. Only processes started here are
stopped, by pid; every wait is bounded.
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import subprocess
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
import pytest

from pysyncer.errors import MalformedDataError
from pysyncer.gossip import lzw
from pysyncer.gossip.keyring import (
    STREAM_HEADER_SIZE,
    Keyring,
    decode_key,
    decrypt_packet,
    decrypt_stream_payload,
    encode_key,
    encrypt_packet,
    encrypt_stream_payload,
    stream_payload_length,
)
from tests.conftest import require_program
from tests.support.gossip import free_port

pytestmark = [pytest.mark.needs_server("serf"), pytest.mark.timeout(60)]

HOST = "127.0.0.1"
PING, ACK, PUSH_PULL, COMPOUND, COMPRESS, HAS_CRC, ERR = 0, 2, 6, 7, 9, 12, 13
REPLY_WAIT = 3.0  # an answer normally takes a few milliseconds
SILENCE_WAIT = 0.7  # how long a dropped ping must stay unanswered


@dataclass
class Agent:
    """A ``serf agent`` process started by this module."""

    name: str
    port: int
    rpc_port: int
    process: subprocess.Popen[bytes]
    log: Path
    compressed: list[tuple[bytes, bytes]] = field(default_factory=list)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def _start_agent(serf: str, tmp: Path, name: str, *key_args: str) -> Agent:
    port, rpc_port = free_port(HOST), free_port(HOST)
    log = tmp / f"serf-{name}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                serf,
                "agent",
                f"-node={name}",
                f"-bind={HOST}:{port}",
                f"-rpc-addr={HOST}:{rpc_port}",
                "-log-level=debug",
                *key_args,
            ],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    agent = Agent(name, port, rpc_port, process, log)
    deadline = time.monotonic() + 8.0
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"serf agent exited early:\n{agent.log_text()}")
        with contextlib.suppress(OSError), socket.create_connection((HOST, rpc_port), 0.2):
            return agent  # the RPC listener starts after memberlist is up
        time.sleep(0.05)
    _stop_agent(agent)
    raise AssertionError(f"serf agent did not start within 8 s:\n{agent.log_text()}")


def _stop_agent(agent: Agent) -> None:
    if agent.process.poll() is None:
        agent.process.terminate()  # our own child, by pid
        try:
            agent.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            agent.process.kill()
            agent.process.wait(timeout=5)


@pytest.fixture(scope="module")
def serf() -> str:
    return require_program("serf", "serf")


@pytest.fixture(scope="module")
def keygen_key(serf: str) -> str:
    out = subprocess.run([serf, "keygen"], capture_output=True, text=True, timeout=10, check=True)
    return out.stdout


@pytest.fixture(scope="module")
def agent(serf: str, keygen_key: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Agent]:
    tmp = tmp_path_factory.mktemp("serf")
    started = _start_agent(serf, tmp, "a", f"-encrypt={keygen_key.strip()}")
    try:
        yield started
    finally:
        _stop_agent(started)


# -- memberlist message helpers (just enough for the test) ------------------------------


def _messages(plain: bytes, compressed: list[tuple[bytes, bytes]]) -> list[bytes]:
    """Split a decrypted packet into messages: unwrap CRC, compress and compound."""
    kind = plain[0]
    if kind == HAS_CRC:
        assert struct.unpack(">I", plain[1:5])[0] == zlib.crc32(plain[5:])
        return _messages(plain[5:], compressed)
    if kind == COMPRESS:
        envelope = msgpack.unpackb(plain[1:], raw=True)
        assert envelope[b"Algo"] == 0  # LZW
        inner = lzw.decompress(envelope[b"Buf"])
        compressed.append((envelope[b"Buf"], inner))
        return _messages(inner, compressed)
    if kind == COMPOUND:
        count = plain[1]
        lengths = struct.unpack(f">{count}H", plain[2 : 2 + 2 * count])
        offset = 2 + 2 * count
        parts: list[bytes] = []
        for length in lengths:
            parts += _messages(plain[offset : offset + length], compressed)
            offset += length
        return parts
    return [plain]


def _ping(node: str, seq: int) -> bytes:
    body: bytes = msgpack.packb({"SeqNo": seq, "Node": node}, use_bin_type=False)
    return bytes([PING]) + body


def _acks(sock: socket.socket, keyring: Keyring, agent: Agent, wait: float) -> list[int]:
    """SeqNos of the acks received within ``wait`` seconds (stops at the first ack)."""
    seqs: list[int] = []
    deadline = time.monotonic() + wait
    while not seqs and (remaining := deadline - time.monotonic()) > 0:
        sock.settimeout(remaining)
        try:
            data, _ = sock.recvfrom(65536)
        except TimeoutError:
            break
        for message in _messages(decrypt_packet(keyring, data), agent.compressed):
            if message[0] == ACK:
                seqs.append(msgpack.unpackb(message[1:], raw=True)[b"SeqNo"])
    return seqs


@pytest.fixture
def udp() -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((HOST, 0))
    with sock:
        yield sock


def _read_exact(conn: socket.socket, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            raise EOFError(f"stream closed after {len(data)} of {size} bytes")
        data += chunk
    return bytes(data)


def _push_pull(agent: Agent, send_keyring: Keyring, version: int = 1) -> bytes:
    """Send an encrypted join push/pull with no nodes; return the raw encrypted reply."""
    header = {"Nodes": 0, "UserStateLen": 0, "Join": True}
    body = bytes([PUSH_PULL]) + msgpack.packb(header, use_bin_type=False)
    with socket.create_connection((HOST, agent.port), timeout=REPLY_WAIT) as conn:
        conn.sendall(encrypt_stream_payload(send_keyring, body, version=version))
        head = _read_exact(conn, STREAM_HEADER_SIZE)
        payload = _read_exact(conn, stream_payload_length(head))
    return head + payload


# -- tests ----------------------------------------------------------------------------------


def test_serf_keygen_output_loads(keygen_key: str, serf: str) -> None:
    ring = Keyring.from_base64(keygen_key)
    assert len(ring.primary) == 32
    assert encode_key(ring.primary) == keygen_key.strip()
    second = subprocess.run([serf, "keygen"], capture_output=True, text=True, timeout=10)
    assert decode_key(second.stdout) != ring.primary


@pytest.mark.parametrize("version", [1, 0])
def test_encrypted_ping_gets_encrypted_ack(
    agent: Agent, keygen_key: str, udp: socket.socket, version: int
) -> None:
    ring = Keyring.from_base64(keygen_key)
    seq = 4242 + version
    udp.sendto(encrypt_packet(ring, _ping(agent.name, seq), version=version), (HOST, agent.port))
    assert _acks(udp, ring, agent, REPLY_WAIT) == [seq], agent.log_text()[-2000:]


def test_reply_is_encrypted_with_version_1(
    agent: Agent, keygen_key: str, udp: socket.socket
) -> None:
    ring = Keyring.from_base64(keygen_key)
    udp.sendto(encrypt_packet(ring, _ping(agent.name, 77)), (HOST, agent.port))
    udp.settimeout(REPLY_WAIT)
    data, _ = udp.recvfrom(65536)
    assert data[0] == 1  # memberlist protocol >= 2 encrypts without padding
    plain = decrypt_packet(ring, data)
    assert len(data) == len(plain) + 29
    with pytest.raises(MalformedDataError):
        decrypt_packet(Keyring([os.urandom(32)]), data)
    with pytest.raises(MalformedDataError):
        decrypt_packet(ring, data, "some-label")  # the label is authenticated


def test_ping_under_another_key_is_ignored(
    agent: Agent, keygen_key: str, udp: socket.socket
) -> None:
    ring = Keyring.from_base64(keygen_key)
    stranger = Keyring([os.urandom(32)])
    udp.sendto(encrypt_packet(stranger, _ping(agent.name, 1001)), (HOST, agent.port))
    udp.sendto(_ping(agent.name, 1002), (HOST, agent.port))  # plaintext: refused too
    assert _acks(udp, ring, agent, SILENCE_WAIT) == []
    # Control on the same socket: the right key is answered, and only that ping.
    udp.sendto(encrypt_packet(ring, _ping(agent.name, 1003)), (HOST, agent.port))
    assert _acks(udp, ring, agent, REPLY_WAIT) == [1003]


def test_secondary_key_decrypts_and_primary_encrypts(
    agent: Agent, keygen_key: str, udp: socket.socket
) -> None:
    right = decode_key(keygen_key)
    other = os.urandom(16)
    # Our primary is unknown to the agent: dropped.
    udp.sendto(encrypt_packet(Keyring([other, right]), _ping(agent.name, 5)), (HOST, agent.port))
    # Our primary is the agent's key; its ack is decrypted with our second key.
    receiver = Keyring([other, right])
    udp.sendto(encrypt_packet(Keyring([right, other]), _ping(agent.name, 6)), (HOST, agent.port))
    assert _acks(udp, receiver, agent, REPLY_WAIT) == [6]


@pytest.mark.parametrize("version", [1, 0])
def test_encrypted_push_pull(agent: Agent, keygen_key: str, version: int) -> None:
    ring = Keyring.from_base64(keygen_key)
    reply = _push_pull(agent, ring, version)
    assert reply[0] == 10 and reply[5] == 1
    plain = decrypt_stream_payload(ring, reply)
    assert plain[0] == COMPRESS  # memberlist always compresses streams when enabled
    envelope = msgpack.unpackb(plain[1:], raw=True)
    inner = lzw.decompress(envelope[b"Buf"])
    # Go's writer and ours produce the same bytes for the same input.
    assert lzw.compress(inner) == envelope[b"Buf"]
    assert inner[0] == PUSH_PULL
    unpacker = msgpack.Unpacker(raw=True)
    unpacker.feed(inner[1:])
    header: dict[bytes, Any] = unpacker.unpack()
    nodes = [unpacker.unpack() for _ in range(header[b"Nodes"])]
    user_state = inner[1 + unpacker.tell() :]
    assert header[b"Join"] is True
    assert len(user_state) == header[b"UserStateLen"] > 0
    me = next(node for node in nodes if node[b"Name"] == agent.name.encode())
    assert me[b"Addr"] == socket.inet_aton(HOST) and me[b"Port"] == agent.port
    assert len(me[b"Vsn"]) == 6


def test_push_pull_under_another_key_is_refused(agent: Agent, keygen_key: str) -> None:
    # The agent cannot decrypt the stream; it answers with an errMsg, encrypted under
    # its own key (so the stranger cannot read it), then closes the stream.
    stranger = Keyring([os.urandom(32)])
    reply = _push_pull(agent, stranger)
    with pytest.raises(MalformedDataError, match="no installed key"):
        decrypt_stream_payload(stranger, reply)
    messages = _messages(decrypt_stream_payload(Keyring.from_base64(keygen_key), reply), [])
    assert [message[0] for message in messages] == [ERR]
    error = msgpack.unpackb(messages[0][1:], raw=True)[b"Error"].decode()
    assert "decrypt" in error.lower()


def test_udp_acks_are_lzw_compressed_by_go(
    agent: Agent, keygen_key: str, udp: socket.socket
) -> None:
    # Serf's ack carries its network coordinate and memberlist piggybacks gossip on it:
    # compression pays off, so the ack arrives as compressMsg. Every LZW buffer seen from
    # the agent (here and in earlier tests) re-compresses to the very same bytes.
    ring = Keyring.from_base64(keygen_key)
    udp.sendto(encrypt_packet(ring, _ping(agent.name, 31337)), (HOST, agent.port))
    assert _acks(udp, ring, agent, REPLY_WAIT) == [31337]
    assert agent.compressed, "the agent sent no compressed packet"
    for buffer, inner in agent.compressed:
        assert lzw.decompress(buffer) == inner
        assert lzw.compress(inner) == buffer


def test_keyring_file_round_trip_with_serf(serf: str, tmp_path: Path, udp: socket.socket) -> None:
    primary, secondary, newer = os.urandom(32), os.urandom(16), os.urandom(32)
    path = tmp_path / "keyring.json"
    Keyring([primary, secondary]).save(path)
    agent = _start_agent(serf, tmp_path, "b", f"-keyring-file={path}")
    try:
        rpc = f"-rpc-addr={HOST}:{agent.rpc_port}"

        def keys(*args: str) -> str:
            done = subprocess.run(
                [serf, "keys", rpc, *args], capture_output=True, text=True, timeout=10
            )
            assert done.returncode == 0, done.stdout + done.stderr
            return done.stdout

        listed = keys("-list")
        assert encode_key(primary) in listed and encode_key(secondary) in listed
        # The agent decrypts with its secondary key and answers under its primary.
        udp.sendto(encrypt_packet(Keyring([secondary]), _ping("b", 9)), (HOST, agent.port))
        assert _acks(udp, Keyring([primary]), agent, REPLY_WAIT) == [9]
        # Rotation through Serf; the agent rewrites the file, which we load back.
        keys(f"-install={encode_key(newer)}")
        keys(f"-use={encode_key(newer)}")
        keys(f"-remove={encode_key(primary)}")
        assert Keyring.load(path).keys == (newer, secondary)
        udp.sendto(encrypt_packet(Keyring([primary]), _ping("b", 10)), (HOST, agent.port))
        assert _acks(udp, Keyring([newer]), agent, SILENCE_WAIT) == []
        udp.sendto(encrypt_packet(Keyring([newer]), _ping("b", 11)), (HOST, agent.port))
        assert _acks(udp, Keyring([newer]), agent, REPLY_WAIT) == [11]
    finally:
        _stop_agent(agent)
