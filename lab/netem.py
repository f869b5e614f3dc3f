"""Link delay and jitter for the lab, in user space: an NFQUEUE verdict delayer.

This kernel has no ``sch_netem`` (``tc qdisc add ... netem`` answers "Specified qdisc kind
is unknown"), but it has netfilter queues. The lab's router namespace sends every packet
between two data centers to a queue numbered after the pair (``iptables -j NFQUEUE``);
this process, run inside that namespace, holds each packet (metadata only, the payload
stays in the kernel) for the link's delay plus a uniform jitter and then accepts it.
Loss and partitions are plain iptables rules (:mod:`lab.net`); this module only delays.

It speaks the nfnetlink_queue protocol over a raw netlink socket with the standard
library. It owns nothing else: it must not touch namespaces or iptables rules.

    python -m lab.netem --queue 12:40:10 --queue 21:40:10 --seed 7
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import signal
import socket
import struct
import sys
from dataclasses import dataclass

NETLINK_NETFILTER = 12
NFNL_SUBSYS_QUEUE = 3
NFQNL_MSG_PACKET = 0
NFQNL_MSG_VERDICT = 1
NFQNL_MSG_CONFIG = 2
NFQA_PACKET_HDR = 1
NFQA_VERDICT_HDR = 2
NFQA_CFG_CMD = 1
NFQA_CFG_PARAMS = 2
NFQA_CFG_QUEUE_MAXLEN = 3
NFQNL_CFG_CMD_BIND = 1
NFQNL_COPY_META = 1
NLM_F_REQUEST = 1
NLM_F_ACK = 4
NLMSG_ERROR = 2
NF_ACCEPT = 1
SO_RCVBUFFORCE = 33
QUEUE_MAXLEN = 16384
STATS_INTERVAL = 10.0  # seconds between the lines of statistics written to the log


class NetlinkError(OSError):
    """The kernel refused a netfilter-queue request."""


@dataclass(frozen=True)
class Link:
    """One queue's delay: ``delay_ms`` plus a uniform draw in +-``jitter_ms``."""

    queue: int
    delay_ms: float
    jitter_ms: float

    @classmethod
    def parse(cls, text: str) -> Link:
        """``QUEUE:DELAY_MS:JITTER_MS``."""
        queue, delay, jitter = text.split(":")
        return cls(int(queue), float(delay), float(jitter))

    def draw(self, rng: random.Random) -> float:
        """Seconds to hold one packet."""
        spread = rng.uniform(-self.jitter_ms, self.jitter_ms)
        return max(0.0, self.delay_ms + spread) / 1000.0


def _attribute(kind: int, payload: bytes) -> bytes:
    size = 4 + len(payload)
    return struct.pack("=HH", size, kind) + payload + b"\0" * (-size % 4)


def _message(kind: int, queue: int, attributes: bytes, flags: int, seq: int) -> bytes:
    family = struct.pack("=BB", socket.AF_UNSPEC, 0) + struct.pack(">H", queue)
    body = family + attributes
    header = struct.pack("=IHHII", 16 + len(body), (NFNL_SUBSYS_QUEUE << 8) | kind, flags, seq, 0)
    return header + body


def _attributes(data: bytes) -> dict[int, bytes]:
    found: dict[int, bytes] = {}
    offset = 0
    while offset + 4 <= len(data):
        size, kind = struct.unpack_from("=HH", data, offset)
        if size < 4:
            break
        found[kind & 0x3FFF] = data[offset + 4 : offset + size]
        offset += (size + 3) & ~3
    return found


