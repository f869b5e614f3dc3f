"""Record real memberlist/Serf packets from a local Serf agent (see README.md here).

Usage: ``python tests/golden/gossip/capture_serf.py [OUTPUT_DIR]``

Starts ``serf agent`` on 127.0.0.1 (ephemeral ports, no encryption), then from a bare
UDP socket and a TCP connection: pings it and records its ack, joins it with a
push/pull and records its reply, fires a user event and a query through its RPC port
and records the gossip it sends to our fake node, then makes it leave. Every wait is
bounded; the agent (started here) is stopped by its pid.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from pysyncer._core import _wire_py as wire
from pysyncer.gossip import lzw

HERE = Path(__file__).resolve().parent
PROBE = "pyprobe"
AGENT = "g1"
VSN = b"\x01\x05\x02\x02\x05\x04"  # pmin pmax pcur dmin dmax dcur


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_tcp(port: int, deadline: float) -> None:
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port}")


def _serf_state() -> bytes:
    """Serf push/pull user state of a fresh node that knows only itself."""
    return wire.encode_message(
        2,
        {
            "LTime": 1,
            "StatusLTimes": {PROBE: 1},
            "LeftMembers": [],
            "EventLTime": 1,
            "Events": [],
            "QueryLTime": 1,
        },
    )


def _read_push_pull(conn: socket.socket, deadline: float) -> bytes:
    """Raw bytes of one push/pull reply (possibly LZW-compressed), read until complete."""
    buf = b""
    while time.monotonic() < deadline:
        conn.settimeout(max(0.05, deadline - time.monotonic()))
        chunk = conn.recv(65536)
        if not chunk:
            return buf
        buf += chunk
        try:
            body = buf
            if buf[0] == wire.COMPRESS_MSG:
                _, used = wire.unpack_from(buf, 1)
                body = buf[:used]
                return body
            wire.decode_push_pull(body)
            return buf
        except wire.IncompleteDataError:
            continue
    raise TimeoutError("push/pull reply incomplete")


def capture(out: Path) -> dict[str, bytes]:
    serf = os.environ.get("SERF", "/usr/bin/serf")
    bind, rpc = _free_port(), _free_port()
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    udp.settimeout(0.2)
    probe_port = udp.getsockname()[1]
    agent = subprocess.Popen(
        [serf, "agent", f"-node={AGENT}", f"-bind=127.0.0.1:{bind}",
         f"-rpc-addr=127.0.0.1:{rpc}", "-tag", "role=golden", "-protocol=5"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    got: dict[str, bytes] = {}
    try:
        _wait_tcp(bind, time.monotonic() + 10)
        # 1. ping -> ack (possibly compound with the agent's pending broadcasts)
        ping = wire.encode_message(
            wire.PING_MSG,
            {"SeqNo": 42, "Node": AGENT, "SourceAddr": b"\x7f\x00\x00\x01",
             "SourcePort": probe_port, "SourceNode": PROBE},
        )  # fmt: skip
        got["ping_from_python.bin"] = ping
        udp.sendto(ping, ("127.0.0.1", bind))
        got["ack_from_serf.bin"] = udp.recvfrom(65536)[0]

        # 2. push/pull join over TCP -> the agent's full state
        tags = wire.encode_tags({"role": "probe"})
        node = {"Name": PROBE, "Addr": b"\x7f\x00\x00\x01", "Port": probe_port,
                "Meta": tags, "Incarnation": 1, "State": 0, "Vsn": VSN}  # fmt: skip
        push = wire.encode_push_pull([node], _serf_state(), True)
        got["push_pull_join_from_python.bin"] = push
        with socket.create_connection(("127.0.0.1", bind), timeout=5) as conn:
            conn.sendall(push)
            reply = _read_push_pull(conn, time.monotonic() + 5)
        got["push_pull_reply_from_serf.bin"] = reply
        if reply[0] == wire.COMPRESS_MSG:
            envelope = wire.unpack_from(reply, 1)[0]
            got["push_pull_reply_from_serf.decompressed.bin"] = lzw.decompress(envelope[b"Buf"])

        # 3. events, queries and leave arrive as UDP gossip to our fake node
        rpc_addr = f"-rpc-addr=127.0.0.1:{rpc}"
        subprocess.run([serf, "event", rpc_addr, "deploy", "v1.2.3"],
                       check=True, timeout=10, capture_output=True)  # fmt: skip
        subprocess.Popen([serf, "query", rpc_addr, "-timeout=1s", "uptime", "now"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
        packets: list[bytes] = []
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            try:
                packet, sender = udp.recvfrom(65536)
            except TimeoutError:
                continue
            packets.append(packet)
            if packet[:1] == bytes((wire.PING_MSG,)):  # answer its probes so we stay alive
                seq = wire.decode_message(packet)[1][b"SeqNo"]
                udp.sendto(wire.encode_message(2, {"SeqNo": seq, "Payload": None}), sender)
        subprocess.run([serf, "leave", rpc_addr], check=False, timeout=10,
                       capture_output=True)  # fmt: skip
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and agent.poll() is None:
            try:
                packets.append(udp.recvfrom(65536)[0])
            except TimeoutError:
                continue
        for index, packet in enumerate(packets):
            got[f"udp_from_serf_{index:02d}.bin"] = packet
    finally:
        if agent.poll() is None:
            os.kill(agent.pid, signal.SIGTERM)
            try:
                agent.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.kill(agent.pid, signal.SIGKILL)
                agent.wait(timeout=5)
        udp.close()
    out.mkdir(parents=True, exist_ok=True)
    for name, data in got.items():
        (out / name).write_bytes(data)
    return got


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE / "raw"
    for name, data in capture(target).items():
        print(f"{name}: {len(data)} bytes {data[:24].hex()}")
