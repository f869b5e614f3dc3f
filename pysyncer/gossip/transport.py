"""asyncio networking of a gossip node: one UDP socket and one TCP listener, same address.

Owns sockets and nothing of the protocol (memberlist ``net_transport.go``):

* :meth:`NetTransport.start` binds UDP and TCP on the same host and port (port 0 picks
  a port free for both), with a UDP receive buffer of 2 MiB halved until accepted;
* every datagram (up to 65536 bytes) goes to ``on_packet(data, (host, port), t)`` with
  ``t`` the receive time from ``loop.time()``; :meth:`NetTransport.send_packet` never
  raises on send errors, it counts them;
* every accepted TCP connection goes to ``on_stream(reader, writer)``; the node reads
  with :func:`pysyncer.gossip.stream.read_stream_message` and writes its reply. At most
  ``max_inbound_streams`` (memberlist ``maxPushPullRequests``: 128) run at once; more
  are closed at once and counted. The transport closes the connection when the handler
  returns;
* :meth:`NetTransport.open_stream` dials a peer; :meth:`NetTransport.close` closes it all
  and waits for running stream handlers, cancelling them after a short grace.

Counters live in :attr:`NetTransport.stats`. Addresses are numeric IPs (no DNS here).
Must not import the node or the Serf layer: it moves bytes only.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import logging
import socket
import weakref
from collections.abc import Awaitable, Callable
from functools import lru_cache

from pysyncer.supervisor import tolerate

__all__ = [
    "DEFAULT_CLOSE_GRACE",
    "MAX_INBOUND_STREAMS",
    "MAX_UDP_WRITE_BUFFER",
    "UDP_PACKET_BUF_SIZE",
    "UDP_RECV_BUF_SIZE",
    "NetTransport",
    "PacketHandler",
    "StreamHandler",
    "set_udp_recv_buffer",
]

UDP_PACKET_BUF_SIZE = 65536
"""memberlist ``udpPacketBufSize``: largest datagram sent or received."""

UDP_RECV_BUF_SIZE = 2 * 1024 * 1024
"""memberlist ``udpRecvBufSize``: first SO_RCVBUF size tried (halved until accepted)."""

MAX_INBOUND_STREAMS = 128
"""memberlist ``maxPushPullRequests``: inbound stream handlers running at once."""

MAX_UDP_WRITE_BUFFER = 1024 * 1024
"""Datagrams waiting in user space beyond this many bytes are dropped (and counted)."""

DEFAULT_CLOSE_GRACE = 1.0
"""Seconds :meth:`NetTransport.close` lets stream handlers finish before cancelling them."""

_BIND_ATTEMPTS = 16

PacketHandler = Callable[[bytes, tuple[str, int], float], None]
StreamHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]

_log = logging.getLogger(__name__)

_STAT_NAMES = (
    "packets_sent",
    "packets_received",
    "send_errors",
    "streams_accepted",
    "streams_rejected",
    "streams_opened",
    "stream_errors",
    "handler_errors",
)


def _family(host: str) -> socket.AddressFamily:
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"bind address must be a numeric IP address, not {host!r}") from None
    return socket.AF_INET6 if ip.version == 6 else socket.AF_INET


@lru_cache(maxsize=4096)
def _ip_family(host: str) -> socket.AddressFamily | None:
    """Family of a numeric IP address, None for anything else (no DNS lookups)."""
    try:
        return _family(host)
    except ValueError:
        return None


def _buffered(udp: asyncio.DatagramTransport) -> int:
    """Bytes of datagrams asyncio holds in user space (the socket would have blocked)."""
    size = getattr(udp, "get_write_buffer_size", None)  # not in DatagramTransport's ABC
    return int(size()) if size is not None else 0


def set_udp_recv_buffer(sock: socket.socket, size: int = UDP_RECV_BUF_SIZE) -> int:
    """Set SO_RCVBUF to ``size``, halving on refusal like memberlist; the size set (0: none)."""
    while size > 0:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
        except OSError:
            size //= 2
            continue
        return size
    return 0


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, owner: NetTransport) -> None:
        self.owner = owner

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self.owner._packet(data, addr)

    def error_received(self, exc: Exception) -> None:
        # Send errors reported asynchronously (ICMP errors, EMSGSIZE after buffering).
        self.owner.stats["send_errors"] += 1
        _log.debug("UDP socket error: %s", exc)


class NetTransport:
    """UDP + TCP on one address for a gossip node (see the module doc).

    ``on_packet`` and ``on_stream`` may be set at construction or later (before
    :meth:`start` is safest); without ``on_stream`` accepted connections are closed.
    """

    def __init__(
        self,
        on_packet: PacketHandler | None = None,
        on_stream: StreamHandler | None = None,
        *,
        max_inbound_streams: int = MAX_INBOUND_STREAMS,
        close_grace: float = DEFAULT_CLOSE_GRACE,
    ) -> None:
        if max_inbound_streams < 1:
            raise ValueError("max_inbound_streams must be at least 1")
        self.on_packet = on_packet
        self.on_stream = on_stream
        self.max_inbound_streams = max_inbound_streams
        self.close_grace = close_grace
        self.stats: dict[str, int] = dict.fromkeys(_STAT_NAMES, 0)
        self.udp_recv_buffer = 0
        """SO_RCVBUF size that was accepted (the kernel may still cap or double it)."""
        self._address: tuple[str, int] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._udp: asyncio.DatagramTransport | None = None
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self._inbound: set[asyncio.StreamWriter] = set()
        self._outbound: weakref.WeakSet[asyncio.StreamWriter] = weakref.WeakSet()
        self._closing = False
        self._family = socket.AF_INET

    # ------------------------------------------------------------------ lifecycle

    @property
    def address(self) -> tuple[str, int]:
        """``(host, port)`` bound by :meth:`start`."""
        if self._address is None:
            raise RuntimeError("the transport is not started")
        return self._address

    @property
    def running(self) -> bool:
        return self._address is not None and not self._closing

    async def start(self, host: str, port: int) -> None:
        """Bind UDP and TCP on ``host:port`` (port 0: one port free for both) and serve."""
        if self._address is not None or self._closing:
            raise RuntimeError("a NetTransport can be started once")
        if not 0 <= port <= 0xFFFF:
            raise ValueError(f"port {port} is out of range")
        family = _family(host)
        self._family = family
        tcp, udp = self._bind(family, host, port)
        loop = asyncio.get_running_loop()
        try:
            self.udp_recv_buffer = set_udp_recv_buffer(udp)
            transport, _ = await loop.create_datagram_endpoint(lambda: _UdpProtocol(self), sock=udp)
            self._udp = transport
            self._server = await asyncio.start_server(self._accept, sock=tcp, backlog=1024)
        except BaseException:
            if self._udp is not None:
                self._udp.close()
                self._udp = None
            udp.close()
            tcp.close()
            raise
        self._loop = loop
        self._address = (host, int(tcp.getsockname()[1]))

    @staticmethod
    def _bind(
        family: socket.AddressFamily, host: str, port: int
    ) -> tuple[socket.socket, socket.socket]:
        last: OSError | None = None
        for _ in range(_BIND_ATTEMPTS if port == 0 else 1):
            tcp = socket.socket(family, socket.SOCK_STREAM)
            try:
                tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                tcp.bind((host, port))
                bound = tcp.getsockname()[1]
                udp = socket.socket(family, socket.SOCK_DGRAM)
                try:
                    udp.bind((host, bound))
                except OSError:
                    udp.close()
                    raise
            except OSError as exc:
                tcp.close()
                if port != 0 or exc.errno != errno.EADDRINUSE:
                    raise
                last = exc  # the TCP port is taken for UDP: try another one
                continue
            tcp.setblocking(False)
            udp.setblocking(False)
            return tcp, udp
        assert last is not None
        raise last

    async def close(self, grace: float | None = None) -> None:
        """Stop listening, close every socket and wait for running stream handlers.

        Handlers still running after ``grace`` seconds (default ``close_grace``) are
        cancelled. Safe to call more than once.
        """
        if self._closing:
            return
        self._closing = True
        if self._udp is not None:
            self._udp.close()
        if self._server is not None:
            self._server.close()
        for writer in list(self._outbound):
            writer.close()
        handlers = set(self._handlers)
        if handlers:
            _, pending = await asyncio.wait(
                handlers, timeout=self.close_grace if grace is None else grace
            )
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=self.close_grace if grace is None else grace)
        for writer in list(self._inbound):
            writer.transport.abort()
        if self._server is not None:
            with contextlib.suppress(TimeoutError):  # a handler still unwinding: its
                await asyncio.wait_for(self._server.wait_closed(), 1.0)  # socket is aborted
        await asyncio.sleep(0)  # let the closed transports run connection_lost

    async def __aenter__(self) -> NetTransport:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -------------------------------------------------------------------- packets

    def _packet(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        assert self._loop is not None
        now = self._loop.time()
        self.stats["packets_received"] += 1
        handler = self.on_packet
        if handler is None or self._closing:
            return
        try:
            handler(data, (str(addr[0]), int(addr[1])), now)
        except Exception as exc:
            self.stats["handler_errors"] += 1
            tolerate("gossip-packet-handler", exc, level=logging.ERROR, trace=True)

    def send_packet(self, addr: tuple[str, int], data: bytes) -> bool:
        """Send one datagram to ``(ip, port)``; False (and ``send_errors`` + 1) if it failed.

        ``addr`` must be a numeric IP of the bound address family (no DNS lookups).
        Never raises for send errors: datagrams larger than 65536 bytes, a bad address,
        a closed transport, a full user-space send buffer or a socket error are all
        counted. Errors the kernel reports later (asyncio's ``error_received``) are
        counted when they arrive; ``packets_sent`` counts datagrams handed to the socket.
        """
        udp = self._udp
        host, port = addr
        if (
            udp is None
            or self._closing
            or udp.is_closing()
            or len(data) > UDP_PACKET_BUF_SIZE
            or _buffered(udp) > MAX_UDP_WRITE_BUFFER
            or type(port) is not int
            or not 0 < port <= 0xFFFF
            or type(host) is not str
            or _ip_family(host) != self._family
        ):
            self.stats["send_errors"] += 1
            return False
        try:
            udp.sendto(data, (host, port))
        except (OSError, ValueError, TypeError, OverflowError) as exc:
            self.stats["send_errors"] += 1
            _log.debug("UDP send to %s failed: %s", addr, exc)
            return False
        self.stats["packets_sent"] += 1
        return True

    # -------------------------------------------------------------------- streams

    async def open_stream(
        self, addr: tuple[str, int], timeout: float
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Connect to a peer's TCP listener within ``timeout`` seconds.

        Raises TimeoutError or OSError (``stream_errors`` + 1). The caller closes the
        writer; :meth:`close` closes streams still open.
        """
        if self._closing:
            raise ConnectionError("the transport is closed")
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_connection(addr[0], addr[1])
        except (OSError, TimeoutError):
            self.stats["stream_errors"] += 1
            raise
        self.stats["streams_opened"] += 1
        self._outbound.add(writer)
        return reader, writer

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._closing or len(self._handlers) >= self.max_inbound_streams:
            self.stats["streams_rejected"] += 1
            writer.transport.abort()
            return
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self._inbound.add(writer)
        self.stats["streams_accepted"] += 1
        try:
            handler = self.on_stream
            if handler is not None:
                await handler(reader, writer)
        except asyncio.CancelledError:
            if not self._closing:
                raise
        except Exception as exc:
            self.stats["stream_errors"] += 1
            peer = writer.get_extra_info("peername")
            if isinstance(exc, (OSError, TimeoutError)):
                _log.debug("stream from %s failed: %s", peer, exc)
            else:
                tolerate("gossip-stream-handler", exc, level=logging.ERROR, trace=True)
        finally:
            self._handlers.discard(task)
            self._inbound.discard(writer)
            writer.close()