class Delayer:
    """Binds the queues of ``links`` and accepts each packet after its link's delay."""

    def __init__(self, links: list[Link], seed: int) -> None:
        self.links = {link.queue: link for link in links}
        self.rng = random.Random(seed)
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        self.sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 32 * 1024 * 1024)
        self.sock.bind((0, 0))
        self.seq = 0
        self.held = 0
        self.passed = 0
        self.overflows = 0  # reads that failed with ENOBUFS: the kernel dropped packets
        self.late_max = 0.0  # seconds a verdict came after its due time (CPU starvation)
        self.late_sum = 0.0

    def _request(self, queue: int, attributes: bytes) -> None:
        self.seq += 1
        flags = NLM_F_REQUEST | NLM_F_ACK
        self.sock.send(_message(NFQNL_MSG_CONFIG, queue, attributes, flags, self.seq))
        while True:  # the ack (packets cannot arrive before the bind is acked)
            data = self.sock.recv(65536)
            size, kind = struct.unpack_from("=IH", data, 0)
            if kind == NLMSG_ERROR:
                (code,) = struct.unpack_from("=i", data, 16)
                if code:
                    raise NetlinkError(-code, f"nfqueue config of queue {queue} refused")
                return
            del size

    def bind(self) -> None:
        for queue in self.links:
            command = struct.pack(">BxH", NFQNL_CFG_CMD_BIND, socket.AF_INET)
            self._request(queue, _attribute(NFQA_CFG_CMD, command))
            params = struct.pack(">IB", 0, NFQNL_COPY_META)
            maxlen = struct.pack(">I", QUEUE_MAXLEN)
            attributes = _attribute(NFQA_CFG_PARAMS, params)
            self._request(queue, attributes + _attribute(NFQA_CFG_QUEUE_MAXLEN, maxlen))

    def _verdict(self, queue: int, packet_id: int, due: float) -> None:
        late = max(0.0, asyncio.get_running_loop().time() - due)
        self.late_max = max(self.late_max, late)
        self.late_sum += late
        header = struct.pack(">II", NF_ACCEPT, packet_id)
        message = _message(NFQNL_MSG_VERDICT, queue, _attribute(NFQA_VERDICT_HDR, header), 1, 0)
        try:
            self.sock.send(message)
        except OSError:  # the queue was unbound (shutting down): the kernel drops it
            return
        self.held -= 1
        self.passed += 1

    def _readable(self, loop: asyncio.AbstractEventLoop) -> None:
        try:
            data = self.sock.recv(1 << 20)
        except BlockingIOError:
            return
        except OSError:  # ENOBUFS: the kernel dropped packets it could not queue
            self.overflows += 1
            return
        offset = 0
        while offset + 16 <= len(data):
            size, kind = struct.unpack_from("=IH", data, offset)
            if size < 16:
                break
            if kind == (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET:
                (queue,) = struct.unpack_from(">H", data, offset + 18)
                header = _attributes(data[offset + 20 : offset + size]).get(NFQA_PACKET_HDR)
                link = self.links.get(queue)
                if header is not None and link is not None:
                    (packet_id,) = struct.unpack_from(">I", header, 0)
                    self.held += 1
                    hold = link.draw(self.rng)
                    loop.call_later(hold, self._verdict, queue, packet_id, loop.time() + hold)
            offset += (size + 3) & ~3

    def report(self) -> None:
        """One line of what happened since the last: packets passed, how late their
        verdicts came (the delay this process adds when it is starved of CPU), overflows."""
        mean = self.late_sum / self.passed if self.passed else 0.0
        print(
            f"netem: {self.passed} packets passed, {self.held} held, verdicts late by "
            f"{mean * 1000:.1f} ms mean, {self.late_max * 1000:.0f} ms at most, "
            f"{self.overflows} overflows",
            flush=True,
        )
        self.passed, self.late_sum, self.late_max, self.overflows = 0, 0.0, 0.0, 0

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        self.sock.setblocking(False)
        loop.add_reader(self.sock.fileno(), self._readable, loop)
        print(f"netem: delaying queues {sorted(self.links)}", flush=True)
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), STATS_INTERVAL)
            self.report()
        loop.remove_reader(self.sock.fileno())
        self.sock.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab.netem", description=__doc__)
    parser.add_argument("--queue", action="append", required=True, metavar="Q:DELAY:JITTER")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    delayer = Delayer([Link.parse(text) for text in args.queue], args.seed)
    try:
        delayer.bind()
    except NetlinkError as exc:
        print(f"netem: {exc}", file=sys.stderr)
        return 1
    asyncio.run(delayer.run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
