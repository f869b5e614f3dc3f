"""A gossip node on real sockets: the UDP/TCP transport, the loop clock and the node.

Owns the wiring between :class:`~pysyncer.gossip.transport.NetTransport` (bytes in and
out), the TCP stream framing of :mod:`pysyncer.gossip.stream`, a
:class:`~pysyncer.gossip.clock.LoopClock` and a :class:`~pysyncer.gossip.node.GossipNode`
with its delegate (the Serf layer). The node itself never touches a socket.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Hashable, Sequence

from pysyncer._core import wire
from pysyncer.errors import MalformedDataError
from pysyncer.gossip import messages as m
from pysyncer.gossip.clock import LoopClock
from pysyncer.gossip.keyring import Keyring
from pysyncer.gossip.node import Address, GossipNode, NodeConfig, NodeDelegate
from pysyncer.gossip.stream import (
    StreamBudgetError,
    StreamClosedError,
    frame_stream_message,
    read_stream_message,
)
from pysyncer.gossip.timing import DEFAULT_PROFILE, GossipProfile
from pysyncer.gossip.transport import NetTransport

__all__ = ["GossipAgent", "SocketNetwork"]

log = logging.getLogger(__name__)


class SocketNetwork:
    """:class:`~pysyncer.gossip.node.Network` over a NetTransport, with memberlist framing."""

    def __init__(
        self,
        transport: NetTransport,
        *,
        keyring: Keyring | None,
        label: str = "",
        compress: bool = True,
        verify_incoming: bool = True,
    ) -> None:
        self.transport = transport
        self.keyring = keyring
        self.label = label
        self.compress = compress
        self.verify_incoming = verify_incoming

    def send_packet(self, addr: Address, data: bytes) -> None:
        self.transport.send_packet(addr, data)

    async def exchange(self, addr: Address, message: bytes, timeout: float) -> bytes | None:
        reader, writer = await self.transport.open_stream(addr, timeout)
        try:
            frame = frame_stream_message(
                message, keyring=self.keyring, label=self.label, compress=self.compress
            )
            writer.write(frame)
            await writer.drain()
            if message[0] == wire.USER_MSG:
                return None
            return await read_stream_message(
                reader,
                keyring=self.keyring,
                label=self.label,
                verify_incoming=self.verify_incoming,
                timeout=timeout,
                label_header=False,
            )
        finally:
            writer.close()

    async def serve(
        self,
        node: GossipNode,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        timeout: float,
    ) -> None:
        """Answer one inbound stream (push/pull, TCP ping, user message)."""
        try:
            message = await read_stream_message(
                reader,
                keyring=self.keyring,
                label=self.label,
                verify_incoming=self.verify_incoming,
                timeout=timeout,
            )
        except StreamClosedError as exc:
            if exc.received:
                node.stats.incr("streams_dropped_closed")
            return
        except (MalformedDataError, TimeoutError) as exc:
            node.stats.incr("streams_dropped_malformed")
            if isinstance(exc, StreamBudgetError):
                node.stats.incr("packets_dropped_stream_budget")
            log.debug("dropped inbound stream: %s", exc)
            return
        try:
            reply = node.handle_stream_message(message)
        except MalformedDataError as exc:
            node.stats.incr("streams_dropped_malformed")
            reply = m.ErrResp(str(exc)).to_bytes()
        if reply is None:
            return
        writer.write(
            frame_stream_message(
                reply,
                keyring=self.keyring,
                label=self.label,
                compress=self.compress,
                label_header=False,
            )
        )
        await writer.drain()


class GossipAgent:
    """One pool member on ``bind``, advertising ``advertise`` (defaults to the bound address).

    ``make_delegate(clock)`` builds the layer above memberlist (the Serf layer) once the
    loop clock exists; it runs inside :meth:`start`.
    """

    def __init__(
        self,
        name: str,
        make_delegate: Callable[[LoopClock[Hashable]], NodeDelegate],
        *,
        profile: GossipProfile = DEFAULT_PROFILE,
        keyring: Keyring | None = None,
        label: str = "",
        protocol_version: int = 2,
    ) -> None:
        self.name = name
        self._make_delegate = make_delegate
        self.profile = profile
        self.keyring = keyring
        self.label = label
        self.protocol_version = protocol_version
        self.transport = NetTransport()
        self.network = SocketNetwork(
            self.transport,
            keyring=keyring,
            label=label,
            compress=profile.enable_compression,
            verify_incoming=profile.gossip_verify_incoming,
        )
        self.clock: LoopClock[Hashable] | None = None
        self._node: GossipNode | None = None

    @property
    def node(self) -> GossipNode:
        if self._node is None:
            raise RuntimeError("the gossip agent is not started")
        return self._node

    @property
    def running_node(self) -> GossipNode | None:
        """The node once started, else None (unlike :attr:`node`, never raises)."""
        return self._node

    @property
    def address(self) -> Address:
        return self.transport.address

    async def start(self, bind: Address, advertise: Address | None = None) -> None:
        """Bind the sockets and start probing and gossiping."""
        await self.transport.start(*bind)
        host, port = self.transport.address
        if advertise is None:
            if host in ("0.0.0.0", "::"):
                raise ValueError("binding to a wildcard address needs an advertise address")
            advertise = (host, port)
        elif advertise[1] == 0:
            advertise = (advertise[0], port)
        self.clock = LoopClock()
        self.delegate = self._make_delegate(self.clock)
        config = NodeConfig(
            name=self.name,
            advertise=advertise,
            profile=self.profile,
            keyring=self.keyring,
            label=self.label,
            protocol_version=self.protocol_version,
            verify_incoming=self.profile.gossip_verify_incoming,
        )
        node = GossipNode(config, self.clock, self.network, self.delegate)
        self._node = node
        self.transport.on_packet = lambda data, source, _: node.handle_packet(data, source)
        tcp_timeout = self.profile.tcp_timeout
        self.transport.on_stream = lambda r, w: self.network.serve(node, r, w, tcp_timeout)
        node.start()

    async def join(self, addresses: Sequence[Address]) -> int:
        return await self.node.join(addresses)

    async def leave(self, timeout: float | None = None) -> bool:
        return await self.node.leave(timeout)

    async def stop(self) -> None:
        if self._node is not None:
            await self._node.stop()
        if self.clock is not None:
            self.clock.close()
        await self.transport.close()
